//! Shared test environment: a private temporary directory with its own HOME and
//! cache directories, helpers that run the real `coffer` binary in a clean
//! environment, data-set generators, and a tree comparison that checks contents
//! and metadata bit for bit.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use crate::s3server::{Quirks, S3Server};

pub const COFFER: &str = env!("CARGO_BIN_EXE_coffer");
pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Default time limit for one coffer invocation (debug builds are slow).
/// Override with `COFFER_TEST_TIMEOUT` (seconds).
pub fn command_timeout() -> Duration {
    let secs = std::env::var("COFFER_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

// ---------------------------------------------------------------------------
// Process output
// ---------------------------------------------------------------------------

/// What one coffer run produced.
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` when the process died from a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The process's peak resident memory in bytes, where it was measured
    /// ([`run_command_peak`]).
    pub peak_rss: Option<u64>,
}

impl Output {
    pub fn from_status(
        cmdline: String,
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        elapsed: Duration,
    ) -> Output {
        Output {
            cmdline,
            code: status.code(),
            signal: status.signal(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed,
            peak_rss: None,
        }
    }

    /// Fails unless the process's peak resident memory stayed under `max` bytes.
    #[track_caller]
    pub fn expect_peak_rss_under(&self, max: u64) -> u64 {
        let peak = self
            .peak_rss
            .unwrap_or_else(|| panic!("peak memory was not measured\n{self}"));
        assert!(
            peak < max,
            "peak memory {} MiB, the limit is {} MiB\n{self}",
            peak >> 20,
            max >> 20
        );
        peak
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together, for "the output names X" assertions.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}, got {}\n{self}",
            self.describe_status()
        );
        self
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Non-zero exit, not a crash (no signal, no Rust panic exit code 101).
    #[track_caller]
    pub fn expect_failure(&self) -> &Self {
        assert!(
            self.code.is_some() && self.code != Some(0),
            "expected a failure exit code, got {}\n{self}",
            self.describe_status()
        );
        self.expect_no_panic();
        self
    }

    #[track_caller]
    pub fn expect_no_panic(&self) -> &Self {
        assert!(
            self.code != Some(101) && !self.stderr.contains("panicked at"),
            "coffer panicked instead of reporting an error\n{self}"
        );
        self
    }

    /// The error message is short: a clear one-liner (plus at most a few
    /// lines of context/hint), not a dump.
    #[track_caller]
    pub fn expect_short_stderr(&self, max_lines: usize) -> &Self {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            !lines.is_empty(),
            "expected an error message on stderr, got nothing\n{self}"
        );
        assert!(
            lines.len() <= max_lines,
            "expected a short error message (at most {max_lines} lines), got {} lines\n{self}",
            lines.len()
        );
        self
    }

    /// stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn expect_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "expected stderr to mention {needle:?}\n{self}"
        );
        self
    }

    /// stderr contains at least one of `needles` (case-insensitive).
    #[track_caller]
    pub fn expect_stderr_contains_any(&self, needles: &[&str]) -> &Self {
        let lower = self.stderr.to_lowercase();
        assert!(
            needles.iter().any(|n| lower.contains(&n.to_lowercase())),
            "expected stderr to mention one of {needles:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e})\n{self}");
        })
    }

    pub fn describe_status(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "unknown status".into(),
        }
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "--- command: {}", self.cmdline)?;
        writeln!(
            f,
            "--- status: {} after {:.2?}",
            self.describe_status(),
            self.elapsed
        )?;
        writeln!(f, "--- stdout:\n{}", truncate_for_message(&self.stdout))?;
        write!(f, "--- stderr:\n{}", truncate_for_message(&self.stderr))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn truncate_for_message(s: &str) -> String {
    const MAX: usize = 6000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut head = MAX / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - MAX / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}\n[... {} bytes elided ...]\n{}",
        &s[..head],
        tail - head,
        &s[tail..]
    )
}

fn cmdline_of(args: &[OsString]) -> String {
    let mut s = String::from("coffer");
    for a in args {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs a prepared command with piped output and a time limit; kills it and
/// panics when the limit is exceeded (a hang is a failure with a message, not a
/// stuck test run).
pub fn run_command(cmd: Command, cmdline: String, timeout: Duration) -> Output {
    run_measured(cmd, cmdline, timeout, false)
}

/// [`run_command`], also measuring the peak resident memory of the process
/// itself ([`Output::peak_rss`]): its VmHWM, read from /proc when it is about
/// to exit (it runs traced, and stops there: PTRACE_EVENT_EXIT). `ru_maxrss`
/// from `wait4` will not do: the kernel counts in it the memory of the
/// process the child was forked from (this test process, hundreds of MiB
/// while other tests run) up to its exec.
pub fn run_command_peak(cmd: Command, cmdline: String, timeout: Duration) -> Output {
    run_measured(cmd, cmdline, timeout, true)
}

/// The peak resident memory of a live process, in bytes.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// A measured child is reaped by `traced_wait` (waitpid), which clippy can not see.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: Command, cmdline: String, timeout: Duration, measure: bool) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if measure {
        // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                let null = std::ptr::null_mut::<libc::c_void>();
                if libc::ptrace(libc::PTRACE_TRACEME, 0, null, null) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmdline}: {e}"));
    let out_reader = spawn_reader(child.stdout.take().unwrap());
    let err_reader = spawn_reader(child.stderr.take().unwrap());
    let pid = child.id() as libc::pid_t;
    let mut peak_rss = None;
    // A traced child: each stop is answered (this thread is its tracer).
    // Stopped after its exec, it is told to stop again on its way out.
    let mut traced_wait = |options: libc::c_int| -> Option<ExitStatus> {
        loop {
            let mut st = 0;
            // SAFETY: pid is our own child; st is a valid pointer.
            let r = unsafe { libc::waitpid(pid, &mut st, options) };
            assert!(r >= 0, "waitpid: {}", std::io::Error::last_os_error());
            if r == 0 {
                return None;
            }
            if !libc::WIFSTOPPED(st) {
                return Some(ExitStatus::from_raw(st));
            }
            let null = std::ptr::null_mut::<libc::c_void>();
            let mut forward = libc::WSTOPSIG(st);
            if forward == libc::SIGTRAP {
                forward = 0;
                if st >> 16 == libc::PTRACE_EVENT_EXIT {
                    peak_rss = vm_hwm(pid);
                } else {
                    let opts = libc::PTRACE_O_TRACEEXIT as usize as *mut libc::c_void;
                    // SAFETY: pid is our stopped tracee.
                    unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, null, opts) };
                }
            }
            // SAFETY: pid is our stopped tracee; `forward` is a signal number or 0.
            unsafe {
                libc::ptrace(
                    libc::PTRACE_CONT,
                    pid,
                    null,
                    forward as usize as *mut libc::c_void,
                )
            };
        }
    };
    let status = loop {
        let done = if measure {
            traced_wait(libc::WNOHANG)
        } else {
            child.try_wait().expect("try_wait")
        };
        match done {
            Some(status) => break status,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = if measure {
                    traced_wait(0)
                } else {
                    child.wait().ok()
                };
                let stdout = out_reader.join().unwrap_or_default();
                let stderr = err_reader.join().unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} (killed): {cmdline}\n--- stdout:\n{}\n--- stderr:\n{}",
                    truncate_for_message(&String::from_utf8_lossy(&stdout)),
                    truncate_for_message(&String::from_utf8_lossy(&stderr)),
                );
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let mut out = Output::from_status(cmdline, status, stdout, stderr, elapsed);
    out.peak_rss = peak_rss;
    out
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

// ---------------------------------------------------------------------------
// The test environment
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where a test environment keeps its repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A directory on the local file system.
    Local,
    /// `s3://BUCKET/repo` on an in-process S3 server (s3s-fs over TLS) owned
    /// by the environment.
    S3,
}

/// The bucket an S3 test environment keeps its repository in.
pub const TEST_BUCKET: &str = "coffer-test";

/// Generates, for each `name`, a module `name` with two tests, `local` and
/// `s3`, that call `name(Backend::Local)` and `name(Backend::S3)`:
/// `roundtrip::roundtrip_every_entry_kind::s3` and so on.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn local() {
                    super::$name($crate::env::Backend::Local)
                }
                #[test]
                fn s3() {
                    super::$name($crate::env::Backend::S3)
                }
            }
        )+
    };
}
pub(crate) use on_both_backends;

