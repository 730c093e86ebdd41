//! Hostile repositories cost bounded resources (docs/FORMAT.md, "Limits").
//!
//! A corpus of hostile objects built with the crate's own sealing code (the
//! forger of `adversarial.rs`, which holds the keys, so coffer trusts their
//! crypto) or planted without any key: paths that leave the target, a
//! symlink with entries below it, a 50,000-component path, unterminated and
//! endless file lists, an index entry 2^62 bytes long, zstd bombs, objects
//! larger than their kind can be (3 GiB sparse files) and 500 bytes of
//! garbage in every folder. For each: no panic and no signal, the exit code
//! (where it is this change's to decide), a message naming the object or
//! the entry, nothing written outside the restore target, and the coffer
//! process's peak memory (`ru_maxrss`) under 256 MiB. `check --read-data`
//! reports, naming the snapshot and the entry, what restore refuses.
//!
//! `cargo test --test integration hostile -- --nocapture` prints the peak
//! memory of every case (docs/PERFORMANCE.md has the table).
//!
//! Where a garbage or oversized object sits in `snapshots/` or `index/`,
//! whether the command as a whole then succeeds is not asserted: one bad
//! object must not block the rest, which is decided elsewhere.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use coffer::repo::keys::Audience;
use coffer::repo::pack::{BlobKind, SealedBlob};
use serde_json::Value;

use crate::adversarial::{
    Scene, assert_refused_entries, assert_refused_whole, dir, file, file_with, hardlink, lines,
    run_limited_in, symlink,
};
use crate::env::*;

/// The peak memory every hostile case stays under.
const PEAK_LIMIT: u64 = 256 * MIB;

/// Checks that a run ended cleanly (no panic, no signal) under the memory
/// limit, and prints its peak memory for the record.
#[track_caller]
fn bounded(case: &str, out: &Output) -> u64 {
    out.expect_no_panic();
    assert!(out.code.is_some(), "{case}: killed by a signal\n{out}");
    let peak = out.expect_peak_rss_under(PEAK_LIMIT);
    eprintln!(
        "hostile: {case}: exit {}, peak {:.1} MiB",
        out.code.unwrap_or(-1),
        peak as f64 / MIB as f64
    );
    peak
}

/// `coffer ARGS` as the operator (agent key and identity given), under the
/// address-space limit of the adversarial tests.
fn operator(env: &TestEnv, args: &[&str]) -> Output {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    run_limited_in(env, &args, &env.operator_flags())
}

/// `coffer ARGS` as the agent (no identity).
fn agent(env: &TestEnv, args: &[&str]) -> Output {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    run_limited_in(env, &args, &env.repo_flags())
}

/// The keys under `folder` in the repository directory.
fn objects(env: &TestEnv, folder: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(env.repo.join(folder)) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            for f in fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap().file_name();
                out.push(format!(
                    "{folder}/{}/{}",
                    e.file_name().to_string_lossy(),
                    f.to_string_lossy()
                ));
            }
        } else {
            out.push(format!("{folder}/{}", e.file_name().to_string_lossy()));
        }
    }
    out.sort();
    out
}

/// The index object `write` adds to the repository.
fn new_index(env: &TestEnv, write: impl FnOnce() -> String) -> (String, String) {
    let before = objects(env, "index");
    let id = write();
    let added: Vec<String> = objects(env, "index")
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    (id, added[0].clone())
}

/// A sparse file of `size` bytes at `key`, its last bytes `tail`.
fn plant_sparse(env: &TestEnv, key: &str, size: u64, tail: &[u8]) {
    let path = env.repo.join(key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, tail, size - tail.len() as u64).unwrap();
}

/// A zstd frame of `len` zeros: a few KiB that decompress to `len` bytes,
/// declaring its size in the frame header or not.
fn zstd_bomb(len: usize, declared: bool) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    e.include_contentsize(declared).unwrap();
    if declared {
        e.set_pledged_src_size(Some(len as u64)).unwrap();
    }
    let zeros = vec![0u8; MIB as usize];
    for _ in 0..len / zeros.len() {
        e.write_all(&zeros).unwrap();
    }
    e.finish().unwrap()
}

