//! `coffer find` and `coffer diff` on a history the test makes: exact
//! versions, snapshots and changes, read from `--json`.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::env::*;

/// `backup PATHS --time T` as the agent; returns the snapshot's short id.
#[track_caller]
fn backup_at(env: &TestEnv, paths: &[&Path], time: &str) -> String {
    env.backup_raw(paths, &["--time", time]).expect_ok();
    let snaps = env.snapshots();
    let last = snaps
        .iter()
        .find(|s| str_field(s, "time").starts_with(&time[..19]))
        .unwrap_or_else(|| panic!("no snapshot at {time}: {snaps:?}"));
    str_field(last, "short_id").to_string()
}

#[track_caller]
fn json_of(env: &TestEnv, args: &[&str]) -> Value {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.push("--json".as_ref());
    let out = env.operator(all);
    out.expect_ok();
    out.json()
}

/// `diff --json`, keeping only the paths under `prefix` (folders above the
/// test's own, such as /tmp, change as other tests run).
#[track_caller]
fn diff_under(env: &TestEnv, a: &str, b: &str, prefix: &str) -> Value {
    let v = json_of(env, &["diff", a, b]);
    let under = |p: &str| p == prefix || p.starts_with(&format!("{prefix}/"));
    let paths = |key: &str| -> Vec<Value> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("diff --json: {key:?} is not an array: {v}"))
            .iter()
            .filter(|p| under(p.as_str().unwrap_or("")))
            .cloned()
            .collect()
    };
    let changed: Vec<Value> = v["changed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| under(str_field(c, "path")))
        .cloned()
        .collect();
    json!({"added": paths("added"), "removed": paths("removed"), "changed": changed})
}

fn set_file(path: &Path, data: &[u8], secs: i64, nanos: u32) {
    write_file(path, data);
    set_mtime(path, secs, nanos);
}

