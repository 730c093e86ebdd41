//! The agent in-process on simulated time: the real service loop (`serve`)
//! on tokio's paused clock, with a runner that records each run (and keeps
//! a list of snapshots, applying the profile's retention as the job does)
//! instead of starting `coffer run`. Months of schedule run in a second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer::agent::clock::{BoxFuture, Clock, RunRequest, Runner, Stop, TokioClock};
use coffer::agent::schedule::jitter_offset;
use coffer::agent::service::{AgentOptions, MetricsListen, planned, serve};
use coffer::agent::state::{self, ProfileState};
use coffer::config::Profile;
use coffer::engine::forget;
use coffer::engine::job::{JobPlan, JobReport, RunStatus};
use coffer::host::hostname;
use coffer::repo::ids::SnapshotId;
use coffer::repo::snapshot::{Snapshot, Summary};
use jiff::Timestamp;
use tokio::sync::mpsc;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// One run as the runner saw it.
#[derive(Clone, Debug)]
struct Run {
    profile: String,
    started: Timestamp,
    ended: Timestamp,
    status: RunStatus,
}

/// What a run does when the agent asks it to stop.
#[derive(Clone, Copy)]
enum OnStop {
    Obey,
    Ignore,
}

/// Runs take `took` of simulated time, then save a snapshot into `repo`,
/// apply the profile's retention to it (as the job plans it, with the real
/// retention policy) and record their end in the state file, as
/// `coffer run --scheduled` does.
struct SimRunner {
    clock: Arc<TokioClock>,
    state_dir: PathBuf,
    took: Duration,
    on_stop: OnStop,
    runs: Arc<Mutex<Vec<Run>>>,
    repo: Arc<Mutex<Vec<(SnapshotId, Snapshot)>>>,
    /// Stop requests seen (in order).
    stops: Arc<Mutex<Vec<(String, Stop)>>>,
}

impl SimRunner {
    fn new(clock: &Arc<TokioClock>, state_dir: &Path, took: Duration) -> SimRunner {
        SimRunner {
            clock: clock.clone(),
            state_dir: state_dir.to_path_buf(),
            took,
            on_stop: OnStop::Obey,
            runs: Default::default(),
            repo: Default::default(),
            stops: Default::default(),
        }
    }

    fn runs(&self) -> Vec<Run> {
        self.runs.lock().unwrap().clone()
    }

    fn starts_of(&self, profile: &str) -> Vec<Timestamp> {
        self.runs()
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| r.started)
            .collect()
    }
}

/// A snapshot id unique to a profile and start time.
fn snapshot_id(profile: &str, at: Timestamp) -> SnapshotId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&at.as_second().to_be_bytes());
    for (i, b) in profile.bytes().take(24).enumerate() {
        id[8 + i] = b;
    }
    SnapshotId(id)
}

impl Runner for SimRunner {
    fn run(&self, request: RunRequest) -> BoxFuture<JobReport> {
        let (clock, state_dir, took, on_stop) = (
            self.clock.clone(),
            self.state_dir.clone(),
            self.took,
            self.on_stop,
        );
        let (runs, repo, stops) = (self.runs.clone(), self.repo.clone(), self.stops.clone());
        Box::pin(async move {
            let RunRequest {
                profile,
                started,
                mut stop,
            } = request;
            let name = profile.name.clone();
            let stopped = async {
                loop {
                    if stop.changed().await.is_err() {
                        return std::future::pending().await;
                    }
                    let s = *stop.borrow();
                    stops.lock().unwrap().push((name.clone(), s));
                    match (s, on_stop) {
                        (Stop::Now, _) | (Stop::Gently, OnStop::Obey) => return,
                        _ => {}
                    }
                }
            };
            let cancelled = tokio::select! {
                _ = tokio::time::sleep(took) => false,
                _ = stopped => true,
            };
            let mut report = JobReport::new(&name, started);
            if cancelled {
                report.status = RunStatus::Cancelled;
            } else {
                let id = snapshot_id(&name, started);
                let mut repo = repo.lock().unwrap();
                repo.push((
                    id,
                    Snapshot {
                        time: started,
                        host: hostname(),
                        profile: name.clone(),
                        paths: vec![],
                        tree: vec![],
                        refs: vec![],
                        tree_index: None,
                        summary: Summary::default(),
                        stored: None,
                    },
                ));
                let plan = JobPlan::run(&profile, clock.now(), Duration::ZERO);
                let f = plan.forget.expect("a run plans retention");
                let decisions = forget::plan(&repo, &f.policy, &f.filter, &f.tz, f.now);
                let before = repo.len();
                repo.retain(|(id, _)| !decisions.iter().any(|d| d.id == *id && !d.keep));
                report.forgotten = before - repo.len();
                report.snapshot = Some(id.to_hex());
                report.snapshots = repo.len();
                report.status = RunStatus::Ok;
            }
            runs.lock().unwrap().push(Run {
                profile: name.clone(),
                started,
                ended: clock.now(),
                status: report.status,
            });
            state::record_around(&state_dir, &name, true, started, || report)
        })
    }
}