/// One private world for a test: temp dir, HOME, caches, keys, repository.
pub struct TestEnv {
    /// The canonical path of the temporary directory (owned by `_tmp`).
    pub root: PathBuf,
    pub home: PathBuf,
    pub cache_dir: PathBuf,
    /// The repository directory (`init` is run by `with_repo`). On S3 this is
    /// where the server keeps the repository's objects as plain files
    /// (`<server root>/<bucket>/repo`), so damaging or measuring objects on
    /// disk works the same on both backends.
    pub repo: PathBuf,
    /// The repository as given to `--repo`: the path of `repo`, or its
    /// `s3://` URL.
    pub repo_url: OsString,
    pub backend: Backend,
    pub agent_key: PathBuf,
    pub identity: PathBuf,
    pub catalog: PathBuf,
    /// The operator recipient (`age1...`) once an identity exists.
    pub recipient: String,
    /// The S3 server of an S3 environment (dropped before the temp dir).
    pub s3: Option<S3Server>,
    _tmp: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh environment without keys or repository (local backend).
    pub fn new() -> TestEnv {
        TestEnv::new_on(Backend::Local)
    }

    /// A fresh environment without keys or repository; for S3, the server is
    /// running and the (empty) bucket exists.
    pub fn new_on(backend: Backend) -> TestEnv {
        TestEnv::new_with(backend, Quirks::default())
    }

