//! Disaster recovery from an empty home, step by step as README's operator
//! restore guide says: the server (agent key only) made the backups; the
//! operator's new machine has nothing but the repository's address (plus the
//! S3 variables), and the identity file. No catalog, no agent key, no cache
//! settings: the catalog goes to the default place under the new HOME.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::env::*;
use crate::roundtrip::finish_tree;

const FIRST: &str = "2026-01-10T10:00:00Z";
const SECOND: &str = "2026-01-10T14:00:00Z";
const BETWEEN: &str = "2026-01-10T12:00:00Z";

/// The operator's new machine: an empty HOME and the few variables the
/// guide's step 1 names.
struct Machine {
    home: PathBuf,
    vars: Vec<(OsString, OsString)>,
}

impl Machine {
    /// A new, empty HOME inside the test's temp dir, the identity file copied
    /// into it, and `COFFER_IDENTITY`, `COFFER_REPO` (plus the S3 server's
    /// `AWS_*` variables) set: nothing else.
    fn new(env: &TestEnv, repo: OsString, identity: &Path) -> Machine {
        let home = env.unique_path("new-machine").join("home");
        fs::create_dir_all(&home).unwrap();
        let key = home.join("operator.key");
        fs::copy(identity, &key).unwrap();
        chmod(&key, 0o600);
        let mut vars: Vec<(OsString, OsString)> = vec![
            ("COFFER_IDENTITY".into(), key.into()),
            ("COFFER_REPO".into(), repo),
        ];
        vars.extend(
            env.backend_env()
                .into_iter()
                .map(|(k, v)| (OsString::from(k), v)),
        );
        Machine { home, vars }
    }

    fn command(&self, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new(COFFER);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", &self.home)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "0")
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.home)
            .args(args);
        cmd
    }

    /// `coffer ARGS` on this machine; checks it did not panic.
    fn run(&self, args: &[&str]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.run_os(&args)
    }

    fn run_os(&self, args: &[&OsStr]) -> Output {
        let cmdline = format!(
            "coffer {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = run_command(self.command(args), cmdline, command_timeout());
        out.expect_no_panic();
        out
    }

    /// The catalog's default place: `~/.cache/coffer/<repository id>.sqlite`.
    fn default_catalog(&self, repo_id: &str) -> PathBuf {
        self.home
            .join(".cache")
            .join("coffer")
            .join(format!("{repo_id}.sqlite"))
    }
}

/// The repository id, from its plaintext `config` object.
fn repo_id(env: &TestEnv) -> String {
    let config: Value =
        serde_json::from_slice(&fs::read(env.repo.join("config")).unwrap()).unwrap();
    config["id"].as_str().unwrap().to_string()
}

/// The server's data, version one: a mixed data set plus a symlink, a hard
/// link, an empty file, a fifo, and files that change for version two.
fn make_source(env: &TestEnv) -> PathBuf {
    let src = env.path("srv");
    make_mixed_dataset(&src.join("data"), 3 * MIB, 4242);
    write_file(&src.join("www/index.html"), b"<h1>version one</h1>\n");
    write_file(&src.join("www/gone.txt"), b"only in the first snapshot\n");
    write_file(&src.join("www/empty"), b"");
    std::os::unix::fs::symlink("index.html", src.join("www/home.html")).unwrap();
    fs::hard_link(src.join("www/index.html"), src.join("www/index-hard.html")).unwrap();
    mkfifo(&src.join("www/pipe"), 0o640);
    finish_tree(&src, &[]);
    src
}

/// Version two: one file changed, one removed, one added.
fn change_source(src: &Path) {
    // Rewritten in place: the hard link keeps sharing the inode.
    fs::write(
        src.join("www/index.html"),
        b"<h1>version two, longer</h1>\n",
    )
    .unwrap();
    fs::remove_file(src.join("www/gone.txt")).unwrap();
    write_file(&src.join("www/added.txt"), b"new in the second snapshot\n");
    finish_tree(src, &[]);
}

/// The server backs up twice (agent key only, at fixed times four hours
/// apart); returns the snapshot ids (64 hex), oldest first.
fn server_backups(env: &TestEnv, src: &Path) -> [String; 2] {
    let mut ids = Vec::new();
    for (time, change) in [(FIRST, false), (SECOND, true)] {
        if change {
            change_source(src);
        }
        let out = env.backup_raw(&[src], &["--time", time]);
        out.expect_ok();
        let v = out.json();
        check_backup_json(&v, &out);
        ids.push(str_field(&v, "snapshot").to_string());
    }
    [ids[0].clone(), ids[1].clone()]
}

