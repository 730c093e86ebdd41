//! What the CLI says to people: counts that add up (hard links, symlinks,
//! special files, unreadable items), plurals, `--quiet`, and who the audit
//! log names when USER is unset.

use crate::env::*;
use std::ffi::OsString;
use std::os::unix::fs::symlink;

/// A backup without CAP_DAC_*, so mode-000 files are really unreadable
/// (tests run as root); human output, any exit code.
fn backup_as_non_root(env: &TestEnv, src: &std::path::Path, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec!["backup".into(), src.into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend(env.repo_flags());
    let mut cmd = env.command(&args);
    drop_dac_capabilities(&mut cmd);
    run_command(
        cmd,
        "coffer backup (without CAP_DAC_*)".into(),
        command_timeout(),
    )
}

/// Regression: two unreadable files were reported as "1 files … (2 new…)",
/// and hard links were in `files` but in none of new/changed/unchanged.
#[test]
fn backup_counts_add_up_to_what_was_seen() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("ok.txt"), b"fine");
    write_file(&src.join("linked"), b"one inode, two names");
    std::fs::hard_link(src.join("linked"), src.join("second-name")).unwrap();
    symlink("ok.txt", src.join("sym")).unwrap();
    mkfifo(&src.join("fifo"), 0o644);
    for name in ["locked-1", "locked-2"] {
        write_file(&src.join(name), b"secret");
        chmod(&src.join(name), 0o000);
    }
    let out = backup_as_non_root(&env, &src, &[]);
    out.expect_code(3);
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("saved:"))
        .unwrap_or_else(|| panic!("no summary line\n{out}"));
    // 3 files: ok.txt, linked and its second name; the two unreadable ones
    // are neither files nor new.
    assert!(
        line.contains("saved: 3 files (")
            && line.contains("; 2 new, 0 changed, 0 unchanged, 1 hard link)"),
        "{line}"
    );
    // Folders: the source and the folders above it (restored with it).
    assert!(
        line.contains(" folders, 1 symlink, 1 special file, 2 items not readable;"),
        "{line}"
    );
    out.expect_stderr_contains("2 items could not be read");

    let json = backup_as_non_root(&env, &src, &["--json"]);
    json.expect_code(3);
    let v = json.json();
    let n = |k: &str| u64_field(&v, k);
    assert_eq!(
        n("files"),
        n("files_new") + n("files_changed") + n("files_unchanged") + n("hardlinks"),
        "{v}"
    );
    assert_eq!((n("hardlinks"), n("symlinks"), n("special")), (1, 1, 1));
    assert_eq!(v["skipped"].as_array().map(Vec::len), Some(2));
}

/// "1 files", "1 entries": one of a thing is singular, everywhere.
#[test]
fn one_of_a_thing_is_singular() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("only"), b"x");
    let out = backup_as_non_root(&env, &src, &[]);
    out.expect_ok();
    assert!(out.stdout.contains("saved: 1 file ("), "{}", out.stdout);

    let target = env.path("out");
    let t = target.to_str().unwrap();
    let rel = src.join("only");
    let rel = rel.to_str().unwrap();
    let dry = env.operator([
        "restore",
        "latest",
        "--target",
        t,
        "--include",
        rel,
        "--dry-run",
    ]);
    dry.expect_ok();
    assert!(dry.stdout.contains(": 1 entry,"), "{}", dry.stdout);
    let restored = env.operator(["restore", "latest", "--target", t, "--include", rel]);
    restored.expect_ok();
    assert!(
        restored.stdout.contains(": 1 file (") && !restored.stdout.contains("1 files"),
        "{}",
        restored.stdout
    );
    let check = env.operator(["check"]);
    check.expect_ok();
    assert!(
        check.stdout.contains("checked 1 snapshot,"),
        "{}",
        check.stdout
    );
}

/// `--quiet` silenced progress only; forget and prune printed their tables.
#[test]
fn quiet_forget_and_prune_print_nothing_but_json_still_prints() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"1");
    env.backup(&[&src]);
    write_file(&src.join("f"), b"2");
    env.backup(&[&src]);
    let forget = env.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "1",
        "--prune",
        "--quiet",
    ]);
    forget.expect_ok();
    assert_eq!(forget.stdout, "", "{forget}");
    let prune = env.agent(["prune", "--quiet"]);
    prune.expect_ok();
    assert_eq!(prune.stdout, "", "{prune}");
    let json = env.agent(["prune", "--quiet", "--json"]);
    json.expect_ok();
    assert!(json.json().is_object(), "{json}");
    let check = env.operator(["check", "--quiet"]);
    check.expect_ok();
    assert_eq!(check.stdout, "", "{check}");
    // cat exists to print content: --quiet keeps it.
    let rel = src.join("f");
    let cat = env.operator(["cat", "latest", rel.to_str().unwrap(), "--quiet"]);
    cat.expect_ok();
    assert_eq!(cat.stdout, "2");
}

/// With USER unset (the tests' clean environment), the actor was `uid0@…`;
/// the system knows uid 0 as root.
#[test]
fn the_audit_actor_is_the_system_user_name_without_user() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"x");
    env.backup(&[&src]);
    let rel = src.join("f");
    env.operator(["cat", "latest", rel.to_str().unwrap()])
        .expect_ok();
    let audit = env.operator(["audit", "--json"]);
    audit.expect_ok();
    let actor = audit.json()[0]["actor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let want = coffer::host::user_name(uid).unwrap_or_else(|| format!("uid{uid}"));
    assert!(actor.starts_with(&format!("{want}@")), "{actor}");
    if uid == 0 {
        assert!(actor.starts_with("root@"), "{actor}");
    }
}
