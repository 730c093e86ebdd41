//! Storage faults on a seeded schedule (storage::fault): a backup succeeds
//! through transient failures; with storage down mid-backup it fails cleanly,
//! the repository stays valid, and the next run completes.

use crate::env::{TestEnv, assert_trees_equal, random_bytes, restored_path, write_file};
use coffer::catalog::Catalog;
use coffer::engine::NoProgress;
use coffer::engine::backup::{BackupOptions, backup};
use coffer::repo::Repository;
use coffer::repo::keys::AgentKey;
use coffer::repo::store::Store;
use coffer::storage::fault::{FaultPlan, Faulty};
use coffer::storage::{LocalStorage, Opened, Retry};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn faulty_repo(env: &TestEnv, plan: FaultPlan) -> (Repository, Arc<AtomicU64>) {
    let local = LocalStorage::new(&env.repo);
    let tuning = local.tuning();
    let faulty = Faulty::new(Box::new(local), plan);
    let injected = faulty.injected.clone();
    let retry = Retry::new(
        Box::new(faulty),
        10,
        Duration::from_millis(1),
        Duration::from_millis(20),
    );
    let store = Store::new(Opened {
        storage: Box::new(retry),
        tuning,
    })
    .unwrap();
    let agent = AgentKey::load(&env.agent_key).unwrap();
    (Repository::open_agent(store, &agent).unwrap(), injected)
}

fn source(env: &TestEnv) -> std::path::PathBuf {
    let src = env.source_dir("src");
    for i in 0..4 {
        write_file(
            &src.join(format!("big-{i}.bin")),
            &random_bytes(9 * 1024 * 1024, i),
        );
    }
    for i in 0..200 {
        write_file(
            &src.join(format!("small/{i}.txt")),
            format!("small file {i}\n").repeat(i + 1).as_bytes(),
        );
    }
    src
}

fn run_backup(
    env: &TestEnv,
    repo: &Repository,
    src: &Path,
) -> coffer::Result<coffer::engine::backup::BackupReport> {
    let mut catalog = Catalog::open(&env.catalog, &repo.config.id).unwrap();
    let opts = BackupOptions {
        sources: vec![src.to_path_buf()],
        exclude: vec![],
        host: None,
        profile: "faults".into(),
        compression: 2,
        ..Default::default()
    };
    backup(
        repo,
        &mut catalog,
        &opts,
        &NoProgress,
        &AtomicBool::new(false),
    )
}

#[test]
fn a_backup_succeeds_with_ten_percent_of_requests_failing() {
    let env = TestEnv::with_repo();
    let src = source(&env);
    let plan = FaultPlan {
        seed: 7,
        error_rate: 0.10,
        delay_rate: 0.2,
        max_delay: Duration::from_millis(5),
        down_after: None,
    };
    let (repo, injected) = faulty_repo(&env, plan);
    let report = run_backup(&env, &repo, &src).expect("transient faults are retried");
    assert!(report.packs_added > 0);
    write_file(&src.join("big-0.bin"), &random_bytes(9 * 1024 * 1024, 99));
    run_backup(&env, &repo, &src).expect("a second backup through faults");
    // Reads go through the same faults: a full check and a restore.
    let check = coffer::engine::check::check(&repo, true, &NoProgress).unwrap();
    assert!(check.ok, "{:?}", check.problems);
    drop(repo);
    assert!(
        injected.load(Ordering::Relaxed) > 0,
        "the schedule must really inject faults"
    );
    env.check(true).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

#[test]
fn storage_down_mid_backup_fails_cleanly_and_the_next_run_completes() {
    let env = TestEnv::with_repo();
    let src = source(&env);
    // The real binary, with storage going down after a few requests.
    let mut args: Vec<std::ffi::OsString> = vec!["backup".into(), src.clone().into()];
    args.extend(env.repo_flags());
    let out = env.run_with_env(
        &args,
        &[("COFFER_FAULTS", std::ffi::OsStr::new("seed=3,down_after=8"))],
    );
    out.expect_failure();
    out.expect_stderr_contains("gave up after");
    out.expect_short_stderr(3);
    // Whatever was uploaded is valid, and no snapshot was committed.
    env.check(true).expect_ok();
    assert!(env.snapshots().is_empty());
    // Storage is back: the next run completes, taking over the lock the
    // failed run could not remove, and the restore is exact.
    env.backup_raw(&[&src], &[]).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}