/// The output (stdout or stderr: `check` lists problems on stdout) names `what`.
#[track_caller]
fn assert_names(out: &Output, what: &str) {
    assert!(
        out.all_output().contains(what),
        "expected the output to name {what:?}\n{out}"
    );
}

fn problems(out: &Output) -> Vec<Value> {
    out.json()["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `check --read-data --json` reports a problem for snapshot `id` whose text
/// holds every one of `needles` (and, if given, that names `file`).
#[track_caller]
fn assert_reported(all: &[Value], out: &Output, id: &str, needles: &[&str], file: Option<&str>) {
    let key = format!("snapshots/{id}");
    let short = &id[..8];
    let hit = all.iter().any(|p| {
        let text = p["problem"].as_str().unwrap_or_default();
        p["object"].as_str() == Some(&key)
            && p["snapshots"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(short)))
            && needles.iter().all(|n| text.contains(n))
            && file.is_none_or(|f| {
                p["files"]
                    .as_array()
                    .is_some_and(|fs| fs.iter().any(|x| x.as_str() == Some(f)))
            })
    });
    assert!(
        hit,
        "check --read-data names no problem of {key} with {needles:?} (file {file:?})\n{out}"
    );
}

// ---------------------------------------------------------------------------
// File lists: what restore refuses, check reports
// ---------------------------------------------------------------------------

/// Every rule restore applies to a file list, one hostile snapshot each:
/// restore refuses exactly what it refuses (the whole list, or the named
/// entries), writes nothing outside its target, and `check --read-data`
/// (which said "no problems found" for all of them before) reports each
/// snapshot and entry; an honest snapshot beside them gets no problem.
#[test]
fn check_reports_what_restore_refuses() {
    let s = Scene::new();
    let f = &s.forger;
    let ok = b"an honest file\n".as_slice();
    let data = b"0123456789".as_slice();
    let b = f.id(data);
    let absolute = s.abs("outside/abs");
    let honest = f.snapshot(&[ok], &[lines(&[dir("a"), file(f, "a/ok", ok)])]);

    // (snapshot, restore refuses it whole with this text, check says this, names this file)
    let mut whole: Vec<(String, String, Vec<&str>)> = Vec::new();
    let mut add_whole = |tree: Vec<u8>, data: &[&[u8]], needle: &str, check: Vec<&'static str>| {
        let id = f.snapshot(data, &[tree]);
        whole.push((id, needle.to_string(), check));
    };
    add_whole(
        lines(&[dir("a"), file(f, "a/../../outside/x", ok)]),
        &[ok],
        "a/../../outside/x",
        vec![
            "unsafe path",
            "a/../../outside/x",
            "restore refuses the whole list",
        ],
    );
    add_whole(
        lines(&[file(f, &absolute, ok)]),
        &[ok],
        &absolute,
        vec!["unsafe path"],
    );
    add_whole(
        lines(&[file_with("short", 99, &[(b, 0, 10)])]),
        &[data],
        "short",
        vec!["content covers 10 of 99 bytes"],
    );
    let good = lines(&[dir("a"), file(f, "a/ok", ok)]);
    add_whole(
        good[..good.len() - 9].to_vec(),
        &[ok],
        "middle of an entry",
        vec!["ends in the middle of an entry"],
    );
    add_whole(
        lines(&[file(f, "a", ok), hardlink("h", "../victim/secret")]),
        &[ok],
        "h: unsafe hard link target",
        vec!["h: unsafe hard link target"],
    );
    let deep = vec!["d"; 50_000].join("/");
    add_whole(
        lines(&[file(f, &deep, ok)]),
        &[ok],
        "longer than a path can be",
        vec!["longer than a path can be"],
    );

    // Lists restore takes in part: (snapshot, refused entries, check's words, entry).
    let mut parts: Vec<(String, Vec<&str>, &str, &str)> = Vec::new();
    let id = f.snapshot(
        &[data, ok],
        &[lines(&[
            file(f, "ok", ok),
            file_with("past", 20, &[(b, 5, 15), (b, 0, 5)]),
        ])],
    );
    parts.push((id, vec!["past"], "points outside blob", "/past"));
    let id = f.snapshot(&[ok], &[lines(&[file(f, "dup", ok), file(f, "dup", ok)])]);
    parts.push((id, vec!["dup"], "appears more than once", "/dup"));
    let id = f.snapshot(&[ok], &[lines(&[dir("b"), file(f, "a/f", ok), dir("a")])]);
    parts.push((id, vec!["a"], "comes after entries below it", "/a"));
    let id = f.snapshot(
        &[ok],
        &[lines(&[symlink("d", "../outside"), file(f, "d/x", ok)])],
    );
    parts.push((id, vec!["d"], "lies below /d, which is a symlink", "/d/x"));

    // Tree indexes that point where no entry starts, or at another entry:
    // a whole restore does not use them, `cat` (and restore of a path) do.
    let list = lines(&[dir("a"), file(f, "a/ok", ok), file(f, "b", ok)]);
    let mut indexes: Vec<(String, &str)> = Vec::new();
    for (ix, words) in [
        (
            r#"{"blob":0,"offset":7,"path":"a"}"#,
            "where no entry starts",
        ),
        (
            r#"{"blob":0,"offset":0,"path":"a/ok"}"#,
            "names /a/ok where /a starts",
        ),
    ] {
        let ix = format!("{ix}\n");
        let id = f.snapshot_with_index(&[ok], std::slice::from_ref(&list), Some(ix.as_bytes()));
        indexes.push((id, words));
    }

    for (id, needle, _) in &whole {
        let r = s.restore_id(id);
        bounded(&format!("restore refused whole ({needle})"), &r.out);
        assert_refused_whole(&r, needle);
        r.out.expect_code(1);
    }
    for (id, refused, _, _) in &parts {
        let r = s.restore_id(id);
        bounded(&format!("restore refuses {refused:?}"), &r.out);
        assert_refused_entries(&r, refused);
        r.out.expect_code(1);
    }
    let r = s.restore_id(&honest);
    r.out.expect_ok();
    for (id, _) in &indexes {
        s.restore_id(id).out.expect_ok();
        let out = operator(&s.env, &["cat", id, "a/ok"]);
        bounded("hostile tree index: cat", &out);
        out.expect_code(1);
    }

    let out = operator(&s.env, &["check", "--read-data", "--json"]);
    bounded("check --read-data of every hostile list", &out);
    out.expect_code(4);
    let all = problems(&out);
    for (id, _, check) in &whole {
        assert_reported(&all, &out, id, check, None);
    }
    for (id, _, words, entry) in &parts {
        assert_reported(&all, &out, id, &[words], Some(entry));
    }
    for (id, words) in &indexes {
        assert_reported(&all, &out, id, &["tree index", words], None);
    }
    let honest_key = format!("snapshots/{honest}");
    assert!(
        !all.iter()
            .any(|p| p["object"].as_str() == Some(&honest_key)),
        "the honest snapshot is reported\n{out}"
    );
}

