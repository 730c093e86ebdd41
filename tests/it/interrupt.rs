//! Signals, spool files and full disks (issue 13, "Interrupted and full"):
//!
//! * `backup`, `restore`, `prune`, `copy` and `erase` stop cleanly on SIGINT
//!   and SIGTERM: exit 130 / 143, the lock object gone, no `.tmp-pack-*`
//!   spool file left, the repository passes `check`, and the next run works;
//! * the spool files of dead processes (or of a pid now reused) are removed
//!   by the next backup, in a local repository and in `$TMPDIR` for S3;
//! * a full disk names the folder and says "no space left";
//! * human output escapes control characters in names and hosts, `--json`
//!   keeps them exact.
//!
//! The commands run under a fault drill that delays every storage request,
//! so they are surely at work when the signal comes. The tests wait for a
//! sign of that work (a spool file, a restored file, a copied object), never
//! for a time.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::env::*;

/// Every storage request delayed by up to a second.
const SLOW: &str = "seed=7,delay_rate=1.0,max_delay_ms=1000";

on_both_backends!(
    backup_stops_cleanly_on_sigint,
    stale_spool_files_go_with_the_next_backup,
);

/// A coffer command running in the background.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    label: String,
    started: Instant,
}

impl Running {
    fn start(env: &TestEnv, args: &[OsString], vars: &[(&str, &OsStr)], label: &str) -> Running {
        let (child, out, err) = spawn_background_with_env(env, args, vars, label);
        Running {
            child,
            out,
            err,
            label: label.to_string(),
            started: Instant::now(),
        }
    }

    /// Waits until `sign` shows the command at work, then sends `sig`.
    #[track_caller]
    fn signal_when(&mut self, what: &str, sig: libc::c_int, mut sign: impl FnMut() -> bool) {
        let (out, err) = (self.out.clone(), self.err.clone());
        let child = &mut self.child;
        wait_for(
            what,
            Duration::from_secs(180),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "the command ended ({status}) before {what}; cannot judge\n{}",
                        String::from_utf8_lossy(&fs::read(&err).unwrap_or_default())
                    );
                }
                sign().then_some(())
            },
            || {
                format!(
                    "--- stdout:\n{}\n--- stderr:\n{}",
                    String::from_utf8_lossy(&fs::read(&out).unwrap_or_default()),
                    String::from_utf8_lossy(&fs::read(&err).unwrap_or_default())
                )
            },
        );
        // Not reaped yet, so the pid is still this child's.
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the command ended before the signal; cannot judge"
        );
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }

    /// Waits for the command to end.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + command_timeout();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not stop after the signal", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output::from_status(
            format!("coffer ({}, in the background)", self.label),
            status,
            fs::read(&self.out).unwrap_or_default(),
            fs::read(&self.err).unwrap_or_default(),
            self.started.elapsed(),
        )
    }
}

/// The folder given to coffer as TMPDIR (where packs for S3 are spooled).
fn tmpdir(env: &TestEnv) -> PathBuf {
    let p = env.path("tmpdir");
    fs::create_dir_all(&p).unwrap();
    p
}

/// Where this environment's backups spool packs: the repository's `data/`
/// (local) or TMPDIR (S3).
fn spool_dir(env: &TestEnv, tmp: &Path) -> PathBuf {
    match env.backend {
        Backend::Local => env.repo.join("data"),
        Backend::S3 => tmp.to_path_buf(),
    }
}

/// The pack spool files in `dir`.
fn spool_files(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-pack-"))
        .collect()
}

