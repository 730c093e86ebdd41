//! History that heals (issue 13): when storage loses or damages a pack, the
//! next backup stores the data again instead of building on what is lost;
//! states say which snapshots are damaged, whatever the order and whatever
//! the catalog; one bad object never blocks the rest; `repair` rebuilds
//! the index and repairs damaged snapshots.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::env::*;

/// Six 4 MiB random files: two packs (16 MiB each at most), so losing the
/// larger one loses some files' data but not the file list or the others.
fn source(env: &TestEnv) -> PathBuf {
    let src = env.path("src");
    for i in 0..6 {
        write_random_file(&src.join(format!("file-{i}.bin")), 4 * MIB, 700 + i);
    }
    write_file(&src.join("small.txt"), b"a small file");
    src
}

/// The largest pack: (key, path).
fn largest_pack(env: &TestEnv) -> (String, PathBuf) {
    let packs = env.packs();
    assert!(packs.len() >= 2, "expected two packs or more: {packs:?}");
    let (key, path, _) = packs.iter().max_by_key(|p| p.2).unwrap().clone();
    (key, path)
}

fn drop_catalog(env: &TestEnv) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = env.catalog.clone().into_os_string();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

fn snapshot_states(env: &TestEnv) -> Vec<(String, String)> {
    env.snapshots()
        .iter()
        .map(|s| {
            (
                str_field(s, "short_id").to_string(),
                str_field(s, "state").to_string(),
            )
        })
        .collect()
}