/// A symlink `d` out of the target with `d/x` below it: the file lands in a
/// real folder inside the target, the symlink is refused by name, nothing
/// is written outside; `check --read-data` names the entry below the symlink.
#[test]
fn a_symlink_with_entries_below_it_is_refused_and_reported() {
    let s = Scene::new();
    let f = &s.forger;
    let x = b"stays inside\n".as_slice();
    let id = f.snapshot(
        &[x],
        &[lines(&[symlink("d", "../outside"), file(f, "d/x", x)])],
    );
    let r = s.restore_id(&id);
    bounded("symlink then child: restore", &r.out);
    assert_refused_entries(&r, &["d"]);
    r.out.expect_code(1);
    assert!(fs::symlink_metadata(r.target.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(r.target.join("d/x")).unwrap(), x);
    let out = operator(&s.env, &["check", "--read-data", "--json"]);
    bounded("symlink then child: check --read-data", &out);
    out.expect_code(4);
    assert_reported(
        &problems(&out),
        &out,
        &id,
        &["which is a symlink"],
        Some("/d/x"),
    );
}

/// A path of 50,000 components (100 KB): refused by its length when the list
/// is read (restore, ls, cat, export), before any folder is made. Restore
/// used to recurse once per component making its folders, and died of a
/// stack overflow.
#[test]
fn a_path_of_50000_components_is_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let x = b"deep\n".as_slice();
    let deep = vec!["a"; 50_000].join("/");
    let tar = s.env.unique_path("export.tar");
    let tar = tar.to_str().unwrap();
    let id = f.snapshot(&[x], &[lines(&[file(f, &deep, x)])]);
    let r = s.restore_id(&id);
    bounded("50,000-component path: restore", &r.out);
    assert_refused_whole(&r, "longer than a path can be");
    r.out.expect_code(1);
    for args in [
        vec!["ls", id.as_str()],
        vec!["cat", id.as_str(), "a/a"],
        vec!["export", id.as_str(), "--output", tar],
    ] {
        let out = operator(&s.env, &args);
        bounded(&format!("50,000-component path: {}", args[0]), &out);
        out.expect_code(1);
        out.expect_stderr_contains("longer than a path can be");
    }
}