    /// A fresh S3 environment whose server imitates `quirks` (the
    /// behaviours of other S3 implementations, see [`Quirks`]).
    pub fn new_on_quirks(quirks: Quirks) -> TestEnv {
        TestEnv::new_with(Backend::S3, quirks)
    }

    fn new_with(backend: Backend, quirks: Quirks) -> TestEnv {
        let tmp = tempfile::Builder::new()
            .prefix("coffer-it-")
            .tempdir()
            .expect("create temp dir");
        let root = fs::canonicalize(tmp.path()).expect("canonicalize temp dir");
        let home = root.join("home");
        let cache_dir = home.join(".cache").join("coffer");
        fs::create_dir_all(&cache_dir).unwrap();
        let (repo, repo_url, s3) = match backend {
            Backend::Local => (root.join("repo"), root.join("repo").into_os_string(), None),
            Backend::S3 => {
                let server = S3Server::start_with(&root, quirks);
                server.create_bucket(TEST_BUCKET);
                (
                    server.root.join(TEST_BUCKET).join("repo"),
                    format!("s3://{TEST_BUCKET}/repo").into(),
                    Some(server),
                )
            }
        };
        TestEnv {
            repo,
            repo_url,
            backend,
            s3,
            agent_key: home.join("agent.key"),
            identity: home.join("operator.key"),
            catalog: home.join("catalog.sqlite"),
            recipient: String::new(),
            home,
            cache_dir,
            root,
            _tmp: tmp,
        }
    }

    /// A fresh environment with an operator identity, an initialised
    /// repository and its agent key.
    pub fn with_repo() -> TestEnv {
        TestEnv::with_repo_on(Backend::Local)
    }

    /// `with_repo` with the repository on `backend`.
    pub fn with_repo_on(backend: Backend) -> TestEnv {
        let mut env = TestEnv::new_on(backend);
        env.recipient = env.generate_identity(&env.identity.clone());
        env.init_repo();
        env
    }

    /// `with_repo` on an S3 server that imitates `quirks`.
    pub fn with_repo_on_quirks(quirks: Quirks) -> TestEnv {
        let mut env = TestEnv::new_on_quirks(quirks);
        env.recipient = env.generate_identity(&env.identity.clone());
        env.init_repo();
        env
    }

    /// The environment variables a coffer process needs to reach this
    /// environment's repository (the S3 server's AWS_* variables; none for a
    /// local repository). `command` adds them to every coffer run.
    pub fn backend_env(&self) -> Vec<(&'static str, OsString)> {
        self.s3.as_ref().map(S3Server::env).unwrap_or_default()
    }

    /// Another, not yet existing repository location next to this one:
    /// (`--repo` argument, where its objects would be on disk).
    pub fn sibling_repo(&self, name: &str) -> (OsString, PathBuf) {
        match &self.s3 {
            None => {
                let p = self.root.join(name);
                (p.clone().into_os_string(), p)
            }
            Some(server) => (
                format!("s3://{TEST_BUCKET}/{name}").into(),
                server.root.join(TEST_BUCKET).join(name),
            ),
        }
    }

