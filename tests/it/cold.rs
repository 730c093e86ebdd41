//! A new machine (an empty catalog) choosing one snapshot reads the
//! snapshots that decide the choice, not the whole history, and chooses
//! what a machine with the whole history chooses.

use crate::env::{
    Backend, TestEnv, on_both_backends, restored_path, set_mtime, str_field, write_file,
};
use std::ffi::OsStr;
use std::path::Path;

on_both_backends!(
    a_cold_restore_of_latest_reads_the_newest_snapshots_only,
    a_cold_choice_passes_over_a_planted_snapshot_as_a_warm_one_does,
);

const HOUR: i64 = 3600;

/// Twelve snapshots of `src/f` ("version 0" … "version 11"), four hours
/// apart as storage recorded them (the objects' times are set, as a
/// provider's would be for a server backing up six times a day) and as
/// they claim. Returns the snapshot ids, oldest first.
fn six_a_day_history(env: &TestEnv, src: &Path) -> Vec<String> {
    let now = jiff::Timestamp::now().as_second();
    let mut ids = Vec::new();
    for k in 0..12i64 {
        write_file(&src.join("f"), format!("version {k}").as_bytes());
        let at = now - (11 - k) * 4 * HOUR - HOUR;
        let claim = jiff::Timestamp::from_second(at).unwrap().to_string();
        let out = env.backup_raw(&[src], &["--time", &claim]);
        out.expect_ok();
        let id = str_field(&out.json(), "snapshot").to_string();
        // Stored a minute after the time it claims.
        set_mtime(&env.repo.join("snapshots").join(&id), at + 60, 0);
        ids.push(id);
    }
    ids
}

/// How many snapshots the catalog at `path` holds.
fn catalog_snapshots(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open the catalog");
    conn.query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
        .expect("count the catalog's snapshots")
}

fn a_cold_restore_of_latest_reads_the_newest_snapshots_only(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    let ids = six_a_day_history(&env, &src);
    std::fs::remove_file(&env.catalog).unwrap();
    let target = env.path("one");
    let out = env.restore_raw(
        "latest",
        &target,
        &[OsStr::new("--include"), src.join("f").as_os_str()],
    );
    out.expect_ok();
    assert_eq!(
        std::fs::read(restored_path(&target, &src).join("f")).unwrap(),
        b"version 11",
        "latest is the newest snapshot\n{out}"
    );
    // One batch of reads (2 at once locally, 8 on S3), not the twelve.
    let read = catalog_snapshots(&env.catalog);
    assert!((1..12).contains(&read), "{read} of 12 snapshots read");
    // An id names one snapshot: read alone, from the listing.
    std::fs::remove_file(&env.catalog).unwrap();
    let target = env.path("third");
    env.restore_raw(&ids[2][..12], &target, &[]).expect_ok();
    assert_eq!(
        std::fs::read(restored_path(&target, &src).join("f")).unwrap(),
        b"version 2"
    );
    assert_eq!(
        catalog_snapshots(&env.catalog),
        1,
        "only the one named is read"
    );
    // What was left unread is read by the next command that needs it.
    assert_eq!(env.snapshots().len(), 12);
    assert_eq!(catalog_snapshots(&env.catalog), 12);
}

fn a_cold_choice_passes_over_a_planted_snapshot_as_a_warm_one_does(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    six_a_day_history(&env, &src);
    // The attacker's snapshot, stored last, claims 2099: suspect.
    let empty = env.source_dir("empty");
    let planted = env.backup_raw(&[&empty], &["--time", "2099-01-01T00:00:00Z"]);
    planted.expect_ok();
    let planted = str_field(&planted.json(), "snapshot").to_string();
    let choose = |name: &str| {
        let target = env.path(name);
        let out = env.restore_raw("latest", &target, &[]);
        out.expect_ok();
        let got = std::fs::read(restored_path(&target, &src).join("f")).unwrap();
        (got, out.stderr.contains("passed over suspect snapshot"))
    };
    let warm = choose("warm");
    std::fs::remove_file(&env.catalog).unwrap();
    let cold = choose("cold");
    assert_eq!(warm, (b"version 11".to_vec(), true), "the warm choice");
    assert_eq!(cold, warm, "a cold catalog chooses the same, and says so");
    // Named by id, the planted one is read alone, restored as asked, and
    // called suspect: its note needs no other snapshot.
    std::fs::remove_file(&env.catalog).unwrap();
    let out = env.restore_raw(&planted[..12], &env.path("planted"), &[]);
    out.expect_ok();
    assert!(out.stderr.contains("is suspect"), "{out}");
    assert_eq!(
        catalog_snapshots(&env.catalog),
        1,
        "only the one named is read"
    );
}