/// The guide, steps 1 to 4, on a machine with nothing but the identity and
/// the repository's address.
fn recover(env: &TestEnv, m: &Machine, src: &Path, ids: &[String; 2]) {
    let stored = stored_form(src).to_string_lossy().into_owned();
    let repo_id = repo_id(env);
    assert!(
        !m.home.join(".cache").exists(),
        "the new machine starts with no cache"
    );

    // Step 2: choose a snapshot.
    let out = m.run(&["snapshots", "--json"]);
    out.expect_ok();
    let snaps = out.json();
    let snaps = snaps.as_array().expect("snapshots --json is an array");
    assert_eq!(snaps.len(), 2, "{out}");
    for (s, id) in snaps.iter().zip(ids) {
        assert_eq!(str_field(s, "id"), id, "oldest first\n{out}");
        assert_eq!(str_field(s, "state"), "complete", "{out}");
        assert_eq!(s["paths"][0].as_str(), Some(src.to_str().unwrap()), "{out}");
    }
    assert_eq!(str_field(&snaps[0], "time"), FIRST, "{out}");
    assert_eq!(str_field(&snaps[1], "time"), SECOND, "{out}");
    let catalog = m.default_catalog(&repo_id);
    assert!(
        catalog.is_file(),
        "the catalog must be made at its default place {}",
        catalog.display()
    );
    let out = m.run(&["snapshots", "--utc"]);
    out.expect_ok();
    for id in ids {
        assert!(out.stdout.contains(&id[..8]), "{out}");
    }
    assert!(out.stdout.contains("2026-01-10 14:00:00"), "{out}");

    // The catalog is a cache: rebuild it from the repository.
    let out = m.run(&["catalog", "rebuild"]);
    out.expect_ok();
    assert!(
        out.stdout.contains(catalog.to_str().unwrap()) && out.stdout.contains("2 snapshots"),
        "catalog rebuild must say where and what it rebuilt\n{out}"
    );
    assert!(!out.stdout.contains("needs the identity"), "{out}");
    let out = m.run(&["catalog", "rebuild", "--json"]);
    out.expect_ok();
    let v = out.json();
    assert_eq!(v["snapshots"], 2, "{out}");
    assert!(u64_field(&v, "blobs") > 0, "{out}");
    assert!(
        u64_field(&v, "files") > 0,
        "with the identity the file cache is rebuilt\n{out}"
    );
    assert_eq!(v["catalog"].as_str(), catalog.to_str(), "{out}");

    // Step 3: look inside.
    let out = m.run(&["ls", "latest"]);
    out.expect_ok();
    assert!(
        out.stdout.contains(&format!("/{stored}/www/added.txt")),
        "{out}"
    );
    let www = format!("{stored}/www");
    let out = m.run(&["ls", "latest", &www, "--json"]);
    out.expect_ok();
    let rows = out.json();
    let paths: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_field(r, "path"))
        .collect();
    for name in [
        "index.html",
        "index-hard.html",
        "home.html",
        "empty",
        "pipe",
        "added.txt",
    ] {
        assert!(
            paths.contains(&format!("{www}/{name}").as_str()),
            "ls latest {www} must list {name}\n{out}"
        );
    }
    assert!(!paths.iter().any(|p| p.ends_with("gone.txt")), "{out}");
    assert!(paths.iter().all(|p| p.starts_with(&www)), "{out}");

    // Step 4: restore the newest, verified, equal to the source.
    let target = m.home.parent().unwrap().join("restore");
    let out = m.run_os(&[
        "restore".as_ref(),
        "latest".as_ref(),
        "--target".as_ref(),
        target.as_os_str(),
        "--verify".as_ref(),
    ]);
    out.expect_ok();
    assert!(out.stdout.contains(&ids[1][..8]), "{out}");
    assert!(out.stdout.contains("read back and verified"), "{out}");
    assert_trees_equal(src, &restored_path(&target, src));

    // A time between the two snapshots picks the older one.
    let older = m.home.parent().unwrap().join("restore-older");
    let out = m.run_os(&[
        "restore".as_ref(),
        "--at".as_ref(),
        BETWEEN.as_ref(),
        "--target".as_ref(),
        older.as_os_str(),
    ]);
    out.expect_ok();
    assert!(
        out.stdout.contains(&ids[0][..8]),
        "--at {BETWEEN} must pick the first snapshot\n{out}"
    );
    let w = restored_path(&older, src).join("www");
    assert_eq!(
        fs::read(w.join("index.html")).unwrap(),
        b"<h1>version one</h1>\n"
    );
    assert_eq!(
        fs::read(w.join("gone.txt")).unwrap(),
        b"only in the first snapshot\n"
    );
    assert!(!w.join("added.txt").exists());

    // One file to standard output, also through a hard link's second name,
    // and from the older snapshot by time.
    let v2 = fs::read(src.join("www/index.html")).unwrap();
    for name in ["index.html", "index-hard.html"] {
        let out = m.run(&["cat", "latest", &format!("{www}/{name}")]);
        out.expect_ok();
        assert_eq!(out.stdout.as_bytes(), v2, "{out}");
    }
    let out = m.run(&[
        "cat",
        "latest",
        &format!("/{www}/index.html"),
        "--at",
        BETWEEN,
    ]);
    out.expect_ok();
    assert_eq!(out.stdout, "<h1>version one</h1>\n", "{out}");
    // A larger file of several chunks.
    let log = "data/logs/app00.log";
    let out = m.run(&["cat", "latest", &format!("{stored}/{log}")]);
    out.expect_ok();
    assert!(
        out.stdout.as_bytes() == fs::read(src.join(log)).unwrap(),
        "cat of {log} differs from the source\n{}",
        out.cmdline
    );
}

