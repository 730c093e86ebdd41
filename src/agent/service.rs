//! `coffer agent`: a tokio service over a profile folder. Each run is a child
//! process (`coffer run --scheduled`), so a run's memory is returned when it
//! ends, a crash in one run cannot take the agent down, and SIGTERM reaches
//! the run, which stops cleanly (what it uploaded is reused next time).
//!
//! The loop: sleep until the earliest due profile, start what is due (one run
//! per profile, at most `max_running` at once), and on each run's end log it,
//! notify, and plan the profile's next run. SIGHUP reloads the folder; a broken
//! profile is logged and skipped while the others go on. SIGTERM forwards
//! SIGTERM to the runs, waits for them, and exits.

use super::job::JobReport;
use super::metrics::{self, ProfileView};
use super::notify::Notifier;
use super::schedule::{jitter_offset, next_run};
use super::state::ProfileState;
use crate::config::Profile;
use crate::repo::lock::hostname;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub profiles_dir: PathBuf,
    pub state_dir: PathBuf,
    pub max_running: usize,
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub metrics_file: Option<PathBuf>,
    /// The coffer binary that runs jobs (this one).
    pub exe: PathBuf,
    /// How long a run waits for another writer's lock.
    pub lock_wait: std::time::Duration,
    /// How long SIGTERM waits for runs to stop before killing them.
    pub stop_timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("profile folder {path}: {reason}; pass --profiles DIR")]
    ProfilesDir { path: PathBuf, reason: String },
    #[error("metrics address {addr}: {reason}")]
    Metrics { addr: String, reason: String },
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// Loads every `*.toml` in the folder. Broken ones come back as errors
/// (path, one-line reason); a name used twice keeps the first file.
/// Profiles that could not be loaded: (file, one-line reason).
pub type Broken = Vec<(PathBuf, String)>;

pub fn load_profiles(dir: &Path) -> Result<(Vec<Profile>, Broken), AgentError> {
    let rd = std::fs::read_dir(dir).map_err(|e| AgentError::ProfilesDir {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let (mut good, mut bad) = (Vec::<Profile>::new(), Vec::new());
    for p in paths {
        match Profile::load(&p) {
            Ok(profile) => {
                if let Some(first) = good.iter().find(|g| g.name == profile.name) {
                    bad.push((
                        p,
                        format!(
                            "name {:?} is already used by {}; give each profile its own name",
                            profile.name,
                            first.file.display()
                        ),
                    ));
                } else {
                    good.push(profile);
                }
            }
            Err(e) => bad.push((p, e.to_string())),
        }
    }
    Ok((good, bad))
}

/// When a profile runs next, from its state file.
pub fn planned(profile: &Profile, state_dir: &Path, now: DateTime<Utc>) -> DateTime<Utc> {
    let state = ProfileState::load(state_dir, &profile.name);
    let offset = jitter_offset(&profile.schedule, &hostname(), &profile.name);
    next_run(
        &profile.schedule,
        &profile.schedule.tz(),
        offset,
        &state.starts,
        now,
    )
}

struct Slot {
    profile: Profile,
    next: DateTime<Utc>,
}

struct Agent {
    opts: AgentOptions,
    slots: BTreeMap<String, Slot>,
    broken: usize,
    /// Running profiles and their child's pid (0 until it started).
    running: Arc<Mutex<HashMap<String, u32>>>,
    metrics: Arc<Mutex<String>>,
    notifier: Arc<Notifier>,
}

impl Agent {
    fn reload(&mut self) {
        let (good, bad) = match load_profiles(&self.opts.profiles_dir) {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "cannot read the profile folder; keeping the profiles loaded before");
                return;
            }
        };
        for (path, reason) in &bad {
            error!(profile_file = %path.display(), error = %reason, "profile skipped: fix it and send SIGHUP (systemctl reload coffer-agent)");
        }
        self.broken = bad.len();
        let now = Utc::now();
        self.slots = good
            .into_iter()
            .map(|p| {
                let next = planned(&p, &self.opts.state_dir, now);
                info!(profile = %p.name, next_run = %next.to_rfc3339(), "profile loaded");
                (p.name.clone(), Slot { profile: p, next })
            })
            .collect();
        self.refresh_metrics();
    }

    fn is_running(&self, name: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(name))
            .unwrap_or(false)
    }

    fn refresh_metrics(&self) {
        let states: Vec<(String, ProfileState, DateTime<Utc>, bool)> = self
            .slots
            .values()
            .map(|s| {
                (
                    s.profile.name.clone(),
                    ProfileState::load(&self.opts.state_dir, &s.profile.name),
                    s.next,
                    self.is_running(&s.profile.name),
                )
            })
            .collect();
        let views: Vec<ProfileView> = states
            .iter()
            .map(|(n, st, next, running)| ProfileView {
                name: n,
                state: st,
                next_run: Some(*next),
                running: *running,
            })
            .collect();
        let text = metrics::render(&views, self.broken);
        if let Some(path) = &self.opts.metrics_file
            && let Err(e) = metrics::write_textfile(path, &text)
        {
            warn!(path = %path.display(), error = %e, "cannot write the metrics textfile");
        }
        if let Ok(mut m) = self.metrics.lock() {
            *m = text;
        }
    }

    fn start(&self, slot: &Slot, done: tokio::sync::mpsc::UnboundedSender<(String, JobReport)>) {
        let name = slot.profile.name.clone();
        if let Ok(mut r) = self.running.lock() {
            r.insert(name.clone(), 0);
        }
        // The agent records the start itself, so a run that cannot even start
        // still counts against the per-day cap (no tight retry loop).
        let mut state = ProfileState::load(&self.opts.state_dir, &name);
        state.started(Utc::now());
        if let Err(e) = state.save(&self.opts.state_dir) {
            warn!(profile = %name, error = %e, "cannot write the state file");
        }
        info!(profile = %name, "run starting");
        let opts = self.opts.clone();
        let profile = slot.profile.clone();
        let running = self.running.clone();
        let notifier = self.notifier.clone();
        tokio::spawn(async move {
            // The start ping goes out alongside the run: an endpoint that is
            // down or slow (three tries, 10 s each) must not delay the backup.
            // The end is reported after it, so the ping URL sees /start first.
            let ping = {
                let (notify, name) = (profile.notify.clone(), profile.name.clone());
                tokio::spawn(async move {
                    if let Err(e) = notifier.start(&notify).await {
                        warn!(profile = %name, error = %e, "start ping not delivered");
                    }
                })
            };
            let report = run_child(&opts, &profile, &running).await;
            let _ = ping.await;
            let _ = done.send((profile.name.clone(), report));
        });
    }
}

