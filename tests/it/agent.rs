//! The agent as a service: `coffer agent` runs a folder of profiles on their
//! schedules (per-day cap, catch-up after a restart), skips broken profiles,
//! reloads on SIGHUP, stops cleanly on SIGTERM, serves metrics, sends
//! notifications; `coffer run` runs one profile's job with its hooks;
//! `coffer status` and `coffer agent --check` report on a profile folder.
//!
//! These drive the real binary: two smoke tests of the service (a run,
//! metrics, SIGTERM; SIGHUP), what only real processes show (a killed agent's
//! run stopping by itself, a run that dies without a report, two runs on one
//! repository), and `coffer run`, `status` and `agent --check`. The
//! schedule's behaviours (cap, catch-up, DST, jitter, queueing, reload,
//! shutdown) run in-process on simulated time in agent_sim.rs. Every wait
//! here is a poll with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::Value;

use crate::env::*;

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

/// A schedule time zone whose local day does not end while the tests run
/// (the per-day cap counts runs per local day): UTC from 06:00 to 18:00 UTC,
/// else UTC+12 (`Etc/GMT-12`), chosen once per test run. Returns the zone's
/// name and its offset from UTC in hours.
fn day_zone() -> (&'static str, i64) {
    static ZONE: std::sync::OnceLock<(&'static str, i64)> = std::sync::OnceLock::new();
    *ZONE.get_or_init(|| {
        if (6..18).contains(&Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).hour()) {
            ("UTC", 0)
        } else {
            ("Etc/GMT-12", 12)
        }
    })
}

/// The next local midnight of a zone `offset_hours` ahead of UTC, in UTC:
/// where the per-day cap moves a profile's next run.
fn next_local_midnight(offset_hours: i64) -> Timestamp {
    let offset = jiff::SignedDuration::from_hours(offset_hours);
    utc_midnight(Timestamp::now() + offset + coffer::time::days(1)) - offset
}

/// The start of the UTC day `t` falls on.
fn utc_midnight(t: Timestamp) -> Timestamp {
    let utc = jiff::tz::TimeZone::UTC;
    t.to_zoned(utc.clone())
        .date()
        .to_zoned(utc)
        .unwrap()
        .timestamp()
}

/// Parses an RFC 3339 time printed by coffer.
fn rfc3339(s: &str) -> Option<Timestamp> {
    coffer::time::parse(s.trim()).ok()
}

fn toml_str(p: impl AsRef<Path>) -> String {
    format!("{:?}", p.as_ref().to_str().expect("UTF-8 test path"))
}

/// A profile backing `source` up into the environment's repository with its
/// agent key, every 2 s without jitter, at most `max_per_day` runs a day in
/// the `day_zone`; `extra` (TOML sections) is appended.
fn profile_toml(env: &TestEnv, name: &str, source: &Path, max_per_day: u32, extra: &str) -> String {
    let repo = env.repo_url.to_str().expect("UTF-8 repository path");
    format!(
        r#"name = "{name}"
sources = [{source}]
repository = {repo}
agent_key = {key}

[schedule]
interval = "2s"
max_per_day = {max_per_day}
jitter = "0s"
timezone = "{tz}"
catch_up = true

[retention]
keep_within = "90d"

[prune]
enabled = true
grace = "0s"
max_unused = 20
{extra}"#,
        source = toml_str(source),
        repo = toml_str(repo),
        key = toml_str(&env.agent_key),
        tz = day_zone().0,
    )
}

/// Writes `<dir>/<name>.toml` for a profile of its own small source folder;
/// returns the profile file.
fn write_profile(env: &TestEnv, dir: &Path, name: &str, max_per_day: u32, extra: &str) -> PathBuf {
    let src = env.source_dir(&format!("src-{name}"));
    write_file(
        &src.join("data.txt"),
        format!("the data of {name}\n").as_bytes(),
    );
    let seed = name.bytes().fold(900u64, |h, b| h * 31 + b as u64);
    write_random_file(&src.join("blob.bin"), 64 * KIB, seed);
    let file = dir.join(format!("{name}.toml"));
    write_file(
        &file,
        profile_toml(env, name, &src, max_per_day, extra).as_bytes(),
    );
    file
}

/// A profile that cannot load: an unknown key.
fn write_broken_profile(env: &TestEnv, dir: &Path) -> PathBuf {
    let file = dir.join("broken.toml");
    let mut text = profile_toml(env, "broken", &env.root, 3, "");
    text = text.replacen("jitter = ", "frequency = \"often\"\njitter = ", 1);
    write_file(&file, text.as_bytes());
    file
}

// ---------------------------------------------------------------------------
// The agent process
// ---------------------------------------------------------------------------

/// A running `coffer agent`, its stdout (the log) and stderr in files. Killed
/// on drop if still running, so a failed test leaves no service behind.
struct AgentProcess {
    child: Child,
    log: PathBuf,
    stderr: PathBuf,
    cmdline: String,
    /// When it was started (for "started within N s" checks on log times).
    started_at: Timestamp,
    started: Instant,
    exited: bool,
}

impl AgentProcess {
    fn spawn(env: &TestEnv, args: &[OsString], vars: &[(&str, &str)], stem: &str) -> Self {
        let log = env.unique_path(&format!("{stem}.log"));
        let stderr = env.unique_path(&format!("{stem}.stderr"));
        let mut cmd = env.command(args);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(&stderr).unwrap());
        let started_at = Timestamp::now();
        let child = cmd.spawn().expect("spawn coffer agent");
        let cmdline = format!(
            "{vars}coffer {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            vars = vars
                .iter()
                .map(|(k, v)| format!("{k}={v} "))
                .collect::<String>()
        );
        AgentProcess {
            child,
            log,
            stderr,
            cmdline,
            started_at,
            started: Instant::now(),
            exited: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The log lines that are JSON objects.
    fn events(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Log events with this message (and this profile, if given).
    fn events_with(&self, message: &str, profile: Option<&str>) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["message"] == message)
            .filter(|e| profile.is_none_or(|p| e["profile"] == p))
            .collect()
    }

    /// The agent's log and stderr, for assertion messages.
    fn describe(&self) -> String {
        format!(
            "--- agent: {}\n--- log:\n{}\n--- stderr:\n{}",
            self.cmdline,
            truncate(&self.log_text()),
            truncate(&String::from_utf8_lossy(
                &fs::read(&self.stderr).unwrap_or_default()
            ))
        )
    }

