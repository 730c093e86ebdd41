//! Installation on a server: `scripts/install.sh` and `scripts/uninstall.sh`
//! run for real into a staging root (DESTDIR), the hardened systemd unit they
//! install (checked by `systemd-analyze verify` when it exists, and always by
//! a parser of our own), and the example profiles in `profiles/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{COFFER, Output, run_command};

const PREFIX: &str = "/usr/local";
/// The vendor folder: a unit an admin writes in /etc/systemd/system wins over it.
const UNIT: &str = "usr/lib/systemd/system/coffer-agent.service";
/// Where an older install.sh put the unit (and `systemctl edit` the drop-ins).
const ETC_UNIT: &str = "etc/systemd/system/coffer-agent.service";
const SYSUSERS: &str = "/usr/lib/sysusers.d/coffer.conf";
const TMPFILES: &str = "/usr/lib/tmpfiles.d/coffer.conf";
/// Completion scripts, where each shell looks for them under PREFIX.
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "share/bash-completion/completions/coffer"),
    ("zsh", "share/zsh/site-functions/_coffer"),
    ("fish", "share/fish/vendor_completions.d/coffer.fish"),
];
/// A few of the man pages (one per command).
const MAN_PAGES: [&str; 3] = ["coffer.1", "coffer-backup.1", "coffer-key-generate.1"];
const EXAMPLES: [&str; 2] = ["six-a-day-s3.toml", "nightly-7d.toml"];

