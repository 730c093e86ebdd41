//! Bad input: every case fails with a non-zero exit and a short, clear
//! message naming the thing, and leaves the repository valid.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use crate::env::*;

/// Longest acceptable error output (lines on stderr) for a user error.
const MAX_ERROR_LINES: usize = 4;

#[track_caller]
fn assert_repo_valid(env: &TestEnv) {
    let out = env.check(true);
    assert!(
        out.ok(),
        "the repository must still be valid after the failed command\n{out}"
    );
}

/// A repository with one small snapshot.
fn env_with_snapshot(backend: Backend) -> (TestEnv, PathBuf) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("a.txt"), b"alpha");
    write_file(&src.join("sub/b.txt"), b"beta");
    write_random_file(&src.join("c.bin"), 300 * KIB, 5);
    env.backup(&[&src]);
    (env, src)
}

fn empty_dir(env: &TestEnv) -> PathBuf {
    let t = env.unique_path("restore");
    fs::create_dir(&t).unwrap();
    t
}

fn restore_args(target: &Path, snapshot: &str) -> Vec<OsString> {
    vec![
        "restore".into(),
        snapshot.into(),
        "--target".into(),
        target.into(),
        "--quiet".into(),
    ]
}

fn restore_with_wrong_identity(backend: Backend) {
    let (env, _src) = env_with_snapshot(backend);
    let other = env.home.join("other-operator.key");
    env.generate_identity(&other);
    let target = empty_dir(&env);
    let mut args = restore_args(&target, "latest");
    args.extend(env.repo_flags());
    args.extend(["--identity".into(), other.clone().into_os_string()]);
    let out = env.run(args);
    out.expect_failure().expect_short_stderr(MAX_ERROR_LINES);
    let lower = out.stderr.to_lowercase();
    assert!(
        out.stderr.contains(other.to_str().unwrap()) || lower.contains("identity"),
        "the error should say that this identity cannot decrypt the repository (name the identity)\n{out}"
    );
    assert!(
        regular_files(&target).is_empty(),
        "nothing may be restored with a wrong identity"
    );
    assert_repo_valid(&env);
}

