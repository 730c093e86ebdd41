//! Crash safety: `coffer backup` killed with SIGKILL at random points leaves a
//! valid repository, the next run is not blocked by the dead writer's lock,
//! it reuses what was already uploaded, and the final snapshot restores
//! exactly.
//!
//! Knobs (environment): COFFER_CRASH_MIB (data size, default 64),
//! COFFER_CRASH_SEED (default 0xC0FFEE), COFFER_CRASH_KILLS (default 12).

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::env::*;

enum Outcome {
    /// Killed while running, after this long.
    Killed(Duration),
    /// Exited by itself before the kill.
    Finished(Output),
}

/// Starts `backup SRC` and SIGKILLs it after `delay` unless it exits first.
fn backup_killed_after(env: &TestEnv, src: &Path, delay: Duration, label: &str) -> Outcome {
    let mut args: Vec<OsString> =
        vec!["backup".into(), src.as_os_str().to_owned(), "--json".into()];
    args.extend(env.repo_flags());
    let (mut child, out_path, err_path) = spawn_background(env, &args, label);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stdout = fs::read(&out_path).unwrap_or_default();
            let stderr = fs::read(&err_path).unwrap_or_default();
            return Outcome::Finished(Output::from_status(
                format!("coffer backup {} (background, {label})", src.display()),
                status,
                stdout,
                stderr,
                start.elapsed(),
            ));
        }
        if start.elapsed() >= delay {
            child.kill().expect("SIGKILL coffer");
            child.wait().unwrap();
            return Outcome::Killed(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Size, pack count, and anything besides packs and the fixed objects.
fn describe_repo(env: &TestEnv) -> String {
    let files = list_files(&env.repo);
    let packs = files.iter().filter(|(p, _)| p.starts_with("data/")).count();
    let other: Vec<String> = files
        .iter()
        .filter(|(p, _)| !p.starts_with("data/") && p != "config" && p != "keyring")
        .map(|(p, s)| format!("{p} ({s})"))
        .collect();
    format!(
        "{}, {packs} packs, other: {}",
        mib(env.repo_size()),
        other.join(", ")
    )
}

fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn killed_backups_leave_valid_repository_and_reuse_uploads(backend: Backend) {
    let total = env_u64("COFFER_CRASH_MIB", 64) * MIB;
    let kills = env_u64("COFFER_CRASH_KILLS", 12) as usize;
    let (mut rng, seed) = seeded_rng("COFFER_CRASH_SEED", 0xC0FFEE);
    let ctx = format!(
        "(seed {seed}, data {}, COFFER_CRASH_SEED to reproduce)",
        mib(total)
    );

    let data = TestEnv::new();
    let src = data.path("src");
    let randoms = make_mixed_dataset(&src, total, seed);

    // One clean backup in a separate repository: its duration spreads the
    // kills, its size bounds the crashed repository's.
    let (mut clean_time, clean_size) = {
        let reference = TestEnv::with_repo_on(backend);
        let start = Instant::now();
        reference.backup(&[&src]);
        (start.elapsed(), reference.repo_size())
    };
    eprintln!(
        "crash test {ctx}: clean backup {clean_time:.2?}, repository {}",
        mib(clean_size)
    );

    // Phase 1: kills at increasing random points, with no completed backup in
    // between: every run must start (no stale-lock refusal), leave a valid
    // repository, and build on what the previous runs uploaded. When a run
    // completes too early (the clean run was measured under load), start
    // over in a new repository with the shorter duration.
    let phase1 = (kills * 7).div_ceil(12);
    let mut log = Vec::new();
    let mut env;
    let mut completed;
    let mut committed_by_kill = false;
    let mut killed_count;
    let mut attempt = 0;
    loop {
        attempt += 1;
        env = TestEnv::with_repo_on(backend);
        completed = false;
        killed_count = 0;
        let mut fastest = clean_time;
        let mut delays: Vec<f64> = (0..phase1).map(|_| rng.gen_range(0.03..0.97)).collect();
        delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
        log.push(format!(
            "phase 1, attempt {attempt}, time scale {clean_time:.2?}"
        ));
        for (i, frac) in delays.iter().enumerate() {
            let delay = clean_time.mul_f64(*frac);
            match backup_killed_after(&env, &src, delay, &format!("phase1-{i}")) {
                Outcome::Killed(after) => {
                    killed_count += 1;
                    log.push(format!("phase 1 #{i}: killed after {after:.2?}"));
                }
                Outcome::Finished(out) => {
                    assert!(
                        out.ok(),
                        "phase 1 #{i}: backup after a killed backup failed instead of taking over the dead \
                         writer's lock / resuming {ctx}\n{}\n{out}",
                        log.join("\n")
                    );
                    log.push(format!(
                        "phase 1 #{i}: finished before the kill at {delay:.2?} ({:.2?})",
                        out.elapsed
                    ));
                    fastest = fastest.min(out.elapsed);
                    completed = true;
                }
            }
            let check = env.check(true);
            assert!(
                check.ok(),
                "phase 1 #{i}: `check --read-data` after a killed backup must pass {ctx}\n{}\n{check}",
                log.join("\n")
            );
            // A kill after the commit point (the snapshot object is written
            // last) but before the process exited leaves a complete snapshot.
            let n = env.snapshots().len();
            assert!(
                n == completed as usize || (!completed && n == 1),
                "phase 1 #{i}: {n} snapshots after a killed backup (expected 0, or 1 if it was killed after \
                 its commit) {ctx}\n{}",
                log.join("\n")
            );
            if n == 1 && !completed {
                log.push("   (killed after its snapshot was committed)".into());
                completed = true;
                committed_by_kill = true;
            }
            log.push(format!("   repository now {}", describe_repo(&env)));
            if completed {
                break;
            }
        }
        if killed_count >= 2 || attempt == 3 {
            break;
        }
        clean_time = fastest.mul_f64(0.9);
    }
    assert!(
        killed_count >= 2,
        "phase 1: too few backups were actually killed mid-run {ctx}\n{}",
        log.join("\n")
    );

    // A run killed between its commit and its exit leaves its (stale) lock:
    // the next backup must take it over, so run one more in that case too.
    if !completed || committed_by_kill {
        let start = Instant::now();
        let out = env.backup_raw(&[&src], &[]);
        assert!(
            out.ok(),
            "the backup after {killed_count} killed backups failed {ctx}\n{}\n{out}",
            log.join("\n")
        );
        let elapsed = start.elapsed();
        assert!(
            elapsed < clean_time * 3 + Duration::from_secs(60),
            "the backup after killed backups took {elapsed:.2?} (clean: {clean_time:.2?}): blocked by a stale lock? {ctx}"
        );
        log.push(format!("phase 1: completing backup took {elapsed:.2?}"));
    }
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
    fs::remove_dir_all(&target).unwrap();
    let size = env.repo_size();
    assert!(
        size < 2 * clean_size,
        "after {killed_count} killed backups and one completed backup the repository holds {} but one clean \
         backup is {}: uploads of killed runs were not reused (or their leftovers not cleaned) {ctx}\n{}\nfiles:\n{}",
        mib(size),
        mib(clean_size),
        log.join("\n"),
        list_files(&env.repo)
            .iter()
            .map(|(p, s)| format!("  {p} {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !env.repo.join("lock").exists(),
        "the lock must be released after a completed backup"
    );

    // An unchanged backup: its duration is the fixed cost of a run.
    let start = Instant::now();
    let noop = env.backup(&[&src]);
    let noop_time = start.elapsed();
    assert_eq!(
        u64_field(&noop, "files_changed") + u64_field(&noop, "files_new"),
        0,
        "{noop}"
    );

    // Phase 2: kills during incremental backups that follow complete ones;
    // after each, a new backup completes.
    let mut mutated = 0u64;
    for j in 0..kills.saturating_sub(phase1) {
        // New work: two large random files rewritten, a log appended, new files.
        let mut round = 0u64;
        for v in 0..2 {
            let victim = &randoms[(2 * j + v) % randoms.len()];
            let len = fs::metadata(victim).unwrap().len();
            write_random_file(victim, len, seed ^ (0x1000 + (2 * j + v) as u64));
            round += len;
        }
        let log_file = src.join("logs").join("app00.log");
        let mut content = fs::read(&log_file).unwrap();
        content.extend(compressible_bytes(256 * KIB as usize, seed + j as u64));
        fs::write(&log_file, &content).unwrap();
        for k in 0..20 {
            write_file(
                &src.join(format!("new-{j}/f{k}.dat")),
                &random_bytes(4000, seed + (j * 100 + k) as u64),
            );
        }
        round += 256 * KIB + 80_000;
        mutated += round;

        let before = env.snapshots().len();
        // Spread the kill over the expected duration of this incremental run.
        let expected = noop_time + clean_time.mul_f64(round as f64 / total as f64);
        let delay = expected.mul_f64(rng.gen_range(0.1..1.1));
        let finished = match backup_killed_after(&env, &src, delay, &format!("phase2-{j}")) {
            Outcome::Killed(after) => {
                log.push(format!(
                    "phase 2 #{j}: killed after {after:.2?} (expected run {expected:.2?})"
                ));
                false
            }
            Outcome::Finished(out) => {
                assert!(out.ok(), "phase 2 #{j}: backup failed {ctx}\n{out}");
                log.push(format!(
                    "phase 2 #{j}: finished in {:.2?}, before the kill at {delay:.2?}",
                    out.elapsed
                ));
                true
            }
        };
        log.push(format!("   repository now {}", describe_repo(&env)));
        let check = env.check(true);
        assert!(
            check.ok(),
            "phase 2 #{j}: `check --read-data` after a killed incremental backup must pass {ctx}\n{}\n{check}",
            log.join("\n")
        );
        let after_kill = env.snapshots().len();
        assert!(
            after_kill == before + 1 || (!finished && after_kill == before),
            "phase 2 #{j}: {after_kill} snapshots after the kill, {before} before {ctx}"
        );
        let start = Instant::now();
        let out = env.backup_raw(&[&src], &[]);
        assert!(
            out.ok(),
            "phase 2 #{j}: the backup after a killed backup failed {ctx}\n{}\n{out}",
            log.join("\n")
        );
        assert!(
            start.elapsed() < clean_time * 3 + Duration::from_secs(60),
            "phase 2 #{j}: backup after a kill took {:.2?}: blocked by a stale lock? {ctx}",
            start.elapsed()
        );
        assert_eq!(
            env.snapshots().len(),
            after_kill + 1,
            "phase 2 #{j}: snapshot count"
        );
    }

    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
    let size = env.repo_size();
    let bound = 2 * (clean_size + mutated);
    assert!(
        size < bound,
        "final repository {} exceeds 2 x (clean backup {} + changed data {}) {ctx}\n{}",
        mib(size),
        mib(clean_size),
        mib(mutated),
        log.join("\n")
    );
    env.check(true).expect_ok();
    eprintln!("crash test log {ctx}:\n{}", log.join("\n"));
}

/// One writer at a time: while a backup runs, a second one is refused
/// quickly with a message about the lock, and the first one completes.
fn second_writer_is_refused_while_first_runs(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    for i in 0..4 {
        write_random_file(&src.join(format!("r{i}.bin")), 8 * MIB, 500 + i);
    }
    let other = env.path("other");
    write_file(&other.join("x.txt"), b"second writer");

    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into(), "--json".into()];
    args.extend(env.repo_flags());
    let (mut first, out_path, err_path) = spawn_background(&env, &args, "first-writer");
    let lock = env.repo.join("lock");
    let start = Instant::now();
    while !lock.exists() {
        if let Some(status) = first.try_wait().unwrap() {
            panic!(
                "the first backup ended ({status}) before its lock was seen\n{}",
                String::from_utf8_lossy(&fs::read(&err_path).unwrap_or_default())
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no lock object appeared within 60 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Freeze the first writer while it holds the lock (it stays alive), so
    // the outcome does not depend on how fast the first backup is.
    let pid = first.id() as libc::pid_t;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let held = lock.exists();
    let second = env.backup_raw(&[&other], &["--quiet"]);
    let first_still_running = first.try_wait().unwrap().is_none();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        held,
        "the lock disappeared before the first writer was frozen; cannot judge"
    );
    let deadline = Instant::now() + command_timeout();
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = first.kill();
            panic!("the first backup did not finish");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let first_out = Output::from_status(
        "coffer backup (first writer)".into(),
        status,
        fs::read(&out_path).unwrap_or_default(),
        fs::read(&err_path).unwrap_or_default(),
        start.elapsed(),
    );
    first_out.expect_ok();
    assert!(
        first_still_running,
        "the first backup finished before the second one returned; cannot judge the lock\n{second}"
    );
    second
        .expect_failure()
        .expect_stderr_contains("lock")
        .expect_short_stderr(4);
    assert!(
        second.elapsed < Duration::from_secs(30),
        "the refused writer should fail quickly, took {:.2?}",
        second.elapsed
    );
    assert!(
        !lock.exists(),
        "the lock must be released after the first backup"
    );
    assert_eq!(env.snapshots().len(), 1);
    env.check(false).expect_ok();
}

/// A backup cut off after its packs were stored but before any index or
/// snapshot named them: the next backup adopts those packs (an index from
/// their trailers) and uploads no data again. Made exact here by deleting
/// what the cut would not have written, where the kill test above is random.
fn packs_no_index_names_are_adopted_and_reused(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 3 << 20, 1);
    write_random_file(&src.join("b.bin"), 2 << 20, 2);
    let first = env.backup(&[&src]);
    let packs = u64_field(&first, "packs_added");
    assert!(packs > 0, "{first}");
    for dir in ["index", "snapshots"] {
        for e in fs::read_dir(env.repo.join(dir)).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    assert!(env.snapshots().is_empty());
    // New times: the files are read and chunked again, so only the
    // adopted index can tell the backup their data is stored.
    for f in ["a.bin", "b.bin"] {
        set_mtime(&src.join(f), 1_700_000_000, 0);
    }

    let second = env.backup(&[&src]);
    assert_eq!(u64_field(&second, "files_changed"), 2, "{second}");
    // Only the new file list (the times changed) is stored: no data again.
    assert_eq!(u64_field(&second, "data_added"), 0, "{second}");
    assert!(u64_field(&second, "stored_added") < 64 << 10, "{second}");
    assert!(
        env.packs().len() as u64 <= packs + 1,
        "data packs stored twice"
    );
    env.check(true).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

on_both_backends!(
    killed_backups_leave_valid_repository_and_reuse_uploads,
    second_writer_is_refused_while_first_runs,
    packs_no_index_names_are_adopted_and_reused,
);
