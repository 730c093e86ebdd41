//! `coffer erase`: files matching a glob leave every snapshot, and their data
//! leaves storage, including the bytes of a small file bundled with files
//! that stay; everything else restores byte for byte; a cut-off erase leaves
//! every snapshot whole and running it again finishes the job.

use crate::env::{
    Backend, TestEnv, on_both_backends, random_bytes, restored_path, stored_form, str_field,
    u64_field, write_file,
};
use coffer::catalog::{BlobLocation, BlobMap};
use coffer::repo::Repository;
use coffer::repo::ids::{BlobId, SnapshotId};
use coffer::repo::keys::OperatorIdentity;
use coffer::repo::store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

on_both_backends!(erase_removes_files_and_their_data);

/// Regular files below `dir` (hard links count under each name): path → bytes.
type Files = BTreeMap<String, Vec<u8>>;

fn files_of(dir: &Path) -> Files {
    crate::env::list_files(dir)
        .into_iter()
        .map(|(rel, _)| {
            let bytes = std::fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Four snapshots: one of an unrelated folder (`keep`), then three of `src`
/// with a small secret bundled among kept small files, a 3 MiB secret, a
/// hard link to the small secret; the small secret changes in the second and
/// the secrets are gone from the source in the third (whose kept small files
/// still use the bundles that held them).
struct Fixture {
    env: TestEnv,
    src: PathBuf,
    keep: PathBuf,
    /// What each snapshot must restore once the secrets are erased (below its source).
    expected: Vec<Files>,
    /// Unique bytes inside each version of the small secret.
    markers: Vec<Vec<u8>>,
    big: Vec<u8>,
    /// The glob that names the secrets.
    glob: String,
    /// The stored paths erase must remove.
    erased: Vec<String>,
}

const ERASED: [&str; 3] = ["secret/customer-42.txt", "secret/big.bin", "secret-link"];

fn fixture(backend: Backend) -> Fixture {
    let env = TestEnv::with_repo_on(backend);
    let keep = env.source_dir("keep");
    write_file(&keep.join("notes.txt"), b"unrelated notes\n");
    write_file(&keep.join("data.bin"), &random_bytes(300 * 1024, 7));
    env.backup(&[&keep]);
    let mut expected = vec![files_of(&keep)];

    let src = env.source_dir("src");
    let markers = vec![random_bytes(48, 4242), random_bytes(48, 4343)];
    let big = random_bytes(3 * 1024 * 1024, 42);
    write_file(
        &src.join("a.txt"),
        b"alpha: kept, bundled with the secret\n",
    );
    std::fs::hard_link(src.join("a.txt"), src.join("a-link")).unwrap();
    write_file(&src.join("b.txt"), &random_bytes(5000, 11));
    write_file(&src.join("docs/c.txt"), b"gamma: kept as well\n");
    write_file(&src.join("other.bin"), &random_bytes(1024 * 1024, 12));
    write_file(&src.join("secret/big.bin"), &big);
    let mut secret = b"Jane Roe, customer 42, account ".to_vec();
    secret.extend_from_slice(&markers[0]);
    write_file(&src.join("secret/customer-42.txt"), &secret);
    std::fs::hard_link(src.join("secret/customer-42.txt"), src.join("secret-link")).unwrap();
    write_file(
        &src.join("z.txt"),
        b"zeta: after the secrets in walk order\n",
    );
    let without_secrets = |src: &Path| {
        let mut f = files_of(src);
        for e in ERASED {
            f.remove(e);
        }
        f
    };
    env.backup(&[&src]);
    expected.push(without_secrets(&src));

    // The small secret changes; a new small file joins its bundle.
    std::fs::remove_file(src.join("secret-link")).unwrap();
    std::fs::remove_file(src.join("secret/customer-42.txt")).unwrap();
    let mut secret = b"Jane Roe, customer 42, new account ".to_vec();
    secret.extend_from_slice(&markers[1]);
    write_file(&src.join("secret/customer-42.txt"), &secret);
    std::fs::hard_link(src.join("secret/customer-42.txt"), src.join("secret-link")).unwrap();
    write_file(
        &src.join("n.txt"),
        b"new small file, bundled with the changed secret\n",
    );
    env.backup(&[&src]);
    expected.push(without_secrets(&src));

    // The secrets are gone from the source; kept files still use their bundles.
    std::fs::remove_dir_all(src.join("secret")).unwrap();
    std::fs::remove_file(src.join("secret-link")).unwrap();
    env.backup(&[&src]);
    expected.push(without_secrets(&src));

    let stored = stored_form(&src).to_string_lossy().into_owned();
    Fixture {
        glob: format!("{stored}/secret/**"),
        erased: ERASED.iter().map(|e| format!("{stored}/{e}")).collect(),
        env,
        src,
        keep,
        expected,
        markers,
        big,
    }
}

/// The repository opened in-process as the operator, straight from its
/// objects on disk (for S3: the server's files).
fn open_repo(repo_dir: &Path, identity: &Path) -> Repository {
    let store = Store::open(repo_dir.to_str().unwrap(), &Default::default()).unwrap();
    let identity = OperatorIdentity::load(identity, &|| Ok(String::new())).unwrap();
    Repository::open_operator(store, identity).unwrap()
}

fn blob_map(repo: &Repository) -> BlobMap {
    let mut map = BlobMap::default();
    for ix in repo.list_indexes().unwrap() {
        for p in repo.read_index(&ix).unwrap().packs {
            for b in p.blobs {
                map.insert(BlobLocation {
                    pack: p.id,
                    entry: b,
                });
            }
        }
    }
    map
}

/// The blobs every snapshot's `path` uses.
fn content_of(repo: &Repository, path: &str) -> HashSet<BlobId> {
    let map = blob_map(repo);
    let mut out = HashSet::new();
    for id in repo.list_snapshot_ids().unwrap() {
        let snap = repo.read_snapshot(&id).unwrap();
        coffer::engine::for_each_entry(repo, &map, &snap, |e| {
            if e.path == path.as_bytes() {
                out.extend(e.content.iter().map(|x| x.blob));
            }
            Ok(())
        })
        .unwrap();
    }
    out
}

/// Every blob of every pack in storage, read through the pack trailers (not
/// the index) and decrypted.
fn stored_blobs(repo: &Repository) -> Vec<(BlobId, Vec<u8>)> {
    let mut out = Vec::new();
    for (pack, size) in repo.list_packs().unwrap() {
        for e in repo.read_pack_trailer(&pack, size).unwrap() {
            out.push((e.id, repo.read_blob(&pack, &e).unwrap()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that nothing in storage holds the secrets: not the small one's
/// unique bytes, not any 64-byte window of the big one (every such window
/// holds one of its 32-byte aligned blocks), not their names, and none of the
/// blobs big.bin was stored as.
fn assert_gone_from_storage(f: &Fixture, repo_dir: &Path, big_blobs: &HashSet<BlobId>) {
    let repo = open_repo(repo_dir, &f.env.identity);
    let blocks: HashSet<&[u8]> = f.big.chunks_exact(32).collect();
    let heads: HashSet<u64> = blocks
        .iter()
        .map(|b| u64::from_le_bytes(b[..8].try_into().unwrap()))
        .collect();
    let blobs = stored_blobs(&repo);
    assert!(!blobs.is_empty());
    for (id, plain) in &blobs {
        assert!(
            !big_blobs.contains(id),
            "blob {id} of big.bin is still in a pack"
        );
        for m in &f.markers {
            assert!(
                !contains(plain, m),
                "blob {id} still holds the small secret's bytes"
            );
        }
        assert!(
            !contains(plain, b"customer-42"),
            "blob {id} still names the erased file"
        );
        for i in 0..plain.len().saturating_sub(31) {
            let head = u64::from_le_bytes(plain[i..i + 8].try_into().unwrap());
            if heads.contains(&head) {
                assert!(
                    !blocks.contains(&plain[i..i + 32]),
                    "blob {id} holds bytes of big.bin at {i}"
                );
            }
        }
    }
}

fn snapshot_ids(env: &TestEnv) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| str_field(s, "id").to_string())
        .collect()
}

/// Every snapshot lists none of the erased paths and restores exactly what
/// is expected of it, kept small files of the mixed bundles included.
fn assert_snapshots_clean(f: &Fixture) {
    let ids = snapshot_ids(&f.env);
    assert_eq!(ids.len(), f.expected.len(), "one snapshot per original");
    for (n, id) in ids.iter().enumerate() {
        let out = f.env.operator(["ls", id, "--json"]);
        out.expect_ok();
        let listed: Vec<String> = out
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| str_field(e, "path").to_string())
            .collect();
        for p in &f.erased {
            assert!(!listed.contains(p), "snapshot {id} still lists {p}\n{out}");
        }
        let target = f.env.restore(id);
        let root = if n == 0 { &f.keep } else { &f.src };
        let got = files_of(&restored_path(&target, root));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            f.expected[n].keys().collect::<Vec<_>>(),
            "snapshot {n} ({id}) restores other files than expected"
        );
        for (rel, bytes) in &f.expected[n] {
            assert!(
                got[rel] == *bytes,
                "snapshot {n}: {rel} differs after erase"
            );
        }
        if n > 0 {
            // One file found through the rewritten tree index, past the erased lines.
            let z = format!("{}/z.txt", stored_form(&f.src).display());
            let cat = f.env.operator(["cat", id, &z]);
            cat.expect_ok();
            assert_eq!(cat.stdout.as_bytes(), &f.expected[n]["z.txt"][..], "{cat}");
        }
    }
}

fn erase_removes_files_and_their_data(backend: Backend) {
    let f = fixture(backend);
    let env = &f.env;
    let before = snapshot_ids(env);
    let big_path = f.erased[1].clone();
    let big_blobs = content_of(&open_repo(&env.repo, &env.identity), &big_path);
    assert!(big_blobs.len() >= 3, "big.bin is several chunks");

    // A dry run names everything and changes nothing.
    let dry = env.operator(["erase", "--path", &f.glob, "--dry-run", "--json"]);
    dry.expect_ok();
    let plan = dry.json();
    assert_eq!(plan["dry_run"], Value::Bool(true));
    assert_eq!(plan["snapshots"].as_array().unwrap().len(), 3, "{dry}");
    for p in &f.erased {
        assert!(
            plan["paths"].as_array().unwrap().iter().any(|v| v == p),
            "the dry run names {p}\n{dry}"
        );
    }
    assert_eq!(snapshot_ids(env), before, "a dry run changes nothing");

    let out = env.operator(["erase", "--path", &f.glob, "--json"]);
    out.expect_ok();
    let r = out.json();
    let snaps = r["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3, "the three snapshots of src change\n{out}");
    assert!(
        u64_field(&r, "bundles_restored") >= 2,
        "both bundles of the small secret held kept files\n{out}"
    );
    assert!(u64_field(&r, "files_restored") > 0, "{out}");
    assert_eq!(u64_field(&r, "still_stored"), 0, "{out}");
    assert!(
        u64_field(&r, "bytes_freed") >= 3 * 1024 * 1024,
        "big.bin's bytes are freed\n{out}"
    );
    let last = &snaps[2];
    assert_eq!(
        u64_field(last, "entries_removed"),
        0,
        "the third lost no entry\n{out}"
    );
    assert!(
        u64_field(last, "files_restored") > 0,
        "but its kept files moved off the mixed bundles\n{out}"
    );
    assert_eq!(
        u64_field(&snaps[0], "entries_removed"),
        3,
        "file, big file and hard link\n{out}"
    );
    for p in &f.erased {
        assert!(
            r["paths"].as_array().unwrap().iter().any(|v| v == p),
            "{p}\n{out}"
        );
    }

    let after = snapshot_ids(env);
    assert_eq!(after[0], before[0], "the unrelated snapshot is left alone");
    for n in 1..4 {
        assert_ne!(after[n], before[n], "snapshot {n} was rewritten");
    }
    assert_snapshots_clean(&f);
    env.check(true).expect_ok();
    assert_gone_from_storage(&f, &env.repo, &big_blobs);

    // Again: nothing left to do, nothing changes.
    let again = env.operator(["erase", "--path", &f.glob, "--json"]);
    again.expect_ok();
    assert!(
        again.json()["snapshots"].as_array().unwrap().is_empty(),
        "{again}"
    );
    assert_eq!(snapshot_ids(env), after, "a second erase is a no-op");
}

/// The state an erase leaves when cut off after writing the new snapshots
/// and before deleting the old (built by copying a finished erase's new
/// objects into a copy of the repository taken before): every snapshot is
/// whole, old and new side by side; running erase again deletes the old and
/// the erased data, with the same result as an erase that was not cut off.
#[test]
fn a_cut_off_erase_is_finished_by_running_it_again() {
    let f = fixture(Backend::Local);
    let env = &f.env;
    let big_blobs = content_of(&open_repo(&env.repo, &env.identity), &f.erased[1]);
    let before = snapshot_ids(env);
    let copy = env.path("repo-copy");
    copy_dir(&env.repo, &copy);
    let out = env.operator(["erase", "--path", &f.glob, "--json"]);
    out.expect_ok();
    let finished = snapshot_ids(env);

    // Everything the erase wrote, and none of its deletions.
    let mut added = 0;
    for prefix in ["data", "index", "snapshots"] {
        for file in walk(&env.repo.join(prefix)) {
            let rel = file.strip_prefix(&env.repo).unwrap();
            if !copy.join(rel).exists() {
                std::fs::create_dir_all(copy.join(rel).parent().unwrap()).unwrap();
                std::fs::copy(&file, copy.join(rel)).unwrap();
                added += 1;
            }
        }
    }
    assert!(added >= 4, "the erase wrote packs, an index and snapshots");
    // Cut off while deleting the old snapshots: the first is gone already.
    let first_old = SnapshotId::from_hex(&before[1]).unwrap();
    std::fs::remove_file(copy.join(first_old.key())).unwrap();
    let cut_env_flags = |args: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
        v.extend([
            "--repo".into(),
            copy.clone().into_os_string(),
            "--identity".into(),
            env.identity.clone().into_os_string(),
            "--catalog".into(),
            env.path("copy.sqlite").into_os_string(),
        ]);
        v
    };
    let listing = env.run(cut_env_flags(&["snapshots", "--json"]));
    listing.expect_ok();
    let side_by_side = listing.json().as_array().unwrap().len();
    assert_eq!(side_by_side, 6, "old and new side by side\n{listing}");
    env.run(cut_env_flags(&["check", "--read-data"]))
        .expect_ok();

    let rerun = env.run(cut_env_flags(&["erase", "--path", &f.glob, "--json"]));
    rerun.expect_ok();
    let r = rerun.json();
    let actions: Vec<&str> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "action"))
        .collect();
    assert_eq!(
        actions, ["finished"; 2],
        "the replacements were there already\n{rerun}"
    );
    let listing = env.run(cut_env_flags(&["snapshots", "--json"]));
    let ids: Vec<String> = listing
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "id").to_string())
        .collect();
    assert_eq!(
        ids, finished,
        "the same snapshots as the erase that was not cut off"
    );
    env.run(cut_env_flags(&["check", "--read-data"]))
        .expect_ok();
    assert_gone_from_storage(&f, &copy, &big_blobs);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for file in walk(from) {
        let dest = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}
