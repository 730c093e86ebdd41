//! Choosing what to restore: snapshot filters and states, `latest`, `--at`
//! across time zones, restore options (dry run, overwrite policy, verify,
//! atomic replace, in place, one file to stdout) and the fallback to older
//! snapshots when the chosen one is damaged.

use crate::env::{
    Backend, TestEnv, on_both_backends, random_bytes, restored_path, str_field, write_file,
    write_random_file,
};
use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;

on_both_backends!(a_damaged_snapshot_falls_back_to_older_ones);

fn ids(snaps: &[Value]) -> Vec<String> {
    snaps
        .iter()
        .map(|s| str_field(s, "id").to_string())
        .collect()
}

/// `snapshots --json` with extra flags, as the agent.
fn snapshots_with(env: &TestEnv, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["snapshots", "--json"];
    args.extend_from_slice(extra);
    let out = env.agent(&args);
    out.expect_ok();
    out.json().as_array().cloned().unwrap_or_default()
}

/// Writes `content` to `src/f` and backs `src` up as `host` at `time`.
fn backup_as(env: &TestEnv, src: &std::path::Path, content: &str, host: &str, time: &str) {
    write_file(&src.join("f"), content.as_bytes());
    env.backup_raw(&[src], &["--host", host, "--time", time])
        .expect_ok();
}

#[test]
fn filters_latest_and_at_choose_the_right_snapshot() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    backup_as(&env, &src, "one", "web-1", "2026-03-01T10:00:00Z");
    backup_as(&env, &src, "two", "web-2", "2026-03-01T20:00:00Z");
    backup_as(&env, &src, "three", "web-1", "2026-03-02T09:00:00Z");
    let all = snapshots_with(&env, &[]);
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|s| s["state"] == "complete"),
        "every snapshot is complete: {all:?}"
    );
    let web1 = snapshots_with(&env, &["--host", "web-1"]);
    assert_eq!(ids(&web1), [ids(&all)[0].clone(), ids(&all)[2].clone()]);
    let day1 = snapshots_with(
        &env,
        &[
            "--since",
            "2026-03-01T00:00:00Z",
            "--until",
            "2026-03-01T23:59:59Z",
        ],
    );
    assert_eq!(day1.len(), 2);
    assert_eq!(
        snapshots_with(&env, &["--path", src.to_str().unwrap()]).len(),
        3
    );
    assert_eq!(snapshots_with(&env, &["--path", "/elsewhere"]).len(), 0);
    assert_eq!(snapshots_with(&env, &["--profile-name", "cli"]).len(), 3);

    let cat = |args: &[&str], tz: &str| -> String {
        let mut all: Vec<OsString> = vec!["cat".into()];
        all.extend(args.iter().map(OsString::from));
        all.push(src.join("f").strip_prefix("/").unwrap().into());
        all.extend(env.operator_flags());
        let out = env.run_with_env(&all, &[("TZ", tz.as_ref())]);
        out.expect_ok();
        out.stdout.clone()
    };
    assert_eq!(cat(&["latest"], "UTC"), "three");
    assert_eq!(cat(&[&ids(&all)[1][..8]], "UTC"), "two");
    assert_eq!(cat(&["latest", "--host", "web-2"], "UTC"), "two");
    // --at: the newest at or before the time; offsets and TZ are honoured.
    assert_eq!(
        cat(&["latest", "--at", "2026-03-01T15:00:00Z"], "UTC"),
        "one"
    );
    assert_eq!(
        cat(&["latest", "--at", "2026-03-02T05:00:00+09:00"], "UTC"),
        "two"
    );
    // 2026-03-02 05:00 in Tokyo is 2026-03-01 20:00Z: the second snapshot.
    assert_eq!(
        cat(&["latest", "--at", "2026-03-02 05:00"], "Asia/Tokyo"),
        "two"
    );
    // In UTC the same wall time is after the third.
    assert_eq!(cat(&["latest", "--at", "2026-03-02 09:30"], "UTC"), "three");
    // A date means the end of that day, in the local zone.
    assert_eq!(cat(&["latest", "--at", "2026-03-01"], "UTC"), "two");
    // The end of 2026-03-01 in Tokyo is 14:59:59Z: only the first is before it.
    assert_eq!(cat(&["latest", "--at", "2026-03-01"], "Asia/Tokyo"), "one");
    let early = env.operator(["ls", "--at", "2020-01-01"]);
    early.expect_failure();
    early.expect_stderr_contains("no snapshot at or before");
}