    /// Replaces the repository object `key` with `bytes`, as a newer or
    /// other writer would (a new upload, not damage at rest). Locally that is
    /// writing the file. On S3 the file under the server's root is written and
    /// the checksums s3s-fs stored at upload time are dropped, so the server
    /// serves the new bytes as the object (a real upload would have stored
    /// new checksums; the stale ones would make the client reject the body).
    pub fn replace_object(&self, key: &str, bytes: &[u8]) {
        let path = self.repo.join(key);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        if let Some(server) = &self.s3 {
            let full_key = format!("repo/{key}");
            let info = server.root.join(format!(
                ".bucket-{}.object-{}.internal.json",
                base64url(TEST_BUCKET.as_bytes()),
                base64url(full_key.as_bytes())
            ));
            match fs::remove_file(&info) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove {}: {e}", info.display()),
            }
        }
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A fresh, not yet existing path inside the temp dir.
    pub fn unique_path(&self, stem: &str) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        self.root.join(format!("{stem}-{n}"))
    }

    /// A `Command` for coffer with a clean environment: only PATH, HOME,
    /// XDG_CACHE_HOME and COFFER_CACHE_DIR (all inside the temp dir), plus
    /// the S3 server's variables for an S3 environment.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(COFFER);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH")
                    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()),
            )
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("COFFER_CACHE_DIR", &self.cache_dir)
            // Panics show where; anyhow error chains stay one-liners.
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "0")
            .current_dir(&self.root)
            .envs(self.backend_env())
            .args(args);
        cmd
    }

    /// Runs coffer with exactly these arguments (nothing added).
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let cmdline = cmdline_of(&args);
        run_command(self.command(&args), cmdline, command_timeout())
    }

    /// Same as `run`, with extra environment variables.
    pub fn run_with_env<I, S>(&self, args: I, vars: &[(&str, &OsStr)]) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let cmdline = cmdline_of(&args);
        let mut cmd = self.command(&args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        run_command(cmd, cmdline, command_timeout())
    }

    /// The global flags that point at this environment's repository, agent key
    /// and catalog.
    pub fn repo_flags(&self) -> Vec<OsString> {
        vec![
            "--repo".into(),
            self.repo_url.clone(),
            "--agent-key".into(),
            self.agent_key.clone().into(),
            "--catalog".into(),
            self.catalog.clone().into(),
        ]
    }

    /// The repository flags plus `--identity`.
    pub fn operator_flags(&self) -> Vec<OsString> {
        let mut v = self.repo_flags();
        v.push("--identity".into());
        v.push(self.identity.clone().into());
        v
    }

    /// `coffer <args> <repo flags>`: as the agent (no identity).
    pub fn agent<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.extend(self.repo_flags());
        self.run(all)
    }

    /// `coffer <args> <repo flags> --identity ...`: as the operator.
    pub fn operator<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut all: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.extend(self.operator_flags());
        self.run(all)
    }

    /// `key generate --output FILE`; returns the printed recipient.
    pub fn generate_identity(&self, file: &Path) -> String {
        let out = self.run([
            OsStr::new("key"),
            "generate".as_ref(),
            "--output".as_ref(),
            file.as_os_str(),
        ]);
        out.expect_ok();
        let recipient = out.stdout.trim().to_string();
        assert!(
            recipient.starts_with("age1") && !recipient.contains(char::is_whitespace),
            "key generate must print one age1... recipient on stdout\n{out}"
        );
        let mode = fs::metadata(file)
            .unwrap_or_else(|e| panic!("key generate did not write {}: {e}", file.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(
            mode,
            0o600,
            "identity file {} must have mode 0600, has {mode:o}",
            file.display()
        );
        recipient
    }

    /// `init --repo R --recipient X --agent-key K`.
    pub fn init_repo(&self) {
        let out = self.run([
            OsStr::new("init"),
            "--repo".as_ref(),
            self.repo_url.as_os_str(),
            "--recipient".as_ref(),
            self.recipient.as_ref(),
            "--agent-key".as_ref(),
            self.agent_key.as_os_str(),
        ]);
        out.expect_ok();
        let mode = fs::metadata(&self.agent_key)
            .unwrap_or_else(|e| {
                panic!(
                    "init did not write the agent key {}: {e}\n{out}",
                    self.agent_key.display()
                )
            })
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "agent key must have mode 0600, has {mode:o}");
        assert!(
            self.repo.join("config").is_file(),
            "init must write {}/config\n{out}",
            self.repo.display()
        );
    }

    /// `backup PATHS --json` as the agent; expects exit 0 and returns the JSON.
    #[track_caller]
    pub fn backup(&self, paths: &[&Path]) -> Value {
        let out = self.backup_raw(paths, &[]);
        out.expect_ok();
        let v = out.json();
        check_backup_json(&v, &out);
        v
    }

    /// `backup PATHS --json EXTRA` as the agent; any exit code.
    pub fn backup_raw(&self, paths: &[&Path], extra: &[&str]) -> Output {
        let mut args: Vec<OsString> = vec!["backup".into()];
        args.extend(paths.iter().map(|p| p.as_os_str().to_owned()));
        args.push("--json".into());
        args.extend(extra.iter().map(OsString::from));
        self.agent(args)
    }

    /// `snapshots --json` as the agent, parsed.
    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        let out = self.agent(["snapshots", "--json"]);
        out.expect_ok();
        match out.json() {
            Value::Array(a) => a,
            other => panic!("snapshots --json must print an array, got {other}\n{out}"),
        }
    }

    /// `restore SNAP --target DIR` as the operator; any exit code.
    pub fn restore_raw(&self, snapshot: &str, target: &Path, extra: &[&OsStr]) -> Output {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            snapshot.into(),
            "--target".into(),
            target.as_os_str().to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_os_string()));
        self.operator(args)
    }

    /// Restores into a fresh, empty target directory; expects exit 0; returns
    /// the target.
    #[track_caller]
    pub fn restore(&self, snapshot: &str) -> PathBuf {
        let target = self.unique_path("restore");
        fs::create_dir(&target).unwrap();
        self.restore_raw(snapshot, &target, &[]).expect_ok();
        target
    }

    /// `check [--read-data]` as the operator (every blob decrypted).
    pub fn check(&self, read_data: bool) -> Output {
        if read_data {
            self.operator(["check", "--read-data"])
        } else {
            self.operator(["check"])
        }
    }

    /// A data source directory inside the temp dir (created).
    pub fn source_dir(&self, name: &str) -> PathBuf {
        let p = self.root.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Total size in bytes of every file under the repository directory.
    pub fn repo_size(&self) -> u64 {
        dir_size(&self.repo)
    }

    /// The pack objects under `data/`, as (object key `data/xx/<id>`, path, size).
    pub fn packs(&self) -> Vec<(String, PathBuf, u64)> {
        let mut v = Vec::new();
        let data = self.repo.join("data");
        for sub in fs::read_dir(&data).unwrap_or_else(|e| panic!("read {}: {e}", data.display())) {
            let sub = sub.unwrap();
            if !sub.file_type().unwrap().is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path()).unwrap() {
                let f = f.unwrap();
                let md = f.metadata().unwrap();
                if md.is_file() {
                    let key = format!(
                        "data/{}/{}",
                        sub.file_name().to_string_lossy(),
                        f.file_name().to_string_lossy()
                    );
                    v.push((key, f.path(), md.len()));
                }
            }
        }
        v.sort();
        v
    }
}