// ---------------------------------------------------------------------------
// Unterminated and endless file lists
// ---------------------------------------------------------------------------

/// A 60 MiB tree blob with no newline, listed 20 times: its index entry
/// declares more plaintext than a tree blob can hold, so the index object is
/// refused before the blob is read or decompressed (it took 1.3 GB). A
/// 20 MiB blob listed 20 times is within the blob cap and is refused at the
/// entry cap (64 MiB), holding no more than that.
#[test]
fn endless_file_lists_are_refused_at_their_caps() {
    let s = Scene::new();
    let f = &s.forger;
    let blob = vec![b'x'; 60 * MIB as usize];
    let (id, index) = new_index(&s.env, || f.snapshot(&[], &vec![blob.clone(); 20]));
    drop(blob);
    let r = s.restore_id(&id);
    bounded("60 MiB tree blob without a newline x20: restore", &r.out);
    r.out.expect_failure();
    r.out.expect_stderr_contains(&index);
    r.out
        .expect_stderr_contains("more than a tree blob can hold");
    assert_eq!(count_entries(&r.target), 0);
    for args in [vec!["ls", id.as_str()], vec!["check", "--read-data"]] {
        let out = operator(&s.env, &args);
        bounded(&format!("60 MiB tree blob x20: {}", args[0]), &out);
        out.expect_failure();
        assert_names(&out, &index);
    }
    // That index out of the way, a list of 20 MiB blobs without a newline.
    fs::remove_file(s.env.repo.join(&index)).unwrap();
    let blob = vec![b'x'; 20 * MIB as usize];
    let id = f.snapshot(&[], &vec![blob.clone(); 20]);
    drop(blob);
    let r = s.restore_id(&id);
    bounded("20 MiB tree blob without a newline x20: restore", &r.out);
    assert_refused_whole(&r, "longer than a file list entry can be");
    r.out.expect_code(1);
    let out = operator(&s.env, &["ls", &id]);
    bounded("20 MiB tree blob x20: ls", &out);
    out.expect_code(1);
    out.expect_stderr_contains("longer than a file list entry can be");
    let out = operator(&s.env, &["check", "--read-data", "--json"]);
    bounded("20 MiB tree blob x20: check --read-data", &out);
    out.expect_code(4);
    assert_reported(
        &problems(&out),
        &out,
        &id,
        &["longer than a file list entry"],
        None,
    );
}

// ---------------------------------------------------------------------------
// Impossible numbers in an index
// ---------------------------------------------------------------------------

