//! Recovery after an attack, on moto over TLS with Object Lock: the
//! attacker holds the agent key and the server's storage credentials,
//! plants a snapshot, forgets and prunes everything, deletes every object
//! and forges one; the operator reads the history as it stood before
//! (`--as-of`), restores from it, and makes it current again (`undelete`).
//! Key lines are printed with an `attack:` prefix (`-- --nocapture`).

use crate::env::{TestEnv, assert_trees_equal, restored_path, write_random_file};
use crate::object_lock::Locked;
use bytes::Bytes;
use jiff::Timestamp;
use std::ffi::OsStr;
use std::path::Path;

/// A pause longer than storage's one-second resolution of write times, so
/// that a time taken between two steps falls strictly between them.
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(1200));
}

/// `snapshots --json` ids, sorted.
fn snapshot_ids(t: &Locked, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["snapshots", "--json"];
    args.extend(extra);
    let out = t.operator(args);
    out.expect_ok();
    let mut ids: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn backup_of(t: &Locked, dir: &Path) -> String {
    let out = t.agent([OsStr::new("backup"), dir.as_os_str(), OsStr::new("--json")]);
    out.expect_ok();
    out.json()["snapshot"].as_str().unwrap().to_string()
}

/// Every version and marker under the repository, as (key, version, marker, latest).
fn versions(t: &Locked) -> Vec<(String, String, bool, bool)> {
    let mut v: Vec<_> = t
        .store()
        .list_versions("")
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.version, v.delete_marker, v.latest))
        .collect();
    v.sort();
    v
}

fn restore_into(t: &Locked, snapshot: &str, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let target = t.env.unique_path(name);
    std::fs::create_dir(&target).unwrap();
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("restore"),
        OsStr::new(snapshot),
        OsStr::new("--target"),
        target.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    t.operator(args).expect_ok();
    target
}

// One scenario end to end: each step needs the state the one before left.
#[test]
fn after_an_attack_the_history_is_read_as_of_before_and_undeleted() {
    let Some(t) = Locked::new("attacked") else {
        return;
    };
    t.init();
    let first = t.env.root.join("first");
    let second = t.env.root.join("second");
    std::fs::create_dir_all(first.join("sub")).unwrap();
    std::fs::create_dir_all(&second).unwrap();
    write_random_file(&first.join("big.bin"), 700_000, 1);
    std::fs::write(first.join("sub/a.txt"), "first backup").unwrap();
    write_random_file(&second.join("other.bin"), 300_000, 2);
    let t1 = backup_of(&t, &first);
    let t2 = backup_of(&t, &second);
    let mut real = vec![t1.clone(), t2.clone()];
    real.sort();
    tick();
    let before = Timestamp::now();
    let when = before.to_string();
    eprintln!("attack: backups {t1} and {t2}; the attack starts after {when}");
    tick();

    // The attacker, with the agent key and the server's credentials.
    let empty = t.env.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    t.agent([
        OsStr::new("backup"),
        empty.as_os_str(),
        OsStr::new("--time"),
        OsStr::new("2099-01-01T00:00:00Z"),
    ])
    .expect_ok();
    t.agent(["forget", "--keep-within", "1s", "--keep-last", "0", "--all"])
        .expect_ok();
    t.agent(["prune", "--grace", "0s", "--max-unused", "0"])
        .expect_ok();
    let store = t.store();
    let current = store.list("").unwrap();
    for o in &current {
        store.delete(&o.key).unwrap();
    }
    let forged = format!("snapshots/{}", "f".repeat(64));
    store.put(&forged, Bytes::from_static(b"forged")).unwrap();
    store.put("keyring", Bytes::from_static(b"forged")).unwrap();
    eprintln!(
        "attack: planted a 2099 snapshot, forgot and pruned, deleted {} objects, forged {forged} and the keyring",
        current.len()
    );
    let now = t.operator(["snapshots"]);
    now.expect_failure();
    eprintln!(
        "attack: without --as-of: {}",
        now.stderr.lines().last().unwrap_or("")
    );

    // The operator reads the history as it stood before.
    let listed = snapshot_ids(&t, &["--as-of", &when]);
    assert_eq!(listed, real, "the real history, not the planted snapshot");
    let text = t.operator(["snapshots", "--as-of", &when]);
    text.expect_ok();
    for line in text.stdout.lines() {
        eprintln!("attack: snapshots --as-of: {line}");
    }
    let target = restore_into(&t, &t1, "as-of", &["--as-of", &when]);
    assert_trees_equal(&first, &restored_path(&target, &first));
    eprintln!("attack: restore --as-of {when} {t1}: byte-identical");
    // Every other reading command reads the same past.
    let ls = t.operator(["ls", &t1, "--as-of", &when]);
    ls.expect_ok();
    assert!(ls.stdout.contains("a.txt"), "{ls}");
    let a_txt = first.join("sub/a.txt");
    let a_txt = a_txt.to_str().unwrap();
    let cat = t.operator(["cat", &t1, a_txt, "--as-of", &when]);
    cat.expect_ok();
    assert_eq!(cat.stdout, "first backup");
    let find = t.operator(["find", "a.txt", "--as-of", &when]);
    find.expect_ok();
    assert!(find.stdout.contains("a.txt"), "{find}");
    let diff = t.operator(["diff", &t1, &t2, "--as-of", &when, "--json"]);
    diff.expect_ok();
    assert!(
        diff.json()["summary"]["added"].as_u64().unwrap() > 0,
        "{diff}"
    );
    let tar = t.env.root.join("t1.tar");
    t.operator([
        OsStr::new("export"),
        OsStr::new(&t1),
        OsStr::new("--output"),
        tar.as_os_str(),
        OsStr::new("--as-of"),
        OsStr::new(&when),
    ])
    .expect_ok();
    assert!(std::fs::metadata(&tar).unwrap().len() > 700_000);
    let check = t.operator(["check", "--read-data", "--as-of", &when]);
    check.expect_ok();
    assert!(
        check.stdout.contains("locks are not checked with --as-of"),
        "{check}"
    );

    // A dry run changes nothing.
    let untouched = versions(&t);
    let dry = t.operator(["undelete", "--as-of", &when, "--dry-run", "--json"]);
    dry.expect_ok();
    let plan = dry.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(versions(&t), untouched, "a dry run writes nothing");
    let hide = plan["plan"]["hide"].as_array().unwrap();
    assert_eq!(hide.len(), 1, "{plan}");
    assert_eq!(hide[0], forged.as_str());
    let restore = plan["plan"]["restore"].as_array().unwrap();
    for key in [format!("snapshots/{t1}"), format!("snapshots/{t2}")] {
        assert!(
            restore
                .iter()
                .any(|r| r["key"] == key.as_str() && r["by"] == "remove_markers"),
            "{key}: {plan}"
        );
    }
    assert!(
        restore
            .iter()
            .any(|r| r["key"] == "keyring" && r["by"] == "copy"),
        "the overwritten keyring is copied back: {plan}"
    );

    // The real run: the history is whole again, without --as-of.
    let out = t.operator(["undelete", "--as-of", &when]);
    out.expect_ok();
    for line in out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("restore data/"))
    {
        eprintln!("attack: undelete: {line}");
    }
    assert_eq!(snapshot_ids(&t, &[]), real);
    t.operator(["check", "--read-data"]).expect_ok();
    let target = restore_into(&t, &t2, "after", &[]);
    assert_trees_equal(&second, &restored_path(&target, &second));
    assert_eq!(
        store.stat(&forged).unwrap(),
        None,
        "the forged object is hidden"
    );
    eprintln!(
        "attack: after undelete: snapshots {real:?}, check --read-data ok, restore byte-identical"
    );
    // Nothing is left to do.
    let again = t.operator(["undelete", "--as-of", &when, "--dry-run", "--json"]);
    again.expect_ok();
    let again = again.json();
    assert!(
        again["plan"]["restore"].as_array().unwrap().is_empty(),
        "{again}"
    );
    assert!(
        again["plan"]["hide"].as_array().unwrap().is_empty(),
        "{again}"
    );
}