/// A folder of profiles and a state folder.
struct Folders {
    _tmp: tempfile::TempDir,
    profiles: PathBuf,
    state: PathBuf,
}

impl Folders {
    fn new() -> Folders {
        let tmp = tempfile::tempdir().unwrap();
        let profiles = tmp.path().join("profiles");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&profiles).unwrap();
        Folders {
            profiles,
            state,
            _tmp: tmp,
        }
    }

    /// Writes `<name>.toml` with this `[schedule]` body; returns the profile.
    fn profile(&self, name: &str, schedule: &str) -> Profile {
        let file = self.profiles.join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\nsources = [\"/srv/{name}\"]\nrepository = \"/backup/repo\"\n\n\
             [schedule]\n{schedule}\n\n[retention]\nkeep_within = \"90d\"\n"
        );
        std::fs::write(&file, text).unwrap();
        Profile::load(&file).unwrap()
    }

    fn options(&self, max_running: usize) -> AgentOptions {
        AgentOptions {
            profiles_dir: self.profiles.clone(),
            state_dir: self.state.clone(),
            max_running,
            metrics_listen: None,
            metrics_file: None,
            stop_timeout: Duration::from_secs(100),
            metrics_refresh: Duration::from_secs(86_400),
        }
    }
}

/// Runs the agent from now until the clock reads `until`.
async fn serve_until(
    opts: AgentOptions,
    clock: &Arc<TokioClock>,
    runner: &Arc<SimRunner>,
    until: Timestamp,
) {
    let (_reload_tx, reload) = mpsc::channel(1);
    let shutdown = clock.sleep_until(until);
    serve(opts, clock.clone(), runner.clone(), shutdown, reload)
        .await
        .unwrap();
}

const SIX: &str = "times = [\"00:30\", \"02:30\", \"06:00\", \"10:00\", \"14:00\", \"18:00\"]\n\
                   timezone = \"Europe/Berlin\"";

/// Every slot of `times` (local times in Berlin) from `from` to `to`, in UTC:
/// a time a DST change skips is an hour later, a time it repeats is the first.
fn berlin_slots(from: Timestamp, to: Timestamp, times: &[(i8, i8)]) -> Vec<Timestamp> {
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let ts = |t: Timestamp| jiff::Timestamp::from_second(t.as_second()).unwrap();
    let mut day = ts(from).to_zoned(tz.clone()).date();
    let last = ts(to).to_zoned(tz.clone()).date();
    let mut out = Vec::new();
    while day <= last {
        for (h, m) in times {
            let z = day.at(*h, *m, 0, 0).to_zoned(tz.clone()).unwrap();
            let at = z.timestamp();
            if at > from && at < to {
                out.push(at);
            }
        }
        day = day.tomorrow().unwrap();
    }
    out
}