/// An index entry 2^62 bytes long (restore, cat and export died of a 4 EiB
/// allocation), or at an offset near 2^63: the index object is refused by
/// name before any read, and nothing is restored.
#[test]
fn impossible_index_entries_are_refused_before_any_read() {
    for (case, length, offset) in [
        ("length 2^62", 1u64 << 62, None),
        ("offset 2^63", 10, Some(1u64 << 63)),
        ("offset past the pack", 10, Some(1u64 << 40)),
    ] {
        let s = Scene::new();
        let f = &s.forger;
        let data = b"0123456789".as_slice();
        let b = f.id(data);
        let (id, index) = new_index(&s.env, || {
            f.snapshot_with(
                &[data],
                &[lines(&[file(f, "x", data)])],
                None,
                Vec::new(),
                |ix| {
                    for e in &mut ix.packs[0].blobs {
                        if e.id == b {
                            e.length = length;
                            if let Some(o) = offset {
                                e.offset = o;
                            }
                        }
                    }
                },
            )
        });
        let r = s.restore_id(&id);
        bounded(&format!("index entry at {case}: restore"), &r.out);
        r.out.expect_failure();
        r.out.expect_stderr_contains(&index);
        r.out.expect_stderr_contains("outside the pack");
        assert_eq!(count_entries(&r.target), 0);
        let tar = s.env.unique_path("export.tar");
        for args in [
            vec!["cat", id.as_str(), "x"],
            vec!["export", id.as_str(), "--output", tar.to_str().unwrap()],
        ] {
            let out = operator(&s.env, &args);
            bounded(&format!("index entry at {case}: {}", args[0]), &out);
            out.expect_failure();
            out.expect_stderr_contains(&index);
        }
    }
}

// ---------------------------------------------------------------------------
// zstd bombs
// ---------------------------------------------------------------------------