/// Runs `coffer run --scheduled` for one profile and returns its report.
async fn run_child(
    opts: &AgentOptions,
    profile: &Profile,
    running: &Arc<Mutex<HashMap<String, u32>>>,
) -> JobReport {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let failed = |error: String| JobReport {
        profile: profile.name.clone(),
        host: hostname(),
        started: Utc::now(),
        status: "failed".into(),
        error: Some(error),
        ..Default::default()
    };
    let mut cmd = tokio::process::Command::new(&opts.exe);
    cmd.arg("--json")
        .arg("run")
        .arg("--scheduled")
        .arg("--profile")
        .arg(&profile.file)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .arg("--lock-wait")
        .arg(format!("{}s", opts.lock_wait.as_secs()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: prctl in the child before exec: if the agent dies, the run gets
    // SIGTERM and stops cleanly instead of running on unsupervised.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return record_failure(
                opts,
                failed(format!("cannot start {}: {e}", opts.exe.display())),
            );
        }
    };
    if let (Some(pid), Ok(mut r)) = (child.id(), running.lock()) {
        r.insert(profile.name.clone(), pid);
    }
    let mut stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let name = profile.name.clone();
    let log_task = tokio::spawn(async move {
        if let Some(err) = stderr {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                warn!(profile = %name, "{line}");
            }
        }
    });
    let mut out = Vec::new();
    if let Some(so) = stdout.as_mut() {
        let _ = so.read_to_end(&mut out).await;
    }
    let status = child.wait().await;
    let _ = log_task.await;
    match serde_json::from_slice::<JobReport>(&out) {
        Ok(r) => r,
        Err(_) => record_failure(
            opts,
            failed(match status {
                Ok(s) => format!("the run ended ({s}) without a report"),
                Err(e) => format!("the run could not be waited for: {e}"),
            }),
        ),
    }
}