/// Equal lists of times; else says which are extra and which missing.
#[track_caller]
fn assert_same_times(got: &[Timestamp], want: &[Timestamp], what: &str) {
    let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
    let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: not planned {extra:?}, planned but missing {missing:?}"
    );
    assert_eq!(got, want, "{what}: each once, in order");
}

const SIX_TIMES: [(i8, i8); 6] = [(0, 30), (2, 30), (6, 0), (10, 0), (14, 0), (18, 0)];

/// 172 simulated days of two six-a-day profiles in Europe/Berlin, across the
/// autumn (25-hour day) and the spring (23-hour day) change (Berlin's two
/// changes are 154 days apart), with eight hours of downtime: every slot
/// runs exactly once at its slot plus the server's jitter offset, the missed
/// slots are caught up by one run at restart, a cap of 3 a day holds on
/// every day, and retention keeps exactly the last 90 days.
// Long: one simulated half-year; every assertion reads the same run log.
#[tokio::test(start_paused = true)]
async fn half_a_year_of_a_six_a_day_schedule_across_both_dst_changes() {
    let real = std::time::Instant::now();
    let dirs = Folders::new();
    let six = dirs.profile("six", &format!("{SIX}\njitter = \"20m\"\nmax_per_day = 6"));
    dirs.profile(
        "capped",
        &format!("{SIX}\njitter = \"0s\"\nmax_per_day = 3"),
    );
    let origin = t("2026-10-15T12:00:00Z");
    let down = t("2026-12-10T05:40:00Z"); // 06:40 CET
    let up = t("2026-12-10T13:30:00Z"); // 14:30 CET: 10:00 and 14:00 missed
    let end = t("2027-04-05T12:00:00Z");
    let clock = Arc::new(TokioClock::starting_at(origin));
    let runner = Arc::new(SimRunner::new(
        &clock,
        &dirs.state,
        Duration::from_secs(7 * 60),
    ));

    serve_until(dirs.options(2), &clock, &runner, down).await;
    clock.sleep_until(up).await; // the server is off
    assert_eq!(clock.now(), up);
    serve_until(dirs.options(2), &clock, &runner, end).await;

    let runs = runner.runs();
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Ok),
        "every run ends ok"
    );
    // Jitter: one fixed offset for this server and profile, below the window.
    let offset = jitter_offset(&six.schedule, &hostname(), "six");
    assert!(
        offset >= jiff::SignedDuration::ZERO && offset < jiff::SignedDuration::from_mins(20),
        "{offset}"
    );

    // Every slot ran exactly once, at slot + offset; none while the server
    // was off; one catch-up run at the restart.
    let day = coffer::time::days(1);
    let mut want: Vec<Timestamp> = berlin_slots(origin - day, end, &SIX_TIMES)
        .into_iter()
        .map(|s| s + offset)
        .filter(|s| *s > origin && *s < end && !(*s >= down && *s < up))
        .collect();
    want.push(up);
    want.sort();
    let got = runner.starts_of("six");
    assert_same_times(&got, &want, "runs of six");
    assert_eq!(
        got, want,
        "the runs of six are its slots (and one catch-up)"
    );

    // The DST days, slot by slot (UTC): 02:30 runs once on the 25-hour day
    // (the first 02:30, CEST) and at 03:30 CEST on the 23-hour day.
    let on = |from: &str, to: &str| -> Vec<Timestamp> {
        got.iter()
            .copied()
            .filter(|s| *s >= t(from) && *s < t(to))
            .map(|s| s - offset)
            .collect()
    };
    let autumn = on("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z");
    let want_autumn: Vec<Timestamp> = [
        "2026-10-24T22:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-25T05:00:00Z",
        "2026-10-25T09:00:00Z",
        "2026-10-25T13:00:00Z",
        "2026-10-25T17:00:00Z",
    ]
    .map(t)
    .to_vec();
    assert_eq!(autumn, want_autumn, "the 25-hour day (2026-10-25)");
    let spring = on("2027-03-27T23:00:00Z", "2027-03-28T22:00:00Z");
    let want_spring: Vec<Timestamp> = [
        "2027-03-27T23:30:00Z",
        "2027-03-28T01:30:00Z",
        "2027-03-28T04:00:00Z",
        "2027-03-28T08:00:00Z",
        "2027-03-28T12:00:00Z",
        "2027-03-28T16:00:00Z",
    ]
    .map(t)
    .to_vec();
    assert_eq!(spring, want_spring, "the 23-hour day (2027-03-28)");
    // The restart day (CET): three slots, the catch-up, then 18:00.
    let restart_day = on("2026-12-09T23:00:00Z", "2026-12-10T23:00:00Z");
    assert_eq!(
        restart_day,
        vec![
            t("2026-12-09T23:30:00Z"),
            t("2026-12-10T01:30:00Z"),
            t("2026-12-10T05:00:00Z"),
            up - offset,
            t("2026-12-10T17:00:00Z"),
        ],
        "downtime: one catch-up at the restart, the missed slots not replayed"
    );

    // The cap of 3: on the first day the one slot left (18:00 CEST), then
    // the day's first three slots, every day; at the restart the cap was
    // used up, so no catch-up.
    let mut capped_want: Vec<Timestamp> = berlin_slots(origin, end, &SIX_TIMES[..3])
        .into_iter()
        .filter(|s| !(*s >= down && *s < up))
        .collect();
    capped_want.insert(0, t("2026-10-15T16:00:00Z"));
    assert_same_times(&runner.starts_of("capped"), &capped_want, "runs of capped");
    let tz = six.schedule.tz();
    let mut per_day: BTreeMap<_, usize> = BTreeMap::new();
    for s in runner.starts_of("capped") {
        *per_day
            .entry(coffer::agent::schedule::local_day(&tz, s))
            .or_default() += 1;
    }
    let first = *per_day.keys().next().unwrap();
    assert!(
        per_day
            .iter()
            .all(|(d, n)| *n == 3 || (*d == first && *n == 1)),
        "{per_day:?}"
    );

    // Retention (keep_within 90d, applied by each run): exactly the
    // snapshots younger than 90 days at the last run's end are left.
    let repo = runner.repo.lock().unwrap().clone();
    for profile in ["six", "capped"] {
        let last_end = runs
            .iter()
            .filter(|r| r.profile == profile)
            .map(|r| r.ended)
            .max()
            .unwrap();
        let mut kept: Vec<Timestamp> = repo
            .iter()
            .filter(|(_, s)| s.profile == profile)
            .map(|(_, s)| s.time)
            .collect();
        kept.sort();
        let want: Vec<Timestamp> = runner
            .starts_of(profile)
            .into_iter()
            .filter(|s| last_end.duration_since(*s) < coffer::time::days(90))
            .collect();
        assert!(want.len() > 200 && want.len() < runner.starts_of(profile).len());
        assert_eq!(kept, want, "retention of {profile}");
    }
    assert!(
        real.elapsed() < Duration::from_secs(60),
        "simulated time: took {:?}",
        real.elapsed()
    );
}

