//! Planted snapshots don't win: a snapshot that claims a time later than
//! storage recorded writing it (an attacker's `backup --time 2099-…` with
//! the agent key) is suspect. `latest`, `--at` and retention pass it over
//! and say so; `snapshots` and `check` show it; backdated snapshots (a
//! claim earlier than the write) are believed.

use crate::env::{Backend, TestEnv, on_both_backends, restored_path, str_field, write_file};
use serde_json::Value;
use std::fs;

on_both_backends!(
    a_planted_future_snapshot_does_not_win,
    when_every_snapshot_is_suspect_latest_is_refused,
    backdated_snapshots_are_not_suspect,
);

const PLANTED: &str = "2099-01-01T00:00:00Z";

/// Backs up `src` as host web-1 with `extra` flags; returns the snapshot's
/// short id and the backup's stderr.
fn backup_web1(env: &TestEnv, src: &std::path::Path, extra: &[&str]) -> (String, String) {
    let mut args = vec!["--host", "web-1"];
    args.extend_from_slice(extra);
    let out = env.backup_raw(&[src], &args);
    out.expect_ok();
    let hex = str_field(&out.json(), "snapshot").to_string();
    let short = env
        .snapshots()
        .iter()
        .find(|s| str_field(s, "id") == hex)
        .map(|s| str_field(s, "short_id").to_string())
        .unwrap_or_else(|| panic!("backup's snapshot {hex} is not listed"));
    (short, out.stderr.clone())
}

/// The attacker, with the agent key: an empty tree that claims 2099.
fn plant(env: &TestEnv) -> (String, String) {
    let empty = env.source_dir("empty");
    backup_web1(env, &empty, &["--time", PLANTED])
}

fn by_short<'a>(snaps: &'a [Value], short: &str) -> &'a Value {
    snaps
        .iter()
        .find(|s| str_field(s, "short_id") == short)
        .unwrap_or_else(|| panic!("no snapshot {short} in {snaps:?}"))
}

fn a_planted_future_snapshot_does_not_win(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"the real data");
    let (real, warned) = backup_web1(&env, &src, &[]);
    assert!(!warned.contains("suspect"), "{warned}");
    let (planted, warned) = plant(&env);
    // The backup that wrote it says so: its clock (or --time) is ahead.
    assert!(
        warned.contains(&format!("snapshot {planted} is suspect"))
            && warned.contains("more than 10m ahead of storage's"),
        "{warned}"
    );
    let passed_over = format!(
        "passed over suspect snapshot {planted}: it claims 2099-01-01 00:00:00 UTC but storage recorded writing it at"
    );
    let rel = src.join("f");
    let rel = rel.to_str().unwrap().trim_start_matches('/');

    // restore latest, ls latest, cat latest: the real snapshot, and a word on the planted one.
    let target = env.unique_path("restore");
    fs::create_dir(&target).unwrap();
    let out = env.restore_raw("latest", &target, &[]);
    out.expect_ok().expect_stderr_contains(&passed_over);
    assert!(out.stderr.contains(&format!("using {real} (")), "{out}");
    assert!(!out.stderr.contains("--fallback"), "{out}");
    assert_eq!(
        fs::read(restored_path(&target, &src).join("f")).unwrap(),
        b"the real data"
    );
    let out = env.operator(["ls", "latest"]);
    out.expect_ok().expect_stderr_contains(&passed_over);
    assert!(out.stdout.contains(rel), "{out}");
    let out = env.operator(["cat", "latest", rel]);
    out.expect_ok().expect_stderr_contains(&passed_over);
    assert_eq!(out.stdout, "the real data");
    // --at past the planted claim: still not the planted one.
    let out = env.operator(["cat", "--at", "2100-01-01T00:00:00Z", "latest", rel]);
    out.expect_ok().expect_stderr_contains(&passed_over);
    assert_eq!(out.stdout, "the real data");
    // Named by id it is served, with the warning.
    let out = env.operator(["ls", &planted]);
    out.expect_ok()
        .expect_stderr_contains(&format!("snapshot {planted} is suspect: it claims 2099"));

    // snapshots: the flag, in the table and in --json with storage's time.
    let snaps = env.snapshots();
    let p = by_short(&snaps, &planted);
    assert_eq!(p["suspect"], true, "{p}");
    assert!(
        str_field(p, "time").starts_with("2099-01-01T00:00:00"),
        "{p}"
    );
    let stored: jiff::Timestamp = str_field(p, "stored").parse().unwrap();
    let age = jiff::Timestamp::now().duration_since(stored);
    assert!(
        age.as_secs().abs() < 600,
        "stored {stored}: written just now"
    );
    let r = by_short(&snaps, &real);
    assert_eq!(r["suspect"], false, "{r}");
    assert!(r["stored"].is_string(), "{r}");
    let out = env.agent(["snapshots"]);
    out.expect_ok();
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&planted))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains(" suspect "), "{row}");
    assert!(out.stdout.contains("1 suspect: "), "{out}");
    assert!(
        out.stdout.contains(&format!("  {planted}: it claims 2099")),
        "{out}"
    );

    // check: a finding, not damage.
    let out = env.check(false);
    out.expect_ok();
    assert!(
        out.stdout
            .contains(&format!("SUSPECT snapshots/{}", str_field(p, "id"))),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("no problems found (1 suspect snapshot)"),
        "{out}"
    );
    let out = env.operator(["check", "--json"]);
    out.expect_ok();
    let v = out.json();
    assert_eq!(v["ok"], true);
    let found = v["suspect"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["snapshot"], planted.as_str());

    // Retention: keep-last 1 keeps the real newest, not the planted one.
    let out = env.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "1",
        "--json",
    ]);
    out.expect_ok();
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| str_field(s, "short_id").to_string())
        .collect();
    assert_eq!(left, [real]);
}