/// Sanity checks on the `backup --json` shape from docs/CLI.md.
#[track_caller]
pub fn check_backup_json(v: &Value, out: &Output) {
    for key in [
        "files",
        "dirs",
        "bytes",
        "files_new",
        "files_changed",
        "files_unchanged",
        "data_added",
        "stored_added",
        "packs_added",
    ] {
        assert!(
            v.get(key).and_then(Value::as_u64).is_some(),
            "backup --json: field {key:?} missing or not a number\n{out}"
        );
    }
    let snap = v.get("snapshot").and_then(Value::as_str).unwrap_or("");
    assert!(
        snap.len() == 64 && snap.bytes().all(|b| b.is_ascii_hexdigit()),
        "backup --json: \"snapshot\" must be 64 hex digits\n{out}"
    );
    assert!(
        v.get("skipped").map(Value::is_array).unwrap_or(false),
        "backup --json: \"skipped\" must be an array\n{out}"
    );
    assert!(
        v.get("changed_during_backup")
            .map(Value::is_array)
            .unwrap_or(false),
        "backup --json: \"changed_during_backup\" must be an array\n{out}"
    );
    assert!(
        v.get("seconds").map(Value::is_number).unwrap_or(false),
        "backup --json: \"seconds\" must be a number\n{out}"
    );
}

pub fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a number in {v}"))
}

pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
}

/// The form a source path takes inside a snapshot: absolute path without the
/// leading `/`.
pub fn stored_form(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::RootDir))
        .collect()
}

/// Where `restore --target T` puts the source path `src`.
pub fn restored_path(target: &Path, src: &Path) -> PathBuf {
    target.join(stored_form(src))
}

/// Strips an optional leading `/` from a path string reported by coffer.
pub fn normalize_reported(p: &str) -> &str {
    p.trim_start_matches('/')
}

pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            total += dir_size(&e.path());
        } else {
            total += md.len();
        }
    }
    total
}