#[test]
fn find_and_diff_follow_a_known_history() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    let s = stored_form(&src).display().to_string();
    let t1 = "2026-01-01T00:00:00Z";
    let t2 = "2026-01-02T00:00:00Z";
    let t3 = "2026-01-03T00:00:00Z";

    // Snapshot 1.
    set_file(&src.join("keep.txt"), b"kept\n", 1_600_000_000, 0);
    set_file(&src.join("change.txt"), b"one\n", 1_700_000_000, 0);
    set_file(
        &src.join("remove.txt"),
        b"removed later\n",
        1_700_000_000,
        0,
    );
    set_file(
        &src.join("sub/x.conf"),
        b"a = 1\n",
        1_700_000_000,
        123_456_789,
    );
    set_mtime(&src.join("sub"), 1_700_000_000, 0);
    set_mtime(&src, 1_700_000_000, 0);
    let id1 = backup_at(&env, &[&src], t1);

    // Snapshot 2: a file changed (size, content, time), one added, one
    // removed, one chmod'ed.
    set_file(&src.join("change.txt"), b"two two\n", 1_700_100_000, 0);
    set_file(&src.join("new.txt"), b"new\n", 1_700_100_000, 0);
    fs::remove_file(src.join("remove.txt")).unwrap();
    chmod(&src.join("keep.txt"), 0o600);
    set_mtime(&src, 1_700_100_000, 0);
    let id2 = backup_at(&env, &[&src], t2);

    // Snapshot 3: nothing changed.
    let id3 = backup_at(&env, &[&src], t3);

    let snap = |id: &str, t: &str| json!({"id": id, "time": t});
    assert_eq!(
        json_of(&env, &["find", "change.txt"]),
        json!([{"path": format!("{s}/change.txt"), "versions": [
            {"size": 4, "mtime": "2023-11-14T22:13:20Z", "type": "file", "snapshots": [snap(&id1, t1)]},
            {"size": 8, "mtime": "2023-11-16T02:00:00Z", "type": "file",
             "snapshots": [snap(&id2, t2), snap(&id3, t3)]},
        ]}]),
        "find change.txt"
    );
    let conf = json!([{"path": format!("{s}/sub/x.conf"), "versions": [
        {"size": 6, "mtime": "2023-11-14T22:13:20.123456789Z", "type": "file",
         "snapshots": [snap(&id1, t1), snap(&id2, t2), snap(&id3, t3)]},
    ]}]);
    assert_eq!(json_of(&env, &["find", "*.conf"]), conf, "find by name");
    assert_eq!(
        json_of(&env, &["find", &format!("/{s}/sub/*")]),
        conf,
        "find by path"
    );
    assert_eq!(
        json_of(&env, &["find", "remove.txt"]),
        json!([{"path": format!("{s}/remove.txt"), "versions": [
            {"size": 14, "mtime": "2023-11-14T22:13:20Z", "type": "file", "snapshots": [snap(&id1, t1)]},
        ]}]),
        "find of a removed file"
    );
    // A chmod alone is not a new version.
    let keep = json_of(&env, &["find", "keep.txt"]);
    assert_eq!(
        keep[0]["versions"].as_array().map(Vec::len),
        Some(1),
        "{keep}"
    );
    assert_eq!(json_of(&env, &["find", "nothing-*"]), json!([]), "no match");
    // `*` does not cross '/': a path pattern matches whole paths only.
    assert_eq!(json_of(&env, &["find", &format!("{s}/*.conf")]), json!([]));

    assert_eq!(
        diff_under(&env, &id1, &id2, &s),
        json!({
            "added": [format!("{s}/new.txt")],
            "removed": [format!("{s}/remove.txt")],
            "changed": [
                {"path": s, "what": ["mtime"]},
                {"path": format!("{s}/change.txt"), "what": ["size", "content", "mtime"]},
                {"path": format!("{s}/keep.txt"), "what": ["mode"]},
            ],
        }),
        "diff 1 → 2"
    );
    assert_eq!(
        diff_under(&env, &id2, &id3, &s),
        json!({"added": [], "removed": [], "changed": []}),
        "diff of unchanged snapshots"
    );
    // Backwards, and by `latest`.
    assert_eq!(
        diff_under(&env, "latest", &id1, &s),
        json!({
            "added": [format!("{s}/remove.txt")],
            "removed": [format!("{s}/new.txt")],
            "changed": [
                {"path": s, "what": ["mtime"]},
                {"path": format!("{s}/change.txt"), "what": ["size", "content", "mtime"]},
                {"path": format!("{s}/keep.txt"), "what": ["mode"]},
            ],
        }),
        "diff latest → 1"
    );
    let summary = json_of(&env, &["diff", &id1, &id2])["summary"].clone();
    assert!(summary["added"].as_u64() >= Some(1), "{summary}");

    // Text output: one line per change, then the counts.
    let out = env.operator(["diff", id1.as_str(), id2.as_str()]);
    out.expect_ok();
    assert!(out.stdout.contains(&format!("+  /{s}/new.txt")), "{out}");
    assert!(out.stdout.contains(&format!("-  /{s}/remove.txt")), "{out}");
    assert!(
        out.stdout
            .contains(&format!("M  /{s}/change.txt  (size, content, mtime)")),
        "{out}"
    );
    let out = env.operator(["find", "change.txt"]);
    out.expect_ok();
    assert!(
        out.stdout.contains(&id3) && out.stdout.contains(&format!("/{s}/change.txt")),
        "{out}"
    );

    // Snapshot 4: other bytes of the same size, the old time put back: a new
    // version, and a change of content alone.
    set_file(&src.join("keep.txt"), b"KEPT\n", 1_600_000_000, 0);
    set_mtime(&src, 1_700_100_000, 0);
    let id4 = backup_at(&env, &[&src], "2026-01-04T00:00:00Z");
    assert_eq!(
        diff_under(&env, &id3, &id4, &s),
        json!({"added": [], "removed": [], "changed": [
            {"path": format!("{s}/keep.txt"), "what": ["content"]},
        ]}),
        "diff 3 → 4"
    );
    let keep = json_of(&env, &["find", "keep.txt"]);
    let held: Vec<usize> = keep[0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["snapshots"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        held,
        vec![3, 1],
        "keep.txt: one version in 1-3, another in 4: {keep}"
    );

    // Without the identity: refused with the hint.
    env.agent(["find", "x"])
        .expect_failure()
        .expect_stderr_contains("--identity");
}

/// Two sources where walk order and path order disagree (`www-old` is
/// walked before `www/app`, '-' < '/'): diff still pairs every path.
#[test]
fn diff_of_sources_walked_out_of_path_order() {
    let env = TestEnv::with_repo();
    let x = env.path("x");
    let s = stored_form(&x).display().to_string();
    let (old, app) = (x.join("www-old"), x.join("www/app"));
    set_file(&old.join("a.txt"), b"a\n", 1_700_000_000, 0);
    set_file(&app.join("b.txt"), b"b\n", 1_700_000_000, 0);
    set_mtime(&old, 1_700_000_000, 0);
    let id1 = backup_at(&env, &[&old, &app], "2026-02-01T00:00:00Z");
    set_file(&app.join("b.txt"), b"bee\n", 1_700_000_100, 0);
    set_file(&old.join("c.txt"), b"c\n", 1_700_000_100, 0);
    set_mtime(&old, 1_700_000_100, 0);
    let id2 = backup_at(&env, &[&old, &app], "2026-02-02T00:00:00Z");
    assert_eq!(
        diff_under(&env, &id1, &id2, &s),
        json!({
            "added": [format!("{s}/www-old/c.txt")],
            "removed": [],
            "changed": [
                {"path": format!("{s}/www/app/b.txt"), "what": ["size", "content", "mtime"]},
                {"path": format!("{s}/www-old"), "what": ["mtime"]},
            ],
        })
    );
}