/// A run that never reported (it could not start, or crashed) did not record
/// its end: record the failure in the state file, so `coffer status` and the
/// metrics show it instead of a run that seems to go on forever.
fn record_failure(opts: &AgentOptions, mut report: JobReport) -> JobReport {
    let mut state = ProfileState::load(&opts.state_dir, &report.profile);
    if let Some(since) = state.running_since {
        report.started = since;
        state.finished(&report);
        if let Err(e) = state.save(&opts.state_dir) {
            warn!(profile = %report.profile, error = %e, "cannot write the state file");
        }
    }
    report
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn serve(opts: AgentOptions) -> Result<(), AgentError> {
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Signal)?;
    // Fail early on a missing folder: the one error that stops the agent.
    load_profiles(&opts.profiles_dir)?;
    let mut agent = Agent {
        opts: opts.clone(),
        slots: BTreeMap::new(),
        broken: 0,
        running: Arc::new(Mutex::new(HashMap::new())),
        metrics: Arc::new(Mutex::new(String::new())),
        notifier: Arc::new(Notifier::new()),
    };
    if let Some(addr) = opts.metrics_listen {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| AgentError::Metrics {
                    addr: addr.to_string(),
                    reason: format!("{e}; choose a free port"),
                })?;
        info!(address = %addr, "metrics at /metrics");
        tokio::spawn(metrics::serve(listener, agent.metrics.clone()));
    }
    agent.reload();
    info!(
        profiles = agent.slots.len(),
        broken = agent.broken,
        "agent started"
    );
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, JobReport)>();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        let now = Utc::now();
        let running = agent.running.lock().map(|r| r.len()).unwrap_or(0);
        let mut free = agent.opts.max_running.saturating_sub(running);
        let mut started = false;
        for slot in agent.slots.values() {
            if free > 0 && slot.next <= now && !agent.is_running(&slot.profile.name) {
                agent.start(slot, done_tx.clone());
                free -= 1;
                started = true;
            }
        }
        if started {
            // coffer_running shows the new runs now, not at the next tick.
            agent.refresh_metrics();
        }
        // With every run slot taken, a due profile waits for a run to end
        // (which wakes the loop); sleeping until its past due time would spin.
        let wake = agent
            .slots
            .values()
            .filter(|s| free > 0 && !agent.is_running(&s.profile.name))
            .map(|s| s.next)
            .min()
            .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(std::time::Duration::from_secs(3600))
            .min(std::time::Duration::from_secs(3600));
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading profiles");
                agent.reload();
            }
            Some((name, report)) = done_rx.recv() => {
                if let Ok(mut r) = agent.running.lock() {
                    r.remove(&name);
                }
                if report.status == "failed" || report.status == "cancelled" {
                    error!(profile = %name, status = %report.status, seconds = report.seconds,
                        error = report.error.as_deref().unwrap_or(""), "run failed");
                } else {
                    info!(profile = %name, status = %report.status, seconds = report.seconds,
                        snapshot = report.snapshot.as_deref().unwrap_or(""), bytes_added = report.bytes_added,
                        forgotten = report.forgotten, pruned_bytes = report.pruned_bytes, "run finished");
                }
                if let Some(slot) = agent.slots.get(&name) {
                    let notify = slot.profile.notify.clone();
                    let notifier = agent.notifier.clone();
                    tokio::spawn(async move {
                        for e in notifier.finished(&notify, &report).await {
                            warn!(profile = %report.profile, error = %e, "notification not delivered");
                        }
                    });
                }
                let state_dir = agent.opts.state_dir.clone();
                if let Some(slot) = agent.slots.get_mut(&name) {
                    slot.next = planned(&slot.profile, &state_dir, Utc::now());
                    info!(profile = %name, next_run = %slot.next.to_rfc3339(), "next run planned");
                }
                agent.refresh_metrics();
            }
            _ = tick.tick() => agent.refresh_metrics(),
            _ = tokio::time::sleep(wake) => {}
        }
    }
    shutdown(&agent, &mut done_rx).await;
    Ok(())
}

/// Forwards SIGTERM to every run and waits for them (then SIGKILL).
async fn shutdown(
    agent: &Agent,
    done_rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, JobReport)>,
) {
    let pids: Vec<(String, u32)> = agent
        .running
        .lock()
        .map(|r| r.iter().map(|(n, p)| (n.clone(), *p)).collect())
        .unwrap_or_default();
    info!(
        runs = pids.len(),
        "stopping: asking running backups to stop"
    );
    for (_, pid) in &pids {
        if *pid > 0 {
            // SAFETY: signals our own child process.
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
    }
    let mut left = pids.len();
    let deadline = tokio::time::Instant::now() + agent.opts.stop_timeout;
    while left > 0 {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some((name, report))) => {
                info!(profile = %name, status = %report.status, "run stopped");
                left -= 1;
            }
            _ => break,
        }
    }
    if left > 0 {
        for (name, pid) in &pids {
            if *pid > 0 {
                warn!(profile = %name, "run did not stop in time; killing it");
                // SAFETY: as above.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
    }
    agent.refresh_metrics();
    info!("agent stopped");
}