/// Every file under `dir` (relative path, size), for diagnostics.
pub fn list_files(dir: &Path) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    fn walk(base: &Path, dir: &Path, v: &mut Vec<(String, u64)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                walk(base, &e.path(), v);
            } else {
                v.push((
                    e.path()
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    md.len(),
                ));
            }
        }
    }
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// URL-safe base64 without padding (how s3s-fs names its side files).
fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// File-system helpers
// ---------------------------------------------------------------------------

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Sets the modification time (seconds + nanoseconds) of `path` itself (a
/// symlink is not followed). The access time is left alone.
pub fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nanos as _,
        },
    ];
    let c = cpath(path);
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn mkfifo(path: &Path, mode: u32) {
    let c = cpath(path);
    let rc = unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn write_file(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `len` pseudo-random (incompressible) bytes from `seed`.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Compressible, text-like bytes (log lines from a small vocabulary) that
/// still differ from seed to seed, so they do not deduplicate across files.
pub fn compressible_bytes(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "GET",
        "POST",
        "/index.html",
        "/api/v1/items",
        "200",
        "404",
        "500",
        "user",
        "session",
        "ok",
        "timeout",
        "backup",
        "coffer",
        "chunk",
        "pack",
        "index",
        "info",
        "warn",
        "error",
        "debug",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(len + 128);
    let mut line = 0u64;
    while v.len() < len {
        line += 1;
        let ts = 1_700_000_000 + line * 3 + rng.gen_range(0..3);
        v.extend_from_slice(format!("{ts} seed={seed} line={line}").as_bytes());
        for _ in 0..rng.gen_range(4..12) {
            v.push(b' ');
            v.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
        }
        v.push(b'\n');
    }
    v.truncate(len);
    v
}

pub fn write_compressible_file(path: &Path, len: usize, seed: u64) {
    write_file(path, &compressible_bytes(len, seed));
}

/// A tmpfs mounted for one test; unmounted on drop.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    /// Mounts a tmpfs of `size` bytes at `path` (created). Returns `None` when
    /// mounting is not permitted here.
    pub fn mount(path: &Path, size: u64) -> Option<TmpfsMount> {
        fs::create_dir_all(path).unwrap();
        let src = CString::new("tmpfs").unwrap();
        let fstype = CString::new("tmpfs").unwrap();
        let data = CString::new(format!("size={size},mode=0755")).unwrap();
        let target = cpath(path);
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr() as *const libc::c_void,
            )
        };
        if rc != 0 {
            eprintln!(
                "note: cannot mount tmpfs at {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(TmpfsMount {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let target = cpath(&self.path);
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Makes a child process run as root but without the capabilities that let
/// root read files regardless of their mode (CAP_DAC_OVERRIDE,
/// CAP_DAC_READ_SEARCH): they are dropped from the bounding set before exec,
/// so the exec'd coffer never gets them.
pub fn drop_dac_capabilities(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            const CAP_DAC_OVERRIDE: libc::c_ulong = 1;
            const CAP_DAC_READ_SEARCH: libc::c_ulong = 2;
            for cap in [CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Limits the size of files the child may write (RLIMIT_FSIZE).
pub fn limit_file_size(cmd: &mut Command, bytes: u64) {
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after
/// `timeout` naming `what` and showing `context()`.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts coffer in the background with output going to files (for the crash
/// test, which kills it).
pub fn spawn_background(
    env: &TestEnv,
    args: &[OsString],
    log_stem: &str,
) -> (Child, PathBuf, PathBuf) {
    spawn_background_with_env(env, args, &[], log_stem)
}

/// `spawn_background` with extra environment variables.
pub fn spawn_background_with_env(
    env: &TestEnv,
    args: &[OsString],
    vars: &[(&str, &OsStr)],
    log_stem: &str,
) -> (Child, PathBuf, PathBuf) {
    let out_path = env.unique_path(&format!("{log_stem}.stdout"));
    let err_path = env.unique_path(&format!("{log_stem}.stderr"));
    let mut cmd = env.command(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let child = cmd.spawn().expect("spawn coffer");
    (child, out_path, err_path)
}

// ---------------------------------------------------------------------------
// Tree comparison
// ---------------------------------------------------------------------------

/// One entry of a walked tree.
#[derive(Clone)]
pub struct EntryInfo {
    pub rel: PathBuf,
    pub meta: fs::Metadata,
}

/// Walks `root` (not following symlinks); returns entries keyed by the path
/// relative to `root` (the root itself is the empty path).
pub fn walk_tree(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut map = BTreeMap::new();
    fn walk(root: &Path, rel: PathBuf, map: &mut BTreeMap<PathBuf, fs::Metadata>) {
        let full = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md =
            fs::symlink_metadata(&full).unwrap_or_else(|e| panic!("lstat {}: {e}", full.display()));
        let is_dir = md.is_dir();
        map.insert(rel.clone(), md);
        if is_dir {
            let mut names: Vec<OsString> = fs::read_dir(&full)
                .unwrap_or_else(|e| panic!("read_dir {}: {e}", full.display()))
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(root, rel.join(n), map);
            }
        }
    }
    walk(root, PathBuf::new(), &mut map);
    map
}

pub fn kind_name(md: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "char device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "unknown"
    }
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        "<root>".to_string()
    } else {
        format!("{:?}", rel.as_os_str())
    }
}

/// Compares one entry (already lstat'ed on both sides); returns the
/// differences found.
pub fn compare_entry(
    rel: &Path,
    src: &Path,
    a: &fs::Metadata,
    dst: &Path,
    b: &fs::Metadata,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let name = show(rel);
    if a.file_type() != b.file_type() {
        diffs.push(format!(
            "{name}: type differs: source is a {}, restored is a {}",
            kind_name(a),
            kind_name(b)
        ));
        return diffs;
    }
    if !a.file_type().is_symlink() && a.mode() & 0o7777 != b.mode() & 0o7777 {
        diffs.push(format!(
            "{name}: permission bits differ: source {:04o}, restored {:04o}",
            a.mode() & 0o7777,
            b.mode() & 0o7777
        ));
    }
    if a.uid() != b.uid() || a.gid() != b.gid() {
        diffs.push(format!(
            "{name}: owner differs: source {}:{}, restored {}:{}",
            a.uid(),
            a.gid(),
            b.uid(),
            b.gid()
        ));
    }
    // Directory mtimes of the root are compared too: restore sets them last.
    if a.mtime() != b.mtime() || a.mtime_nsec() != b.mtime_nsec() {
        diffs.push(format!(
            "{name} ({}): mtime differs: source {}.{:09}, restored {}.{:09}",
            kind_name(a),
            a.mtime(),
            a.mtime_nsec(),
            b.mtime(),
            b.mtime_nsec()
        ));
    }
    if a.file_type().is_symlink() {
        let ta = fs::read_link(src).unwrap();
        let tb = fs::read_link(dst).unwrap();
        if ta != tb {
            diffs.push(format!(
                "{name}: symlink target differs: source {:?}, restored {:?}",
                ta, tb
            ));
        }
    }
    if a.file_type().is_file() {
        if a.len() != b.len() {
            diffs.push(format!(
                "{name}: size differs: source {} bytes, restored {} bytes",
                a.len(),
                b.len()
            ));
        } else if let Some(off) = first_difference(src, dst) {
            diffs.push(format!(
                "{name}: contents differ (first difference at byte offset {off}, size {})",
                a.len()
            ));
        }
    }
    diffs
}

/// Offset of the first differing byte of two files of equal length.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    let mut fa = fs::File::open(a).unwrap_or_else(|e| panic!("open {}: {e}", a.display()));
    let mut fb = fs::File::open(b).unwrap_or_else(|e| panic!("open {}: {e}", b.display()));
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| ba[i] != bb[i]) {
            return Some(off + i as u64);
        }
        if na != nb {
            return Some(off + n as u64);
        }
        if na == 0 {
            return None;
        }
        off += n as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    n
}

/// Compares two trees: same entries, types, contents, permission bits,
/// owners, mtimes (ns, all entry kinds), symlink targets, and hard-link
/// structure. Returns every difference found (empty = equal).
pub fn compare_trees(src: &Path, dst: &Path) -> Vec<String> {
    let mut diffs = Vec::new();
    if fs::symlink_metadata(dst).is_err() {
        return vec![format!("restored tree {} does not exist", dst.display())];
    }
    let a = walk_tree(src);
    let b = walk_tree(dst);
    for rel in a.keys() {
        if !b.contains_key(rel) {
            diffs.push(format!(
                "{}: missing from the restored tree ({})",
                show(rel),
                kind_name(&a[rel])
            ));
        }
    }
    for rel in b.keys() {
        if !a.contains_key(rel) {
            diffs.push(format!(
                "{}: extra in the restored tree ({})",
                show(rel),
                kind_name(&b[rel])
            ));
        }
    }
    let mut src_to_dst: HashMap<(u64, u64), (u64, PathBuf)> = HashMap::new();
    let mut dst_to_src: HashMap<(u64, u64), ((u64, u64), PathBuf)> = HashMap::new();
    for (rel, ma) in &a {
        let Some(mb) = b.get(rel) else { continue };
        let ps = if rel.as_os_str().is_empty() {
            src.to_path_buf()
        } else {
            src.join(rel)
        };
        let pd = if rel.as_os_str().is_empty() {
            dst.to_path_buf()
        } else {
            dst.join(rel)
        };
        diffs.extend(compare_entry(rel, &ps, ma, &pd, mb));
        // Hard-link structure: same inode in the restored tree iff same inode
        // in the source tree (directories excluded).
        if ma.is_dir() || mb.is_dir() {
            continue;
        }
        let ka = (ma.dev(), ma.ino());
        let kb = (mb.dev(), mb.ino());
        match src_to_dst.get(&ka) {
            Some((ino_b, first)) if *ino_b != mb.ino() => diffs.push(format!(
                "{}: is a hard link of {} in the source, but not in the restored tree",
                show(rel),
                show(first)
            )),
            Some(_) => {}
            None => {
                src_to_dst.insert(ka, (mb.ino(), rel.clone()));
            }
        }
        match dst_to_src.get(&kb) {
            Some((k, first)) if *k != ka => diffs.push(format!(
                "{}: is a hard link of {} in the restored tree, but not in the source",
                show(rel),
                show(first)
            )),
            Some(_) => {}
            None => {
                dst_to_src.insert(kb, (ka, rel.clone()));
            }
        }
    }
    diffs
}

/// Panics, naming every difference, unless the trees are equal.
#[track_caller]
pub fn assert_trees_equal(src: &Path, dst: &Path) {
    let diffs = compare_trees(src, dst);
    if !diffs.is_empty() {
        let shown: Vec<&String> = diffs.iter().take(60).collect();
        panic!(
            "restored tree {} differs from source {} ({} differences):\n  {}{}",
            dst.display(),
            src.display(),
            diffs.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            if diffs.len() > 60 { "\n  ..." } else { "" }
        );
    }
}

/// Number of entries (excluding the root) in a tree.
pub fn count_entries(root: &Path) -> usize {
    walk_tree(root).len() - 1
}

/// Regular files under `root` as relative paths (sorted).
pub fn regular_files(root: &Path) -> BTreeSet<PathBuf> {
    walk_tree(root)
        .into_iter()
        .filter(|(_, md)| md.is_file())
        .map(|(rel, _)| rel)
        .collect()
}

/// A seeded RNG for tests, with the seed taken from `var` when set.
pub fn seeded_rng(var: &str, default: u64) -> (StdRng, u64) {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (StdRng::seed_from_u64(seed), seed)
}

/// Builds a mixed data set of about `total` bytes under `dir`: incompressible
/// random files (about half), compressible log-like files (about a third),
/// and many small files in nested directories (the rest). Deterministic for a
/// given seed. Returns the paths of the large random files (for mutation).
pub fn make_mixed_dataset(dir: &Path, total: u64, seed: u64) -> Vec<PathBuf> {
    let mut rng = StdRng::seed_from_u64(seed);
    fs::create_dir_all(dir).unwrap();
    let random_budget = total / 2;
    let compressible_budget = total * 3 / 10;
    let small_budget = total - random_budget - compressible_budget;
    let mut randoms = Vec::new();
    let mut used = 0;
    let mut i = 0;
    while used < random_budget {
        let len = rng
            .gen_range(MIB..=6 * MIB)
            .min(random_budget - used)
            .max(1);
        let p = dir.join("random").join(format!("r{i:03}.bin"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_random_file(&p, len, rng.next_u64());
        randoms.push(p);
        used += len;
        i += 1;
    }
    used = 0;
    i = 0;
    while used < compressible_budget {
        let len = rng
            .gen_range(256 * KIB..=4 * MIB)
            .min(compressible_budget - used)
            .max(1);
        let p = dir.join("logs").join(format!("app{i:02}.log"));
        write_compressible_file(&p, len as usize, rng.next_u64());
        used += len;
        i += 1;
    }
    used = 0;
    i = 0;
    while used < small_budget {
        let len = rng.gen_range(0..16 * KIB);
        let p = dir
            .join("small")
            .join(format!("d{:02}", i % 17))
            .join(format!("e{:02}", (i / 17) % 9))
            .join(format!("f{i:05}.txt"));
        if rng.gen_bool(0.5) {
            write_file(&p, &random_bytes(len as usize, rng.next_u64()));
        } else {
            write_compressible_file(&p, len as usize, rng.next_u64());
        }
        used += len.max(512);
        i += 1;
    }
    randoms
}

pub fn mib(n: u64) -> String {
    format!("{:.2} MiB", n as f64 / MIB as f64)
}