fn slow(tmp: &Path) -> [(&'static str, &OsStr); 2] {
    [
        ("COFFER_FAULTS", OsStr::new(SLOW)),
        ("TMPDIR", tmp.as_os_str()),
    ]
}

fn args(words: &[&str], flags: Vec<OsString>) -> Vec<OsString> {
    let mut v: Vec<OsString> = words.iter().map(OsString::from).collect();
    v.extend(flags);
    v
}

/// The documented stop: 128 + the signal, a message that says so, no lock,
/// no spool file in TMPDIR or the repository, and a repository that checks.
#[track_caller]
fn assert_stopped(out: &Output, sig: libc::c_int, env: &TestEnv, tmp: &Path) {
    out.expect_code(128 + sig);
    out.expect_no_panic();
    out.expect_stderr_contains(if sig == libc::SIGINT {
        "stopped by SIGINT"
    } else {
        "stopped by SIGTERM"
    });
    assert!(
        !env.repo.join("lock").exists(),
        "the lock object must be released\n{out}"
    );
    for dir in [tmp.to_path_buf(), env.repo.join("data")] {
        let left = spool_files(&dir);
        assert!(
            left.is_empty(),
            "spool files left in {}: {left:?}\n{out}",
            dir.display()
        );
    }
    let check = env.check(true);
    assert!(
        check.ok(),
        "the repository must pass check after the stop\n{check}\n{out}"
    );
}

/// Regular files below `dir` (relative path → content).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    list_files(dir)
        .into_iter()
        .map(|(rel, _)| {
            let bytes = fs::read(dir.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Backs up `src` under slow storage, sends SIGINT once the first pack is
/// being spooled, and checks the documented stop: no snapshot committed.
fn backup_stopped_by_sigint(env: &TestEnv, tmp: &Path, src: &Path) {
    let spool = spool_dir(env, tmp);
    let mut run = Running::start(
        env,
        &args(&["backup", src.to_str().unwrap()], env.repo_flags()),
        &slow(tmp),
        "backup",
    );
    run.signal_when("a pack spool file of the backup", libc::SIGINT, || {
        !spool_files(&spool).is_empty()
    });
    let out = run.finish();
    assert_stopped(&out, libc::SIGINT, env, tmp);
    assert!(
        env.snapshots().is_empty(),
        "a stopped backup commits no snapshot\n{out}"
    );
}

fn backup_stops_cleanly_on_sigint(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    for i in 0..32u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), 2 * MIB, 100 + i);
    }
    backup_stopped_by_sigint(&env, &tmp, &src);

    // The next run works, and its snapshot restores the source exactly.
    env.backup(&[&src]);
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// SIGINT while one file waits in the queue and every reader holds one: the
/// reader that takes the last job after the signal must still answer it.
/// One that dropped it silently left the driver waiting for that file
/// while the other readers waited for work: the backup never ended.
#[test]
fn backup_stops_on_sigint_when_the_last_file_is_taken_after_it() {
    let env = TestEnv::with_repo();
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    // coffer reads with one thread per core (at most 8): one file more.
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
    for i in 0..=readers as u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), 24 * MIB, 300 + i);
    }
    backup_stopped_by_sigint(&env, &tmp, &src);
}

/// Restore into an empty folder (SIGTERM), then over existing files with
/// `--overwrite always` (SIGINT): no file is left half written, no temporary
/// name is left, and the next restore finishes the job.
#[test]
fn restore_stops_cleanly_on_sigterm_and_sigint() {
    let env = TestEnv::with_repo();
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    for i in 0..40u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), MIB, 200 + i);
    }
    env.backup(&[&src]);
    let v1 = contents(&src);

    let target = env.unique_path("restore");
    fs::create_dir(&target).unwrap();
    let restored = restored_path(&target, &src);
    let restore = |extra: &[&str]| {
        let mut a = args(&["restore", "latest", "--target"], vec![]);
        a.push(target.clone().into());
        a.extend(extra.iter().map(OsString::from));
        a.extend(env.operator_flags());
        a
    };
    let mut run = Running::start(&env, &restore(&[]), &slow(&tmp), "restore-fresh");
    run.signal_when("a first restored file", libc::SIGTERM, || {
        !list_files(&restored).is_empty()
    });
    let out = run.finish();
    assert_stopped(&out, libc::SIGTERM, &env, &tmp);
    for (rel, bytes) in contents(&restored) {
        assert!(
            v1.get(&rel) == Some(&bytes),
            "{rel} is left half written by the stopped restore\n{out}"
        );
    }
    env.restore_raw("latest", &target, &[]).expect_ok();
    assert_trees_equal(&src, &restored);

    // New contents, then a restore that replaces every file, stopped while
    // it writes beside them.
    for i in 0..40u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), MIB, 900 + i);
    }
    env.backup(&[&src]);
    let v2 = contents(&src);
    let temps = |dir: &Path| -> Vec<String> {
        list_files(dir)
            .into_iter()
            .map(|(rel, _)| rel)
            .filter(|rel| rel.contains(".coffer-restore-"))
            .collect()
    };
    let mut run = Running::start(
        &env,
        &restore(&["--overwrite", "always"]),
        &slow(&tmp),
        "restore-over",
    );
    run.signal_when(
        "a replacement written beside its file",
        libc::SIGINT,
        || !temps(&restored).is_empty(),
    );
    let out = run.finish();
    assert_stopped(&out, libc::SIGINT, &env, &tmp);
    assert_eq!(
        temps(&restored),
        Vec::<String>::new(),
        "temporary names left\n{out}"
    );
    let now = contents(&restored);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        v1.keys().collect::<Vec<_>>(),
        "every file is still there\n{out}"
    );
    for (rel, bytes) in &now {
        assert!(
            v1.get(rel) == Some(bytes) || v2.get(rel) == Some(bytes),
            "{rel} is neither the old nor the new version\n{out}"
        );
    }
    env.restore_raw(
        "latest",
        &target,
        &[OsStr::new("--overwrite"), OsStr::new("always")],
    )
    .expect_ok();
    assert_trees_equal(&src, &restored);
}