// ---------------------------------------------------------------------------
// One behaviour each
// ---------------------------------------------------------------------------

/// Serves in a task until the returned sender is used (or dropped).
fn spawn_agent(
    opts: AgentOptions,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn Runner>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    mpsc::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (reload_tx, reload) = mpsc::channel(1);
    let shutdown = async move {
        let _ = stop_rx.await;
    };
    let task = tokio::spawn(async move {
        serve(opts, clock, runner, shutdown, reload).await.unwrap();
    });
    (stop_tx, reload_tx, task)
}

/// An interval of 2 s and a cap of 3 a day: three runs, then nothing for
/// the rest of the day, and the next run is the next local midnight.
#[tokio::test(start_paused = true)]
async fn the_cap_moves_the_next_run_to_the_next_local_day() {
    let dirs = Folders::new();
    let p = dirs.profile(
        "a",
        "interval = \"2s\"\nmax_per_day = 3\njitter = \"0s\"\ntimezone = \"Etc/GMT-12\"",
    );
    // 10:00 UTC is 22:00 in UTC+12: two hours of the local day left.
    let clock = Arc::new(TokioClock::starting_at(t("2026-05-01T10:00:00Z")));
    let runner = Arc::new(SimRunner::new(
        &clock,
        &dirs.state,
        Duration::from_millis(500),
    ));
    serve_until(dirs.options(1), &clock, &runner, t("2026-05-01T11:59:00Z")).await;
    let starts = runner.starts_of("a");
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert!(starts[2] < t("2026-05-01T10:00:10Z"), "{starts:?}");
    let st = ProfileState::load(&dirs.state, "a");
    assert_eq!((st.runs_ok, st.runs_failed), (3, 0));
    assert_eq!(st.running_since, None);
    let midnight = t("2026-05-01T12:00:00Z"); // local midnight in UTC+12
    assert_eq!(planned(&p, &dirs.state, clock.now()), midnight);
    // The next day runs again, from its midnight.
    serve_until(dirs.options(1), &clock, &runner, t("2026-05-01T12:00:30Z")).await;
    assert_eq!(runner.starts_of("a").get(3), Some(&midnight));
}