fn when_every_snapshot_is_suspect_latest_is_refused(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let (planted, _) = plant(&env);
    for args in [
        vec!["ls", "latest"],
        vec!["ls", "--at", "2100-01-01T00:00:00Z"],
    ] {
        let out = env.operator(&args);
        out.expect_failure().expect_short_stderr(1);
        out.expect_stderr_contains(&format!("suspect: the newest, {planted}: it claims 2099"))
            .expect_stderr_contains("choose a snapshot by id");
    }
    let out = env.operator(["ls", "--at", "2100-01-01T00:00:00Z"]);
    out.expect_stderr_contains("every snapshot at or before that time is suspect");
    // By id it is served, with the warning.
    let out = env.operator(["ls", &planted]);
    out.expect_ok().expect_stderr_contains("is suspect");
    // Retention keeps the newest of a group that has nothing else.
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    assert_eq!(env.snapshots().len(), 1);
}

fn backdated_snapshots_are_not_suspect(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"march 1");
    let (first, warned) = backup_web1(&env, &src, &["--time", "2026-03-01T10:00:00Z"]);
    assert!(!warned.contains("suspect"), "{warned}");
    write_file(&src.join("f"), b"march 2");
    let (second, warned) = backup_web1(&env, &src, &["--time", "2026-03-02T10:00:00Z"]);
    assert!(!warned.contains("suspect"), "{warned}");
    let snaps = env.snapshots();
    for s in &snaps {
        assert_eq!(s["suspect"], false, "{s}");
        assert!(s["stored"].is_string(), "{s}");
    }
    let rel = src.join("f");
    let rel = rel.to_str().unwrap().trim_start_matches('/');
    let out = env.operator(["cat", "latest", rel]);
    out.expect_ok();
    assert_eq!(out.stdout, "march 2");
    assert!(!out.stderr.contains("suspect"), "{out}");
    // Retention believes the backdated claims: keep-last 1 keeps March 2.
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    let left: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| str_field(s, "short_id").to_string())
        .collect();
    assert_ne!(first, second);
    assert_eq!(left, [second]);
}
