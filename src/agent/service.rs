//! `coffer agent`: a tokio service over a profile folder. In the binary each
//! run is a child process (`coffer run --scheduled`, [`ChildRunner`]), so a
//! run's memory is returned when it ends, a crash in one run cannot take the
//! agent down, and SIGTERM reaches the run, which stops cleanly (what it
//! uploaded is reused next time).
//!
//! The loop: sleep until the earliest due profile, start what is due (one run
//! per profile, at most `max_running` at once), and on each run's end log it,
//! notify, and plan the profile's next run. A reload (SIGHUP) rereads the
//! folder; a broken profile is logged and skipped while the others go on. At
//! shutdown (SIGTERM) the runs are asked to stop, waited for, and the loop ends.
//! The clock and the runner are parameters ([`super::clock`]), so tests run
//! the loop on simulated time.

use super::clock::{BoxFuture, Clock, RunRequest, Runner, Stop};
use super::metrics::{self, ProfileView};
use super::notify::Notifier;
use super::schedule::{jitter_offset, next_run};
use super::state::ProfileState;
use super::systemd::ServiceManager;
use crate::config::Profile;
use crate::engine::job::JobReport;
use crate::repo::lock::hostname;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub profiles_dir: PathBuf,
    pub state_dir: PathBuf,
    pub max_running: usize,
    pub metrics_listen: Option<MetricsListen>,
    pub metrics_file: Option<PathBuf>,
    /// How long shutdown waits for runs to stop before killing them.
    pub stop_timeout: std::time::Duration,
    /// How often the metrics are rendered again from the state files, which
    /// a manual `coffer run` changes too (the binary: every minute).
    pub metrics_refresh: std::time::Duration,
}

/// Where `/metrics` is served.
#[derive(Clone, Debug)]
pub enum MetricsListen {
    /// Bind this address (`--metrics-listen`; port 0 picks a free one).
    Address(std::net::SocketAddr),
    /// A socket bound already (tests bind once and know the port).
    Bound(Arc<std::net::TcpListener>),
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("profile folder {path}: {reason}; pass --profiles DIR")]
    ProfilesDir { path: PathBuf, reason: String },
    #[error("metrics address {addr}: {reason}")]
    Metrics { addr: String, reason: String },
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
pub fn planned(profile: &Profile, state_dir: &Path, now: Timestamp) -> Timestamp {
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
    next: Timestamp,
}

/// The end of a run: (profile, report).
type Done = (String, JobReport);