/// A prune stopped while it repacks: the repository is whole, and the next
/// prune does the job.
#[test]
fn prune_stops_cleanly_on_sigint() {
    let env = TestEnv::with_repo();
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    for i in 0..24u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), 2 * MIB, 300 + i);
    }
    env.backup(&[&src]);
    // Every other file goes: each pack is half used, and the live blobs lie
    // apart, one read each.
    for i in (0..24u64).step_by(2) {
        fs::remove_file(src.join(format!("f{i:02}.bin"))).unwrap();
    }
    env.backup(&[&src]);
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    assert_eq!(env.snapshots().len(), 1);

    let prune = args(
        &["prune", "--grace", "0s", "--max-unused", "0"],
        env.repo_flags(),
    );
    let spool = env.repo.join("data");
    let mut run = Running::start(&env, &prune, &slow(&tmp), "prune");
    run.signal_when("a spool file of the repack", libc::SIGINT, || {
        !spool_files(&spool).is_empty()
    });
    let out = run.finish();
    assert_stopped(&out, libc::SIGINT, &env, &tmp);

    let again = env.run(&prune);
    again.expect_ok();
    env.check(true).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// A copy stopped half-way: both locks released, the target not yet a
/// repository (its config comes last), and the next copy completes it.
#[test]
fn copy_stops_cleanly_on_sigint() {
    let env = TestEnv::with_repo();
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    // Many small snapshots: many objects to copy.
    for i in 0..12u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), 300 * KIB, 400 + i);
        env.backup(&[&src]);
    }
    let (to_url, to_dir) = env.sibling_repo("copy");
    let mut copy = args(&["copy", "--to"], vec![to_url.clone()]);
    copy.extend(env.repo_flags());
    let mut run = Running::start(&env, &copy, &slow(&tmp), "copy");
    run.signal_when("objects arriving in the copy", libc::SIGINT, || {
        to_dir.join("lock").exists() && !list_files(&to_dir.join("data")).is_empty()
    });
    let out = run.finish();
    assert_stopped(&out, libc::SIGINT, &env, &tmp);
    assert!(
        !to_dir.join("lock").exists(),
        "the copy's lock must be released\n{out}"
    );
    assert!(
        !to_dir.join("config").exists(),
        "a stopped first copy is not yet a repository\n{out}"
    );

    env.run(&copy).expect_ok();
    let on_copy = |words: &[&str]| {
        let mut a = args(words, vec![]);
        a.extend([
            "--repo".into(),
            to_url.clone(),
            "--identity".into(),
            env.identity.clone().into(),
            "--catalog".into(),
            env.path("copy.sqlite").into(),
        ]);
        env.run(a)
    };
    on_copy(&["check", "--read-data"]).expect_ok();
    let target = env.unique_path("from-copy");
    let mut restore = vec!["restore", "latest", "--target"];
    restore.push(target.to_str().unwrap());
    on_copy(&restore).expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// An erase on S3 stopped while it rewrites file lists (its new pack spooled