/// A profile that does not load is skipped; the others run.
#[tokio::test(start_paused = true)]
async fn a_broken_profile_is_skipped_while_the_others_run() {
    let dirs = Folders::new();
    dirs.profile("good", "interval = \"1h\"\njitter = \"0s\"");
    std::fs::write(
        dirs.profiles.join("broken.toml"),
        "name = \"broken\"\nfrequency = \"often\"\n",
    )
    .unwrap();
    let clock = Arc::new(TokioClock::starting_at(t("2026-05-01T10:30:00Z")));
    let runner = Arc::new(SimRunner::new(&clock, &dirs.state, Duration::from_secs(60)));
    serve_until(dirs.options(2), &clock, &runner, t("2026-05-01T13:30:00Z")).await;
    let runs = runner.runs();
    assert!(runs.iter().all(|r| r.profile == "good"), "{runs:?}");
    assert_eq!(
        runner.starts_of("good"),
        [
            "2026-05-01T11:00:00Z",
            "2026-05-01T12:00:00Z",
            "2026-05-01T13:00:00Z"
        ]
        .map(t)
    );
}

/// A reload picks up a profile written since the start.
#[tokio::test(start_paused = true)]
async fn a_reload_picks_up_a_new_profile() {
    let dirs = Folders::new();
    dirs.profile("a", "interval = \"1h\"\njitter = \"0s\"");
    let clock = Arc::new(TokioClock::starting_at(t("2026-05-01T10:30:00Z")));
    let runner = Arc::new(SimRunner::new(&clock, &dirs.state, Duration::from_secs(60)));
    let (stop, reload, task) = spawn_agent(dirs.options(2), clock.clone(), runner.clone());
    clock.sleep_until(t("2026-05-01T11:30:00Z")).await;
    assert!(runner.starts_of("c").is_empty());
    dirs.profile("c", "interval = \"1h\"\njitter = \"0s\"");
    clock.sleep_until(t("2026-05-01T12:30:00Z")).await;
    assert!(runner.starts_of("c").is_empty(), "not before the reload");
    reload.send(()).await.unwrap();
    clock.sleep_until(t("2026-05-01T13:30:00Z")).await;
    assert_eq!(runner.starts_of("c"), vec![t("2026-05-01T13:00:00Z")]);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Counts the agent's sleeps: a loop that polls instead of sleeping until
/// something can happen would wake many times.
struct CountingClock {
    inner: Arc<TokioClock>,
    sleeps: AtomicUsize,
}

impl Clock for CountingClock {
    fn now(&self) -> Timestamp {
        self.inner.now()
    }
    fn sleep_until(&self, t: Timestamp) -> BoxFuture<()> {
        self.sleeps.fetch_add(1, Ordering::SeqCst);
        self.inner.sleep_until(t)
    }
}

/// With one run slot, a profile due while another runs waits for that run
/// to end (the loop sleeps meanwhile, it does not poll), then runs.
#[tokio::test(start_paused = true)]
async fn a_due_profile_waits_for_a_free_run_slot_without_polling() {
    let dirs = Folders::new();
    dirs.profile("x", "interval = \"1h\"\njitter = \"0s\"\nmax_per_day = 1");
    dirs.profile("y", "interval = \"1h\"\njitter = \"0s\"\nmax_per_day = 1");
    let tokio_clock = Arc::new(TokioClock::starting_at(t("2026-05-01T10:30:00Z")));
    let clock = Arc::new(CountingClock {
        inner: tokio_clock.clone(),
        sleeps: AtomicUsize::new(0),
    });
    let runner = Arc::new(SimRunner::new(
        &tokio_clock,
        &dirs.state,
        Duration::from_secs(600),
    ));
    let (stop, _reload, task) = spawn_agent(dirs.options(1), clock.clone(), runner.clone());
    // Both are due at 11:00; one runs until 11:10.
    tokio_clock.sleep_until(t("2026-05-01T11:00:01Z")).await;
    let sleeps = clock.sleeps.load(Ordering::SeqCst);
    tokio_clock.sleep_until(t("2026-05-01T11:09:59Z")).await;
    let waiting = clock.sleeps.load(Ordering::SeqCst) - sleeps;
    assert!(
        waiting <= 1,
        "{waiting} wake-ups while the run slot was taken"
    );
    assert_eq!(runner.runs().len(), 0, "the first run is still under way");
    tokio_clock.sleep_until(t("2026-05-01T11:30:00Z")).await;
    let runs = runner.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0].started, t("2026-05-01T11:00:00Z"));
    assert_eq!(
        runs[1].started, runs[0].ended,
        "the second starts when the first ends"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Shutdown asks each run to stop and waits; a run that does not stop
/// within the stop timeout is stopped at once.
#[tokio::test(start_paused = true)]
async fn shutdown_stops_runs_gently_then_at_once() {
    for (on_stop, want) in [
        (OnStop::Obey, vec![Stop::Gently]),
        (OnStop::Ignore, vec![Stop::Gently, Stop::Now]),
    ] {
        let dirs = Folders::new();
        dirs.profile("a", "interval = \"1h\"\njitter = \"0s\"");
        let clock = Arc::new(TokioClock::starting_at(t("2026-05-01T10:59:00Z")));
        let mut runner = SimRunner::new(&clock, &dirs.state, Duration::from_secs(3600));
        runner.on_stop = on_stop;
        let runner = Arc::new(runner);
        let mut opts = dirs.options(1);
        opts.stop_timeout = Duration::from_secs(30);
        let stopped_at = t("2026-05-01T11:05:00Z");
        serve_until(opts, &clock, &runner, stopped_at).await;
        let agent_ended = clock.now();
        // Let the run see the last request.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let stops: Vec<Stop> = runner.stops.lock().unwrap().iter().map(|s| s.1).collect();
        assert_eq!(stops, want);
        match on_stop {
            OnStop::Obey => {
                // Waited for the run, which ended cancelled.
                let runs = runner.runs();
                assert_eq!(runs.len(), 1);
                assert_eq!(runs[0].status, RunStatus::Cancelled);
                assert_eq!(runs[0].ended, stopped_at);
                assert_eq!(agent_ended, stopped_at, "waited for the run, no longer");
                let st = ProfileState::load(&dirs.state, "a");
                assert_eq!((st.runs_ok, st.runs_failed), (0, 1));
            }
            OnStop::Ignore => {
                // Gave up after the stop timeout.
                assert_eq!(
                    agent_ended,
                    stopped_at + jiff::SignedDuration::from_secs(30)
                );
            }
        }
    }
}

/// A restarted agent whose profile missed a slot runs it once at once,
/// and that catch-up counts against the day's cap.
#[tokio::test(start_paused = true)]
async fn a_restart_catches_up_once_then_the_cap_holds() {
    let dirs = Folders::new();
    let p = dirs.profile("big", "interval = \"2s\"\njitter = \"0s\"\nmax_per_day = 2");
    // A run started (and was killed) an hour ago.
    let mut st = ProfileState::load(&dirs.state, "big");
    st.started(t("2026-05-01T09:00:00Z"));
    st.save(&dirs.state).unwrap();
    let restart = t("2026-05-01T10:00:00Z");
    let clock = Arc::new(TokioClock::starting_at(restart));
    let runner = Arc::new(SimRunner::new(&clock, &dirs.state, Duration::from_secs(5)));
    serve_until(dirs.options(1), &clock, &runner, t("2026-05-01T12:00:00Z")).await;
    assert_eq!(
        runner.starts_of("big"),
        vec![restart],
        "one catch-up, at once"
    );
    assert_eq!(
        planned(&p, &dirs.state, clock.now()),
        t("2026-05-02T00:00:00Z"),
        "with the cap of 2 reached (killed run + catch-up), the next run is tomorrow"
    );
}

/// GET /metrics over a tokio stream.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, name_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name_labels)?.trim().parse().ok())
}