struct Agent {
    opts: AgentOptions,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    slots: BTreeMap<String, Slot>,
    broken: usize,
    /// Running profiles, and how to ask each run to stop.
    running: HashMap<String, watch::Sender<Stop>>,
    metrics: Arc<Mutex<String>>,
    notifier: Arc<Notifier>,
    manager: ServiceManager,
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
        let now = self.clock.now();
        self.slots = good
            .into_iter()
            .map(|p| {
                let next = planned(&p, &self.opts.state_dir, now);
                info!(profile = %p.name, next_run = %crate::time::rfc3339_offset(next), "profile loaded");
                for problem in super::preflight::schedule_problems(&p.schedule) {
                    warn!(profile = %p.name, problem = %problem.message, "schedule problem (coffer agent --check lists them)");
                }
                (p.name.clone(), Slot { profile: p, next })
            })
            .collect();
        self.refresh_metrics();
    }

    fn is_running(&self, name: &str) -> bool {
        self.running.contains_key(name)
    }

    /// What the service manager shows (`systemctl status`): runs under
    /// way and the next one due.
    fn tell_status(&self) {
        let mut running: Vec<&str> = self.running.keys().map(String::as_str).collect();
        running.sort_unstable();
        let next = self
            .slots
            .values()
            .filter(|s| !self.is_running(&s.profile.name))
            .min_by_key(|s| s.next)
            .map(|s| (s.profile.name.as_str(), s.next));
        let text = super::systemd::status_text(self.slots.len(), self.broken, &running, next);
        self.manager.status(&text);
    }

    fn refresh_metrics(&self) {
        let states: Vec<(&Profile, ProfileState, Timestamp, bool)> = self
            .slots
            .values()
            .map(|s| {
                (
                    &s.profile,
                    ProfileState::load(&self.opts.state_dir, &s.profile.name),
                    s.next,
                    self.is_running(&s.profile.name),
                )
            })
            .collect();
        let views: Vec<ProfileView> = states
            .iter()
            .map(|(p, st, next, running)| ProfileView {
                name: &p.name,
                repository: &p.repository,
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

    /// Starts every due profile there is a free run slot for. Returns the
    /// free slots left.
    fn start_due(&mut self, done: &mpsc::UnboundedSender<Done>) -> usize {
        let now = self.clock.now();
        let mut free = self.opts.max_running.saturating_sub(self.running.len());
        let due: Vec<Profile> = self
            .slots
            .values()
            .filter(|s| s.next <= now && !self.is_running(&s.profile.name))
            .take(free)
            .map(|s| s.profile.clone())
            .collect();
        for profile in due {
            self.start(profile, done.clone());
            free -= 1;
        }
        free
    }

    fn start(&mut self, profile: Profile, done: mpsc::UnboundedSender<Done>) {
        let name = profile.name.clone();
        let (stop_tx, stop) = watch::channel(Stop::No);
        self.running.insert(name.clone(), stop_tx);
        // The agent records the start itself, so a run that cannot even start
        // still counts against the per-day cap (no tight retry loop).
        let started = self.clock.now();
        let mut state = ProfileState::load(&self.opts.state_dir, &name);
        state.started(started);
        if let Err(e) = state.save(&self.opts.state_dir) {
            warn!(profile = %name, error = %e, "cannot write the state file");
        }
        info!(profile = %name, "run starting");
        let notifier = self.notifier.clone();
        let run = self.runner.run(RunRequest {
            profile: profile.clone(),
            started,
            stop,
        });
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
            let report = run.await;
            let _ = ping.await;
            let _ = done.send((profile.name, report));
        });
    }

    /// A run ended: log it, notify, plan the profile's next run.
    fn finished(&mut self, name: String, report: JobReport) {
        self.running.remove(&name);
        if report.status.succeeded() {
            info!(profile = %name, status = %report.status, seconds = report.seconds,
                snapshot = report.snapshot.as_deref().unwrap_or(""), bytes_added = report.bytes_added,
                forgotten = report.forgotten, pruned_bytes = report.pruned_bytes,
                retention_by = ?report.retention_by, "run finished");
        } else {
            error!(profile = %name, status = %report.status, seconds = report.seconds,
                error = report.error.as_deref().unwrap_or(""), "run failed");
        }
        // A partial run's unreadable files, one warning each (the first ones:
        // a folder of thousands must not flood the journal).
        const SKIPPED_LOGGED: usize = 20;
        for s in report.skipped.iter().take(SKIPPED_LOGGED) {
            warn!(profile = %name, file = %s, "file skipped: it could not be read");
        }
        if report.skipped.len() > SKIPPED_LOGGED {
            warn!(profile = %name, more = report.skipped.len() - SKIPPED_LOGGED,
                "more files skipped (coffer --json run lists them all)");
        }
        let now = self.clock.now();
        if let Some(slot) = self.slots.get_mut(&name) {
            let notify = slot.profile.notify.clone();
            let notifier = self.notifier.clone();
            tokio::spawn(async move {
                for e in notifier.finished(&notify, &report).await {
                    warn!(profile = %report.profile, error = %e, "notification not delivered");
                }
            });
            slot.next = planned(&slot.profile, &self.opts.state_dir, now);
            info!(profile = %name, next_run = %crate::time::rfc3339_offset(slot.next), "next run planned");
        }
        self.refresh_metrics();
    }

    /// When the loop must wake next: the earliest due profile that could
    /// start, at most an hour away. With every run slot taken, a due profile
    /// waits for a run to end (which wakes the loop); sleeping until its past
    /// due time would spin.
    fn wake_at(&self, free: usize) -> Timestamp {
        let latest = self.clock.now() + jiff::SignedDuration::from_hours(1);
        self.slots
            .values()
            .filter(|s| free > 0 && !self.is_running(&s.profile.name))
            .map(|s| s.next)
            .min()
            .map_or(latest, |t| t.min(latest))
    }
}