#[test]
fn restore_options_dry_run_overwrite_verify_in_place() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_random_file(&src.join("big"), 3 * 1024 * 1024, 1);
    write_file(&src.join("small"), b"small file");
    write_file(&src.join("skip.log"), b"log");
    env.backup(&[&src]);
    let target = env.unique_path("t");
    let t = target.to_str().unwrap();

    // Dry run: lists, writes nothing.
    let dry = env.operator(["restore", "latest", "--target", t, "--dry-run", "--json"]);
    dry.expect_ok();
    let entries = dry.json()["entries"].as_array().cloned().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with("src/big") && e["action"] == "create"),
        "{dry}"
    );
    assert!(!target.exists(), "a dry run writes nothing");

    // Exclude and verify.
    let out = env.operator([
        "restore",
        "latest",
        "--target",
        t,
        "--exclude",
        "*.log",
        "--verify",
        "--json",
    ]);
    out.expect_ok();
    assert_eq!(out.json()["verified"], 2, "{out}");
    let r = restored_path(&target, &src);
    assert!(!r.join("skip.log").exists() && r.join("small").exists());

    // Overwrite policies on an existing target.
    write_file(&r.join("small"), b"edited");
    let before = fs::metadata(r.join("small")).unwrap().ino();
    env.operator(["restore", "latest", "--target", t, "--overwrite", "never"])
        .expect_ok();
    assert_eq!(
        fs::read(r.join("small")).unwrap(),
        b"edited",
        "never keeps it"
    );
    let dry = env.operator(["restore", "latest", "--target", t, "--dry-run", "--json"]);
    let actions: Vec<(String, String)> = dry.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("small".into(), "replace".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("big".into(), "skip-unchanged".into())),
        "{actions:?}"
    );
    env.operator(["restore", "latest", "--target", t])
        .expect_ok();
    assert_eq!(
        fs::read(r.join("small")).unwrap(),
        b"small file",
        "if-changed replaces it"
    );
    assert_ne!(
        fs::metadata(r.join("small")).unwrap().ino(),
        before,
        "replaced by a rename, not rewritten in place"
    );
    let leftovers: Vec<_> = fs::read_dir(&r)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".coffer-restore"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
    assert_eq!(
        fs::read(r.join("big")).unwrap(),
        random_bytes(3 * 1024 * 1024, 1)
    );

    // In place: back to the original locations.
    write_file(&src.join("small"), b"damaged by a user");
    fs::remove_file(src.join("big")).unwrap();
    env.operator([
        "restore",
        "latest",
        "--in-place",
        "--include",
        &format!("{}/**", src.to_str().unwrap().trim_start_matches('/')),
    ])
    .expect_ok();
    assert_eq!(fs::read(src.join("small")).unwrap(), b"small file");
    assert_eq!(
        fs::read(src.join("big")).unwrap(),
        random_bytes(3 * 1024 * 1024, 1)
    );
}