/// in TMPDIR): every snapshot whole, and running it again finishes the job.
#[test]
fn erase_stops_cleanly_on_sigint() {
    let env = TestEnv::with_repo_on(Backend::S3);
    let tmp = tmpdir(&env);
    // Snapshots of different folders: each has file lists of its own to read.
    for i in 0..8u64 {
        let src = env.source_dir(&format!("src{i}"));
        write_file(&src.join("secret.txt"), format!("secret {i}").as_bytes());
        for j in 0..20u64 {
            write_random_file(
                &src.join(format!("keep{j:02}.bin")),
                8 * KIB,
                500 + i * 20 + j,
            );
        }
        env.backup(&[&src]);
    }
    let erase = args(&["erase", "--path", "**/secret.txt"], env.operator_flags());
    let spool = tmp.clone();
    let mut run = Running::start(&env, &erase, &slow(&tmp), "erase");
    run.signal_when("the spool file of the rewrite", libc::SIGINT, || {
        !spool_files(&spool).is_empty()
    });
    let out = run.finish();
    assert_stopped(&out, libc::SIGINT, &env, &tmp);
    assert!(
        env.snapshots().len() >= 8,
        "every snapshot stays (old or rewritten)\n{out}"
    );

    env.run_with_env(&erase, &[("TMPDIR", tmp.as_os_str())])
        .expect_ok();
    assert_eq!(env.snapshots().len(), 8);
    let found = env.operator(["find", "secret.txt", "--json"]);
    found.expect_ok();
    assert_eq!(found.json(), serde_json::json!([]), "{found}");
    env.check(true).expect_ok();
}

/// The start time of a process in clock ticks since boot (/proc/PID/stat).
fn start_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(19).unwrap().parse().unwrap()
}

fn stale_spool_files_go_with_the_next_backup(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let tmp = tmpdir(&env);
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), MIB, 1);
    let spool = spool_dir(&env, &tmp);
    fs::create_dir_all(&spool).unwrap();
    // Above any pid_max: a process that is surely gone.
    let dead = 4_194_305u32;
    let mut live = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = live.id();
    let ticks = start_ticks(pid);
    let planted = [
        (format!(".tmp-pack-{dead}-{ticks}-00000000000000aa"), false),
        (format!(".tmp-pack-{dead}-00000000000000ab"), false),
        // The live process's pid with another start time: a reused pid.
        (
            format!(".tmp-pack-{pid}-{}-00000000000000ac", ticks + 1),
            false,
        ),
        (format!(".tmp-pack-{pid}-{ticks}-00000000000000ad"), true),
    ];
    for (name, _) in &planted {
        write_random_file(&spool.join(name), 64 * KIB, 9);
    }
    let mut backup = args(&["backup", src.to_str().unwrap()], env.repo_flags());
    backup.push("--json".into());
    let out = env.run_with_env(&backup, &[("TMPDIR", tmp.as_os_str())]);
    let _ = live.kill();
    let _ = live.wait();
    out.expect_ok();
    for (name, kept) in &planted {
        assert_eq!(
            spool.join(name).exists(),
            *kept,
            "{name} in {}: {}\n{out}",
            spool.display(),
            if *kept {
                "a live writer's spool file must stay"
            } else {
                "a gone writer's spool file must be removed"
            }
        );
    }
}

/// S3 with TMPDIR on a 4 MiB file system: the error names it, says "no
/// space left" and what to do; the repository stays valid, no spool file
/// stays, and a backup with room works.
#[test]
fn full_spool_folder_is_named() {
    let env = TestEnv::with_repo_on(Backend::S3);
    let small = env.path("small-tmp");
    let Some(mount) = TmpfsMount::mount(&small, 4 * MIB) else {
        eprintln!("full_spool_folder_is_named: skipped, cannot mount a tmpfs here (needs root)");
        return;
    };
    let src = env.source_dir("src");
    for i in 0..8u64 {
        write_random_file(&src.join(format!("f{i}.bin")), 4 * MIB, 600 + i);
    }
    let backup = args(&["backup", src.to_str().unwrap()], env.repo_flags());
    let out = env.run_with_env(&backup, &[("TMPDIR", small.as_os_str())]);
    out.expect_failure()
        .expect_short_stderr(4)
        .expect_stderr_contains("no space left")
        .expect_stderr_contains(small.to_str().unwrap())
        .expect_stderr_contains("TMPDIR");
    assert_eq!(spool_files(&small), Vec::<String>::new(), "{out}");
    assert!(!env.repo.join("lock").exists(), "{out}");
    drop(mount);
    env.check(true).expect_ok();
    env.backup(&[&src]);
    env.check(true).expect_ok();
}