/// The child-process runner: `coffer run --scheduled` for each run, so a
/// run's memory is returned when it ends and a crash cannot take the agent
/// down.
pub struct ChildRunner {
    /// The coffer binary (this one).
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    /// How long a run waits for another writer's lock.
    pub lock_wait: std::time::Duration,
}

impl Runner for ChildRunner {
    fn run(&self, request: RunRequest) -> BoxFuture<JobReport> {
        let (exe, state_dir, lock_wait) =
            (self.exe.clone(), self.state_dir.clone(), self.lock_wait);
        Box::pin(async move { run_child(&exe, &state_dir, lock_wait, request).await })
    }
}

/// Runs `coffer run --scheduled` for one profile and returns its report;
/// signals the child when the agent stops.
async fn run_child(
    exe: &Path,
    state_dir: &Path,
    lock_wait: std::time::Duration,
    request: RunRequest,
) -> JobReport {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let RunRequest {
        profile,
        started,
        mut stop,
    } = request;
    let failed = |error: String| JobReport::failed(&profile.name, started, error);
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--json")
        .arg("run")
        .arg("--scheduled")
        .arg("--profile")
        .arg(&profile.file)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--lock-wait")
        .arg(format!("{}s", lock_wait.as_secs()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for var in super::systemd::CHILD_UNSET {
        cmd.env_remove(var);
    }
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
                state_dir,
                failed(format!("cannot start {}: {e}", exe.display())),
            );
        }
    };
    let signaller = child.id().map(|pid| {
        tokio::spawn(async move {
            while stop.changed().await.is_ok() {
                let sig = match *stop.borrow() {
                    Stop::No => continue,
                    Stop::Gently => libc::SIGTERM,
                    Stop::Now => libc::SIGKILL,
                };
                // SAFETY: signals our own child process.
                unsafe { libc::kill(pid as i32, sig) };
            }
        })
    });
    let mut stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let name = profile.name.clone();
    let log_task = tokio::spawn(async move {
        if let Some(err) = stderr {
            let mut lines = BufReader::new(err).lines();
            // A run writes its lines with a priority prefix (`journal`);
            // a line without one is a warning, as it always was.
            while let Ok(Some(line)) = lines.next_line().await {
                use super::journal::{level_of, split_priority};
                let (priority, text) = split_priority(&line);
                match priority.map(level_of) {
                    Some(tracing::Level::ERROR) => error!(profile = %name, "{text}"),
                    Some(tracing::Level::INFO) => info!(profile = %name, "{text}"),
                    Some(tracing::Level::DEBUG | tracing::Level::TRACE) => {
                        tracing::debug!(profile = %name, "{text}")
                    }
                    _ => warn!(profile = %name, "{text}"),
                }
            }
        }
    });
    let mut out = Vec::new();
    if let Some(so) = stdout.as_mut() {
        let _ = so.read_to_end(&mut out).await;
    }
    let status = child.wait().await;
    if let Some(s) = signaller {
        s.abort();
    }
    let _ = log_task.await;
    match serde_json::from_slice::<JobReport>(&out) {
        Ok(r) => r,
        Err(_) => record_failure(
            state_dir,
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
fn record_failure(state_dir: &Path, mut report: JobReport) -> JobReport {
    let mut state = ProfileState::load(state_dir, &report.profile);
    if let Some(since) = state.running_since {
        report.started = since;
        state.finished(&report);
        if let Err(e) = state.save(state_dir) {
            warn!(profile = %report.profile, error = %e, "cannot write the state file");
        }
    }
    report
}

async fn metrics_listener(listen: &MetricsListen) -> Result<tokio::net::TcpListener, AgentError> {
    let fail = |addr: String, e: std::io::Error| AgentError::Metrics {
        addr,
        reason: format!("{e}; choose a free port"),
    };
    match listen {
        MetricsListen::Address(addr) => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| fail(addr.to_string(), e)),
        MetricsListen::Bound(l) => {
            let addr = l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "(bound)".into());
            l.try_clone()
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .map_err(|e| fail(addr, e))
        }
    }
}