/// The newest snapshot's new data is damaged: `snapshots` says so, `latest`
/// skips it, and `--fallback` restores the damaged files from older ones.
fn a_damaged_snapshot_falls_back_to_older_ones(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_random_file(&src.join("a"), 256 * 1024, 1);
    write_random_file(&src.join("b"), 64 * 1024, 2);
    env.backup(&[&src]);
    let old_packs: Vec<String> = env.packs().into_iter().map(|p| p.0).collect();
    // The change is bigger than a pack: its first pack holds only its data,
    // the file list lands in a later one.
    write_random_file(&src.join("a"), 20 * 1024 * 1024, 3);
    env.backup(&[&src]);
    let new: Vec<_> = env
        .packs()
        .into_iter()
        .filter(|p| !old_packs.contains(&p.0))
        .collect();
    assert!(
        new.len() >= 2,
        "the second backup wrote two packs or more: {new:?}"
    );
    let (victim, path, size) = new.iter().max_by_key(|p| p.2).cloned().unwrap();

    // (a) A flipped byte: only reading finds it.
    let mut bytes = fs::read(&path).unwrap();
    bytes[(size / 2) as usize] ^= 0x40;
    env.replace_object(&victim, &bytes);
    let snaps = env.snapshots();
    let (s1, s2) = (
        str_field(&snaps[0], "id")[..8].to_string(),
        str_field(&snaps[1], "id")[..8].to_string(),
    );
    let t = env.unique_path("t");
    let out = env.operator(["restore", &s2, "--target", t.to_str().unwrap()]);
    out.expect_failure();
    assert!(
        out.stdout
            .contains(&format!("is intact in older snapshot {s1}")),
        "names the older snapshot that holds the file\n{out}"
    );
    let out = env.operator([
        "restore",
        &s2,
        "--target",
        t.to_str().unwrap(),
        "--fallback",
        "--json",
    ]);
    out.expect_ok();
    let fb = out.json()["fallback"].as_array().cloned().unwrap();
    assert_eq!(fb.len(), 1, "one file came from elsewhere\n{out}");
    assert!(
        fb[0]["path"].as_str().unwrap().ends_with("src/a") && fb[0]["restored"] == true,
        "{out}"
    );
    assert!(fb[0]["from"].as_str().unwrap().starts_with(&s1), "{out}");
    let r = restored_path(&t, &src);
    assert_eq!(
        fs::read(r.join("a")).unwrap(),
        random_bytes(256 * 1024, 1),
        "a comes from the older snapshot"
    );
    assert_eq!(
        fs::read(r.join("b")).unwrap(),
        random_bytes(64 * 1024, 2),
        "b comes from the chosen one"
    );

    // (b) The pack is gone: the snapshot is damaged, and `latest` is the older one.
    fs::remove_file(&path).unwrap();
    let states: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["complete", "damaged"]);
    let t2 = env.unique_path("t2");
    env.operator(["restore", "latest", "--target", t2.to_str().unwrap()])
        .expect_ok();
    assert_eq!(
        fs::read(restored_path(&t2, &src).join("a")).unwrap(),
        random_bytes(256 * 1024, 1)
    );
    // A full check marks the intact one verified.
    env.check(true).expect_code(4);
    let states: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(states, ["verified", "damaged"]);

    // (c) Every snapshot damaged: `latest` is the newest, with a warning
    // that says so (its file list, in a later pack, still reads).
    for (_, path, _) in env.packs().iter().filter(|p| old_packs.contains(&p.0)) {
        fs::remove_file(path).unwrap();
    }
    let out = env.operator(["ls", "latest"]);
    out.expect_ok();
    assert!(
        out.stderr.contains(&format!(
            "every snapshot is damaged; using the newest ({s2})"
        )),
        "warns and names the newest\n{out}"
    );
    assert!(
        out.stdout.contains("src/a"),
        "lists the newest's files\n{out}"
    );
}