fn source_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Stage {
    /// The DESTDIR.
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Stage {
    fn new() -> Stage {
        let tmp = tempfile::Builder::new()
            .prefix("coffer-install-")
            .tempdir()
            .expect("create temp dir");
        let root = fs::canonicalize(tmp.path()).unwrap().join("stage");
        fs::create_dir(&root).unwrap();
        Stage { root, _tmp: tmp }
    }

    /// A path inside the staging root, given as the installed absolute path.
    fn path(&self, installed: &str) -> PathBuf {
        self.root.join(installed.trim_start_matches('/'))
    }

    /// Runs `scripts/<script>` with DESTDIR set to the staging root.
    fn run(&self, script: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let path = source_root().join("scripts").join(script);
        let mut cmd = Command::new("bash");
        cmd.arg(&path).args(args);
        cmd.env("DESTDIR", &self.root).env("PREFIX", PREFIX);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let cmdline = format!(
            "DESTDIR={} {} {}",
            self.root.display(),
            path.display(),
            args.join(" ")
        );
        run_command(cmd, cmdline, Duration::from_secs(300))
    }

    fn install(&self) -> Output {
        let out = self.run("install.sh", &["--binary", COFFER], &[]);
        out.expect_ok();
        out
    }

    fn uninstall(&self, args: &[&str]) -> Output {
        self.run("uninstall.sh", args, &[])
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_gone(path: &Path) {
    assert!(
        fs::symlink_metadata(path).is_err(),
        "{} should have been removed",
        path.display()
    );
}

/// What install.sh must create: installed path, mode, directory or not.
fn expected_layout() -> Vec<(String, u32, bool)> {
    let mut v = vec![
        (format!("{PREFIX}/bin/coffer"), 0o755, false),
        ("/etc/coffer".into(), 0o750, true),
        ("/etc/coffer/profiles".into(), 0o750, true),
        ("/etc/coffer/keys".into(), 0o750, true),
        ("/var/lib/coffer".into(), 0o700, true),
        ("/var/cache/coffer".into(), 0o700, true),
        (format!("/{UNIT}"), 0o644, false),
        (SYSUSERS.into(), 0o644, false),
        (TMPFILES.into(), 0o644, false),
    ];
    for (_, p) in COMPLETIONS {
        v.push((format!("{PREFIX}/{p}"), 0o644, false));
    }
    for p in MAN_PAGES {
        v.push((format!("{PREFIX}/share/man/man1/{p}"), 0o644, false));
    }
    for p in EXAMPLES {
        v.push((format!("{PREFIX}/share/coffer/profiles/{p}"), 0o644, false));
    }
    v
}

fn check_layout(stage: &Stage) {
    for (path, want, is_dir) in expected_layout() {
        let p = stage.path(&path);
        let meta = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path} missing: {e}"));
        assert_eq!(meta.is_dir(), is_dir, "{path}: wrong kind");
        assert_eq!(mode(&p), want, "{path}: mode {:o}, want {want:o}", mode(&p));
    }
    let installed = fs::read(stage.path(&format!("{PREFIX}/bin/coffer"))).unwrap();
    assert!(
        installed == fs::read(COFFER).unwrap(),
        "the installed binary differs from --binary"
    );
    for p in EXAMPLES {
        let installed = stage.path(&format!("{PREFIX}/share/coffer/profiles/{p}"));
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(source_root().join("profiles").join(p)).unwrap(),
            "{p} is not the example from profiles/"
        );
    }
    check_generated(stage);
    // The demo is for development, and examples never go where the agent
    // would run them.
    assert_gone(&stage.path(&format!("{PREFIX}/share/coffer/profiles/demo.toml")));
    for p in EXAMPLES {
        assert_gone(&stage.path(&format!("/etc/coffer/profiles/{p}")));
    }
}

/// Completions are what the binary prints, man pages are roff; the
/// sysusers.d and tmpfiles.d entries declare the user and the folders
/// install.sh makes.
fn check_generated(stage: &Stage) {
    for (shell, path) in COMPLETIONS {
        let out = Command::new(COFFER)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "coffer completions {shell}");
        let installed = fs::read(stage.path(&format!("{PREFIX}/{path}"))).unwrap();
        assert!(installed == out.stdout, "{path} is not the {shell} script");
    }
    for page in MAN_PAGES {
        let text =
            fs::read_to_string(stage.path(&format!("{PREFIX}/share/man/man1/{page}"))).unwrap();
        assert!(text.contains(".SH NAME"), "{page} is no man page");
    }
    let lines = |path: &str| -> Vec<Vec<String>> {
        fs::read_to_string(stage.path(path))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                // Quoted fields ("coffer backup agent") are one field.
                let mut fields = Vec::new();
                let mut rest = l.trim();
                while !rest.is_empty() {
                    let (field, tail) = match rest.strip_prefix('"') {
                        Some(q) => q.split_once('"').unwrap_or((q, "")),
                        None => rest.split_once(' ').unwrap_or((rest, "")),
                    };
                    fields.push(field.to_string());
                    rest = tail.trim_start();
                }
                fields
            })
            .collect()
    };
    assert_eq!(
        lines(SYSUSERS),
        [["u", "coffer", "-", "coffer backup agent", "/var/lib/coffer"]]
    );
    assert_eq!(
        lines(TMPFILES),
        [
            ["d", "/var/lib/coffer", "0700", "coffer", "coffer", "-"],
            ["d", "/var/cache/coffer", "0700", "coffer", "coffer", "-"],
        ]
    );
}

// ---------------------------------------------------------------------------
// The unit file: a parser of our own (always) and systemd-analyze (if present)
// ---------------------------------------------------------------------------

type Unit = BTreeMap<String, Vec<(String, String)>>;

/// Directives this unit may use, per section. A typo (`ProtectSytem=`) is
/// only a warning to systemd, which then runs the service without it.
fn known_directives(section: &str) -> &'static [&'static str] {
    match section {
        "Unit" => &[
            "Description",
            "Documentation",
            "Wants",
            "Requires",
            "After",
            "Before",
            "StartLimitIntervalSec",
            "StartLimitBurst",
        ],
        "Service" => &[
            "Type",
            "ExecStart",
            "ExecReload",
            "KillSignal",
            "KillMode",
            "TimeoutStopSec",
            "Restart",
            "RestartSec",
            "User",
            "Group",
            "Environment",
            "StateDirectory",
            "StateDirectoryMode",
            "CacheDirectory",
            "CacheDirectoryMode",
            "UMask",
            "Nice",
            "IOSchedulingClass",
            "IOSchedulingPriority",
            "AmbientCapabilities",
            "CapabilityBoundingSet",
            "NoNewPrivileges",
            "ProtectSystem",
            "ProtectHome",
            "ReadWritePaths",
            "PrivateTmp",
            "PrivateDevices",
            "ProtectKernelTunables",
            "ProtectKernelModules",
            "ProtectKernelLogs",
            "ProtectControlGroups",
            "ProtectClock",
            "ProtectHostname",
            "RestrictSUIDSGID",
            "LockPersonality",
            "RestrictRealtime",
            "RestrictNamespaces",
            "SystemCallArchitectures",
            "RestrictAddressFamilies",
            "SystemCallFilter",
            "SystemCallErrorNumber",
            "RemoveIPC",
            "NotifyAccess",
            "WatchdogSec",
            "PrivateMounts",
            "ProtectProc",
            "ProcSubset",
        ],
        "Install" => &["WantedBy", "RequiredBy", "Alias"],
        _ => &[],
    }
}