    /// Panics (with the log) if the agent exited (our unreaped child is then
    /// a zombie).
    #[track_caller]
    fn assert_alive(&self) {
        if process_gone(self.pid()) {
            panic!(
                "the agent exited while it should be running\n{}",
                self.describe()
            );
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the agent to exit (panics after `timeout`, killing it).
    fn wait_exit(&mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the agent did not exit within {timeout:?} (killed)\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.exited = true;
        Output::from_status(
            self.cmdline.clone(),
            status,
            fs::read(&self.log).unwrap_or_default(),
            fs::read(&self.stderr).unwrap_or_default(),
            self.started.elapsed(),
        )
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if !self.exited && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 8000;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut cut = s.len() - MAX;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[... {cut} bytes elided ...]\n{}", &s[cut..])
}

fn agent_args(profiles: &Path, state: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "agent".into(),
        "--profiles".into(),
        profiles.into(),
        "--state-dir".into(),
        state.into(),
        "--log-format".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

// ---------------------------------------------------------------------------
// Status, snapshots, state files
// ---------------------------------------------------------------------------

/// `coffer status --profiles DIR --state-dir S --json`: the output and the JSON.
fn status(env: &TestEnv, profiles: &Path, state: &Path) -> (Output, Value) {
    let out = env.run([
        "status".as_ref(),
        "--profiles".as_ref(),
        profiles.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--json".as_ref(),
    ]);
    let v = out.json();
    (out, v)
}

/// The status row of `profile` (None if it is not listed).
fn status_row<'a>(status: &'a Value, profile: &str) -> Option<&'a Value> {
    status["profiles"]
        .as_array()?
        .iter()
        .find(|r| r["profile"] == profile)
}

fn runs_ok(status: &Value, profile: &str) -> u64 {
    status_row(status, profile)
        .and_then(|r| r["runs_ok"].as_u64())
        .unwrap_or(0)
}

fn time_field(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// Snapshots per profile name.
fn snapshots_by_profile(env: &TestEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in env.snapshots() {
        let p = s["profile"].as_str().unwrap_or("").to_string();
        *counts.entry(p).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &BTreeMap<String, usize>, profile: &str) -> usize {
    counts.get(profile).copied().unwrap_or(0)
}

fn read_state(state: &Path, profile: &str) -> Option<Value> {
    let text = fs::read(state.join(format!("{profile}.json"))).ok()?;
    serde_json::from_slice(&text).ok()
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// (state, ppid) of a process from /proc/PID/stat.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Live children of `parent`, with their command lines.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((state, ppid)) = proc_state(pid)
            && ppid == parent
            && state != 'Z'
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            v.push((pid, cmdline));
        }
    }
    v
}

/// The process is gone (or a zombie nobody reaped yet).
fn process_gone(pid: u32) -> bool {
    proc_state(pid).is_none_or(|(state, _)| state == 'Z')
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses every non-comment line `name{k="v",...} value` (or `name value`).
fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("metrics line {line:?}: {why}");
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| bad("no value"))?;
        let name = line[..name_end].to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            return Err(bad("bad metric name"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            let close;
            loop {
                // key
                let (start, _) = *chars.peek().ok_or_else(|| bad("unclosed labels"))?;
                if body[start..].starts_with('}') {
                    close = start;
                    break;
                }
                let eq = body[start..]
                    .find('=')
                    .ok_or_else(|| bad("label without ="))?;
                let key = body[start..start + eq].trim_start_matches(',').to_string();
                for _ in 0..=eq {
                    chars.next();
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .ok_or_else(|| bad("unterminated label value"))?
                    {
                        (_, '\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => return Err(bad("dangling escape")),
                        },
                        (_, '"') => break,
                        (_, c) => value.push(c),
                    }
                }
                labels.insert(key, value);
                if let Some((_, ',')) = chars.peek() {
                    chars.next();
                }
            }
            rest = &body[close + 1..];
        }
        let value: f64 = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?
            .parse()
            .map_err(|_| bad("value is not a number"))?;
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(samples)
}

#[test]
fn metrics_parser_reads_names_labels_and_values() {
    let text = "# HELP x_total A help.\n# TYPE x_total counter\n\
                x_total{profile=\"a\",result=\"ok\"} 3\n\
                x_esc{profile=\"q\\\"uo\\\\te,d\"} 1.5\n\
                x_plain 7\n";
    let samples = parse_metrics(text).unwrap();
    assert_eq!(samples.len(), 3, "{samples:?}");
    assert_eq!(
        metric(&samples, "x_total", &[("profile", "a"), ("result", "ok")]),
        Some(3.0)
    );
    assert_eq!(
        metric(&samples, "x_esc", &[("profile", "q\"uo\\te,d")]),
        Some(1.5)
    );
    assert_eq!(metric(&samples, "x_plain", &[]), Some(7.0));
    assert!(parse_metrics("x{a=\"1\" 2\n").is_err(), "unclosed labels");
    assert!(parse_metrics("x nan-ish\n").is_err(), "bad value");
}

/// The value of `name` with exactly these labels.
fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

fn families(samples: &[Sample]) -> BTreeSet<String> {
    samples.iter().map(|s| s.name.clone()).collect()
}

/// GET http://ADDR/metrics with a plain HTTP/1.1 request; returns the body.
fn scrape(addr: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {raw:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("expected HTTP/1.1 200, got:\n{head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err(format!("unexpected chunked answer:\n{head}"));
    }
    Ok(body.to_string())
}

// ---------------------------------------------------------------------------
// A recording HTTP server (ping and webhook endpoints)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    body: String,
}

/// Answers every request `200 OK` (empty body, connection closed) and keeps
/// (method, path, body) in arrival order.
struct Recorder {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reqs, stopping) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let reqs = reqs.clone();
                std::thread::spawn(move || {
                    if let Some(r) = Self::serve(stream) {
                        reqs.lock().unwrap().push(r);
                    }
                });
            }
        });
        Recorder {
            addr,
            requests,
            stop,
        }
    }

    fn serve(stream: TcpStream) -> Option<Request> {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut reader = BufReader::new(stream.try_clone().ok()?);
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let path = parts.next()?.to_string();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).ok()? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.trim().eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().ok()?;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
        let mut stream = stream;
        let _ =
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.flush();
        Some(Request {
            method,
            path,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Index and request of the first `method path`.
    fn find(&self, method: &str, path: &str) -> Option<(usize, Request)> {
        self.requests()
            .into_iter()
            .enumerate()
            .find(|(_, r)| r.method == method && r.path == path)
    }

    fn describe(&self) -> String {
        self.requests()
            .iter()
            .map(|r| format!("  {} {} {}", r.method, r.path, r.body))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The address the agent logged for `/metrics` (it was asked for port 0).
fn metrics_address(agent: &AgentProcess) -> Option<String> {
    agent
        .events_with("metrics at /metrics", None)
        .first()
        .and_then(|e| e["address"].as_str().map(str::to_string))
}

/// Smoke test of the real binary as a service: a good profile runs once
/// (its cap), a broken one is logged and skipped, `status` and the metrics
/// (HTTP on a port the agent picked, and the textfile) agree, SIGTERM stops
/// the agent cleanly. The schedule's behaviours are tested in-process on
/// simulated time (agent_sim.rs).
// Long: one agent process (the binary is slow to start), checked as a user meets it.
#[test]
fn agent_binary_runs_a_profile_reports_and_stops_on_sigterm() {
    let env = TestEnv::with_repo();
    let (_, offset) = day_zone();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    write_profile(&env, &profiles, "a", 1, "");
    let broken = write_broken_profile(&env, &profiles);
    let textfile = env.path("coffer.prom");
    let mut agent = AgentProcess::spawn(
        &env,
        &agent_args(
            &profiles,
            &state,
            &[
                "--metrics-listen",
                "127.0.0.1:0",
                "--metrics-file",
                textfile.to_str().unwrap(),
            ],
        ),
        &[],
        "agent",
    );
    let st = wait_for(
        "a finished run and a snapshot of a",
        Duration::from_secs(60),
        || {
            agent.assert_alive();
            let (_, st) = status(&env, &profiles, &state);
            (runs_ok(&st, "a") == 1
                && status_row(&st, "a").is_some_and(|r| r["running_since"].is_null())
                && count(&snapshots_by_profile(&env), "a") == 1)
                .then_some(st)
        },
        || agent.describe(),
    );

    // The broken profile was logged with its file, and skipped.
    let skipped: Vec<Value> = agent
        .events()
        .into_iter()
        .filter(|e| {
            e["level"] == "ERROR"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("profile skipped"))
        })
        .collect();
    assert!(
        skipped
            .iter()
            .any(|e| e.to_string().contains(broken.to_str().unwrap())
                && e.to_string().contains("frequency")),
        "expected an ERROR log line \"profile skipped…\" naming {} and the unknown key\n{}",
        broken.display(),
        agent.describe()
    );
    assert!(
        agent.events_with("run starting", Some("broken")).is_empty(),
        "the broken profile must never run\n{}",
        agent.describe()
    );

    // `coffer status`: ok with a next run (tomorrow: the cap of 1 is used);
    // the broken one listed, and status fails.
    let (out, _) = status(&env, &profiles, &state);
    out.expect_code(1);
    let tomorrow = next_local_midnight(offset);
    let row = status_row(&st, "a").unwrap_or_else(|| panic!("status must list a\n{out}"));
    assert_eq!(row["result"], "ok", "{row:#}\n{}", agent.describe());
    assert_eq!(row["runs_failed"], 0, "{row:#}");
    assert_eq!(time_field(&row["next_run"]), Some(tomorrow), "{row:#}");
    assert!(row["last_error"].is_null(), "{row:#}");
    let broken_rows = st["broken"].as_array().cloned().unwrap_or_default();
    assert!(
        broken_rows.len() == 1
            && broken_rows[0]["file"].as_str() == broken.to_str()
            && broken_rows[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("frequency")),
        "status must list {} under \"broken\" with its error\n{st:#}",
        broken.display()
    );
    assert!(status_row(&st, "broken").is_none(), "{st:#}");

    // Metrics over HTTP agree with status; the textfile has the same families.
    let addr = metrics_address(&agent)
        .unwrap_or_else(|| panic!("no \"metrics at /metrics\" address\n{}", agent.describe()));
    let body = scrape(&addr).unwrap_or_else(|e| panic!("{e}\n{}", agent.describe()));
    let samples = parse_metrics(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    let show = || format!("{samples:#?}");
    let ok = [("profile", "a"), ("result", "ok")];
    assert_eq!(
        metric(&samples, "coffer_runs_total", &ok),
        Some(1.0),
        "{}",
        show()
    );
    let failed = [("profile", "a"), ("result", "failed")];
    assert_eq!(
        metric(&samples, "coffer_runs_total", &failed),
        Some(0.0),
        "{}",
        show()
    );
    let a = [("profile", "a")];
    assert_eq!(
        metric(&samples, "coffer_last_run_success", &a),
        Some(1.0),
        "{}",
        show()
    );
    assert_eq!(
        metric(&samples, "coffer_running", &a),
        Some(0.0),
        "{}",
        show()
    );
    assert_eq!(
        metric(&samples, "coffer_next_run_timestamp_seconds", &a),
        Some(tomorrow.as_second() as f64),
        "{}",
        show()
    );
    let last_success = metric(&samples, "coffer_last_success_timestamp_seconds", &a).unwrap_or(0.0);
    assert!(
        last_success >= agent.started_at.as_second() as f64,
        "coffer_last_success_timestamp_seconds must be a time during this test\n{}",
        show()
    );
    assert_eq!(
        metric(&samples, "coffer_profiles_broken", &[]),
        Some(1.0),
        "{}",
        show()
    );
    for name in [
        "coffer_last_run_timestamp_seconds",
        "coffer_last_run_duration_seconds",
        "coffer_last_run_added_bytes",
        "coffer_repository_snapshots",
        "coffer_repository_bytes",
        "coffer_repository_stats_timestamp_seconds",
        "coffer_last_run_status",
        "coffer_last_run_skipped_files",
    ] {
        assert!(
            families(&samples).contains(name),
            "/metrics must have {name}\n{}",
            show()
        );
    }
    let file_text = fs::read_to_string(&textfile)
        .unwrap_or_else(|e| panic!("the metrics textfile {}: {e}", textfile.display()));
    let file_samples = parse_metrics(&file_text).unwrap_or_else(|e| panic!("{e}\n{file_text}"));
    assert_eq!(families(&file_samples), families(&samples), "{file_text}");
    assert_eq!(
        metric(&file_samples, "coffer_runs_total", &ok),
        Some(1.0),
        "{file_text}"
    );

    // SIGTERM: a clean stop.
    agent.signal(libc::SIGTERM);
    let out = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(
        out.code,
        Some(0),
        "the agent must exit 0 on SIGTERM\n{}",
        agent.describe()
    );
    assert!(
        !agent.events_with("agent stopped", None).is_empty(),
        "expected the log line \"agent stopped\"\n{}",
        agent.describe()
    );
    // Every log line is one JSON object with a level and a message.
    for line in agent.log_text().lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json: line {line:?} is not JSON ({e})"));
        assert!(
            v["level"].is_string() && v["message"].is_string(),
            "--log-format json: each line needs level and message: {line}"
        );
    }
    assert!(
        !env.repo.join("lock").exists(),
        "no lock may be left after the agent stopped"
    );
    assert_eq!(
        count(&snapshots_by_profile(&env), "a"),
        1,
        "the cap of 1 a day"
    );
}

/// Smoke test: SIGHUP makes the real binary read its profile folder again.
#[test]
fn agent_binary_reloads_on_sighup() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    write_profile(&env, &profiles, "a", 1, "");
    let mut agent = AgentProcess::spawn(&env, &agent_args(&profiles, &state, &[]), &[], "agent");
    wait_for(
        "the agent to load a",
        Duration::from_secs(30),
        || {
            agent.assert_alive();
            (!agent.events_with("profile loaded", Some("a")).is_empty()).then_some(())
        },
        || agent.describe(),
    );
    write_profile(&env, &profiles, "c", 1, "");
    agent.signal(libc::SIGHUP);
    wait_for(
        "a snapshot of profile c after SIGHUP",
        Duration::from_secs(60),
        || {
            agent.assert_alive();
            (count(&snapshots_by_profile(&env), "c") >= 1).then_some(())
        },
        || agent.describe(),
    );
    assert!(
        !agent.events_with("profile loaded", Some("c")).is_empty(),
        "expected a \"profile loaded\" log line for c after SIGHUP\n{}",
        agent.describe()
    );
    agent.signal(libc::SIGTERM);
    let out = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", agent.describe());
}

/// SIGKILL of the agent mid-backup: the run gets SIGTERM (parent-death
/// signal), stops and releases the lock; a restarted agent (no faults) starts
/// one catch-up run at once; the repository checks clean and the snapshot
/// restores the source exactly.
// Long: a kill and a restart on the same state; each step needs the one before.
#[test]
fn agent_killed_mid_backup_restarts_and_catches_up() {
    let env = TestEnv::with_repo();
    let (_, offset) = day_zone();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    let src = env.source_dir("big");
    for i in 0..60u64 {
        write_random_file(&src.join(format!("f{i:02}.bin")), MIB, 7000 + i);
    }
    let profile = profiles.join("big.toml");
    write_file(&profile, profile_toml(&env, "big", &src, 2, "").as_bytes());

    // Every storage request delayed up to 1 s: the run takes several seconds.
    let faults = "seed=7,delay_rate=1.0,max_delay_ms=1000";
    let textfile = env.path("coffer.prom");
    let mut agent = AgentProcess::spawn(
        &env,
        &agent_args(
            &profiles,
            &state,
            &["--metrics-file", textfile.to_str().unwrap()],
        ),
        &[("COFFER_FAULTS", faults)],
        "agent-faulty",
    );
    let lock = env.repo.join("lock");
    let runs = wait_for(
        "the run of big to be under way (running_since set, lock held, child running)",
        Duration::from_secs(60),
        || {
            agent.assert_alive();
            let st = read_state(&state, "big")?;
            let kids: Vec<(u32, String)> = children_of(agent.pid())
                .into_iter()
                .filter(|(_, c)| c.contains(" run "))
                .collect();
            (!st["running_since"].is_null() && lock.exists() && !kids.is_empty()).then_some(kids)
        },
        || agent.describe(),
    );
    // The metrics show the run while it is under way (not only at the next
    // periodic refresh, a minute later).
    wait_for(
        "coffer_running{profile=\"big\"} 1 in the metrics textfile",
        Duration::from_secs(10),
        || {
            let text = fs::read_to_string(&textfile).ok()?;
            let samples = parse_metrics(&text).ok()?;
            (metric(&samples, "coffer_running", &[("profile", "big")]) == Some(1.0)).then_some(())
        },
        || {
            format!(
                "{}\n{}",
                fs::read_to_string(&textfile).unwrap_or_default(),
                agent.describe()
            )
        },
    );
    assert!(
        snapshots_by_profile(&env).is_empty(),
        "the slowed run finished before the kill; cannot judge\n{}",
        agent.describe()
    );
    agent.signal(libc::SIGKILL);
    let out = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out}");

    // The orphaned run stops by itself and releases the lock.
    wait_for(
        "the agent's run to stop after the agent was killed",
        Duration::from_secs(60),
        || runs.iter().all(|(pid, _)| process_gone(*pid)).then_some(()),
        || format!("runs: {runs:?}\n{}", agent.describe()),
    );
    wait_for(
        "the repository lock to be released by the stopped run",
        Duration::from_secs(30),
        || (!lock.exists()).then_some(()),
        || format!("{:?}", list_files(&env.repo)),
    );
    let st = read_state(&state, "big").expect("state file of big");
    assert!(
        st["running_since"].is_null(),
        "the stopped run must record its end in the state file\n{st:#}"
    );
    let status_then = st["last"]["status"].as_str().unwrap_or("").to_string();
    let before = count(&snapshots_by_profile(&env), "big");
    assert!(
        (status_then == "cancelled" && before == 0) || (status_then == "ok" && before == 1),
        "the killed run must end cancelled (no snapshot) or, if it was past its commit, ok with one; \
         got {status_then:?} with {before} snapshot(s)\n{st:#}"
    );

    // Restart without faults: one run at once (catch-up), then the cap.
    let mut agent = AgentProcess::spawn(
        &env,
        &agent_args(&profiles, &state, &[]),
        &[],
        "agent-restarted",
    );
    wait_for(
        "a new snapshot of big after the restart",
        Duration::from_secs(90),
        || {
            agent.assert_alive();
            (count(&snapshots_by_profile(&env), "big") > before).then_some(())
        },
        || agent.describe(),
    );
    let st = wait_for(
        "the restarted run to finish",
        Duration::from_secs(60),
        || {
            let st = read_state(&state, "big")?;
            (st["running_since"].is_null() && st["runs_ok"].as_u64() > Some(before as u64))
                .then_some(st)
        },
        || agent.describe(),
    );
    assert_eq!(st["last"]["status"], "ok", "{st:#}\n{}", agent.describe());
    let starts = agent.events_with("run starting", Some("big"));
    assert_eq!(
        starts.len(),
        1,
        "expected exactly one run after the restart\n{}",
        agent.describe()
    );
    let first: Timestamp = time_field(&starts[0]["timestamp"]).expect("log timestamp");
    let delay = first.duration_since(agent.started_at);
    assert!(
        delay < jiff::SignedDuration::from_secs(4),
        "the restarted agent must start the missed run at once (catch-up), started after {delay}\n{}",
        agent.describe()
    );
    // Two starts today (the killed run counts): the next run is tomorrow.
    let (_, status_now) = status(&env, &profiles, &state);
    let row = status_row(&status_now, "big").expect("status row of big");
    assert_eq!(
        time_field(&row["next_run"]),
        Some(next_local_midnight(offset)),
        "with the cap of 2 reached (killed run + catch-up), the next run is tomorrow\n{row:#}"
    );
    agent.signal(libc::SIGTERM);
    let out = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", agent.describe());

    env.check(true).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// Notifications: the ping URL gets /start, then success or /fail; the
/// webhook gets the report on failure and, with on_success, on success.
// Long: one agent run feeds every assertion on the recorded requests.
#[test]
fn agent_sends_pings_and_webhooks() {
    let env = TestEnv::with_repo();
    let server = Recorder::start();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    write_profile(
        &env,
        &profiles,
        "good",
        1,
        &format!(
            "\n[notify]\nwebhook = {:?}\nping = {:?}\non_success = true\n",
            server.url("/hook-good"),
            server.url("/ping-good")
        ),
    );
    write_profile(
        &env,
        &profiles,
        "bad",
        1,
        &format!(
            "\n[hooks]\nbefore = \"echo dump failed; exit 4\"\n\n[notify]\nwebhook = {:?}\nping = {:?}\n",
            server.url("/hook-bad"),
            server.url("/ping-bad")
        ),
    );
    // A run that dies without a report: its before hook SIGKILLs the
    // `coffer run` process (the shell's parent).
    write_profile(
        &env,
        &profiles,
        "crash",
        1,
        &format!(
            "\n[hooks]\nbefore = \"kill -9 $PPID\"\n\n[notify]\nwebhook = {:?}\n",
            server.url("/hook-crash")
        ),
    );
    // One run at a time (see the first test).
    let mut agent = AgentProcess::spawn(
        &env,
        &agent_args(&profiles, &state, &["--max-running", "1"]),
        &[],
        "agent-notify",
    );
    let expected = [
        ("GET", "/ping-good/start"),
        ("POST", "/ping-good"),
        ("POST", "/hook-good"),
        ("GET", "/ping-bad/start"),
        ("POST", "/ping-bad/fail"),
        ("POST", "/hook-bad"),
        ("POST", "/hook-crash"),
    ];
    wait_for(
        "every ping and webhook of both runs",
        Duration::from_secs(60),
        || {
            agent.assert_alive();
            expected
                .iter()
                .all(|(m, p)| server.find(m, p).is_some())
                .then_some(())
        },
        || format!("received:\n{}\n{}", server.describe(), agent.describe()),
    );
    let body = |m: &str, p: &str| -> (usize, Value) {
        let (i, r) = server.find(m, p).unwrap();
        let v = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{m} {p}: body is not JSON ({e}): {:?}", r.body));
        (i, v)
    };
    let all = || server.describe();

    // The good run.
    let (start_at, _) = server.find("GET", "/ping-good/start").unwrap();
    let (ok_at, ping) = body("POST", "/ping-good");
    assert!(
        start_at < ok_at,
        "/ping-good/start must come before the success ping\n{}",
        all()
    );
    assert_eq!(ping["event"], "success", "success ping body\n{}", all());
    assert_eq!(
        ping["report"]["status"],
        "ok",
        "success ping body\n{}",
        all()
    );
    assert_eq!(
        ping["report"]["profile"],
        "good",
        "success ping body\n{}",
        all()
    );
    let (_, hook) = body("POST", "/hook-good");
    assert_eq!(
        hook["event"],
        "success",
        "webhook with on_success\n{}",
        all()
    );
    assert!(
        hook["report"]["snapshot"]
            .as_str()
            .is_some_and(|s| s.len() == 64),
        "the success webhook carries the snapshot id\n{}",
        all()
    );

    // The failing run.
    let (start_at, _) = server.find("GET", "/ping-bad/start").unwrap();
    let (fail_at, _) = body("POST", "/ping-bad/fail");
    assert!(start_at < fail_at, "/start before /fail\n{}", all());
    let (_, hook) = body("POST", "/hook-bad");
    assert_eq!(hook["event"], "failure", "failure webhook\n{}", all());
    assert_eq!(
        hook["report"]["status"],
        "failed",
        "failure webhook\n{}",
        all()
    );
    let error = hook["report"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("dump failed") && error.contains("exit code 4"),
        "the failure webhook's report.error must carry the hook's output and exit code, got {error:?}\n{}",
        all()
    );
    assert!(
        server.find("POST", "/ping-bad").is_none(),
        "a failed run must not ping success\n{}",
        all()
    );

    // status shows the failure and exits 1.
    let (out, st) = status(&env, &profiles, &state);
    out.expect_code(1);
    let bad = status_row(&st, "bad").expect("status row of bad");
    assert_eq!(bad["result"], "failed", "{bad:#}");
    assert!(
        bad["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("dump failed")),
        "status must show the hook's output as last_error\n{bad:#}"
    );
    let good = status_row(&st, "good").expect("status row of good");
    assert_eq!(good["result"], "ok", "{good:#}");

    // The run that died: reported by the agent, and recorded as failed (not
    // shown as running forever).
    let (_, hook) = body("POST", "/hook-crash");
    assert_eq!(hook["event"], "failure", "crash webhook\n{}", all());
    let error = hook["report"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("without a report"),
        "the agent reports a run that died without a report, got {error:?}\n{}",
        all()
    );
    let crash = status_row(&st, "crash").expect("status row of crash");
    assert!(
        crash["result"] == "failed"
            && crash["running_since"].is_null()
            && crash["runs_failed"] == 1
            && crash["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("without a report")),
        "a run that died must be recorded as failed (result failed, not running, runs_failed 1, last_error)\n{crash:#}\n{}",
        agent.describe()
    );
    assert_eq!(
        count(&snapshots_by_profile(&env), "bad"),
        0,
        "a failed before hook means no backup"
    );

    agent.signal(libc::SIGTERM);
    let out = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", agent.describe());
}

/// Two profiles backing up into one repository, started at the same slots
/// (the default `--max-running 2`): the second run waits for the first one's
/// repository lock and the shared catalog, and every run succeeds.
#[test]
fn two_profiles_of_one_repository_run_at_the_same_time() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    write_profile(&env, &profiles, "p", 3, "");
    write_profile(&env, &profiles, "q", 3, "");
    let mut agent = AgentProcess::spawn(
        &env,
        &agent_args(&profiles, &state, &[]),
        &[],
        "agent-shared",
    );
    wait_for(
        "three finished runs of p and of q",
        Duration::from_secs(120),
        || {
            agent.assert_alive();
            let (_, st) = status(&env, &profiles, &state);
            ["p", "q"]
                .iter()
                .all(|p| {
                    status_row(&st, p).is_some_and(|r| {
                        r["running_since"].is_null()
                            && r["runs_ok"].as_u64().unwrap_or(0)
                                + r["runs_failed"].as_u64().unwrap_or(0)
                                >= 3
                    })
                })
                .then_some(())
        },
        || agent.describe(),
    );
    let failed = agent.events_with("run failed", None);
    assert!(
        failed.is_empty(),
        "runs of two profiles on one repository must wait for each other, not fail:\n{}\n{}",
        failed
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        agent.describe()
    );
    // They really overlapped: both started at the same slot at least once.
    let starts = agent.events_with("run starting", None);
    let overlapped = starts.windows(2).any(|w| {
        w[0]["profile"] != w[1]["profile"]
            && match (
                time_field(&w[0]["timestamp"]),
                time_field(&w[1]["timestamp"]),
            ) {
                (Some(a), Some(b)) => b.duration_since(a).abs().as_millis() < 500,
                _ => false,
            }
    });
    assert!(
        overlapped,
        "expected p and q to start together at least once\n{}",
        agent.describe()
    );
    agent.signal(libc::SIGTERM);
    let out = agent.wait_exit(Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", agent.describe());
    let snaps = snapshots_by_profile(&env);
    assert!(
        count(&snaps, "p") == 3 && count(&snaps, "q") == 3,
        "three snapshots each: {snaps:?}"
    );
    env.check(false).expect_ok();
}

/// `coffer run`: the before hook's output is in the snapshot, the after hook
/// sees the status and snapshot id; a hook over its timeout fails the run
/// quickly.
#[test]
fn run_executes_hooks_around_the_backup() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    let src = env.source_dir("db");
    write_file(&src.join("table.dat"), b"rows\n");
    let after_file = env.path("after.txt");
    let hooks = format!(
        "\n[hooks]\nbefore = {:?}\nafter = {:?}\ntimeout = \"1m\"\n",
        format!("echo dumped > {}", src.join("dump.sql").display()),
        format!(
            "echo \"$COFFER_STATUS $COFFER_SNAPSHOT $COFFER_PROFILE\" > {}",
            after_file.display()
        ),
    );
    let profile = profiles.join("hooks.toml");
    write_file(
        &profile,
        profile_toml(&env, "hooks", &src, 6, &hooks).as_bytes(),
    );
    let out = env.run([
        "--json".as_ref(),
        "run".as_ref(),
        "--profile".as_ref(),
        profile.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    out.expect_ok();
    let report = out.json();
    assert_eq!(report["status"], "ok", "{out}");
    assert_eq!(report["profile"], "hooks", "{out}");
    assert!(report["error"].is_null(), "{out}");
    let snapshot = str_field(&report, "snapshot").to_string();
    assert_eq!(snapshot.len(), 64, "report.snapshot: a full id\n{out}");
    assert_eq!(
        u64_field(&report, "files"),
        2,
        "the backup holds table.dat and the hook's dump.sql\n{out}"
    );

    let after = fs::read_to_string(&after_file).unwrap_or_else(|e| {
        panic!(
            "the after hook did not write {}: {e}\n{out}",
            after_file.display()
        )
    });
    assert_eq!(
        after.trim(),
        format!("ok {snapshot} hooks"),
        "the after hook sees COFFER_STATUS, COFFER_SNAPSHOT and COFFER_PROFILE"
    );
    let target = env.restore(&snapshot);
    let dump = restored_path(&target, &src).join("dump.sql");
    assert_eq!(
        fs::read_to_string(&dump).unwrap_or_else(|e| panic!("{}: {e}", dump.display())),
        "dumped\n",
        "the snapshot holds what the before hook wrote"
    );
    let st = read_state(&state, "hooks").expect("state file");
    assert_eq!(st["runs_ok"], 1, "{st:#}");
    assert_eq!(st["starts"].as_array().map(Vec::len), Some(1), "{st:#}");

    // A hook over its timeout is killed and fails the run, quickly.
    let slow = profiles.join("slow.toml");
    write_file(
        &slow,
        profile_toml(
            &env,
            "slow",
            &src,
            6,
            "\n[hooks]\nbefore = \"sleep 30\"\ntimeout = \"1s\"\n",
        )
        .as_bytes(),
    );
    let out = env.run([
        "--json".as_ref(),
        "run".as_ref(),
        "--profile".as_ref(),
        slow.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ]);
    out.expect_code(1);
    let report = out.json();
    assert_eq!(report["status"], "failed", "{out}");
    let error = report["error"].as_str().unwrap_or("");
    assert!(
        error.contains("before hook") && error.contains("timed out"),
        "expected a before-hook timeout in the error\n{out}"
    );
    assert!(
        out.elapsed < Duration::from_secs(15),
        "a 1 s hook timeout must fail the run quickly, took {:.2?}\n{out}",
        out.elapsed
    );
    assert!(
        report["snapshot"].is_null(),
        "no backup after a failed before hook\n{out}"
    );
}

/// `coffer agent --check`: exit 2 naming a broken profile; exit 0 and each
/// profile's next run when all are good.
#[test]
fn agent_check_validates_the_profile_folder() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    // Every 8 h, three a day: a schedule the pre-flight accepts (the 2 s of
    // the service tests asks for more runs than the cap lets start).
    for p in ["a", "b"] {
        let file = write_profile(&env, &profiles, p, 3, "");
        let text = fs::read_to_string(&file)
            .unwrap()
            .replace("interval = \"2s\"", "interval = \"8h\"");
        write_file(&file, text.as_bytes());
    }
    let broken = write_broken_profile(&env, &profiles);
    let check = |env: &TestEnv| {
        env.run([
            "agent".as_ref(),
            "--check".as_ref(),
            "--profiles".as_ref(),
            profiles.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ])
    };

    let out = check(&env);
    out.expect_code(2);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(broken.to_str().unwrap()) && l.contains("frequency")),
        "--check must name the broken file and its problem\n{out}"
    );

    fs::remove_file(&broken).unwrap();
    let before = Timestamp::now();
    let out = check(&env);
    let after = Timestamp::now();
    out.expect_ok();
    let slot = |t: Timestamp, h: i64| {
        Timestamp::from_second((t.as_second() / (h * 3600) + 1) * h * 3600).unwrap()
    };
    for p in ["a", "b"] {
        let (i, line) = out
            .stdout
            .lines()
            .enumerate()
            .find(|(_, l)| l.contains(&format!("{p}.toml")))
            .unwrap_or_else(|| panic!("--check must list profile {p}\n{out}"));
        assert!(line.starts_with("ok "), "{p} is fine\n{out}");
        let next = line
            .split("next run ")
            .nth(1)
            .and_then(rfc3339)
            .unwrap_or_else(|| panic!("--check must print {p}'s next run as a time\n{out}"));
        assert!(
            next == slot(before, 8) || next == slot(after, 8),
            "{p} (every 8 h, no jitter, never run) runs at the next 8-hour slot, --check says {next}\n{out}"
        );
        // Then five more, 8 h apart (three a day fit the cap of three).
        let then: Vec<Timestamp> = out
            .stdout
            .lines()
            .skip(i + 1)
            .take(5)
            .map(|l| {
                l.trim()
                    .strip_prefix("then ")
                    .and_then(rfc3339)
                    .unwrap_or_else(|| panic!("--check must list {p}'s next six runs\n{out}"))
            })
            .collect();
        let mut at = next;
        for t in then {
            assert_eq!(t, at + jiff::SignedDuration::from_hours(8), "{p}\n{out}");
            at = t;
        }
    }
    assert!(
        !state.exists() || fs::read_dir(&state).unwrap().next().is_none(),
        "--check must not write state"
    );

    // The plan follows the state files: a missed 4-hourly slot is caught up
    // at once (unless catch_up = false), and a used-up cap waits for tomorrow.
    let (tz, offset) = day_zone();
    let hourly = |name: &str, catch_up: bool, max_per_day: u32| {
        let every = 24 / max_per_day;
        let text = profile_toml(&env, name, &env.root, max_per_day, "")
            .replace("interval = \"2s\"", &format!("interval = \"{every}h\""))
            .replace("catch_up = true", &format!("catch_up = {catch_up}"));
        write_file(&profiles.join(format!("{name}.toml")), text.as_bytes());
    };
    let seed_state = |name: &str, starts: &[Timestamp]| {
        let state_json = serde_json::json!({
            "profile": name,
            "starts": starts.iter().map(|t| coffer::time::rfc3339(*t)).collect::<Vec<_>>(),
        });
        write_file(
            &state.join(format!("{name}.json")),
            state_json.to_string().as_bytes(),
        );
    };
    let now = Timestamp::now();
    hourly("missed", true, 6);
    seed_state("missed", &[now - jiff::SignedDuration::from_hours(5)]);
    hourly("nocatchup", false, 6);
    seed_state("nocatchup", &[now - jiff::SignedDuration::from_hours(5)]);
    hourly("capped", true, 2);
    let today = |h: i64| {
        utc_midnight(now + jiff::SignedDuration::from_hours(offset))
            - jiff::SignedDuration::from_hours(offset)
            + jiff::SignedDuration::from_mins(h)
    };
    // Two starts earlier today (local day of the schedule's zone `tz`).
    seed_state("capped", &[today(1), today(2)]);
    let before = Timestamp::now();
    let out = check(&env);
    let after = Timestamp::now();
    out.expect_ok();
    let next_of = |name: &str| -> Timestamp {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("{name}.toml")))
            .and_then(|l| l.split("next run ").nth(1))
            .and_then(rfc3339)
            .unwrap_or_else(|| panic!("--check must print {name}'s next run\n{out}"))
    };
    let missed = next_of("missed");
    assert!(
        missed >= before - jiff::SignedDuration::from_secs(1)
            && missed <= after + jiff::SignedDuration::from_secs(1),
        "a slot passed since the last start (5 h ago, every 4 h): one catch-up run now, \
         --check says {missed}\n{out}"
    );
    let nocatchup = next_of("nocatchup");
    assert!(
        nocatchup == slot(before, 4) || nocatchup == slot(after, 4),
        "with catch_up = false the next run is the next 4-hour slot ({}), --check says {nocatchup}\n{out}",
        slot(before, 4)
    );
    assert_eq!(
        next_of("capped"),
        next_local_midnight(offset),
        "max_per_day = 2 with two starts today ({tz}): the next run is tomorrow\n{out}"
    );
}