/// The short ids `check --read-data --json` names as losing data.
fn check_named(env: &TestEnv) -> (Output, BTreeSet<String>) {
    let out = env.operator(["check", "--read-data", "--json"]);
    out.expect_no_panic();
    let v: Value = out.json();
    let named = v["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .flat_map(|p| p["snapshots"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(String::from))
        .collect();
    (out, named)
}

/// Flips one byte in the middle of an object, keeping its size, as damage
/// at rest or a rewrite by whoever controls the storage would.
fn flip_byte(env: &TestEnv, key: &str, path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    // A moment later than the index, as any later write is.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    env.replace_object(key, &b);
}

/// Back up, lose (delete or damage) a pack, back up again with nothing
/// changed: the new snapshot must not build on the lost data. It restores
/// byte for byte and `check --read-data` does not name it.
fn heal_after(backend: Backend, damage: &str, fresh_catalog: bool) {
    let env = TestEnv::with_repo_on(backend);
    let src = source(&env);
    env.backup(&[&src]);
    let (key, path) = largest_pack(&env);
    match damage {
        "delete" => fs::remove_file(&path).unwrap(),
        "flip" => flip_byte(&env, &key, &path),
        other => panic!("unknown damage {other}"),
    }
    if fresh_catalog {
        drop_catalog(&env);
    }
    let out = env.backup_raw(&[&src], &[]);
    out.expect_ok();
    let v = out.json();
    assert!(
        u64_field(&v, "stored_added") > MIB,
        "{damage}: the second backup must store the lost data again, stored {}\n{out}",
        u64_field(&v, "stored_added")
    );
    out.expect_stderr_contains("stored again");
    let new_id = str_field(&v, "snapshot")[..8].to_string();
    let target = env.restore(&new_id);
    assert_trees_equal(&src, &restored_path(&target, &src));
    let (out, named) = check_named(&env);
    assert!(
        !named.contains(&new_id),
        "{damage}: check --read-data names the new snapshot {new_id}\n{out}"
    );
    // The blobs are the same ids, stored again: the old snapshot heals too.
    let states = snapshot_states(&env);
    assert!(
        states.iter().all(|(_, s)| s != "damaged"),
        "{damage}: every snapshot should be whole again: {states:?}"
    );
}

fn a_deleted_pack_is_stored_again(backend: Backend) {
    heal_after(backend, "delete", false);
}

fn a_deleted_pack_is_stored_again_with_a_fresh_catalog(backend: Backend) {
    heal_after(backend, "delete", true);
}

fn a_damaged_pack_is_stored_again(backend: Backend) {
    heal_after(backend, "flip", false);
}

fn a_damaged_pack_is_stored_again_with_a_fresh_catalog(backend: Backend) {
    heal_after(backend, "flip", true);
}

/// After a pack is lost, every snapshot that needs it is damaged, each
/// judged on its own: with a warm catalog, a fresh one and after rebuild.
fn every_snapshot_that_lost_data_is_damaged(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = source(&env);
    env.backup(&[&src]);
    // The first backup's smaller pack holds its file list and reference
    // list, and data the later snapshots need too.
    let first = env.packs();
    let (_, path, _) = first.iter().min_by_key(|p| p.2).unwrap().clone();
    write_file(&src.join("second.txt"), b"second");
    env.backup(&[&src]);
    write_file(&src.join("third.txt"), b"third");
    env.backup(&[&src]);
    fs::remove_file(&path).unwrap();
    // Fresh first: the oldest snapshot's reference list can not be read,
    // and that must not hide what the newer ones lost.
    drop_catalog(&env);
    let fresh = snapshot_states(&env);
    assert_eq!(fresh.len(), 3);
    assert!(
        fresh.iter().all(|(_, s)| s == "damaged"),
        "fresh catalog: {fresh:?}"
    );
    let warm = snapshot_states(&env);
    assert!(
        warm.iter().all(|(_, s)| s == "damaged"),
        "warm catalog: {warm:?}"
    );
    env.agent(["catalog", "rebuild"]).expect_ok();
    let rebuilt = snapshot_states(&env);
    assert!(
        rebuilt.iter().all(|(_, s)| s == "damaged"),
        "after catalog rebuild: {rebuilt:?}"
    );
    // `latest` passes over them all and says so.
    let target = env.unique_path("restore");
    let out = env.restore_raw("latest", &target, &[]);
    out.expect_no_panic();
    out.expect_stderr_contains("damaged");
}

/// Damage only a read can find (bytes changed, size kept) becomes known to
/// every later command once `check --read-data` found it: `snapshots` says
/// damaged, on a fresh catalog too, and `latest` skips it, saying so.
fn check_findings_mark_snapshots_damaged(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let older = env.path("older");
    write_random_file(&older.join("keep.bin"), 64 * KIB, 5);
    env.backup(&[&older]);
    let src = source(&env);
    env.backup(&[&src]);
    let states = snapshot_states(&env);
    let newest = states[1].0.clone();
    // The pack the second backup wrote and the first does not use.
    let (key, path) = largest_pack(&env);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut b = fs::read(&path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x01;
    env.replace_object(&key, &b);
    let (out, named) = check_named(&env);
    out.expect_code(4);
    assert!(named.contains(&newest), "check must name {newest}\n{out}");
    for catalog in ["warm", "fresh"] {
        if catalog == "fresh" {
            drop_catalog(&env);
        }
        let states = snapshot_states(&env);
        let state = states.iter().find(|(id, _)| *id == newest).unwrap();
        assert_eq!(state.1, "damaged", "{catalog} catalog: {states:?}");
    }
    let target = env.unique_path("restore");
    let out = env.restore_raw("latest", &target, &[]);
    out.expect_ok();
    out.expect_stderr_contains(&format!("skipped damaged snapshot {newest}"));
}

/// Garbage planted in `snapshots/` and `index/` (no key needed to plant
/// it) is named and skipped: everything else lists, restores, exports and
/// prunes, and `check` exits 4 naming it.
fn one_bad_object_blocks_nothing(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 300 * KIB, 1);
    write_file(&src.join("b.txt"), b"bee");
    env.backup(&[&src]);
    let garbage = random_bytes(500, 77);
    let name = "ab".repeat(32);
    for dir in ["snapshots", "index"] {
        let key = format!("{dir}/{name}");
        fs::create_dir_all(env.repo.join(dir)).unwrap();
        write_file(&env.repo.join(&key), &garbage);
        drop_catalog(&env);
        let snaps = env.agent(["snapshots"]);
        snaps.expect_ok();
        snaps.expect_stderr_contains(&key);
        env.operator(["ls", "latest"]).expect_ok();
        let target = env.restore("latest");
        assert_trees_equal(&src, &restored_path(&target, &src));
        let tar = env.unique_path("export.tar");
        env.operator([
            OsStr::new("export"),
            OsStr::new("latest"),
            OsStr::new("--output"),
            tar.as_os_str(),
        ])
        .expect_ok();
        env.agent(["catalog", "rebuild"]).expect_ok();
        env.agent(["prune"]).expect_ok();
        let out = env.backup_raw(&[&src], &[]);
        out.expect_ok();
        let out = env.operator(["check", "--read-data", "--json"]);
        out.expect_code(4);
        assert!(out.stdout.contains(&key), "check must name {key}\n{out}");
        fs::remove_file(env.repo.join(&key)).unwrap();
    }
}

/// A damaged index object: commands name it and go on; the next backup
/// reads its packs from their trailers (adopts them), so nothing is stored
/// again and every snapshot restores.
fn a_damaged_index_is_read_from_the_packs(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = source(&env);
    env.backup(&[&src]);
    let index = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let key = format!("index/{}", index.file_name().to_string_lossy());
    let mut bytes = fs::read(index.path()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x08;
    env.replace_object(&key, &bytes);
    drop_catalog(&env);
    let out = env.backup_raw(&[&src], &[]);
    out.expect_ok();
    out.expect_stderr_contains(&key);
    let v = out.json();
    assert!(
        u64_field(&v, "stored_added") < MIB,
        "the packs were adopted, not stored again\n{out}"
    );
    for snap in env.snapshots() {
        let target = env.restore(str_field(&snap, "short_id"));
        assert_trees_equal(&src, &restored_path(&target, &src));
    }
    // The adoption's index can be the very same JSON as the damaged one
    // (the same packs in the same order): then it has the same name and
    // replaced it. Otherwise check names the damaged one until repair.
    let out = env.operator(["check", "--json"]);
    if fs::read(env.repo.join(&key)).ok().as_deref() == Some(&bytes[..]) {
        out.expect_code(4);
        assert!(out.stdout.contains(&key), "check names {key}\n{out}");
        env.agent(["repair", "index"]).expect_ok();
    } else {
        out.expect_ok();
    }
    env.check(true).expect_ok();
}

/// A damaged keyring does not lock out an operator: its copy is read, and
/// with both damaged the agent key file (the same keys) is enough.
fn a_damaged_keyring_locks_nobody_out(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("a.txt"), b"alpha");
    env.backup(&[&src]);
    env.replace_object("keyring", &random_bytes(300, 3));
    env.operator(["ls", "latest"]).expect_ok();
    env.replace_object("keyring.copy", &random_bytes(300, 4));
    // With the agent key file given, restore goes on and says so.
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
    // Without it, the error names the keyring.
    let out = env.run([
        OsStr::new("ls"),
        OsStr::new("latest"),
        OsStr::new("--repo"),
        env.repo_url.as_os_str(),
        OsStr::new("--identity"),
        env.identity.as_os_str(),
    ]);
    out.expect_failure();
    out.expect_stderr_contains("keyring");
    // repair keyring writes both again from the agent key file.
    env.agent(["repair", "keyring"]).expect_ok();
    let out = env.run([
        OsStr::new("ls"),
        OsStr::new("latest"),
        OsStr::new("--repo"),
        env.repo_url.as_os_str(),
        OsStr::new("--identity"),
        env.identity.as_os_str(),
    ]);
    out.expect_ok();
}

/// A garbage lock object stops writers with a message that says what to do.
fn a_garbage_lock_says_what_to_do(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("a.txt"), b"alpha");
    write_file(&env.repo.join("lock"), &random_bytes(200, 9));
    let out = env.backup_raw(&[&src], &[]);
    out.expect_failure();
    out.expect_short_stderr(2);
    out.expect_stderr_contains("lock");
    out.expect_stderr_contains("delete");
}