/// A data blob whose frame inflates to 1 GiB (its index says 1 MiB): the
/// file is refused by name, decompression stops at 1 MiB. A snapshot object
/// and an index object that inflate to 1 GiB (one declaring it, one not):
/// named and refused at their caps (32 MiB); objects were decompressed up
/// to 512 MiB before.
#[test]
fn zstd_bombs_stop_at_their_caps() {
    let s = Scene::new();
    let f = &s.forger;
    let keys = &f.repo.keys;
    let ok = b"an honest file\n".as_slice();
    let bomb_id = f.id(b"the bomb's id");
    let bomb = SealedBlob {
        id: bomb_id,
        kind: BlobKind::Data,
        raw_length: MIB,
        bytes: keys.seal(Audience::Operator, &zstd_bomb(1 << 30, false)),
    };
    let id = f.snapshot_with(
        &[ok],
        &[lines(&[
            file(f, "ok", ok),
            file_with("bomb", MIB, &[(bomb_id, 0, MIB)]),
        ])],
        None,
        vec![bomb],
        |_| {},
    );
    let r = s.restore_id(&id);
    bounded("zstd bomb in a data blob: restore", &r.out);
    assert_refused_entries(&r, &["bomb"]);
    r.out.expect_stderr_contains("zstd");
    r.out.expect_code(1);
    assert_eq!(fs::read(r.target.join("ok")).unwrap(), ok);
    let out = operator(&s.env, &["cat", &id, "bomb"]);
    bounded("zstd bomb in a data blob: cat", &out);
    out.expect_code(1);

    for (folder, declared) in [("snapshots", false), ("index", true)] {
        let key = format!("{folder}/{}", "b0".repeat(32));
        let sealed = keys.seal(Audience::Both, &zstd_bomb(1 << 30, declared));
        fs::write(s.env.repo.join(&key), sealed).unwrap();
        let out = agent(&s.env, &["snapshots", "--json"]);
        bounded(&format!("zstd bomb in {folder}/: snapshots"), &out);
        out.expect_stderr_contains(&key);
        out.expect_stderr_contains("zstd");
        fs::remove_file(s.env.repo.join(&key)).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Objects larger than their kind can be; garbage in every folder
// ---------------------------------------------------------------------------

/// A 3 GiB sparse file in place of an object of each kind (no key needed to
/// plant one) is refused by its size before a byte is read (`snapshots`,
/// `restore` and `check` took 6.3 GB for one in `index/`), with a message
/// naming it. A 4 GiB pack whose footer claims a 4 GiB trailer is left
/// alone by the backup that adopts unindexed packs, and refused by `copy`.
fn oversized_objects_of_each_kind_are_refused_unread(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    let restore_target = env.path("restored");
    let target = restore_target.to_str().unwrap();
    let hex = "c0".repeat(32);
    const BIG: u64 = 3 << 30;
    let cases: Vec<(String, &str, Vec<Vec<&str>>)> = vec![
        (
            format!("index/{hex}"),
            "larger than an index object can be",
            vec![
                vec!["snapshots"],
                vec!["restore", "latest", "--target", target],
                vec!["check"],
            ],
        ),
        (
            format!("snapshots/{hex}"),
            "larger than a snapshot object can be",
            vec![
                vec!["snapshots"],
                vec!["restore", "latest", "--target", target],
                vec!["check"],
            ],
        ),
        (
            format!("audit/{hex}"),
            "larger than an audit object can be",
            vec![vec!["audit"]],
        ),
        (
            "keyring".into(),
            "larger than the keyring can be",
            vec![vec!["ls", "latest"]],
        ),
        (
            "lock".into(),
            "larger than the lock can be",
            vec![vec!["backup", src.to_str().unwrap()]],
        ),
        (
            format!("locks/{}", &hex[..32]),
            "larger than the lock can be",
            vec![vec!["backup", src.to_str().unwrap()]],
        ),
        (
            "config".into(),
            "larger than the config can be",
            vec![vec!["snapshots"]],
        ),
    ];
    for (key, needle, runs) in &cases {
        let path = env.repo.join(key);
        let saved = fs::read(&path).ok();
        plant_sparse(&env, key, BIG, b"");
        for args in runs {
            let out = operator(&env, args);
            bounded(&format!("3 GiB {key} ({backend:?}): {}", args[0]), &out);
            assert_names(&out, key);
            assert_names(&out, needle);
            if key == "lock" || key == "config" || key.starts_with("locks/") {
                out.expect_code(1);
            }
        }
        fs::remove_file(&path).unwrap();
        if let Some(bytes) = saved {
            env.replace_object(key, &bytes);
        }
        let _ = fs::remove_dir_all(&restore_target);
    }
    // A capability record of 3 GiB is not read: the writer probes the
    // storage again and writes a record of its own.
    plant_sparse(&env, "capabilities", BIG, b"");
    let out = agent(&env, &["backup", src.to_str().unwrap(), "--json"]);
    bounded(&format!("3 GiB capabilities ({backend:?}): backup"), &out);
    out.expect_ok();
    assert!(fs::metadata(env.repo.join("capabilities")).unwrap().len() < 64 * 1024);
    // A pack no index lists, its footer claiming a trailer of 4 GiB.
    let pack = format!("data/{}/{}", &hex[..2], hex);
    let mut footer = 0xffff_fff0u32.to_le_bytes().to_vec();
    footer.extend_from_slice(b"cofferP1");
    plant_sparse(&env, &pack, 4 << 30, &footer);
    let out = agent(&env, &["backup", src.to_str().unwrap(), "--json"]);
    bounded(&format!("4 GiB unindexed pack ({backend:?}): backup"), &out);
    out.expect_ok();
    let (to, _) = env.sibling_repo("copy");
    let out = agent(&env, &["copy", "--to", to.to_str().unwrap()]);
    bounded(&format!("4 GiB unindexed pack ({backend:?}): copy"), &out);
    out.expect_code(1);
    out.expect_stderr_contains(&pack);
    out.expect_stderr_contains("larger than a pack can be");
}

/// 500 bytes of garbage in `snapshots/`, `index/`, `data/`, `audit/`, and as
/// the `keyring` and the `lock` (no key is needed to plant any): each is
/// named by what reads it, nothing panics, memory stays small.
#[test]
fn garbage_in_every_folder_is_named() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    let garbage = random_bytes(500, 7);
    let target = env.path("restored");
    let target = target.to_str().unwrap();
    let hex = "d1".repeat(32);
    let (to, _) = env.sibling_repo("copy");
    let to = to.to_str().unwrap().to_string();
    let cases: Vec<(String, Vec<Vec<&str>>)> = vec![
        (
            format!("snapshots/{hex}"),
            vec![
                vec!["snapshots"],
                vec!["restore", "latest", "--target", target],
                vec!["check", "--read-data"],
            ],
        ),
        (
            format!("index/{hex}"),
            vec![
                vec!["snapshots"],
                vec!["restore", "latest", "--target", target],
                vec!["check", "--read-data"],
            ],
        ),
        (format!("audit/{hex}"), vec![vec!["audit"]]),
        (
            format!("data/{}/{hex}", &hex[..2]),
            vec![vec!["copy", "--to", &to]],
        ),
        ("keyring".into(), vec![vec!["ls", "latest"]]),
        ("lock".into(), vec![vec!["backup", src.to_str().unwrap()]]),
        (
            format!("locks/{}", &hex[..32]),
            vec![vec!["backup", src.to_str().unwrap()]],
        ),
    ];
    for (key, runs) in &cases {
        let path = env.repo.join(key);
        let saved = fs::read(&path).ok();
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        env.replace_object(key, &garbage);
        for args in runs {
            let out = operator(&env, args);
            bounded(&format!("500 bytes of garbage as {key}: {}", args[0]), &out);
            assert_names(&out, key);
            if key == "lock" || key.starts_with("locks/") {
                out.expect_code(1);
            }
        }
        match saved {
            Some(bytes) => env.replace_object(key, &bytes),
            None => fs::remove_file(&path).unwrap(),
        }
        let _ = fs::remove_dir_all(target);
    }
    // A garbage capability record is probed over and replaced.
    env.replace_object("capabilities", &garbage);
    let out = agent(&env, &["backup", src.to_str().unwrap(), "--json"]);
    bounded("500 bytes of garbage as capabilities: backup", &out);
    out.expect_ok();
    assert_ne!(fs::read(env.repo.join("capabilities")).unwrap(), garbage);
    // The garbage pack, no index naming it, is passed over by a backup.
    let pack = format!("data/{}/{hex}", &hex[..2]);
    env.replace_object(&pack, &garbage);
    let out = agent(&env, &["backup", src.to_str().unwrap(), "--json"]);
    bounded("500 bytes of garbage in data/: backup", &out);
    out.expect_ok();
    assert!(Path::new(&env.repo.join(&pack)).exists());
}

on_both_backends!(oversized_objects_of_each_kind_are_refused_unread);

// ---------------------------------------------------------------------------
// The backup never writes what readers refuse
// ---------------------------------------------------------------------------

/// A file of so many chunks that its file list entry would pass the 64 MiB
/// cap (a 1 GiB sparse file in a repository whose config asks for chunks of
/// 64 bytes to 1 KiB: over a million pieces of zeros, one blob) is skipped
/// with a clear reason, not written into a snapshot restore would refuse;
/// the rest restores.
#[test]
fn a_file_with_too_many_pieces_is_skipped_by_the_backup() {
    let env = TestEnv::with_repo();
    let config = env.repo.join("config");
    let mut v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    v["data_chunks"] = serde_json::json!({"min": 64, "avg": 256, "max": 1024});
    fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
    let src = env.source_dir("src");
    write_file(&src.join("small.txt"), b"small\n");
    let huge = src.join("huge.img");
    fs::File::create(&huge).unwrap().set_len(1 << 30).unwrap();
    let out = agent(&env, &["backup", src.to_str().unwrap(), "--json"]);
    bounded("a file of a million pieces: backup", &out);
    out.expect_code(3);
    let skipped = &out.json()["skipped"];
    let huge_shown = format!("{}", huge.display());
    assert!(
        skipped.as_array().is_some_and(|s| s.len() == 1
            && s[0]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&huge_shown))
            && s[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("too many for one file list entry"))),
        "{out}"
    );
    let target = env.restore("latest");
    let restored = restored_path(&target, &src);
    assert_eq!(fs::read(restored.join("small.txt")).unwrap(), b"small\n");
    assert!(!restored.join("huge.img").exists());
    operator(&env, &["check", "--read-data"]).expect_ok();
}