/// `coffer agent --check` is a pre-flight: what would fail at the scheduled
/// time fails now, one line per problem naming the profile, the thing and
/// the fix, every profile checked. Each of these said `ok` before.
// Long: one folder of nine profiles, each a reproduction from the issue.
#[test]
fn agent_check_finds_what_would_fail_at_the_scheduled_time() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    let check = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec![
            "agent".into(),
            "--check".into(),
            "--profiles".into(),
            profiles.clone().into(),
            "--state-dir".into(),
            state.clone().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        env.run(args)
    };
    // An empty folder: the agent would run nothing.
    let out = check(&[]);
    out.expect_code(2);
    assert!(
        out.stdout.contains("no profiles (*.toml) in this folder"),
        "{out}"
    );

    let good = |name: &str| {
        profile_toml(&env, name, &env.root, 6, "").replace("interval = \"2s\"", "interval = \"4h\"")
    };
    let write = |name: &str, text: String| {
        write_file(&profiles.join(format!("{name}.toml")), text.as_bytes());
    };
    write("fine", good("fine"));
    let typo = env.root.join("dta");
    fs::create_dir_all(env.root.join("data")).unwrap();
    write(
        "typo",
        good("typo").replace(&toml_str(&env.root), &toml_str(&typo)),
    );
    let key = toml_str(&env.agent_key);
    write(
        "nokey",
        good("nokey").replace(&format!("agent_key = {key}\n"), ""),
    );
    write(
        "badkey",
        good("badkey").replace(&key, &toml_str(env.path("no-such.key"))),
    );
    let repo = toml_str(env.repo_url.to_str().unwrap());
    write(
        "norepo",
        good("norepo").replace(&repo, &toml_str(env.path("no-repo-here"))),
    );
    write(
        "http",
        good("http").replace(&repo, "\"s3://acme-backups/web\"")
            + "\n[s3]\nendpoint = \"http://storage.example.com:9000\"\n",
    );
    write(
        "seven",
        good("seven").replace(
            "interval = \"4h\"",
            "times = [\"00:00\", \"03:00\", \"06:00\", \"09:00\", \"12:00\", \"15:00\", \"18:00\"]",
        ),
    );
    write(
        "hourly",
        good("hourly").replace("interval = \"4h\"", "interval = \"1h\""),
    );
    write(
        "twodays",
        good("twodays").replace("interval = \"4h\"", "interval = \"48h\""),
    );

    let out = check(&[]);
    out.expect_code(2);
    let errors = |name: &str| -> Vec<&str> {
        out.stdout
            .lines()
            .filter(|l| l.starts_with("error ") && l.contains(&format!("{name} (")))
            .collect()
    };
    let verdict = |name: &str| -> &str {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!("{name}.toml")) && l.contains("next run "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("--check must list {name}\n{out}"))
    };
    let expect = |name: &str, what: &str, words: &[&str]| {
        let e = errors(name);
        assert_eq!(verdict(name), "FAILED", "{name}\n{out}");
        assert!(
            e.iter()
                .any(|l| l.contains(&format!(": {what}: ")) && words.iter().all(|w| l.contains(w))),
            "{name}: one line on {what} with {words:?}\n{out}"
        );
    };
    assert_eq!(verdict("fine"), "ok", "{out}");
    assert!(errors("fine").is_empty(), "{out}");
    expect(
        "typo",
        "sources",
        &["dta does not exist", "did you mean", "data", "sources"],
    );
    expect("nokey", "agent_key", &["not set", "set agent_key"]);
    expect("badkey", "agent_key", &["not found", "coffer init"]);
    expect("norepo", "repository", &["no-repo-here", "coffer init"]);
    expect("http", "s3", &["plain HTTP", "https://"]);
    expect(
        "seven",
        "schedule",
        &["7 entries", "never run", "remove times"],
    );
    expect(
        "hourly",
        "schedule",
        &["24 runs a day", "none for 19h", "interval = \"4h\""],
    );
    expect("twodays", "schedule", &["more than a day", "24h"]);
    // One problem, one line each: the fine profile's neighbours did not
    // hide each other.
    for name in [
        "typo", "nokey", "badkey", "norepo", "http", "seven", "hourly", "twodays",
    ] {
        assert_eq!(
            errors(name).len(),
            1,
            "{name}: exactly its own problem\n{out}"
        );
    }
    println!("agent --check of a broken folder:\n{}", out.stdout);

    // --offline leaves the storage alone but still refuses plain http.
    let out = check(&["--offline"]);
    out.expect_code(2);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("http (") && l.contains(": s3: ") && l.contains("plain HTTP")),
        "{out}"
    );

    // --json: the same findings, and each profile's next six runs.
    let mut args: Vec<OsString> = vec!["--json".into()];
    args.extend(
        [
            "agent",
            "--check",
            "--offline",
            "--profiles",
            profiles.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .iter()
        .map(OsString::from),
    );
    let out = env.run(args);
    out.expect_code(2);
    let v = out.json();
    assert_eq!(v["ok"], false, "{v:#}");
    let rows = v["profiles"].as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["profile"] == name).unwrap();
    assert_eq!(
        row("fine")["problems"].as_array().unwrap().len(),
        0,
        "{v:#}"
    );
    assert_eq!(
        row("fine")["next_runs"].as_array().unwrap().len(),
        6,
        "{v:#}"
    );
    assert_eq!(row("hourly")["problems"][0]["what"], "schedule", "{v:#}");
    assert_eq!(
        row("http")["not_checked"].as_array().map(|a| a.len()),
        Some(0),
        "a settings error stops before the network, nothing to skip\n{v:#}"
    );
}