const BOOLEAN_DIRECTIVES: &[&str] = &[
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictSUIDSGID",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictNamespaces",
    "RemoveIPC",
    "PrivateMounts",
];

/// Parses a unit file the way systemd does (sections, `Key=Value`, `#`/`;`
/// comments, backslash continuations) and checks every directive and the
/// values systemd would otherwise ignore with a warning.
fn parse_unit(text: &str) -> Result<Unit, String> {
    let mut unit = Unit::new();
    let mut section: Option<String> = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let n = i + 1;
        let mut line = raw.trim().to_string();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => line.push_str(next.trim()),
                None => return Err(format!("line {n}: continuation at end of file")),
            }
        }
        if line.starts_with('[') {
            let name = line
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .ok_or(format!("line {n}: bad section header {line:?}"))?;
            if !["Unit", "Service", "Install"].contains(&name) {
                return Err(format!("line {n}: unexpected section [{name}]"));
            }
            if unit.contains_key(name) {
                return Err(format!("line {n}: section [{name}] twice"));
            }
            unit.insert(name.to_string(), Vec::new());
            section = Some(name.to_string());
            continue;
        }
        let sec = section
            .as_ref()
            .ok_or(format!("line {n}: {line:?} before any section"))?;
        let (key, value) = line
            .split_once('=')
            .ok_or(format!("line {n}: {line:?} is not Key=Value"))?;
        let (key, value) = (key.trim(), value.trim());
        if !known_directives(sec).contains(&key) {
            return Err(format!("line {n}: unknown directive {key}= in [{sec}]"));
        }
        check_value(key, value).map_err(|e| format!("line {n}: {key}={value}: {e}"))?;
        unit.get_mut(sec)
            .unwrap()
            .push((key.to_string(), value.to_string()));
    }
    for s in ["Unit", "Service", "Install"] {
        if !unit.contains_key(s) {
            return Err(format!("section [{s}] is missing"));
        }
    }
    Ok(unit)
}

fn is_timespan(v: &str) -> bool {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    split > 0 && ["", "s", "sec", "min", "m", "h", "ms"].contains(&&v[split..])
}