/// Runs the agent until `shutdown` resolves: plans by `clock`, carries out
/// runs with `runner`, reloads the profile folder on each message of
/// `reload`. The binary passes the wall clock, the child-process runner,
/// SIGTERM/SIGINT and SIGHUP (`cli/agent.rs`); tests pass their own.
pub async fn serve(
    opts: AgentOptions,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
    shutdown: impl Future<Output = ()>,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), AgentError> {
    // Fail early on a missing folder: the one error that stops the agent.
    load_profiles(&opts.profiles_dir)?;
    let mut agent = Agent {
        opts: opts.clone(),
        clock,
        runner,
        slots: BTreeMap::new(),
        broken: 0,
        running: HashMap::new(),
        metrics: Arc::new(Mutex::new(String::new())),
        notifier: Arc::new(Notifier::new()),
        manager: ServiceManager::from_env(),
    };
    if let Some(listen) = &opts.metrics_listen {
        let listener = metrics_listener(listen).await?;
        if let Ok(addr) = listener.local_addr() {
            info!(address = %addr, "metrics at /metrics");
        }
        tokio::spawn(metrics::serve(listener, agent.metrics.clone()));
    }
    agent.reload();
    info!(
        profiles = agent.slots.len(),
        broken = agent.broken,
        "agent started"
    );
    agent.manager.ready("started");
    agent.tell_status();
    // WATCHDOG=1 from this loop: if the loop hangs, the pings stop.
    let mut watchdog = agent
        .manager
        .watchdog_every()
        .map(|every| tokio::time::interval(every));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut tick = tokio::time::interval(
        opts.metrics_refresh
            .max(std::time::Duration::from_millis(1)),
    );
    tokio::pin!(shutdown);
    let mut reload_open = true;
    loop {
        let before = agent.running.len();
        let free = agent.start_due(&done_tx);
        if agent.running.len() > before {
            // coffer_running shows the new runs now, not at the next tick.
            agent.refresh_metrics();
            agent.tell_status();
        }
        let watchdog_tick = async {
            match watchdog.as_mut() {
                Some(w) => {
                    w.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let wake = agent.clock.sleep_until(agent.wake_at(free));
        tokio::select! {
            _ = &mut shutdown => break,
            r = reload.recv(), if reload_open => match r {
                Some(()) => {
                    info!("SIGHUP: reloading profiles");
                    agent.manager.reloading();
                    agent.reload();
                    agent.manager.ready("reloaded");
                    agent.tell_status();
                }
                None => reload_open = false,
            },
            Some((name, report)) = done_rx.recv() => {
                agent.finished(name, report);
                agent.tell_status();
            }
            _ = tick.tick() => agent.refresh_metrics(),
            _ = watchdog_tick => agent.manager.watchdog(),
            _ = wake => {}
        }
    }
    stop_runs(&mut agent, &mut done_rx).await;
    Ok(())
}

/// Asks every run to stop and waits for them (then stops them at once).
async fn stop_runs(agent: &mut Agent, done_rx: &mut mpsc::UnboundedReceiver<Done>) {
    agent.manager.stopping();
    info!(
        runs = agent.running.len(),
        "stopping: asking running backups to stop"
    );
    for stop in agent.running.values() {
        let _ = stop.send(Stop::Gently);
    }
    let deadline = tokio::time::Instant::now() + agent.opts.stop_timeout;
    while !agent.running.is_empty() {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some((name, report))) => {
                info!(profile = %name, status = %report.status, "run stopped");
                agent.running.remove(&name);
            }
            _ => break,
        }
    }
    for (name, stop) in &agent.running {
        warn!(profile = %name, "run did not stop in time; killing it");
        let _ = stop.send(Stop::Now);
    }
    agent.refresh_metrics();
    info!("agent stopped");
}