/// A local repository on a 6 MiB file system: the error names it and says
/// "no space left"; what was stored stays valid.
#[test]
fn full_local_repository_is_named() {
    let mut env = TestEnv::new();
    let Some(mount) = TmpfsMount::mount(&env.repo, 6 * MIB) else {
        eprintln!(
            "full_local_repository_is_named: skipped, cannot mount a tmpfs here (needs root)"
        );
        return;
    };
    env.recipient = env.generate_identity(&env.identity.clone());
    env.init_repo();
    let src = env.source_dir("src");
    for i in 0..8u64 {
        write_random_file(&src.join(format!("f{i}.bin")), 4 * MIB, 700 + i);
    }
    let out = env.backup_raw(&[&src], &[]);
    out.expect_failure()
        .expect_short_stderr(4)
        .expect_stderr_contains("no space left")
        .expect_stderr_contains(env.repo.to_str().unwrap())
        .expect_stderr_contains("free space");
    assert_eq!(
        spool_files(&env.repo.join("data")),
        Vec::<String>::new(),
        "{out}"
    );
    assert!(!env.repo.join("lock").exists(), "{out}");
    env.check(true).expect_ok();
    drop(mount);
}

/// A file name and a host with ESC, BEL, CR, a newline and a byte that is
/// not UTF-8: `ls`, `find` and `snapshots` print them escaped, `--json` exact.
#[test]
fn names_with_control_characters_are_escaped_for_people() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    let evil: &[u8] = b"red\x1b[31mname\x07bell\nline\r.txt";
    write_file(&src.join(OsStr::from_bytes(evil)), b"x");
    write_file(&src.join(OsStr::from_bytes(b"bad\xffbyte.txt")), b"y");
    let host = "host\x1b]0;pwned\x07\n";
    env.backup_raw(&[&src], &["--host", host]).expect_ok();

    let raw_controls =
        |s: &str| -> Vec<char> { s.chars().filter(|c| c.is_control() && *c != '\n').collect() };
    let ls = env.operator(["ls", "latest"]);
    ls.expect_ok();
    assert_eq!(raw_controls(&ls.stdout), Vec::<char>::new(), "{ls}");
    assert!(
        ls.stdout.contains("red\\033[31mname\\abell\\nline\\r.txt"),
        "ls shows the name escaped\n{ls}"
    );
    assert!(ls.stdout.contains("bad\\377byte.txt"), "{ls}");
    assert!(
        !ls.stdout.lines().any(|l| l.starts_with("line")),
        "a newline in a name must not start a line of its own\n{ls}"
    );

    let find = env.operator(["find", "*.txt"]);
    find.expect_ok();
    assert_eq!(raw_controls(&find.stdout), Vec::<char>::new(), "{find}");
    assert!(
        find.stdout
            .contains("red\\033[31mname\\abell\\nline\\r.txt"),
        "{find}"
    );

    let snaps = env.agent(["snapshots"]);
    snaps.expect_ok();
    assert_eq!(raw_controls(&snaps.stdout), Vec::<char>::new(), "{snaps}");
    assert!(snaps.stdout.contains("host\\033]0;pwned\\a\\n"), "{snaps}");

    // JSON keeps the exact names.
    let json = env.operator(["ls", "latest", "--json"]);
    json.expect_ok();
    let evil_text = std::str::from_utf8(evil).unwrap();
    assert!(
        json.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"].as_str().unwrap().ends_with(evil_text)),
        "{json}"
    );
    assert_eq!(env.snapshots()[0]["host"], host);
}