fn check_value(key: &str, v: &str) -> Result<(), String> {
    let ok = match key {
        k if BOOLEAN_DIRECTIVES.contains(&k) => {
            ["yes", "no", "true", "false", "on", "off", "1", "0"].contains(&v)
        }
        "ExecStart" | "ExecReload" => {
            let exe = v.split_whitespace().next().unwrap_or("");
            exe.starts_with('/') && !exe.contains('@')
        }
        "Type" => ["simple", "exec", "notify", "forking", "oneshot"].contains(&v),
        "KillMode" => ["control-group", "mixed", "process", "none"].contains(&v),
        "Restart" => ["no", "on-failure", "on-abnormal", "always"].contains(&v),
        "KillSignal" => v.starts_with("SIG") && v.len() > 3,
        "TimeoutStopSec" | "RestartSec" | "StartLimitIntervalSec" | "WatchdogSec" => is_timespan(v),
        "NotifyAccess" => ["none", "main", "exec", "all"].contains(&v),
        "ProtectProc" => ["default", "noaccess", "invisible", "ptraceable"].contains(&v),
        "ProcSubset" => ["all", "pid"].contains(&v),
        "StartLimitBurst" => v.parse::<u32>().is_ok(),
        "StateDirectoryMode" | "CacheDirectoryMode" | "UMask" => {
            v.len() == 4 && u32::from_str_radix(v, 8).is_ok()
        }
        "StateDirectory" | "CacheDirectory" => {
            !v.is_empty() && !v.starts_with('/') && !v.contains("..")
        }
        "Environment" => v
            .split_whitespace()
            .all(|a| a.split_once('=').is_some_and(|(k, _)| !k.is_empty())),
        "ReadWritePaths" => v
            .split_whitespace()
            .all(|p| p.trim_start_matches(['-', '+']).starts_with('/')),
        "Nice" => v.parse::<i32>().is_ok_and(|n| (-20..=19).contains(&n)),
        "IOSchedulingClass" => ["realtime", "best-effort", "idle", "none"].contains(&v),
        "IOSchedulingPriority" => v.parse::<u32>().is_ok_and(|n| n <= 7),
        "ProtectSystem" => ["yes", "no", "full", "strict"].contains(&v),
        "ProtectHome" => ["yes", "no", "read-only", "tmpfs"].contains(&v),
        "AmbientCapabilities" | "CapabilityBoundingSet" => {
            v.trim_start_matches('~').split_whitespace().all(|c| {
                c.starts_with("CAP_") && c[4..].chars().all(|c| c.is_ascii_uppercase() || c == '_')
            })
        }
        "SystemCallArchitectures" => v == "native",
        "RestrictAddressFamilies" => v.split_whitespace().all(|f| f.starts_with("AF_")),
        "SystemCallFilter" => v.trim_start_matches('~').split_whitespace().all(|s| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || "@-_0-9".contains(c))
        }),
        "SystemCallErrorNumber" => v.starts_with('E') && v.chars().all(|c| c.is_ascii_uppercase()),
        "WantedBy" | "RequiredBy" | "Wants" | "Requires" | "After" | "Before" => v
            .split_whitespace()
            .all(|u| u.contains('.') && !u.contains('/')),
        _ => !v.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err("not a valid value".into())
    }
}