/// An S3 repository holding one snapshot of 40 folders of 300 small files
/// each (a file list of many blobs), with `contents` a 96 KiB random file
/// in each folder; returns the source and the file list's blob count.
fn backed_up_long_file_list(contents: bool) -> (TestEnv, std::path::PathBuf, u64) {
    let env = TestEnv::with_repo_on(Backend::S3);
    let src = env.source_dir("src");
    for d in 0..40u64 {
        let dir = src.join(format!("directory-with-a-long-name-{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        if contents {
            write_file(&dir.join("contents.bin"), &random_bytes(96 * 1024, d));
        }
        for f in 0..300 {
            write_file(
                &dir.join(format!("file-with-a-longish-name-{f:05}.txt")),
                format!("{d}/{f}").as_bytes(),
            );
        }
    }
    env.backup(&[&src]);
    let snap = env.snapshots().pop().unwrap();
    let tree_blobs = snap["tree_blobs"].as_u64().unwrap();
    assert!(tree_blobs >= 20, "a file list of many blobs: {tree_blobs}");
    (env, src, tree_blobs)
}

/// `snapshots` on the machine that made the backups reads no reference
/// list: each backup keeps its own in the catalog (they say whether a
/// snapshot is damaged). Before, every snapshot cost a ranged read.
#[test]
fn snapshots_after_backups_here_read_no_reference_list() {
    let env = TestEnv::with_repo_on(Backend::S3);
    let src = env.source_dir("src");
    for n in 0..6 {
        write_file(&src.join("f"), format!("version {n}").as_bytes());
        env.backup(&[&src]);
    }
    let server = env.s3.as_ref().unwrap();
    let requests = || server.requests.load(std::sync::atomic::Ordering::SeqCst);
    let before = requests();
    let out = env.operator(["snapshots", "--json"]);
    out.expect_ok();
    let used = requests() - before;
    assert_eq!(out.json().as_array().map_or(0, Vec::len), 6, "{out}");
    eprintln!("snapshots of 6 backups made here: {used} requests");
    // config, keyring, and the listings of snapshots/, index/, data/ and
    // damage/: 6 (12 when each snapshot's reference list was read).
    assert!(
        used <= 6,
        "{used} requests: more than the keys and the listings"
    );
}

/// `find` over a history reads each snapshot's file-list blobs that no
/// earlier snapshot had in shared ranged reads, not one request per blob.
#[test]
fn find_reads_the_file_lists_in_shared_reads() {
    let (env, src, tree_blobs) = backed_up_long_file_list(false);
    // A second snapshot with a change in every fourth folder: new blobs
    // spread over the list.
    for d in (0..40u64).step_by(4) {
        let f = src.join(format!(
            "directory-with-a-long-name-{d:03}/file-with-a-longish-name-00005.txt"
        ));
        write_file(&f, b"changed");
    }
    env.backup(&[&src]);
    let server = env.s3.as_ref().unwrap();
    let requests = || server.requests.load(std::sync::atomic::Ordering::SeqCst);
    env.operator(["snapshots"]).expect_ok();
    let before = requests();
    let out = env.operator(["find", "--json", "file-with-a-longish-name-00005.txt"]);
    out.expect_ok();
    let used = requests() - before;
    let found = out.json();
    let versions = found[0]["versions"].as_array().map_or(0, Vec::len);
    assert_eq!(
        (found.as_array().map_or(0, Vec::len), versions),
        (40, 2),
        "40 paths, the first of two versions\n{out}"
    );
    eprintln!("find over 2 snapshots: {used} requests; one file list has {tree_blobs} blobs");
    assert!(
        used * 2 < tree_blobs,
        "find made {used} requests for 2 file lists of {tree_blobs} blobs"
    );
}

/// Format 2's tree index: `cat` of one file in a large file list reads the
/// index and a tree blob or two, not the whole list (counted as requests on
/// the S3 server), and a restore of one path does the same.
#[test]
fn one_file_is_found_without_reading_the_whole_file_list() {
    let (env, src, tree_blobs) = backed_up_long_file_list(false);
    let server = env.s3.as_ref().unwrap();
    let requests = || server.requests.load(std::sync::atomic::Ordering::SeqCst);
    // Warm the catalog (index and snapshots), as an operator's second command would.
    env.operator(["snapshots"]).expect_ok();
    let rel = src.join("directory-with-a-long-name-031/file-with-a-longish-name-00217.txt");
    let rel = rel.to_str().unwrap().trim_start_matches('/');
    let before = requests();
    let out = env.operator(["cat", "latest", rel]);
    out.expect_ok();
    assert_eq!(out.stdout, "31/217");
    let used = requests() - before;
    eprintln!("cat of one file: {used} requests; the file list has {tree_blobs} blobs");
    assert!(
        used < 15 && used * 2 < tree_blobs,
        "cat read {used} objects or ranges; the file list has {tree_blobs} blobs"
    );
    let t = env.unique_path("one");
    let before = requests();
    env.operator([
        "restore",
        "latest",
        "--target",
        t.to_str().unwrap(),
        "--include",
        rel,
    ])
    .expect_ok();
    let used = requests() - before;
    assert_eq!(fs::read(t.join(rel)).unwrap(), b"31/217");
    assert!(
        used < 20,
        "restore of one file made {used} requests (file list: {tree_blobs} blobs)"
    );
}

/// A file list is stored apart from file contents, so reading it whole
/// (`ls`, a full restore) takes a few requests, not one per list blob:
/// here each folder's file contents would otherwise sit between two
/// pieces of the list.
#[test]
fn a_whole_file_list_is_read_in_a_few_requests() {
    let (env, src, tree_blobs) = backed_up_long_file_list(true);
    let server = env.s3.as_ref().unwrap();
    let requests = || server.requests.load(std::sync::atomic::Ordering::SeqCst);
    env.operator(["snapshots"]).expect_ok();
    // What opening the repository costs (keyring, config, listings).
    let before = requests();
    env.operator(["snapshots"]).expect_ok();
    let open = requests() - before;
    let before = requests();
    let out = env.operator(["ls", "latest"]);
    out.expect_ok();
    assert!(
        out.stdout.contains("file-with-a-longish-name-00299.txt"),
        "{out}"
    );
    let used = requests() - before - open;
    eprintln!("ls: {open} + {used} requests; the file list has {tree_blobs} blobs");
    assert!(
        used <= 2,
        "ls read the file list of {tree_blobs} blobs in {used} requests"
    );
    let t = env.unique_path("all");
    let before = requests();
    env.operator(["restore", "latest", "--target", t.to_str().unwrap()])
        .expect_ok();
    let used = requests() - before - open;
    eprintln!("full restore: {open} + {used} requests");
    let rel = src.join("directory-with-a-long-name-039/contents.bin");
    let got = fs::read(t.join(rel.to_str().unwrap().trim_start_matches('/'))).unwrap();
    assert!(
        got == random_bytes(96 * 1024, 39),
        "restored contents differ"
    );
    assert!(
        used <= 4,
        "a full restore of 4 MiB with a file list of {tree_blobs} blobs made {used} requests"
    );
}

/// Sources whose names sort differently as whole paths and component by
/// component (`www-old` before `www/app` bytewise, after it in walk order):
/// the file list stays in walk order, so a lookup of one path through the
/// tree index finds every entry below it.
#[test]
fn sibling_sources_with_a_common_prefix_are_found_by_path() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    let app = src.join("www/app");
    let old = src.join("www-old");
    for d in [&app, &old] {
        fs::create_dir_all(d).unwrap();
        for f in 0..5 {
            write_file(&d.join(format!("f{f}")), d.to_str().unwrap().as_bytes());
        }
    }
    env.backup(&[&old, &app]);
    for dir in [&app, &old] {
        let rel = dir.to_str().unwrap().trim_start_matches('/');
        let out = env.operator(["cat", "latest", &format!("{rel}/f3")]);
        out.expect_ok();
        assert_eq!(out.stdout, dir.to_str().unwrap());
        let t = env.unique_path("t");
        env.restore_raw("latest", &t, &["--include".as_ref(), rel.as_ref()])
            .expect_ok();
        for f in 0..5 {
            assert!(
                t.join(rel).join(format!("f{f}")).is_file(),
                "{rel}/f{f} restored by path"
            );
        }
    }
}