/// The guide on a machine with nothing: on a local folder (as a `file://`
/// URL) and on the in-process S3 server over TLS.
fn disaster_recovery_from_an_empty_home(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = make_source(&env);
    let ids = server_backups(&env, &src);
    let repo: OsString = match backend {
        Backend::Local => format!("file://{}", env.repo.display()).into(),
        Backend::S3 => env.repo_url.clone(),
    };
    let m = Machine::new(&env, repo, &env.identity);
    recover(&env, &m, &src, &ids);
    // Nothing but the identity was needed: no agent key on the new machine.
    assert!(
        !m.vars.iter().any(|(k, _)| k == "COFFER_AGENT_KEY"),
        "the new machine must not have the agent key"
    );
}

on_both_backends!(disaster_recovery_from_an_empty_home);

/// The same with a passphrase-protected identity (an age `-p` file), the
/// passphrase in COFFER_PASSPHRASE; without it (and no terminal) or with a
/// wrong one, a clear error that says what to do.
#[test]
fn disaster_recovery_with_a_passphrase_protected_identity() {
    let mut env = TestEnv::new();
    let pass = OsStr::new("correct horse battery staple");
    let out = env.run_with_env(
        [
            OsStr::new("key"),
            "generate".as_ref(),
            "--output".as_ref(),
            env.identity.as_os_str(),
            "--passphrase".as_ref(),
        ],
        &[("COFFER_PASSPHRASE", pass)],
    );
    out.expect_ok();
    env.recipient = out.stdout.trim().to_string();
    assert!(env.recipient.starts_with("age1"), "{out}");
    assert!(
        fs::read(&env.identity)
            .unwrap()
            .starts_with(b"age-encryption.org/"),
        "a protected identity is an age file"
    );
    env.init_repo();
    let src = make_source(&env);
    let ids = server_backups(&env, &src);

    let repo: OsString = format!("file://{}", env.repo.display()).into();
    let mut m = Machine::new(&env, repo, &env.identity);

    // No passphrase and no terminal to ask on: a clear error.
    let mut cmd = m.command(&[OsStr::new("ls"), "latest".as_ref()]);
    // SAFETY: setsid is async-signal-safe; it drops the controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = run_command(
        cmd,
        "coffer ls latest (no passphrase)".into(),
        command_timeout(),
    );
    out.expect_failure();
    out.expect_short_stderr(2);
    out.expect_stderr_contains("COFFER_PASSPHRASE");

    m.vars
        .push(("COFFER_PASSPHRASE".into(), "wrong passphrase".into()));
    let out = m.run(&["snapshots"]);
    out.expect_failure();
    out.expect_short_stderr(2);
    out.expect_stderr_contains("wrong passphrase");

    m.vars.pop();
    m.vars.push(("COFFER_PASSPHRASE".into(), pass.into()));
    recover(&env, &m, &src, &ids);
}
