//! Damaged repositories: an altered, truncated or missing pack is found by
//! `check`, which names the object, the affected snapshot and files; restore
//! fails loudly for the affected files and still restores the others exactly.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::env::*;

/// With 16 MiB packs, 24 MiB of random data makes two packs: damaging the
/// larger one affects some files but not all.
const FILES: usize = 6;
const FILE_SIZE: u64 = 4 * MIB;

struct Fixture {
    env: TestEnv,
    src: PathBuf,
    short_id: String,
    /// The pack to damage: object key, path, original bytes, mode.
    key: String,
    pack_path: PathBuf,
    original: Vec<u8>,
    mode: u32,
}

fn fixture(backend: Backend) -> Fixture {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    for i in 0..FILES {
        write_random_file(
            &src.join(format!("file-{i:02}.bin")),
            FILE_SIZE,
            9000 + i as u64,
        );
    }
    write_file(&src.join("small-a.txt"), b"small file a");
    write_file(&src.join("small-b.txt"), b"small file b");
    env.backup(&[&src]);
    env.check(true).expect_ok();
    let snaps = env.snapshots();
    let short_id = str_field(&snaps[0], "short_id").to_string();
    let packs = env.packs();
    assert!(!packs.is_empty(), "no packs");
    // The largest pack: the one most likely to hold file data only.
    let (key, pack_path, _) = packs.iter().max_by_key(|p| p.2).unwrap().clone();
    eprintln!(
        "tamper: {} packs: {}",
        packs.len(),
        packs
            .iter()
            .map(|p| format!("{} ({})", p.0, mib(p.2)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let original = fs::read(&pack_path).unwrap();
    let mode = fs::metadata(&pack_path).unwrap().permissions().mode();
    Fixture {
        env,
        src,
        short_id,
        key,
        pack_path,
        original,
        mode,
    }
}

impl Fixture {
    fn repair(&self) {
        if let Ok(md) = fs::metadata(&self.pack_path) {
            let mut p = md.permissions();
            p.set_mode(0o644);
            fs::set_permissions(&self.pack_path, p).unwrap();
        }
        fs::write(&self.pack_path, &self.original).unwrap();
        fs::set_permissions(&self.pack_path, fs::Permissions::from_mode(self.mode)).unwrap();
    }
}

/// `check` of a damaged repository: exit 4, the damaged pack and the
/// snapshot named in JSON and text output. Returns the affected files
/// reported (stored form, without a leading '/').
fn expect_check_reports(
    fx: &Fixture,
    read_data: bool,
    what: &str,
    missing: bool,
) -> BTreeSet<String> {
    let env = &fx.env;
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = env.operator(&args);
    out.expect_code(4);
    let report = out.json();
    assert_eq!(
        report["ok"],
        Value::Bool(false),
        "{what}: check --json must say ok: false\n{out}"
    );
    let problems = report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: problems must be an array\n{out}"));
    let mine: Vec<&Value> = problems
        .iter()
        .filter(|p| p["object"].as_str() == Some(fx.key.as_str()))
        .collect();
    assert!(
        !mine.is_empty(),
        "{what}: no problem names the damaged pack {}\n{out}",
        fx.key
    );
    for p in problems {
        let obj = p["object"].as_str().unwrap_or("");
        assert!(
            !obj.starts_with("data/") || obj == fx.key,
            "{what}: check reports an intact pack as damaged: {p}\n{out}"
        );
    }
    let mut files = BTreeSet::new();
    let mut snaps = BTreeSet::new();
    for p in &mine {
        let text = p["problem"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: problem text missing: {p}"));
        assert!(!text.is_empty());
        if missing {
            let t = text.to_lowercase();
            assert!(
                t.contains("missing") || t.contains("not found") || t.contains("no such"),
                "{what}: the problem should say the pack is missing: {p}"
            );
        }
        for s in p["snapshots"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: snapshots must be an array: {p}"))
        {
            snaps.insert(s.as_str().unwrap().to_string());
        }
        for f in p["files"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: files must be an array: {p}"))
        {
            files.insert(normalize_reported(f.as_str().unwrap()).to_string());
        }
    }
    assert!(
        snaps.contains(&fx.short_id),
        "{what}: the problem must name the affected snapshot {} (got {snaps:?})\n{out}",
        fx.short_id
    );
    assert!(
        !files.is_empty(),
        "{what}: the problem must name the affected files\n{out}"
    );
    let stored = stored_form(&fx.src);
    for f in &files {
        assert!(
            f.starts_with(stored.to_str().unwrap()),
            "{what}: affected file {f:?} is not in the stored form {}/...",
            stored.display()
        );
    }

    // Text output names the object and the snapshot too.
    let mut args = vec!["check"];
    if read_data {
        args.push("--read-data");
    }
    let out = env.operator(&args);
    out.expect_code(4);
    let all = out.all_output();
    assert!(
        all.contains(&fx.key),
        "{what}: check output must name {}\n{out}",
        fx.key
    );
    assert!(
        all.contains(&fx.short_id),
        "{what}: check output must name snapshot {}\n{out}",
        fx.short_id
    );

    // The agent (no identity) finds it as well: packs are named by their hash.
    let out = env.agent(&args);
    out.expect_code(4);
    assert!(
        out.all_output().contains(&fx.key),
        "{what}: check as the agent must name {}\n{out}",
        fx.key
    );
    files
}

/// Restore of the damaged snapshot: non-zero exit; it names the files it
/// could not restore, each of which `check` reported as affected (check
/// misses nothing that is really lost); every file it does not name is
/// restored exactly.
fn expect_partial_restore(fx: &Fixture, affected: &BTreeSet<String>, what: &str) {
    let env = &fx.env;
    let target = env.unique_path("restore");
    fs::create_dir(&target).unwrap();
    let out = env.restore_raw("latest", &target, &[]);
    out.expect_failure();
    let stored = stored_form(&fx.src);
    let restored_root = restored_path(&target, &fx.src);
    let mut intact = BTreeSet::new();
    let mut named = BTreeSet::new();
    let files = regular_files(&fx.src);
    for rel in &files {
        let stored_file = format!("{}/{}", stored.display(), rel.display());
        if out.stderr.contains(&stored_file) {
            named.insert(stored_file);
            continue;
        }
        let s = fx.src.join(rel);
        let d = restored_root.join(rel);
        let md = fs::symlink_metadata(&d).unwrap_or_else(|e| {
            panic!(
                "{what}: {} was not reported damaged but was not restored ({e})\n{out}",
                rel.display()
            )
        });
        let diffs = compare_entry(rel, &s, &fs::symlink_metadata(&s).unwrap(), &d, &md);
        assert!(
            diffs.is_empty(),
            "{what}: {} was not reported damaged but was restored wrongly: {diffs:?}\n{out}",
            rel.display()
        );
        intact.insert(stored_file);
    }
    assert!(
        !named.is_empty(),
        "{what}: restore must name the file(s) it could not restore\n{out}"
    );
    let missed: Vec<&String> = named.difference(affected).collect();
    assert!(
        missed.is_empty(),
        "{what}: restore could not restore {missed:?}, but check did not report them as affected \
         (check reported {affected:?})\n{out}"
    );
    let over: Vec<&String> = affected.intersection(&intact).collect();
    eprintln!(
        "{what}: check named {} affected file(s); restore failed on {}; {} of {} restored intact{}",
        affected.len(),
        named.len(),
        intact.len(),
        files.len(),
        if over.is_empty() {
            String::new()
        } else {
            format!("; note: check also reported {over:?}, which restored intact")
        }
    );
    if intact.is_empty() {
        eprintln!(
            "{what}: note: every file was affected by one pack; the 'others restored' part is vacuous"
        );
    }
    fs::remove_dir_all(&target).unwrap();
}

fn scenario(fx: &Fixture, what: &str, damage: impl Fn(&Path), read_data: bool, missing: bool) {
    damage(&fx.pack_path);
    let affected = expect_check_reports(fx, read_data, what, missing);
    expect_partial_restore(fx, &affected, what);
}

/// (description, how to damage the pack, check with --read-data, pack missing afterwards)
type Scenario = (&'static str, Box<dyn Fn(&Path)>, bool, bool);

fn damaged_packs_are_found_and_contained(backend: Backend) {
    let fx = fixture(backend);
    let mut failures = Vec::new();
    let scenarios: Vec<Scenario> = vec![
        (
            "(a) one byte flipped in the middle of a pack",
            Box::new(|p: &Path| {
                fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
                let mut b = fs::read(p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                fs::write(p, b).unwrap();
            }),
            true,
            false,
        ),
        (
            "(b) a truncated pack",
            Box::new(|p: &Path| {
                fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
                let len = fs::metadata(p).unwrap().len();
                fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }),
            true,
            false,
        ),
        (
            "(c) a deleted pack",
            Box::new(|p: &Path| fs::remove_file(p).unwrap()),
            false,
            true,
        ),
    ];
    for (what, damage, read_data, missing) in scenarios {
        let r = catch_unwind(AssertUnwindSafe(|| {
            scenario(&fx, what, damage, read_data, missing)
        }));
        fx.repair();
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{what}:\n{msg}"));
        }
        // Repaired: the repository is whole again.
        let out = fx.env.check(true);
        if !out.ok() {
            failures.push(format!(
                "{what}: after putting the original pack back, check --read-data fails:\n{out}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 3 damage scenarios failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A flipped byte in an index object or a snapshot object is found by
/// `check` (no --read-data needed: every object is authenticated).
fn damaged_index_and_snapshot_objects_are_found(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 300 * KIB, 1);
    write_file(&src.join("b.txt"), b"bee");
    env.backup(&[&src]);
    env.check(false).expect_ok();

    let mut failures = Vec::new();
    for dir in ["index", "snapshots"] {
        let entry = fs::read_dir(env.repo.join(dir))
            .unwrap()
            .next()
            .unwrap_or_else(|| panic!("no object under {dir}/"))
            .unwrap();
        let path = entry.path();
        let key = format!("{dir}/{}", entry.file_name().to_string_lossy());
        let original = fs::read(&path).unwrap();
        let mut bad = original.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x01;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, &bad).unwrap();
        let out = env.operator(["check", "--json"]);
        let r = catch_unwind(AssertUnwindSafe(|| {
            out.expect_code(4);
            let report = out.json();
            let problems = report["problems"].as_array().cloned().unwrap_or_default();
            assert!(
                problems
                    .iter()
                    .any(|p| p["object"].as_str() == Some(key.as_str())),
                "check must name the damaged object {key}\n{out}"
            );
        }));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{key}: {msg}"));
        }
        fs::write(&path, &original).unwrap();
        let out = env.check(false);
        if !out.ok() {
            failures.push(format!("after repairing {key}, check fails\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// On S3 the objects are damaged where the server keeps them (s3s-fs: one
// plain file per object), so coffer reads the damage back over S3.
on_both_backends!(
    damaged_packs_are_found_and_contained,
    damaged_index_and_snapshot_objects_are_found,
);