/// Regression: `--include '*.bin'` restored nothing (a top-level name only)
/// while `--exclude '*.bin'` matched names anywhere; an include that
/// matched nothing exited 0 without a word.
#[test]
fn include_and_exclude_follow_one_rule_and_an_empty_include_fails() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a/x.bin"), b"x");
    write_file(&src.join("b/c/y.bin"), b"y");
    write_file(&src.join("z.txt"), b"z");
    env.backup(&[&src]);
    let files = |extra: &[&str]| -> Vec<String> {
        let t = env.unique_path("t");
        fs::create_dir(&t).unwrap();
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|s| s.as_ref()).collect();
        env.restore_raw("latest", &t, &extra).expect_ok();
        let mut names: Vec<String> = crate::env::regular_files(&restored_path(&t, &src))
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(files(&["--include", "*.bin"]), ["a/x.bin", "b/c/y.bin"]);
    assert_eq!(files(&["--exclude", "*.bin"]), ["z.txt"]);
    // With '/', the whole path from the root: a leading '/' is optional.
    let anchored = format!("{}/b/**", src.to_str().unwrap());
    assert_eq!(files(&["--include", &anchored]), ["b/c/y.bin"]);
    assert_eq!(files(&["--exclude", &anchored]), ["a/x.bin", "z.txt"]);

    let t = env.unique_path("t");
    let none = env.restore_raw(
        "latest",
        &t,
        &[
            "--include".as_ref(),
            "*.bin".as_ref(),
            "--include".as_ref(),
            "*.nope".as_ref(),
        ],
    );
    none.expect_code(1);
    none.expect_stderr_contains("--include \"*.nope\" selects nothing in the snapshot");
    assert!(!t.exists(), "nothing is written: {none}");
    let export = env.operator(["export", "--include", "*.nope", "--output", "/dev/null"]);
    export.expect_code(1);
    export.expect_stderr_contains("--include \"*.nope\" selects nothing");
    let find = env.operator(["find", "*.bin"]);
    find.expect_ok();
    assert!(
        find.stdout.contains("/a/x.bin") && find.stdout.contains("/b/c/y.bin"),
        "{}",
        find.stdout
    );
}