fn restore_with_agent_key_only_asks_for_identity(backend: Backend) {
    let (env, _src) = env_with_snapshot(backend);
    let target = empty_dir(&env);
    let mut args = restore_args(&target, "latest");
    args.extend(env.repo_flags());
    let out = env.run(args);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("identity");
    assert!(
        regular_files(&target).is_empty(),
        "nothing may be restored without the identity"
    );

    // ls needs the identity too.
    let out = env.agent(["ls", "latest", "--quiet"]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("identity");
    assert_repo_valid(&env);
}

// Local only: about the agent key file, refused before the repository is
// opened.
#[test]
fn missing_agent_key_file() {
    let (env, src) = env_with_snapshot(Backend::Local);
    let missing = env.home.join("no-such-agent.key");
    let out = env.run([
        OsStr::new("backup"),
        src.as_os_str(),
        "--quiet".as_ref(),
        "--repo".as_ref(),
        env.repo_url.as_os_str(),
        "--agent-key".as_ref(),
        missing.as_os_str(),
        "--catalog".as_ref(),
        env.catalog.as_os_str(),
    ]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains(missing.to_str().unwrap());

    // The same through the environment variable.
    let out = env.run_with_env(
        [
            OsStr::new("backup"),
            src.as_os_str(),
            "--quiet".as_ref(),
            "--repo".as_ref(),
            env.repo_url.as_os_str(),
        ],
        &[
            ("COFFER_AGENT_KEY", missing.as_os_str()),
            ("COFFER_CATALOG", env.catalog.as_os_str()),
        ],
    );
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains(missing.to_str().unwrap());
    assert_eq!(env.snapshots().len(), 1, "no snapshot may be added");
    assert_repo_valid(&env);
}

// Local only: about the agent key file's mode, refused before the
// repository is opened.
#[test]
fn agent_key_with_loose_mode_is_refused() {
    let (env, src) = env_with_snapshot(Backend::Local);
    chmod(&env.agent_key, 0o644);
    let out = env.backup_raw(&[&src], &["--quiet"]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains(env.agent_key.to_str().unwrap())
        .expect_stderr_contains_any(&["chmod", "0600", "600"]);
    chmod(&env.agent_key, 0o600);
    assert_eq!(
        env.snapshots().len(),
        1,
        "no snapshot may be added with a refused key"
    );
    assert_repo_valid(&env);
}

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

/// A valid profile (relative paths, relative to the profile's folder), with
/// `extra` inserted as line 6.
fn profile_text(extra: &str) -> String {
    format!(
        "name = \"demo\"\n\
         sources = [\"src\"]\n\
         repository = \"repo\"\n\
         agent_key = \"home/agent.key\"\n\
         catalog = \"home/catalog.sqlite\"\n\
         {extra}\n\
         compression = 3\n"
    )
}

fn run_profile(env: &TestEnv, text: &str) -> (Output, PathBuf) {
    let profile = env.unique_path("profile").with_extension("toml");
    fs::write(&profile, text).unwrap();
    let out = env.run([
        OsStr::new("backup"),
        "--quiet".as_ref(),
        "--profile".as_ref(),
        profile.as_os_str(),
    ]);
    (out, profile)
}

fn valid_profile_backs_up_its_sources(backend: Backend) {
    let (env, src) = env_with_snapshot(backend);
    let mut text = profile_text("# nothing extra");
    if backend == Backend::S3 {
        // The S3 server is reached through the AWS variables `command` sets.
        let url = env.repo_url.to_str().unwrap();
        text = text.replace("repository = \"repo\"", &format!("repository = \"{url}\""));
    }
    let (out, _) = run_profile(&env, &text);
    out.expect_ok();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2, "the profile backup adds a snapshot");
    assert_eq!(
        str_field(&snaps[1], "profile"),
        "demo",
        "snapshot profile name: {}",
        snaps[1]
    );
    let paths: Vec<&str> = snaps[1]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| normalize_reported(p.as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        vec![stored_form(&src).to_str().unwrap()],
        "profile sources are relative to the profile's folder"
    );
}

// Local only (this and the next two): profile syntax and values, refused
// while the profile is read, before any repository is opened. A valid
// profile is run on both backends above.
#[test]
fn profile_with_syntax_error_names_file_and_line() {
    let (env, _src) = env_with_snapshot(Backend::Local);
    let text = "name = \"demo\"\nsources = [\"src\"]\n# a comment\nrepository = \"repo\nagent_key = \"home/agent.key\"\n";
    let (out, profile) = run_profile(&env, text);
    out.expect_failure().expect_short_stderr(6);
    assert!(
        matches!(out.code, Some(1) | Some(2)),
        "exit code 1 or 2 expected\n{out}"
    );
    out.expect_stderr_contains(profile.to_str().unwrap())
        .expect_stderr_contains("line 4");
    assert_eq!(env.snapshots().len(), 1);
    assert_repo_valid(&env);
}

#[test]
fn profile_with_unknown_key_names_key_and_line() {
    let (env, _src) = env_with_snapshot(Backend::Local);
    let (out, profile) = run_profile(&env, &profile_text("colour = \"blue\""));
    out.expect_failure().expect_short_stderr(6);
    assert!(
        matches!(out.code, Some(1) | Some(2)),
        "exit code 1 or 2 expected\n{out}"
    );
    out.expect_stderr_contains(profile.to_str().unwrap())
        .expect_stderr_contains("colour")
        .expect_stderr_contains("line 6");
    assert_eq!(env.snapshots().len(), 1);
    assert_repo_valid(&env);
}

#[test]
fn profile_with_bad_value_names_key_and_line() {
    let (env, _src) = env_with_snapshot(Backend::Local);
    let text = profile_text("# compression below is out of range")
        .replace("compression = 3", "compression = 42");
    let (out, profile) = run_profile(&env, &text);
    out.expect_failure().expect_short_stderr(6);
    out.expect_stderr_contains(profile.to_str().unwrap())
        .expect_stderr_contains("compression")
        .expect_stderr_contains("line 7");
    assert_eq!(env.snapshots().len(), 1);
    assert_repo_valid(&env);
}

// ---------------------------------------------------------------------------
// Unreadable source files, full disk, unknown snapshot, bad flags
// ---------------------------------------------------------------------------

/// Tests run as root, who can read any file. The backup runs as root without
/// CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so a mode-000 file (and a mode-000
/// directory) is really unreadable to it.
fn unreadable_source_file_is_listed_and_snapshot_still_created(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("readable.txt"), b"fine");
    write_random_file(&src.join("readable.bin"), 200 * KIB, 8);
    write_file(&src.join("secret-unreadable.txt"), b"you cannot read me");
    chmod(&src.join("secret-unreadable.txt"), 0o000);
    write_file(&src.join("closed-dir/inside.txt"), b"behind a closed door");
    chmod(&src.join("closed-dir"), 0o000);

    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into(), "--json".into()];
    args.extend(env.repo_flags());
    let mut cmd = env.command(&args);
    drop_dac_capabilities(&mut cmd);
    let out = run_command(
        cmd,
        "coffer backup (without CAP_DAC_*)".into(),
        command_timeout(),
    );
    out.expect_code(3);
    out.expect_stderr_contains("secret-unreadable.txt");
    let summary = out.json();
    let skipped: Vec<String> = summary["skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("skipped must be an array\n{out}"))
        .iter()
        .map(|s| {
            assert!(
                s["error"].as_str().map(|e| !e.is_empty()).unwrap_or(false),
                "skipped entry without error: {s}"
            );
            s["path"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        skipped.iter().any(|p| p.ends_with("secret-unreadable.txt")),
        "skipped must list the unreadable file: {skipped:?}"
    );
    assert!(
        skipped.iter().any(|p| p.contains("closed-dir")),
        "skipped must list the unreadable directory: {skipped:?}"
    );
    assert!(
        !skipped
            .iter()
            .any(|p| p.contains("readable.txt") && !p.contains("unreadable")),
        "a readable file was skipped: {skipped:?}"
    );

    let snaps = env.snapshots();
    assert_eq!(
        snaps.len(),
        1,
        "the snapshot must be created despite the unreadable file"
    );
    assert_eq!(str_field(&snaps[0], "id"), str_field(&summary, "snapshot"));
    let target = env.restore("latest");
    let restored = restored_path(&target, &src);
    for rel in ["readable.txt", "readable.bin"] {
        let (s, d) = (src.join(rel), restored.join(rel));
        let diffs = compare_entry(
            Path::new(rel),
            &s,
            &fs::symlink_metadata(&s).unwrap(),
            &d,
            &fs::symlink_metadata(&d).unwrap_or_else(|e| panic!("{rel} not restored: {e}")),
        );
        assert!(diffs.is_empty(), "{diffs:?}");
    }
    let leaked = restored.join("secret-unreadable.txt");
    if leaked.exists() {
        assert_ne!(
            fs::read(&leaked).unwrap(),
            b"you cannot read me",
            "impossible: unreadable content restored"
        );
    }
    assert_repo_valid(&env);
}

/// Restore into a 2 MiB tmpfs of 12 MiB of data (no single file fits). The
/// disk being full is one problem: one clear message, not one per file.
/// (Falls back to RLIMIT_FSIZE on the child when mounting is not permitted.)
// Local only: about the restore target's file system, not the repository.
#[test]
fn restore_to_full_disk_fails_clearly() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    for i in 0..4 {
        write_random_file(&src.join(format!("big-{i}.bin")), 3 * MIB, 70 + i);
    }
    env.backup(&[&src]);

    let small = env.path("small-disk");
    let mount = TmpfsMount::mount(&small, 2 * MIB);
    let target = small.join("target");
    fs::create_dir_all(&target).unwrap();
    let mut args = restore_args(&target, "latest");
    args.extend(env.operator_flags());
    let mut cmd = env.command(&args);
    if mount.is_none() {
        eprintln!(
            "restore_to_full_disk_fails_clearly: tmpfs not available, using RLIMIT_FSIZE = 2 MiB"
        );
        limit_file_size(&mut cmd, 2 * MIB);
    }
    let out = run_command(
        cmd,
        "coffer restore latest (to a 2 MiB file system)".into(),
        command_timeout(),
    );
    out.expect_failure().expect_short_stderr(MAX_ERROR_LINES);
    out.expect_stderr_contains_any(&[
        "no space",
        "space left",
        "disk full",
        "file too large",
        "too large",
    ]);
    drop(mount);
    assert_repo_valid(&env);
}

fn unknown_snapshot_id(backend: Backend) {
    let (env, _src) = env_with_snapshot(backend);
    let target = empty_dir(&env);
    let out = env.operator(restore_args(&target, "deadbeef"));
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("deadbeef");
    // Fewer than 4 hex digits is not a valid prefix.
    let id = str_field(&env.snapshots()[0], "id").to_string();
    let out = env.operator(restore_args(&target, &id[..3]));
    out.expect_failure().expect_short_stderr(MAX_ERROR_LINES);
    assert!(regular_files(&target).is_empty());
    assert_repo_valid(&env);
}

fn missing_repository(backend: Backend) {
    let (env, src) = env_with_snapshot(backend);
    let (nowhere, nowhere_on_disk) = env.sibling_repo("no-such-repo");
    let out = env.run([
        OsStr::new("backup"),
        src.as_os_str(),
        "--quiet".as_ref(),
        "--repo".as_ref(),
        nowhere.as_os_str(),
        "--agent-key".as_ref(),
        env.agent_key.as_os_str(),
        "--catalog".as_ref(),
        env.catalog.as_os_str(),
    ]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains(nowhere.to_str().unwrap());
    assert!(
        !nowhere_on_disk.exists(),
        "backup must not create a repository implicitly"
    );
    assert_repo_valid(&env);
}

// Local only: a usage error, no repository involved.
#[test]
fn bad_flag_is_a_usage_error() {
    let env = TestEnv::new();
    let out = env.run(["backup", "--no-such-flag"]);
    out.expect_code(2);
    out.expect_stderr_contains("--no-such-flag");
}

/// A passphrase-protected identity: works with COFFER_PASSPHRASE; a wrong or
/// missing passphrase is a clear error, not a hang or a crash.
// Local only: about the identity file and its passphrase.
#[test]
fn passphrase_protected_identity() {
    let mut env = TestEnv::new();
    let pass = OsStr::new("correct horse battery staple");
    let out = env.run_with_env(
        [
            OsStr::new("key"),
            "generate".as_ref(),
            "--passphrase".as_ref(),
            "--output".as_ref(),
            env.identity.as_os_str(),
        ],
        &[("COFFER_PASSPHRASE", pass)],
    );
    out.expect_ok();
    env.recipient = out.stdout.trim().to_string();
    assert!(env.recipient.starts_with("age1"), "{out}");
    let text = fs::read(&env.identity).unwrap();
    assert!(
        !String::from_utf8_lossy(&text).contains("AGE-SECRET-KEY-"),
        "a passphrase-protected identity must not hold the secret key in the clear"
    );
    env.init_repo();
    let src = env.path("src");
    write_file(&src.join("f.txt"), b"protected");
    env.backup(&[&src]);

    // `key recipient` with the passphrase prints the same recipient.
    let out = env.run_with_env(
        [
            OsStr::new("key"),
            "recipient".as_ref(),
            "--identity".as_ref(),
            env.identity.as_os_str(),
        ],
        &[("COFFER_PASSPHRASE", pass)],
    );
    out.expect_ok();
    assert_eq!(out.stdout.trim(), env.recipient);

    let restore = |vars: &[(&str, &OsStr)]| {
        let target = empty_dir(&env);
        let mut args = restore_args(&target, "latest");
        args.extend(env.operator_flags());
        (env.run_with_env(args, vars), target)
    };
    let (out, target) = restore(&[("COFFER_PASSPHRASE", pass)]);
    out.expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));

    let (out, _) = restore(&[("COFFER_PASSPHRASE", OsStr::new("wrong"))]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("passphrase");

    // No passphrase and no terminal (stdin is /dev/null): an error, no hang.
    let (out, _) = restore(&[]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("passphrase");
    let out = env.run_with_env(
        {
            let mut a: Vec<OsString> = vec!["check".into()];
            a.extend(env.operator_flags());
            a
        },
        &[("COFFER_PASSPHRASE", pass)],
    );
    out.expect_ok();
}

/// A repository written by a newer coffer (higher format version) is refused
/// with a message that says so; nothing is written to it.
fn newer_repository_format_is_refused(backend: Backend) {
    let (env, src) = env_with_snapshot(backend);
    let config_path = env.repo.join("config");
    let original = fs::read(&config_path).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let version = config
        .get("version")
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("config has no numeric \"version\": {config}"));
    config["version"] = serde_json::Value::from(version + 1000);
    env.replace_object("config", &serde_json::to_vec_pretty(&config).unwrap());

    let out = env.agent(["snapshots", "--quiet"]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("version");
    let before = list_files(&env.repo);
    let out = env.backup_raw(&[&src], &["--quiet"]);
    out.expect_failure()
        .expect_short_stderr(MAX_ERROR_LINES)
        .expect_stderr_contains("version");
    assert_eq!(
        list_files(&env.repo),
        before,
        "a backup to a newer-format repository must not write to it"
    );
    env.replace_object("config", &original);
    assert_repo_valid(&env);
}

/// One duration grammar for every flag and profile key: `--keep-within
/// 1h30m` and `"2 days"` work as `--since "1h30m ago"` always did, and a
/// month (no fixed length) is refused naming the fix.
#[test]
fn every_duration_flag_takes_the_same_grammar() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a"), b"a");
    env.backup(&[&src]);
    for within in ["1h30m", "2 days", "1h 30m", "90d"] {
        let out = env.agent(["forget", "--keep-within", within, "--dry-run", "--json"]);
        out.expect_ok();
        let decisions = out.json()["forget"]["decisions"].clone();
        assert_eq!(decisions[0]["keep"], true, "{within}: kept\n{out}");
    }
    let out = env.agent([
        "--lock-wait",
        "1m30s",
        "forget",
        "--keep-within",
        "1d",
        "--dry-run",
    ]);
    out.expect_ok();
    let out = env.agent(["forget", "--keep-within", "3 months", "--dry-run"]);
    out.expect_failure().expect_stderr_contains("give days");
}

// Everything that reaches the repository runs on both backends; the tests
// with a plain `#[test]` above are local only (see the comment on each).
on_both_backends!(
    restore_with_wrong_identity,
    restore_with_agent_key_only_asks_for_identity,
    valid_profile_backs_up_its_sources,
    unreadable_source_file_is_listed_and_snapshot_still_created,
    unknown_snapshot_id,
    missing_repository,
    newer_repository_format_is_refused,
);