/// The values a directive has in a section (a directive may repeat).
fn values<'a>(unit: &'a Unit, section: &str, key: &str) -> Vec<&'a str> {
    unit[section]
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What the brief for the service requires, directive by directive.
fn check_unit_contents(unit: &Unit) {
    let want: &[(&str, &str)] = &[
        (
            "ExecStart",
            "/usr/local/bin/coffer agent --profiles /etc/coffer/profiles --log-format json",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "5min"),
        ("KillSignal", "SIGTERM"),
        ("KillMode", "mixed"),
        ("TimeoutStopSec", "120"),
        ("Restart", "on-failure"),
        ("User", "coffer"),
        ("Group", "coffer"),
        (
            "Environment",
            "COFFER_STATE_DIR=/var/lib/coffer COFFER_CACHE_DIR=/var/cache/coffer",
        ),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("PrivateMounts", "yes"),
        ("ProtectProc", "invisible"),
        ("ProcSubset", "pid"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("ReadWritePaths", "/var/lib/coffer /var/cache/coffer"),
        ("StateDirectory", "coffer"),
        ("CacheDirectory", "coffer"),
        ("AmbientCapabilities", "CAP_DAC_READ_SEARCH"),
        ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
        ("Nice", "10"),
        ("IOSchedulingClass", "idle"),
    ];
    for (key, value) in want {
        let got = values(unit, "Service", key);
        assert_eq!(got, vec![*value], "[Service] {key}=");
    }
    assert_eq!(
        values(unit, "Install", "WantedBy"),
        vec!["multi-user.target"]
    );
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify` on the staged unit. It checks that the
/// executables exist on this machine, so the copy it sees points ExecStart at
/// the staged binary; nothing else is changed. It exits 0 on unknown keys and
/// bad values (it only warns), so any output at all is a failure too.
fn systemd_verify(stage: &Stage, analyze: &Path, unit_text: &str) {
    let dir = stage.root.parent().unwrap().join("verify");
    fs::create_dir_all(&dir).unwrap();
    let staged_bin = stage.path(&format!("{PREFIX}/bin/coffer"));
    let text = unit_text.replace(
        &format!("ExecStart={PREFIX}/bin/coffer "),
        &format!("ExecStart={} ", staged_bin.display()),
    );
    assert_ne!(text, unit_text, "ExecStart not found for the verify copy");
    let unit = dir.join("coffer-agent.service");
    fs::write(&unit, &text).unwrap();
    let mut cmd = Command::new(analyze);
    cmd.arg("verify").arg(&unit);
    let out = run_command(
        cmd,
        "systemd-analyze verify".into(),
        Duration::from_secs(120),
    );
    assert!(
        out.ok() && out.all_output().trim().is_empty(),
        "systemd-analyze verify {}: {}\n{}",
        unit.display(),
        out.describe_status(),
        out.all_output()
    );
    eprintln!("systemd-analyze verify: the unit is clean");

    // The exposure score (systemd 250 and newer can rate a unit file offline).
    let mut cmd = Command::new(analyze);
    cmd.args(["security", "--offline=true", "--no-pager"])
        .arg(&unit);
    let out = run_command(
        cmd,
        "systemd-analyze security".into(),
        Duration::from_secs(120),
    );
    let score = out
        .all_output()
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for coffer-agent.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok());
    match score {
        Some(s) => {
            eprintln!(
                "systemd-analyze security: overall exposure {s} (0 = locked down, 10 = unprotected)"
            );
            assert!(
                s <= 1.8,
                "the unit's exposure rose to {s}; was a hardening line dropped?\n{}",
                out.all_output()
            );
        }
        None => eprintln!(
            "systemd-analyze security --offline is not available here ({}); exposure not rated",
            out.describe_status()
        ),
    }
}

#[test]
fn install_stages_every_file_with_safe_modes_and_a_valid_unit() {
    let stage = Stage::new();
    let out = stage.install();
    check_layout(&stage);
    // Staged: no user is created and nothing is chowned, but it says what a
    // real install would do.
    assert!(
        out.stdout
            .contains("would create the system group and user 'coffer'"),
        "{}",
        out.all_output()
    );
    assert!(out.stdout.contains("systemctl enable --now coffer-agent"));

    let text = fs::read_to_string(stage.path(UNIT)).unwrap();
    assert!(!text.contains("@PREFIX@"), "placeholder left in the unit");
    let unit = parse_unit(&text).unwrap_or_else(|e| panic!("{UNIT}: {e}"));
    check_unit_contents(&unit);
    // The parser is a real check: it refuses a typo and a bad value.
    assert!(parse_unit(&text.replace("ProtectSystem=", "ProtectSytem=")).is_err());
    assert!(parse_unit(&text.replace("ProtectSystem=strict", "ProtectSystem=strictt")).is_err());
    assert!(parse_unit(&text.replace("[Service]", "[Servce]")).is_err());

    // systemd-sysusers reads the declaration as it would at boot (it
    // writes nothing with --dry-run).
    if let Some(sysusers) = find_in_path("systemd-sysusers") {
        let mut cmd = Command::new(sysusers);
        cmd.arg("--dry-run")
            .arg(format!("--root={}", stage.root.display()))
            .arg(stage.path(SYSUSERS));
        let out = run_command(
            cmd,
            "systemd-sysusers --dry-run".into(),
            Duration::from_secs(60),
        );
        assert!(
            out.ok() && out.all_output().contains("Creating user 'coffer'"),
            "systemd-sysusers: {}\n{}",
            out.describe_status(),
            out.all_output()
        );
    }
    match find_in_path("systemd-analyze") {
        Some(analyze) => systemd_verify(&stage, &analyze, &text),
        None => eprintln!(
            "systemd-analyze is not installed: the unit was checked by this test's own parser only"
        ),
    }
}

#[test]
fn install_twice_keeps_the_admins_profiles_and_keys() {
    let stage = Stage::new();
    stage.install();
    let profile = stage.path("/etc/coffer/profiles/web-1.toml");
    let key = stage.path("/etc/coffer/keys/web-1.agent.key");
    fs::write(&profile, "# mine\nname = \"web-1\"\n").unwrap();
    fs::write(&key, "# coffer agent key\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    // Someone loosened a folder: the next install tightens it again.
    fs::set_permissions(
        stage.path("/etc/coffer/keys"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // An example edited in place is a package file: it is replaced.
    let example = stage.path(&format!("{PREFIX}/share/coffer/profiles/{}", EXAMPLES[0]));
    fs::write(&example, "edited").unwrap();

    stage.install();
    check_layout(&stage);
    assert_eq!(
        fs::read_to_string(&profile).unwrap(),
        "# mine\nname = \"web-1\"\n"
    );
    assert_eq!(fs::read_to_string(&key).unwrap(), "# coffer agent key\n");
    assert_eq!(mode(&key), 0o600);
    let entries: BTreeSet<_> = fs::read_dir(stage.path("/etc/coffer/profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, BTreeSet::from(["web-1.toml".to_string()]));
}

#[test]
fn install_warns_about_a_loose_key_file_without_touching_it() {
    let stage = Stage::new();
    stage.install();
    let key = stage.path("/etc/coffer/keys/loose.agent.key");
    fs::write(&key, "secret").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = stage.install();
    assert!(
        out.stdout
            .contains("WARNING: /etc/coffer/keys/loose.agent.key has mode 644"),
        "{}",
        out.all_output()
    );
    assert_eq!(mode(&key), 0o644);
}

/// A `cargo` first in PATH that records each call in `cargo.log` and
/// "builds" by copying the test binary to where cargo would put it.
fn fake_cargo(stage: &Stage) -> (String, PathBuf) {
    let dir = stage.root.parent().unwrap().join("fake-bin");
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("cargo.log");
    let script = dir.join("cargo");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nmkdir -p \"$CARGO_TARGET_DIR/release\" && cp '{COFFER}' \"$CARGO_TARGET_DIR/release/coffer\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

// The reproduction: a staged install without --binary ran cargo.
#[test]
fn install_without_binary_takes_the_built_one_and_builds_only_when_asked() {
    let stage = Stage::new();
    let (path, log) = fake_cargo(&stage);
    let target = stage.root.parent().unwrap().join("cargo-target");
    let target_s = target.to_str().unwrap();
    let vars = [("PATH", path.as_str()), ("CARGO_TARGET_DIR", target_s)];

    // Nothing built: an error that says how, and nothing installed.
    let out = stage.run("install.sh", &[], &vars);
    assert_eq!(out.code, Some(1), "{}", out.all_output());
    assert!(
        out.stderr.contains("--build") && out.stderr.contains("--binary"),
        "{}",
        out.all_output()
    );
    assert!(!log.exists(), "cargo ran: {}", out.all_output());
    assert!(fs::read_dir(&stage.root).unwrap().next().is_none());

    // Built already: installed as it is.
    fs::create_dir_all(target.join("release")).unwrap();
    fs::copy(COFFER, target.join("release/coffer")).unwrap();
    let out = stage.run("install.sh", &[], &vars);
    out.expect_ok();
    assert!(!log.exists(), "cargo ran: {}", out.all_output());
    check_layout(&stage);

    // --build: cargo builds, the result is installed.
    fs::remove_dir_all(&target).unwrap();
    let out = stage.run("install.sh", &["--build"], &vars);
    out.expect_ok();
    assert_eq!(
        fs::read_to_string(&log).unwrap().trim(),
        "build --release --locked"
    );
    check_layout(&stage);

    let out = stage.run("install.sh", &["--build", "--binary", COFFER], &vars);
    assert_eq!(out.code, Some(1), "{}", out.all_output());
}

/// An older install.sh put the unit in /etc/systemd/system, where it would
/// hide the new one in the vendor folder: it goes, a unit the admin wrote
/// there stays (with a warning), and uninstall removes only the former.
#[test]
fn install_moves_the_unit_out_of_etc_but_keeps_the_admins_own() {
    let stage = Stage::new();
    let old = stage.path(&format!("/{ETC_UNIT}"));
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    let old_text = "# coffer backup agent: a hardened systemd service.\n#\n# Installed by scripts/install.sh, which replaces /usr/local with the install\n[Service]\nType=simple\n";
    fs::write(&old, old_text).unwrap();
    let out = stage.install();
    assert_gone(&old);
    assert!(
        out.stdout
            .contains("removed /etc/systemd/system/coffer-agent.service"),
        "{}",
        out.all_output()
    );

    let mine = "[Service]\nExecStart=/opt/coffer agent\n";
    fs::write(&old, mine).unwrap();
    let out = stage.install();
    assert_eq!(fs::read_to_string(&old).unwrap(), mine);
    assert!(
        out.stdout
            .contains("WARNING: /etc/systemd/system/coffer-agent.service exists"),
        "{}",
        out.all_output()
    );
    stage.uninstall(&[]).expect_ok();
    assert_eq!(fs::read_to_string(&old).unwrap(), mine);

    fs::write(&old, old_text).unwrap();
    stage.uninstall(&[]).expect_ok();
    assert_gone(&old);
}

#[test]
fn install_refuses_a_prefix_systemd_would_misread() {
    let stage = Stage::new();
    for prefix in ["opt/coffer", "/opt/my coffer", "/opt/a|b"] {
        let out = stage.run("install.sh", &["--binary", COFFER], &[("PREFIX", prefix)]);
        assert_eq!(out.code, Some(1), "PREFIX={prefix:?}: {}", out.all_output());
        assert!(out.stderr.contains("PREFIX"), "{}", out.all_output());
    }
    let out = stage.run("install.sh", &["--binary", "/nonexistent/coffer"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.all_output());
    assert!(
        fs::read_dir(&stage.root).unwrap().next().is_none(),
        "something was installed"
    );
}

#[test]
fn uninstall_removes_the_installation_and_keeps_data_until_purge() {
    let stage = Stage::new();
    stage.install();
    // What an admin and the agent made after installing.
    let profile = stage.path("/etc/coffer/profiles/web-1.toml");
    let key = stage.path("/etc/coffer/keys/web-1.agent.key");
    let repo = stage.path("/srv/backup/coffer");
    let drop_in = stage.path(&format!("/{ETC_UNIT}.d/override.conf"));
    let state = stage.path("/var/lib/coffer/web-1.state.json");
    let catalog = stage.path("/var/cache/coffer/0123abcd.sqlite");
    fs::write(&profile, "name = \"web-1\"\n").unwrap();
    fs::write(&key, "# coffer agent key\n").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir_all(repo.join("data/ab")).unwrap();
    fs::write(repo.join("config"), "{\"format\":\"coffer\",\"version\":1}").unwrap();
    fs::write(repo.join("data/ab/abcdef"), "pack").unwrap();
    fs::create_dir_all(drop_in.parent().unwrap()).unwrap();
    fs::write(&drop_in, "[Service]\nReadWritePaths=/srv/backup/coffer\n").unwrap();
    fs::write(&state, "{}").unwrap();
    fs::write(&catalog, "SQLite").unwrap();

    let out = stage.uninstall(&[]);
    out.expect_ok();
    assert_gone(&stage.path(&format!("{PREFIX}/bin/coffer")));
    assert_gone(&stage.path(UNIT));
    assert_gone(&stage.path(SYSUSERS));
    assert_gone(&stage.path(TMPFILES));
    for (_, p) in COMPLETIONS {
        assert_gone(&stage.path(&format!("{PREFIX}/{p}")));
    }
    let man = stage.path(&format!("{PREFIX}/share/man/man1"));
    let left: Vec<_> = fs::read_dir(&man)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "man pages left: {left:?}");
    assert_gone(&stage.path(&format!("{PREFIX}/share/coffer")));
    for kept in [
        &profile,
        &key,
        &repo.join("data/ab/abcdef"),
        &drop_in,
        &state,
        &catalog,
    ] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    assert_eq!(mode(&key), 0o600);

    // Again, with --purge: state and catalogs go, nothing else.
    let out = stage.uninstall(&["--purge"]);
    out.expect_ok();
    assert_gone(&stage.path("/var/lib/coffer"));
    assert_gone(&stage.path("/var/cache/coffer"));
    for kept in [
        &profile,
        &key,
        &repo.join("config"),
        &repo.join("data/ab/abcdef"),
        &drop_in,
    ] {
        assert!(kept.exists(), "--purge removed {}", kept.display());
    }
    assert_eq!(fs::read_to_string(&key).unwrap(), "# coffer agent key\n");

    // Nothing left to do is fine too.
    stage.uninstall(&["--purge"]).expect_ok();
}

#[test]
fn uninstall_removes_the_empty_folders_it_made() {
    let stage = Stage::new();
    stage.install();
    stage.uninstall(&["--purge"]).expect_ok();
    for gone in [
        "/etc/coffer",
        "/var/lib/coffer",
        "/var/cache/coffer",
        &format!("{PREFIX}/share/coffer"),
        &format!("{PREFIX}/bin/coffer"),
        &format!("/{UNIT}"),
    ] {
        assert_gone(&stage.path(gone));
    }
}

#[test]
fn purge_never_deletes_a_repository_or_a_key_in_the_state_folders() {
    let stage = Stage::new();
    stage.install();
    // Misplaced by an admin: a repository in the state folder, a key in the
    // cache folder.
    let repo = stage.path("/var/lib/coffer/repo");
    fs::create_dir_all(&repo).unwrap();
    fs::write(
        repo.join("config"),
        "{\n  \"format\": \"coffer\",\n  \"version\": 1\n}\n",
    )
    .unwrap();
    let key = stage.path("/var/cache/coffer/old.agent.key");
    fs::write(
        &key,
        "agent_identity = \"AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ\"\n",
    )
    .unwrap();
    let out = stage.uninstall(&["--purge"]);
    assert_eq!(out.code, Some(1), "{}", out.all_output());
    assert!(
        out.stdout.contains("/var/lib/coffer/repo/config"),
        "{}",
        out.all_output()
    );
    assert!(
        out.stdout.contains("/var/cache/coffer/old.agent.key"),
        "{}",
        out.all_output()
    );
    assert!(repo.join("config").exists());
    assert!(key.exists());
    // The rest of the uninstall happened.
    assert_gone(&stage.path(&format!("{PREFIX}/bin/coffer")));

    // Once they are moved away, --purge goes through.
    fs::remove_dir_all(&repo).unwrap();
    fs::remove_file(&key).unwrap();
    stage.uninstall(&["--purge"]).expect_ok();
    assert_gone(&stage.path("/var/lib/coffer"));
    assert_gone(&stage.path("/var/cache/coffer"));
}

/// Every profile shipped in `profiles/` loads with the real parser, so the
/// examples an admin copies are valid as they stand.
#[test]
fn example_profiles_load() {
    let dir = source_root().join("profiles");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for p in EXAMPLES {
        assert!(files.contains(&dir.join(p)), "profiles/{p} is missing");
    }
    let mut failures = Vec::new();
    for f in &files {
        match coffer::config::Profile::load(f) {
            Ok(p) => {
                let file = f.file_name().unwrap().to_string_lossy();
                if EXAMPLES.contains(&file.as_ref()) {
                    // Server examples: absolute paths, keys where install.sh
                    // made room for them.
                    let key = p.agent_key.as_ref().expect("agent_key");
                    assert!(
                        key.starts_with("/etc/coffer/keys/"),
                        "{file}: agent_key {}",
                        key.display()
                    );
                    assert!(!p.auto_init, "{file}: auto_init is for the demo only");
                }
                match file.as_ref() {
                    "six-a-day-s3.toml" => {
                        assert_eq!(p.schedule.max_per_day, 6);
                        assert_eq!(p.retention.keep_within, coffer::time::days(90));
                        assert!(p.repository.starts_with("s3://"));
                    }
                    "nightly-7d.toml" => {
                        assert_eq!(p.schedule.max_per_day, 1);
                        assert_eq!(p.retention.keep_within, coffer::time::days(7));
                    }
                    _ => {}
                }
            }
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "profiles that do not load:\n{}",
        failures.join("\n")
    );
}