/// Regression: `cat ID --at now` printed the latest version (the id was
/// ignored), `cat --at T PATH` was a usage error, and diff had no --at.
#[test]
fn at_and_an_id_conflict_and_at_alone_names_the_snapshot() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"one");
    env.backup_raw(&[&src], &["--time", "2026-03-01T10:00:00Z"])
        .expect_ok();
    write_file(&src.join("f"), b"two");
    env.backup_raw(&[&src], &["--time", "2026-03-02T10:00:00Z"])
        .expect_ok();
    let all = snapshots_with(&env, &[]);
    let first = &ids(&all)[0][..8];
    let rel = src.join("f");
    let rel = rel.to_str().unwrap();

    let both = env.operator(["cat", first, rel, "--at", "now"]);
    both.expect_code(2);
    both.expect_stderr_contains("and --at both name the snapshot");
    for cmd in [
        &["ls", first, "--at", "now"][..],
        &["export", first, "--at", "now"],
    ] {
        env.operator(cmd).expect_code(2);
    }
    let at = env.operator(["cat", "--at", "2026-03-01T12:00:00Z", rel]);
    at.expect_ok();
    assert_eq!(at.stdout, "one");
    let by_id = env.operator(["cat", first, rel]);
    by_id.expect_ok();
    assert_eq!(by_id.stdout, "one");

    let diff = env.operator([
        "diff",
        "--at",
        "2026-03-01T12:00:00Z",
        "--at",
        "2026-03-02T12:00:00Z",
    ]);
    diff.expect_ok();
    assert!(
        diff.stdout.contains(&format!("M  {rel}")) && diff.stdout.contains("1 changed"),
        "{}",
        diff.stdout
    );
    let mixed = env.operator(["diff", first, "--at", "now", "--json"]);
    mixed.expect_ok();
    assert_eq!(mixed.json()["from"], first);
    assert_eq!(mixed.json()["to"], &ids(&all)[1][..8]);
    env.operator(["diff", "--at", "now"]).expect_code(2);
}

/// Regression: in a prefix shared by several hosts, `latest` without
/// `--host` took the newest of any host without a word.
#[test]
fn latest_among_several_hosts_says_which_host_it_chose() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    backup_as(&env, &src, "one", "web-1", "2026-03-01T10:00:00Z");
    backup_as(&env, &src, "two", "web-2", "2026-03-02T10:00:00Z");
    let rel = src.join("f");
    let rel = rel.to_str().unwrap();
    let any = env.operator(["cat", "latest", rel]);
    any.expect_ok();
    assert_eq!(any.stdout, "two");
    any.expect_stderr_contains("come from 2 hosts; using the newest, of host web-2: pass --host");
    let one = env.operator(["cat", "latest", rel, "--host", "web-1"]);
    one.expect_ok();
    assert_eq!(one.stdout, "one");
    assert!(!one.stderr.contains("hosts"), "{one}");
}