/// With every index object lost, `repair index` rebuilds them from the
/// packs' trailers (the agent key is enough) and restore works again.
fn repair_index_rebuilds_a_lost_index(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = source(&env);
    env.backup(&[&src]);
    for e in fs::read_dir(env.repo.join("index")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    // A garbage index object, to be replaced too.
    write_file(
        &env.repo.join(format!("index/{}", "cd".repeat(32))),
        &random_bytes(400, 1),
    );
    drop_catalog(&env);
    let target = env.unique_path("restore");
    env.restore_raw("latest", &target, &[]).expect_failure();
    let dry = env.agent(["repair", "index", "--dry-run", "--json"]);
    dry.expect_ok();
    assert!(
        env.repo.join(format!("index/{}", "cd".repeat(32))).exists(),
        "a dry run changes nothing"
    );
    let out = env.agent(["repair", "index", "--json"]);
    out.expect_ok();
    let v = out.json();
    assert!(u64_field(&v, "packs_indexed") >= 2, "{out}");
    assert_eq!(u64_field(&v, "indexes_removed"), 1, "{out}");
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
    env.check(true).expect_ok();
}

/// `repair snapshots` writes, for each damaged snapshot, one whose lost
/// files come from the newest older snapshot that holds them intact, or
/// are left out and listed; `--forget` drops the damaged originals.
fn repair_snapshots_takes_lost_files_from_older_snapshots(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = source(&env);
    env.backup(&[&src]);
    // The second snapshot adds a file whose data sits in its own pack.
    write_random_file(&src.join("new.bin"), 17 * MIB, 99);
    let before: BTreeSet<String> = env.packs().into_iter().map(|p| p.0).collect();
    env.backup(&[&src]);
    let added: Vec<(String, PathBuf, u64)> = env
        .packs()
        .into_iter()
        .filter(|p| !before.contains(&p.0))
        .collect();
    // The largest new pack holds new.bin's data only.
    let (_, lost, _) = added.iter().max_by_key(|p| p.2).unwrap().clone();
    fs::remove_file(&lost).unwrap();
    let states = snapshot_states(&env);
    assert_eq!(states[1].1, "damaged", "{states:?}");
    let damaged = states[1].0.clone();
    let dry = env.operator(["repair", "snapshots", "--dry-run", "--json"]);
    dry.expect_ok();
    assert_eq!(snapshot_states(&env).len(), 2, "a dry run writes nothing");
    let out = env.operator(["repair", "snapshots", "--forget", "--json"]);
    out.expect_ok();
    let v = out.json();
    let repaired = v["snapshots"].as_array().cloned().unwrap_or_default();
    assert_eq!(repaired.len(), 1, "{out}");
    let lost_files: Vec<String> = repaired[0]["lost"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    assert!(
        lost_files.iter().any(|f| f.ends_with("new.bin")),
        "new.bin is in no older snapshot: it is listed as lost\n{out}"
    );
    let states = snapshot_states(&env);
    assert!(
        states
            .iter()
            .all(|(id, s)| s != "damaged" && *id != damaged),
        "the damaged original is forgotten and the repaired one is whole: {states:?}"
    );
    let new_id = str_field(&repaired[0], "new_id")[..8].to_string();
    let target = env.restore(&new_id);
    let restored = restored_path(&target, &src);
    // The source without new.bin, its folder's time as it was.
    let mtime = fs::metadata(&src).unwrap().modified().unwrap();
    fs::remove_file(src.join("new.bin")).unwrap();
    let since = mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    set_mtime(&src, since.as_secs() as i64, since.subsec_nanos());
    assert_trees_equal(&src, &restored);
}

/// A file list that restore would refuse (here: a symlink with an entry
/// below it) is a `check --read-data` problem, and from then on the
/// snapshot is damaged for every command, on a fresh catalog too. A second
/// check records nothing new.
#[test]
fn file_lists_restore_refuses_mark_the_snapshot_damaged() {
    use crate::adversarial::{Scene, dir, file, lines, symlink};
    let s = Scene::new();
    let f = &s.forger;
    let data = b"through a symlink\n".as_slice();
    let tree = lines(&[
        dir("top"),
        symlink("top/link", "/etc"),
        file(f, "top/link/passwd", data),
    ]);
    let id = f.snapshot(&[data], &[tree]);
    let short = &id[..8];
    let out = s.env.operator(["check", "--read-data", "--json"]);
    out.expect_code(4);
    assert!(out.stdout.contains(&format!("snapshots/{id}")), "{out}");
    let recorded = out.json()["damage_recorded"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(recorded.len(), 1, "one damage record\n{out}");
    let again = s.env.operator(["check", "--read-data", "--json"]);
    again.expect_code(4);
    assert_eq!(
        again.json()["damage_recorded"].as_array().map(Vec::len),
        Some(0),
        "the same finding is not recorded twice\n{again}"
    );
    for catalog in ["warm", "fresh"] {
        if catalog == "fresh" {
            drop_catalog(&s.env);
        }
        let states = snapshot_states(&s.env);
        let state = states.iter().find(|(i, _)| i == short).unwrap();
        assert_eq!(state.1, "damaged", "{catalog} catalog: {states:?}");
    }
}

/// A damage record whose pack reads back whole (the earlier read was bad,
/// not the data) is cleared by `check --read-data`.
#[test]
fn a_record_of_a_pack_that_reads_back_whole_is_cleared() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    write_random_file(&src.join("a.bin"), 300 * KIB, 3);
    env.backup(&[&src]);
    let (key, path) = (env.packs()[0].0.clone(), env.packs()[0].1.clone());
    let good = fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    env.replace_object(&key, &bad);
    let target = env.unique_path("restore");
    env.restore_raw("latest", &target, &[]).expect_failure();
    assert_eq!(fs::read_dir(env.repo.join("damage")).unwrap().count(), 1);
    assert_eq!(snapshot_states(&env)[0].1, "damaged");
    env.replace_object(&key, &good);
    let out = env.operator(["check", "--read-data", "--json"]);
    out.expect_ok();
    assert_eq!(
        out.json()["damage_cleared"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    assert_eq!(fs::read_dir(env.repo.join("damage")).unwrap().count(), 0);
    assert_ne!(snapshot_states(&env)[0].1, "damaged");
}

/// A snapshot whose reference list can not be read (its pack is lost, and
/// no catalog holds the list) makes prune stop before it deletes anything:
/// what that snapshot needs is unknown. The message says what to do.
#[test]
fn prune_deletes_nothing_while_a_reference_list_is_unreadable() {
    let env = TestEnv::with_repo();
    let src = source(&env);
    env.backup(&[&src]);
    let first = env.packs();
    let (_, lost, _) = first.iter().min_by_key(|p| p.2).unwrap().clone();
    write_file(&src.join("second.txt"), b"second");
    env.backup(&[&src]);
    fs::remove_file(&lost).unwrap();
    drop_catalog(&env);
    let before = env.packs();
    let out = env.agent(["prune", "--grace", "0s", "--max-unused", "0"]);
    out.expect_failure();
    out.expect_short_stderr(2);
    out.expect_stderr_contains("nothing deleted");
    out.expect_stderr_contains("repair snapshots");
    assert_eq!(env.packs(), before, "prune deleted packs\n{out}");
}

on_both_backends!(
    a_deleted_pack_is_stored_again,
    a_deleted_pack_is_stored_again_with_a_fresh_catalog,
    a_damaged_pack_is_stored_again,
    a_damaged_pack_is_stored_again_with_a_fresh_catalog,
    every_snapshot_that_lost_data_is_damaged,
    check_findings_mark_snapshots_damaged,
    one_bad_object_blocks_nothing,
    a_damaged_index_is_read_from_the_packs,
    a_damaged_keyring_locks_nobody_out,
    a_garbage_lock_says_what_to_do,
    repair_index_rebuilds_a_lost_index,
    repair_snapshots_takes_lost_files_from_older_snapshots,
);
