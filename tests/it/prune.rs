//! Forget and prune with the agent key alone, on both backends: what only
//! forgotten snapshots used leaves storage, everything kept still restores,
//! and a backup running beside a prune loses nothing.

use crate::env::{Backend, TestEnv, on_both_backends, str_field, u64_field, write_random_file};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

on_both_backends!(
    prune_removes_what_only_forgotten_snapshots_used,
    a_backup_running_beside_prune_loses_nothing,
    prune_merges_the_index_objects_of_many_backups,
);

fn pack_keys(env: &TestEnv) -> BTreeSet<String> {
    env.packs().into_iter().map(|(k, _, _)| k).collect()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let list = |p: &Path| crate::env::list_files(p);
    assert_eq!(
        list(a),
        list(b),
        "restored tree differs from {}",
        a.display()
    );
    for (rel, _) in list(a) {
        assert_eq!(
            std::fs::read(a.join(&rel)).unwrap(),
            std::fs::read(b.join(&rel)).unwrap(),
            "{rel} differs after restore"
        );
    }
}

fn prune_removes_what_only_forgotten_snapshots_used(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_random_file(&src.join("stable"), 1024 * 1024, 1);
    env.backup(&[&src]);
    let before_u1 = pack_keys(&env);
    write_random_file(&src.join("u1"), 3 * 1024 * 1024, 2);
    env.backup(&[&src]);
    let u1_packs: BTreeSet<String> = pack_keys(&env).difference(&before_u1).cloned().collect();
    assert!(!u1_packs.is_empty(), "the backup of u1 wrote packs");
    std::fs::remove_file(src.join("u1")).unwrap();
    write_random_file(&src.join("u2"), 3 * 1024 * 1024, 3);
    env.backup(&[&src]);
    let s3 = env
        .snapshots()
        .last()
        .map(|s| str_field(s, "id").to_string())
        .unwrap();
    std::fs::remove_file(src.join("u2")).unwrap();
    env.backup(&[&src]);
    let size_before = env.repo_size();

    // The agent alone (no identity anywhere in these commands).
    let plan = env.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "2",
        "--dry-run",
        "--json",
    ]);
    plan.expect_ok();
    let decisions = plan.json()["forget"]["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(decisions.len(), 4, "four snapshots judged\n{plan}");
    let kept: Vec<bool> = decisions
        .iter()
        .map(|d| d["keep"].as_bool().unwrap())
        .collect();
    assert_eq!(kept, [false, false, true, true], "oldest two go\n{plan}");
    assert_eq!(env.snapshots().len(), 4, "a dry run removes nothing");

    env.agent(["forget", "--keep-within", "0s", "--keep-last", "2"])
        .expect_ok();
    assert_eq!(env.snapshots().len(), 2);
    // Within the grace period nothing goes.
    let young = env.agent(["prune", "--json"]);
    young.expect_ok();
    assert_eq!(u64_field(&young.json(), "packs_deleted"), 0, "{young}");
    assert!(u64_field(&young.json(), "kept_by_grace") > 0, "{young}");

    let out = env.agent(["prune", "--grace", "0s", "--json"]);
    out.expect_ok();
    let r = out.json();
    assert!(
        u64_field(&r, "bytes_freed") >= 3 * 1024 * 1024,
        "u1's 3 MiB are freed\n{out}"
    );
    let now = pack_keys(&env);
    for p in &u1_packs {
        assert!(
            !now.contains(p),
            "pack {p} held only u1 (forgotten) and must be gone from storage"
        );
    }
    assert!(
        env.repo_size() + 3 * 1024 * 1024 <= size_before,
        "storage shrank by u1: {} -> {}",
        size_before,
        env.repo_size()
    );
    // Nothing kept was harmed: every blob verifies, both snapshots restore.
    env.check(true).expect_ok();
    let with_u2 = env.restore(&s3);
    let restored = crate::env::restored_path(&with_u2, &src);
    assert_eq!(
        std::fs::read(restored.join("u2")).unwrap(),
        crate::env::random_bytes(3 * 1024 * 1024, 3),
        "u2 restores from the kept snapshot"
    );
    let latest = env.restore("latest");
    assert_same_tree(&src, &crate::env::restored_path(&latest, &src));

    // A second prune finds nothing to do and rewrites nothing.
    let again = env.agent(["prune", "--grace", "0s", "--json"]);
    again.expect_ok();
    let a = again.json();
    assert_eq!(
        (
            u64_field(&a, "packs_deleted"),
            u64_field(&a, "packs_repacked"),
            u64_field(&a, "indexes_rewritten")
        ),
        (0, 0, 0),
        "{again}"
    );
    // A fresh catalog (another machine) sees the same repository.
    std::fs::remove_file(&env.catalog).unwrap();
    env.check(true).expect_ok();
}

/// Every backup writes an index object and a reader with an empty catalog
/// reads them all; prune merges the small ones once there are more than 8.
fn prune_merges_the_index_objects_of_many_backups(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    let index_objects = || crate::env::list_files(&env.repo.join("index")).len();
    for n in 0..12 {
        write_random_file(&src.join(format!("f{n}")), 64 * 1024, n);
        env.backup(&[&src]);
    }
    assert_eq!(index_objects(), 12, "one index object per backup");
    let out = env.agent(["prune", "--json"]);
    out.expect_ok();
    let r = out.json();
    assert_eq!(u64_field(&r, "indexes_rewritten"), 12, "{out}");
    assert_eq!(
        (
            u64_field(&r, "packs_deleted"),
            u64_field(&r, "packs_repacked")
        ),
        (0, 0),
        "merging index objects moves no pack\n{out}"
    );
    assert_eq!(index_objects(), 1, "the twelve merged into one");
    // Under the threshold nothing is rewritten.
    let again = env.agent(["prune", "--json"]);
    again.expect_ok();
    assert_eq!(u64_field(&again.json(), "indexes_rewritten"), 0, "{again}");
    // Another machine (an empty catalog) finds every blob through the one
    // object: every blob verifies and the latest snapshot restores whole.
    std::fs::remove_file(&env.catalog).unwrap();
    env.check(true).expect_ok();
    let latest = env.restore("latest");
    assert_same_tree(&src, &crate::env::restored_path(&latest, &src));
}