/// A log line written for the journal: its `<N>` priority and the JSON event.
fn journal_event(line: &str) -> Option<(u8, Value)> {
    let rest = line.strip_prefix('<')?;
    let (p, json) = rest.split_once('>')?;
    Some((p.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// `promtool test rules` input: each scraped sample as a constant series.
fn promtool_series(metrics: &str) -> String {
    let mut out = String::new();
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        if let Some((series, value)) = line.rsplit_once(' ') {
            out.push_str(&format!(
                "      - series: '{series}'\n        values: '{value}+0x30'\n"
            ));
        }
    }
    out
}

/// The agent as systemd and Prometheus see it, with the real binary: log
/// lines carry journald priorities when stdout is the journal; it speaks
/// sd_notify on a real datagram socket (READY, STATUS, WATCHDOG at half of
/// WATCHDOG_USEC, STOPPING); a run without a terminal logs progress at info;
/// a partial run and a never-successful profile show in the metrics as what
/// they are, and the alert rules in docs/coffer-alerts.yml fire on them
/// (`promtool test rules`, when promtool is installed).
// Long: one agent process, checked from the outside as systemd and Prometheus see it.
#[test]
fn agent_speaks_to_journald_systemd_and_prometheus() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixDatagram;
    use std::os::unix::process::CommandExt;
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    let state = env.path("state");
    // "big": enough data for progress lines, and one file nobody may read.
    let src = env.source_dir("src-big");
    write_random_file(&src.join("big.bin"), 32 * MIB, 17);
    let secret = src.join("secret.txt");
    write_file(&secret, b"not for you\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
    write_file(
        &profiles.join("big.toml"),
        profile_toml(&env, "big", &src, 1, "").as_bytes(),
    );
    // "never": its repository is not there, so it never succeeds.
    let repo = toml_str(env.repo_url.to_str().unwrap());
    write_file(
        &profiles.join("never.toml"),
        profile_toml(&env, "never", &src, 1, "")
            .replace(&repo, &toml_str(env.path("no-repo-here")))
            .as_bytes(),
    );

    let log = env.unique_path("journal.log");
    let log_file = fs::File::create(&log).unwrap();
    let meta = log_file.metadata().unwrap();
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let messages = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let listener = {
        let (messages, done) = (messages.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    messages.lock().unwrap().push(text);
                }
            }
        })
    };
    let textfile = env.path("coffer.prom");
    let args = agent_args(
        &profiles,
        &state,
        &["--metrics-file", textfile.to_str().unwrap()],
    );
    let mut cmd = env.command(&args);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("COFFER_PROGRESS_INTERVAL", "20ms")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(Stdio::null());
    // Root reads every file: without these two capabilities it reads what
    // its modes allow, as the service user does.
    if unsafe { libc::geteuid() } == 0 {
        unsafe {
            cmd.pre_exec(|| {
                for cap in [1, 2] {
                    // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                    if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let log_text = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let describe = || format!("log:\n{}", truncate(&log_text()));

    let metrics = wait_for(
        "a partial run of big and a failed run of never in the metrics textfile",
        Duration::from_secs(90),
        || {
            let text = fs::read_to_string(&textfile).ok()?;
            (text.contains("coffer_last_run_status{profile=\"big\",status=\"partial\"} 1")
                && text.contains("coffer_last_run_status{profile=\"never\",status=\"failed\"} 1")
                && text.contains("coffer_running{profile=\"big\"} 0"))
            .then_some(text)
        },
        describe,
    );
    println!("metrics after a partial run and a never-successful profile:\n{metrics}");
    let samples = parse_metrics(&metrics).unwrap();
    let big = [("profile", "big")];
    let never = [("profile", "never")];
    assert_eq!(
        metric(&samples, "coffer_last_run_success", &big),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&samples, "coffer_last_run_skipped_files", &big),
        Some(1.0),
        "{metrics}"
    );
    for p in [&big, &never] {
        assert_eq!(
            metric(&samples, "coffer_last_success_timestamp_seconds", p),
            Some(0.0),
            "{metrics}"
        );
    }
    assert_eq!(
        metric(
            &samples,
            "coffer_runs_total",
            &[("profile", "big"), ("result", "partial")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &samples,
            "coffer_runs_total",
            &[("profile", "big"), ("result", "ok")]
        ),
        Some(0.0),
        "{metrics}"
    );
    let repo_url = format!("file://{}", env.repo_url.to_str().unwrap());
    let big_repo = [("profile", "big"), ("repository", repo_url.as_str())];
    assert!(
        metric(&samples, "coffer_repository_snapshots", &big_repo).is_some_and(|v| v >= 1.0),
        "repository figures are labelled with the repository\n{metrics}"
    );
    assert!(
        metric(
            &samples,
            "coffer_repository_stats_timestamp_seconds",
            &big_repo
        )
        .is_some(),
        "{metrics}"
    );
    assert!(
        !metrics.contains("coffer_repository_bytes{profile=\"never\""),
        "a profile whose runs never counted the repository has no figures, not zeros\n{metrics}"
    );

    // Stop, and read what systemd and the journal saw.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the agent did not stop\n{}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    listener.join().unwrap();
    let messages = messages.lock().unwrap().clone();
    let has = |m: &str| {
        messages
            .iter()
            .filter(|x| x.lines().any(|l| l == m))
            .count()
    };
    assert_eq!(has("READY=1"), 1, "READY=1 once at start\n{messages:?}");
    assert!(
        has("WATCHDOG=1") >= 2,
        "WATCHDOG=1 every 200 ms\n{messages:?}"
    );
    assert_eq!(has("STOPPING=1"), 1, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("STATUS=2 profile(s)") && m.contains("next: ")),
        "STATUS= says what is loaded and next\n{messages:?}"
    );
    let ready_at = messages.iter().position(|m| m.contains("READY=1")).unwrap();
    let stopping_at = messages
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .unwrap();
    assert!(ready_at < stopping_at, "{messages:?}");

    // Every line has its priority; the JSON level agrees with it.
    let text = log_text();
    let events: Vec<(u8, Value)> = text
        .lines()
        .map(|l| journal_event(l).unwrap_or_else(|| panic!("not <N>{{json}}: {l:?}\n{text}")))
        .collect();
    for (p, e) in &events {
        let want = match e["level"].as_str() {
            Some("ERROR") => 3,
            Some("WARN") => 4,
            Some("INFO") => 6,
            _ => 7,
        };
        assert_eq!(*p, want, "{e}");
    }
    let find = |p: u8, f: &dyn Fn(&Value) -> bool| events.iter().any(|(q, e)| *q == p && f(e));
    let msg = |e: &Value, m: &str| e["message"].as_str().is_some_and(|x| x.starts_with(m));
    assert!(
        find(3, &|e| msg(e, "run failed") && e["profile"] == "never"),
        "the failed run is an error (journalctl -p err)\n{text}"
    );
    assert!(
        find(4, &|e| msg(e, "schedule problem") && e["profile"] == "big"),
        "every 2 s at most once a day is a warning\n{text}"
    );
    assert!(
        find(4, &|e| e["profile"] == "big"
            && e.to_string().contains("secret.txt")),
        "the skipped file is a warning\n{text}"
    );
    assert!(
        find(6, &|e| msg(e, "progress: ") && e["profile"] == "big"),
        "the run's progress lines are info\n{text}"
    );

    // The alert rules, on these very series.
    // scripts/test.sh installs promtool; a missing one fails, as a missing
    // test server does (COFFER_SKIP_PROMTOOL=1 skips on purpose, and says so).
    let Ok(promtool) = which("promtool") else {
        assert!(
            std::env::var_os("COFFER_SKIP_PROMTOOL").is_some(),
            "promtool not found (apt-get install prometheus, or COFFER_SKIP_PROMTOOL=1): the alert rules in docs/coffer-alerts.yml can not be tested"
        );
        eprintln!("COFFER_SKIP_PROMTOOL: the alert rules in docs/coffer-alerts.yml were not run");
        return;
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/coffer-alerts.yml");
    let test = format!(
        r#"rule_files:
  - {rules}
evaluation_interval: 1h
tests:
  - interval: 1h
    input_series:
{series}    alert_rule_test:
      - eval_time: 25h
        alertname: CofferBackupStale
        exp_alerts:
          - exp_labels: {{severity: critical, profile: big}}
            exp_annotations:
              summary: "coffer profile big: no complete backup for more than a day"
          - exp_labels: {{severity: critical, profile: never}}
            exp_annotations:
              summary: "coffer profile never: no complete backup for more than a day"
      - eval_time: 25h
        alertname: CofferBackupPartial
        exp_alerts:
          - exp_labels: {{severity: warning, profile: big, status: partial}}
            exp_annotations:
              summary: "coffer profile big: the last run skipped unreadable files"
      - eval_time: 25h
        alertname: CofferBackupFailed
        exp_alerts:
          - exp_labels: {{severity: warning, profile: never, status: failed}}
            exp_annotations:
              summary: "coffer profile never: the last run ended failed"
      - eval_time: 25h
        alertname: CofferProfileBroken
        exp_alerts: []
      - eval_time: 25h
        alertname: CofferRepositoryStatsStale
        exp_alerts: []
"#,
        rules = rules.display(),
        series = promtool_series(&metrics),
    );
    let test_file = env.path("alerts.test.yml");
    write_file(&test_file, test.as_bytes());
    let out = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .arg(&test_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules failed\n{}\n{}\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of a program on $PATH.
fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `coffer status` without COFFER_STATE_DIR (`sudo coffer status` on an
/// installed server) reads the installed agent's state folder when the
/// user's own has nothing, and says which it read; with neither, it says so
/// and how to point it at the right one. Before, every profile showed `never`.
#[test]
fn status_finds_the_installed_agents_state() {
    let env = TestEnv::with_repo();
    let profiles = env.source_dir("profiles");
    write_profile(&env, &profiles, "web", 6, "");
    let installed = env.path("var-lib-coffer");
    let status_of = |env: &TestEnv| {
        env.run_with_env(
            [
                "status".as_ref(),
                "--profiles".as_ref(),
                profiles.as_os_str(),
                "--json".as_ref(),
            ],
            &[("COFFER_INSTALLED_STATE_DIR", installed.as_os_str())],
        )
    };
    let out = status_of(&env);
    assert!(
        out.stderr.contains("no agent state for these profiles")
            && out.stderr.contains(installed.to_str().unwrap())
            && out.stderr.contains("COFFER_STATE_DIR")
            && out.stderr.contains("--state-dir"),
        "nothing anywhere: say where it looked and what to set\n{out}"
    );
    assert!(out.json()["profiles"][0]["last_run"].is_null(), "{out}");

    // The installed agent ran the profile once (`coffer run` with its folder).
    let run = env.run_with_env(
        [
            "run".as_ref(),
            "--profile".as_ref(),
            profiles.join("web.toml").as_os_str(),
        ],
        &[("COFFER_STATE_DIR", installed.as_os_str())],
    );
    run.expect_ok();
    let out = status_of(&env);
    assert!(
        out.stderr.contains(&format!(
            "agent state read from {}",
            installed.to_str().unwrap()
        )),
        "say which folder was read\n{out}"
    );
    let row = &out.json()["profiles"][0];
    assert_eq!(row["result"], "ok", "{out}");
    assert_eq!(row["runs_ok"], 1, "{out}");
    assert_eq!(row["snapshots"], 1, "{out}");
    assert!(row["repository_counted"].is_string(), "{out}");
    assert!(
        row["repository"]
            .as_str()
            .is_some_and(|r| r.starts_with("file://")),
        "{out}"
    );
    // Named explicitly, no guessing and no note.
    let own = env.path("own-state");
    let out = env.run_with_env(
        [
            "status".as_ref(),
            "--profiles".as_ref(),
            profiles.as_os_str(),
            "--state-dir".as_ref(),
            own.as_os_str(),
        ],
        &[("COFFER_INSTALLED_STATE_DIR", installed.as_os_str())],
    );
    assert!(!out.stderr.contains("agent state"), "{out}");
    assert!(
        out.stdout.contains("repo snaps") && out.stdout.contains("repo stored"),
        "the storage columns say they are the repository's\n{out}"
    );
}