/// Metrics on a socket bound once by the caller (no port race): they agree
/// with the state file, and the textfile has the same families.
#[tokio::test]
async fn metrics_are_served_on_a_listener_bound_by_the_caller() {
    let dirs = Folders::new();
    let p = dirs.profile("a", "interval = \"1h\"\njitter = \"0s\"\nmax_per_day = 1");
    std::fs::write(dirs.profiles.join("broken.toml"), "name = 3\n").unwrap();
    // Missed a slot: due at once (catch-up).
    let origin = t("2026-05-01T10:30:00Z");
    let mut st = ProfileState::load(&dirs.state, "a");
    st.starts = vec![t("2026-04-30T08:00:00Z")];
    st.save(&dirs.state).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let textfile = dirs.state.join("coffer.prom");
    let mut opts = dirs.options(1);
    opts.metrics_listen = Some(MetricsListen::Bound(Arc::new(listener)));
    opts.metrics_file = Some(textfile.clone());
    let clock = Arc::new(TokioClock::starting_at(origin));
    let runner = Arc::new(SimRunner::new(&clock, &dirs.state, Duration::ZERO));
    let (stop, _reload, task) = spawn_agent(opts, clock.clone(), runner.clone());
    // The run's end is reported before the metrics are rendered again.
    let mut body = scrape(addr).await;
    for _ in 0..200 {
        if sample(&body, "coffer_runs_total{profile=\"a\",result=\"ok\"}") == Some(1.0) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        body = scrape(addr).await;
    }
    let st = ProfileState::load(&dirs.state, "a");
    assert_eq!(st.runs_ok, 1, "{st:?}");
    let a = |n: &str| sample(&body, &format!("{n}{{profile=\"a\"}}"));
    assert_eq!(
        sample(&body, "coffer_runs_total{profile=\"a\",result=\"ok\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "coffer_runs_total{profile=\"a\",result=\"failed\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(a("coffer_last_run_success"), Some(1.0), "{body}");
    assert_eq!(a("coffer_running"), Some(0.0), "{body}");
    assert_eq!(
        a("coffer_next_run_timestamp_seconds"),
        Some(planned(&p, &dirs.state, clock.now()).as_second() as f64),
        "{body}"
    );
    assert_eq!(
        a("coffer_last_success_timestamp_seconds"),
        st.last_success.map(|t| t.as_second() as f64),
        "{body}"
    );
    assert_eq!(sample(&body, "coffer_profiles_broken"), Some(1.0), "{body}");
    stop.send(()).unwrap();
    task.await.unwrap();
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    let file = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(families(&file), families(&body));
    assert!(families(&body).len() >= 11, "{body}");
}