fn a_backup_running_beside_prune_loses_nothing(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    for i in 0..3 {
        write_random_file(&src.join(format!("old-{i}")), 1024 * 1024, i);
    }
    env.backup(&[&src]);
    for i in 0..3 {
        std::fs::remove_file(src.join(format!("old-{i}"))).unwrap();
    }
    for i in 0..3 {
        write_random_file(&src.join(format!("new-{i}")), 2 * 1024 * 1024, 100 + i);
    }
    env.backup(&[&src]);
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    for i in 3..12 {
        write_random_file(&src.join(format!("new-{i}")), 2 * 1024 * 1024, 100 + i);
    }

    // A slow backup (every request delayed) holds the lock while prune asks for it.
    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into(), "--json".into()];
    args.extend(env.repo_flags());
    let mut cmd_env = env.command(&args);
    cmd_env.env("COFFER_FAULTS", "seed=7,delay_rate=1.0,max_delay_ms=150");
    let out_path = env.unique_path("slow.stdout");
    let err_path = env.unique_path("slow.stderr");
    let mut slow = cmd_env
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.repo.join("lock").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow backup never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pruned = env.agent(["prune", "--grace", "0s", "--lock-wait", "5m", "--json"]);
    let status = slow.wait().unwrap();
    let slow_err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "the slow backup failed: {slow_err}");
    pruned.expect_ok();
    assert!(
        u64_field(&pruned.json(), "packs_deleted") + u64_field(&pruned.json(), "packs_repacked")
            > 0,
        "prune ran after the backup and removed the forgotten data\n{pruned}"
    );
    assert_eq!(env.snapshots().len(), 2);
    env.check(true).expect_ok();
    let latest = env.restore("latest");
    assert_same_tree(&src, &crate::env::restored_path(&latest, &src));
}

/// Every file under `dir` (the local repository: every object, the lock,
/// temporary files) with its bytes.
fn every_object(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Dry runs of prune, forget and erase take no lock and change nothing:
/// they work while another writer holds the lock, and leave every object
/// of the repository as it was, byte for byte (a stale temporary file
/// that a real prune would remove included).
#[test]
fn dry_runs_work_beside_a_writer_and_leave_the_repository_byte_for_byte() {
    use coffer::repo::Repository;
    use coffer::repo::keys::AgentKey;
    use coffer::repo::lock::WriterLock;
    use coffer::repo::store::Store;

    let env = TestEnv::with_repo_on(Backend::Local);
    let src = env.source_dir("src");
    write_random_file(&src.join("gone"), 1024 * 1024, 1);
    env.backup(&[&src]);
    std::fs::remove_file(src.join("gone")).unwrap();
    write_random_file(&src.join("kept"), 1024 * 1024, 2);
    env.backup(&[&src]);
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    // A killed writer's temporary file: a real prune removes it.
    let stale = env.repo.join("data").join(".tmp-pack-4294967294-1-stale");
    std::fs::write(&stale, b"left by a killed writer").unwrap();

    // Another writer holds the lock.
    let store = Store::open(env.repo.to_str().unwrap(), &Default::default()).unwrap();
    let agent = AgentKey::load(&env.agent_key).unwrap();
    let repo = Repository::open_agent(store, &agent).unwrap();
    let lock = WriterLock::of(&repo, std::time::Duration::ZERO).unwrap();
    assert!(env.repo.join("lock").exists());
    let before = every_object(&env.repo);

    let plan = env.agent(["prune", "--dry-run", "--grace", "0s", "--json"]);
    plan.expect_ok();
    let p = plan.json();
    assert_eq!(p["dry_run"], serde_json::Value::Bool(true), "{plan}");
    assert!(
        u64_field(&p, "packs_deleted") + u64_field(&p, "packs_repacked") > 0,
        "the plan names what the forgotten snapshot alone used\n{plan}"
    );
    assert!(u64_field(&p, "bytes_freed") >= 1024 * 1024, "{plan}");
    env.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "1",
        "--dry-run",
    ])
    .expect_ok();
    env.operator(["erase", "--path", "**/kept", "--dry-run"])
        .expect_ok();

    let after = every_object(&env.repo);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "dry runs add or delete no object"
    );
    for (key, bytes) in &before {
        assert!(
            after[key] == *bytes,
            "{} changed in a dry run",
            key.display()
        );
    }
    assert!(stale.exists(), "a dry run removes no temporary file");

    // Once the writer is done, the real prune does what the plan said.
    lock.release().unwrap();
    let done = env.agent(["prune", "--grace", "0s", "--json"]);
    done.expect_ok();
    let d = done.json();
    for field in [
        "packs_deleted",
        "packs_repacked",
        "orphans_deleted",
        "indexes_rewritten",
    ] {
        assert_eq!(
            u64_field(&d, field),
            u64_field(&p, field),
            "{field}\n{plan}\n{done}"
        );
    }
    assert!(
        !stale.exists(),
        "the real prune removes the killed writer's file"
    );
    env.check(true).expect_ok();
}