#[test]
fn as_of_and_undelete_refuse_bad_inputs() {
    // A local folder keeps no versions.
    let env = TestEnv::with_repo();
    let out = env.operator(["snapshots", "--as-of", "1h ago"]);
    out.expect_code(1).expect_short_stderr(2);
    out.expect_stderr_contains("needs S3 storage with versioning");
    // Usage errors: undelete without a time, --as-of on a writing command.
    let out = env.operator(["undelete"]);
    out.expect_code(2).expect_short_stderr(2);
    out.expect_stderr_contains("undelete needs --as-of");
    let src = env.source_dir("src");
    let out = env.agent([
        OsStr::new("backup"),
        src.as_os_str(),
        OsStr::new("--as-of"),
        OsStr::new("1h ago"),
    ]);
    out.expect_code(2).expect_short_stderr(2);
    out.expect_stderr_contains("--as-of reads the repository");
    env.agent(["forget", "--as-of", "now"]).expect_code(2);
    env.operator(["snapshots", "--as-of", "not a time"])
        .expect_code(2);

    let Some(t) = Locked::new("as-of-bad") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one")]);
    // A bucket without versioning keeps nothing earlier.
    let Some(plain) = Locked::new("as-of-plain") else {
        return;
    };
    plain
        .agent([
            "init",
            "--create-bucket",
            "--recipient",
            &plain.env.recipient,
        ])
        .expect_ok();
    let out = plain.operator(["snapshots", "--as-of", "now"]);
    out.expect_code(1).expect_short_stderr(2);
    out.expect_stderr_contains("needs S3 storage with versioning");
    drop(plain);
    // Before the repository existed.
    let out = t.operator(["snapshots", "--as-of", "2001-01-01T00:00:00Z"]);
    out.expect_code(1).expect_short_stderr(2);
    // The one form for people (tests run without TZ: UTC).
    out.expect_stderr_contains("nothing existed at 2001-01-01 00:00:00 UTC");
    // The agent key reads nothing, and may not roll history back.
    let out = t.agent(["undelete", "--as-of", "now", "--dry-run"]);
    out.expect_code(1);
    out.expect_stderr_contains("undelete is the operator's");
    // A reading command as of now writes nothing: restore's audit event
    // is skipped with a note.
    let target = t.env.unique_path("now");
    std::fs::create_dir(&target).unwrap();
    let before = versions(&t);
    let out = t.operator([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
        OsStr::new("--as-of"),
        OsStr::new("now"),
    ]);
    out.expect_ok();
    out.expect_stderr_contains("not recorded in the audit log (--as-of writes nothing)");
    assert_eq!(versions(&t), before, "nothing written");
    // Undelete as of now has nothing to do, and says so in --json.
    let out = t.operator(["undelete", "--as-of", "now", "--json"]);
    out.expect_ok();
    let done = out.json();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["restored"], 0);
    assert_eq!(done["hidden"], 0);
    assert_eq!(done["failed"].as_array().unwrap().len(), 0);
    assert!(
        done["plan"]["restore"].as_array().unwrap().is_empty(),
        "{done}"
    );
    assert!(done["plan"]["unchanged"].as_u64().unwrap() >= 5, "{done}");
}
