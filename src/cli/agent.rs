//! `coffer forget`, `coffer prune`, `coffer run`, `coffer agent`, `coffer status`.

use super::json::{BrokenRow, StatusRow};
use super::{Context, Exit, print_json, text};
use crate::agent::clock::WallClock;
use crate::agent::service::{
    AgentOptions, ChildRunner, MetricsListen, load_profiles, planned, serve,
};
use crate::agent::state::{self, ProfileState};
use crate::config::parse_duration;
use crate::engine::forget::{forget, format_duration};
use crate::engine::job::{
    self, FilterOverrides, JobReport, PruneOverrides, RetentionOverrides, RunStatus,
};
use crate::engine::prune::prune;
use anyhow::{Context as _, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

fn duration(s: &str) -> Result<jiff::SignedDuration, String> {
    parse_duration(s)
}

/// `agent --log-format`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain text lines.
    Plain,
    /// One JSON object per line.
    Json,
}

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Show what would stay and go; change nothing (takes no lock).
    #[arg(long)]
    dry_run: bool,
    /// Keep every snapshot newer than this (default: the profile's, else 90d).
    #[arg(long, value_parser = duration)]
    keep_within: Option<jiff::SignedDuration>,
    /// Keep the N newest snapshots (default: the profile's, else 0).
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Only this host's snapshots (with a profile: this machine's by default).
    #[arg(long)]
    host: Option<String>,
    /// Only snapshots of this profile name (with --profile: that profile's).
    #[arg(long = "snapshot-profile")]
    snapshot_profile: Option<String>,
    /// Every host and profile in the repository, each judged apart.
    #[arg(long, conflicts_with_all = ["host", "snapshot_profile"])]
    all: bool,
    /// Prune afterwards.
    #[arg(long)]
    prune: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Show what would be deleted and repacked; change nothing (takes no
    /// lock: works while another writer holds it).
    #[arg(long)]
    dry_run: bool,
    /// Leave unreferenced data younger than this (default: the profile's, else 2h).
    #[arg(long, value_parser = duration)]
    grace: Option<jiff::SignedDuration>,
    /// Repack packs with more than this percentage unused (default 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100))]
    max_unused: Option<u32>,
    /// Repack packs older than this that hold any unused data (default: the
    /// profile's keep_within; with no profile, never).
    #[arg(long, value_parser = duration)]
    repack_older_than: Option<jiff::SignedDuration>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Where the profile's state file goes (default: $COFFER_STATE_DIR, ~/.local/state/coffer).
    #[arg(long, env = "COFFER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Started by the agent, which has recorded the start.
    #[arg(long, hide = true)]
    scheduled: bool,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The folder of profiles (*.toml) to run.
    #[arg(long = "profiles", default_value = "/etc/coffer/profiles")]
    profiles_dir: PathBuf,
    /// Where the agent keeps each profile's state file (default: $COFFER_STATE_DIR, ~/.local/state/coffer).
    #[arg(long, env = "COFFER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Profiles running at once, at most.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    max_running: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9184).
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Write Prometheus metrics to this file (node_exporter textfile collector).
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    /// Log lines as plain text or JSON (one object per line), on stdout.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// How long SIGTERM waits for running backups to stop.
    #[arg(long, default_value = "100s", value_parser = duration)]
    stop_timeout: jiff::SignedDuration,
    /// Check every profile in the folder (sources, agent key, storage and
    /// repository, TLS settings, schedule), print each one's next six runs,
    /// and exit (2 if anything is wrong).
    #[arg(long)]
    check: bool,
    /// With --check: do not contact storage (settings are still checked).
    #[arg(long, requires = "check")]
    offline: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The folder of profiles (default: the agent's); --profile shows one.
    #[arg(long = "profiles", default_value = "/etc/coffer/profiles")]
    profiles_dir: PathBuf,
    /// Where the agent keeps each profile's state file (default: $COFFER_STATE_DIR, ~/.local/state/coffer).
    #[arg(long, env = "COFFER_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl ForgetArgs {
    fn policy(&self) -> RetentionOverrides {
        RetentionOverrides {
            keep_within: self.keep_within,
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
        }
    }

    fn filter(&self) -> FilterOverrides {
        FilterOverrides {
            host: self.host.clone(),
            snapshot_profile: self.snapshot_profile.clone(),
            all: self.all,
        }
    }
}

pub fn forget_cmd(ctx: &Context, a: ForgetArgs) -> Result<Exit> {
    let mut opts = job::forget_options(
        ctx.profile.as_ref(),
        &a.policy(),
        &a.filter(),
        jiff::Timestamp::now(),
        a.dry_run,
        ctx.lock_wait,
    );
    opts.prune_follows = a.prune && !a.dry_run;
    let policy = opts.policy.clone();
    let cancel = super::signal::Cancel::install()?;
    let repo = ctx.open_agent()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let report = forget(&repo, &mut catalog, &opts)?;
    for w in &report.warnings {
        super::warn(w);
    }
    let pruned = if a.prune && !a.dry_run {
        Some(run_prune(
            ctx,
            &repo,
            &mut catalog,
            &PruneArgs {
                dry_run: false,
                grace: None,
                max_unused: None,
                repack_older_than: None,
            },
            &cancel,
        )?)
    } else {
        None
    };
    if ctx.json {
        print_json(&super::json::Forgot {
            forget: super::json::sorted(&report)?,
            prune: pruned.as_ref().map(super::json::sorted).transpose()?,
        })?;
        return Ok(Exit::Success);
    }
    if !ctx.quiet {
        print_forget(&report, &policy, a.prune);
    }
    if let Some(p) = &pruned {
        print_prune(p, ctx.quiet);
    }
    Ok(Exit::Success)
}

/// The policy, each snapshot and what retention decided, and the sum.
fn print_forget(
    report: &crate::engine::forget::ForgetReport,
    policy: &crate::config::Retention,
    prune_after: bool,
) {
    println!(
        "policy: keep within {}, last {}, hourly {}, daily {}, weekly {}, monthly {} (and always the newest)",
        format_duration(policy.keep_within),
        policy.keep_last,
        policy.keep_hourly,
        policy.keep_daily,
        policy.keep_weekly,
        policy.keep_monthly
    );
    println!(
        "{:<9} {:<23} {:<16} {:<12} {:<6}  why",
        "id", "time", "host", "profile", ""
    );
    for d in &report.decisions {
        println!(
            "{:<9} {:<23} {:<16} {:<12} {:<6}  {}",
            d.id.short(),
            crate::time::human(d.time),
            text::name_str(&d.host),
            text::name_str(&d.profile),
            if d.keep { "keep" } else { "remove" },
            if d.keep {
                d.reasons.join(", ")
            } else {
                "no rule keeps it".into()
            }
        );
    }
    let kept = report.decisions.iter().filter(|d| d.keep).count();
    println!(
        "{} {}, kept {kept}{}",
        if report.dry_run {
            "would remove"
        } else {
            "removed"
        },
        text::count(report.removed as u64, "snapshot", "snapshots"),
        if report.dry_run || prune_after {
            ""
        } else {
            "; their data goes at the next `coffer prune`"
        }
    );
}

fn run_prune(
    ctx: &Context,
    repo: &crate::repo::Repository,
    catalog: &mut crate::catalog::Catalog,
    a: &PruneArgs,
    cancel: &super::signal::Cancel,
) -> Result<crate::engine::prune::PruneReport> {
    let opts = job::prune_options(
        ctx.profile.as_ref(),
        &PruneOverrides {
            grace: a.grace,
            max_unused: a.max_unused,
            repack_older_than: a.repack_older_than,
        },
        a.dry_run,
        ctx.lock_wait,
    );
    prune(repo, catalog, &opts, cancel.flag()).map_err(|e| {
        cancel.explain(
            "prune",
            e.into(),
            "the lock is released and no spool file is left; the repository is valid, and the next prune goes on from there",
        )
    })
}

/// A prune's sum (unless `quiet`) and its warnings.
fn print_prune(r: &crate::engine::prune::PruneReport, quiet: bool) {
    let h = super::backup::human;
    if !quiet {
        println!(
            "{}: {} of {} deleted, {} repacked ({} copied into {} new), {} orphaned deleted, {} left by the grace period; {} freed, {} unused left in partly used packs; {} rewritten",
            if r.dry_run {
                "prune (dry run)"
            } else {
                "prune"
            },
            r.packs_deleted,
            text::count(r.packs as u64, "pack", "packs"),
            r.packs_repacked,
            h(r.bytes_repacked),
            r.packs_written,
            r.orphans_deleted,
            r.kept_by_grace,
            h(r.bytes_freed),
            h(r.unused_left),
            text::count(r.indexes_rewritten as u64, "index object", "index objects")
        );
    }
    if r.damaged_kept > 0 {
        println!(
            "{} kept because they hold needed blobs a read found bad (`coffer check` names them)",
            text::count(r.damaged_kept as u64, "pack", "packs")
        );
    }
    if let Some(v) = r.versions.as_ref().filter(|_| !quiet) {
        println!(
            "locked versions: {} past their first lock checked, {} deleted ({}), {} still locked, {} left by a refusal; {} removed",
            v.checked,
            v.deleted,
            h(v.bytes_deleted),
            v.still_locked,
            v.refused,
            text::count(v.markers_deleted as u64, "delete marker", "delete markers")
        );
    }
    for w in &r.warnings {
        super::warn(w);
    }
}

pub fn prune_cmd(ctx: &Context, a: PruneArgs) -> Result<Exit> {
    let cancel = super::signal::Cancel::install()?;
    let repo = ctx.open_agent()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let report = run_prune(ctx, &repo, &mut catalog, &a, &cancel)?;
    if ctx.json {
        print_json(&report)?;
    } else {
        print_prune(&report, ctx.quiet);
    }
    Ok(Exit::Success)
}

pub fn run(ctx: &Context, a: RunArgs) -> Result<Exit> {
    let profile = ctx
        .profile
        .as_ref()
        .ok_or_else(|| super::usage("`coffer run` runs a profile: pass --profile FILE"))?;
    // SIGTERM and SIGINT stop the run at a safe point; it reports `cancelled`.
    let cancel = super::signal::Cancel::install()?;
    let state_dir = a.state_dir.unwrap_or_else(state::default_dir);
    let started = jiff::Timestamp::now();
    // Without a terminal (the agent's child, a timer, cron) a long run
    // says how far it got every few minutes.
    let lines = (!std::io::stderr().is_terminal() && !ctx.quiet).then(|| {
        use std::os::fd::AsFd;
        let journal = crate::agent::journal::is_journal(std::io::stderr().as_fd());
        ProgressLines::start(a.scheduled || journal)
    });
    let progress: &dyn crate::engine::Progress = match &lines {
        Some(l) => l,
        None => &crate::engine::NoProgress,
    };
    let report = state::record_around(&state_dir, &profile.name, a.scheduled, started, || {
        job::run(profile, started, ctx.lock_wait, cancel.flag(), progress)
    });
    drop(lines);
    if ctx.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !ctx.quiet {
        print_report(&report);
    }
    Ok(match report.status {
        RunStatus::Ok => Exit::Success,
        RunStatus::Partial => Exit::Partial,
        RunStatus::Failed | RunStatus::Cancelled => {
            if !ctx.json
                && let Some(e) = &report.error
            {
                eprintln!("coffer: {}", text::message(e));
            }
            Exit::Failure
        }
    })
}

fn print_report(r: &JobReport) {
    let h = super::backup::human;
    println!(
        "{} run of {}: {} in {:.1}s; snapshot {}, {} ({}), {} added; {} forgotten, {} pruned; {}, {} stored",
        r.status,
        text::name_str(&r.profile),
        crate::time::human(r.started),
        r.seconds,
        r.snapshot
            .as_deref()
            .map(|s| &s[..8.min(s.len())])
            .unwrap_or("-"),
        super::text::count(r.files, "file", "files"),
        h(r.bytes),
        h(r.bytes_added),
        super::text::count(r.forgotten as u64, "snapshot", "snapshots"),
        h(r.pruned_bytes),
        super::text::count(r.snapshots as u64, "snapshot", "snapshots"),
        h(r.storage_bytes)
    );
    for s in &r.skipped {
        eprintln!("coffer: skipped {}", text::message(s));
    }
    if r.retention_by == crate::config::RetentionBy::Maintainer {
        eprintln!(
            "coffer: retention left to the maintainer (the profile's [retention] run_by): nothing forgotten or pruned here"
        );
    }
}

pub fn agent(ctx: &Context, a: AgentArgs) -> Result<Exit> {
    let state_dir = a.state_dir.clone().unwrap_or_else(state::default_dir);
    if a.check {
        return agent_check(ctx, &a.profiles_dir, &state_dir, a.offline);
    }
    init_logging(a.log_format);
    let runner = ChildRunner {
        exe: std::env::current_exe().context("finding the coffer binary")?,
        state_dir: state_dir.clone(),
        lock_wait: if ctx.lock_wait.is_zero() {
            std::time::Duration::from_secs(600)
        } else {
            ctx.lock_wait
        },
    };
    let opts = AgentOptions {
        profiles_dir: a.profiles_dir,
        state_dir,
        max_running: a.max_running as usize,
        metrics_listen: a.metrics_listen.map(MetricsListen::Address),
        metrics_file: a.metrics_file,
        stop_timeout: std::time::Duration::try_from(a.stop_timeout).unwrap_or_default(),
        metrics_refresh: std::time::Duration::from_secs(60),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the agent's runtime")?;
    rt.block_on(async {
        let (shutdown, reload) = signals().context("installing the signal handlers")?;
        serve(
            opts,
            std::sync::Arc::new(WallClock),
            std::sync::Arc::new(runner),
            shutdown,
            reload,
        )
        .await
        .map_err(anyhow::Error::from)
    })?;
    Ok(Exit::Success)
}

/// How often a run without a terminal says how far it got: often enough
/// to see a two-hour backup move, rare enough not to flood the journal.
/// `COFFER_PROGRESS_INTERVAL` (a duration, e.g. `30s`) changes it, for
/// tests and the impatient.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

fn progress_every() -> std::time::Duration {
    std::env::var("COFFER_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| parse_duration(&v).ok())
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(PROGRESS_EVERY)
}

/// One progress line: the phase, the files done and bytes read, the
/// average rate.
fn progress_line(phase: &str, files: u64, bytes: u64, elapsed: std::time::Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!(
        "progress: {phase}: {}, {} read in {}, {}/s",
        super::text::count(files, "file", "files"),
        super::backup::human(bytes),
        crate::engine::forget::format_duration(jiff::SignedDuration::from_secs(
            elapsed.as_secs() as i64
        )),
        super::backup::human((bytes as f64 / secs) as u64)
    )
}

/// What a run reported so far, shared with the ticker thread.
#[derive(Default)]
struct Seen {
    files: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    phase: std::sync::Mutex<String>,
}

/// Progress as a line on stderr every [`progress_every`], at info priority
/// (`<6>`) when `prefixed` (the agent's child, or stderr is the journal).
struct ProgressLines {
    seen: std::sync::Arc<Seen>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLines {
    fn start(prefixed: bool) -> ProgressLines {
        use std::sync::atomic::Ordering::Relaxed;
        let seen = std::sync::Arc::new(Seen {
            phase: std::sync::Mutex::new("starting".to_string()),
            ..Seen::default()
        });
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let every = progress_every();
        let shared = seen.clone();
        let ticker = std::thread::spawn(move || {
            let began = std::time::Instant::now();
            let prefix = if prefixed { "<6>" } else { "" };
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                let phase = shared.phase.lock().map(|p| p.clone()).unwrap_or_default();
                let (files, bytes) = (shared.files.load(Relaxed), shared.bytes.load(Relaxed));
                eprintln!(
                    "{prefix}{}",
                    progress_line(&phase, files, bytes, began.elapsed())
                );
            }
        });
        ProgressLines {
            seen,
            stop: Some(stop),
            ticker: Some(ticker),
        }
    }
}

impl crate::engine::Progress for ProgressLines {
    fn phase(&self, name: &str, _total: Option<u64>) {
        if let Ok(mut p) = self.seen.phase.lock() {
            *p = name.to_string();
        }
    }

    fn advance(&self, n: u64) {
        self.seen
            .bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn file_done(&self) {
        self.seen
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for ProgressLines {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// The agent's log: one line per event on stdout, plain or JSON, each with
/// its journald priority (`<3>` … `<7>`) when stdout is the journal.
fn init_logging(format: LogFormat) {
    use crate::agent::journal::{Prefixed, is_journal};
    use std::os::fd::AsFd;
    let journal = is_journal(std::io::stdout().as_fd());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .map_event_format(|f| Prefixed::new(f, journal))
            .init(),
        LogFormat::Plain => builder
            .map_event_format(|f| Prefixed::new(f, journal))
            .init(),
    }
}

/// How many runs `agent --check` lists per profile (as `systemd-analyze
/// calendar --iterations=6` would).
const CHECK_RUNS: usize = 6;

/// `coffer agent --check`: every profile of the folder through the
/// pre-flight (`agent::preflight`); one line per problem, naming the
/// profile, the thing and the fix. Exit 2 if anything is wrong.
fn agent_check(
    ctx: &Context,
    dir: &std::path::Path,
    state_dir: &std::path::Path,
    offline: bool,
) -> Result<Exit> {
    use crate::agent::preflight::{check_profile, next_runs};
    let (good, bad) = load_profiles(dir)?;
    let mut folder_problems = Vec::new();
    if good.is_empty() && bad.is_empty() {
        folder_problems.push(format!(
            "{}: no profiles (*.toml) in this folder, so the agent would run nothing; write one (see docs/AGENT.md) or pass --profiles DIR",
            text::path(dir)
        ));
    }
    let now = jiff::Timestamp::now();
    let host = crate::repo::lock::hostname();
    let checked: Vec<_> = good
        .iter()
        .map(|p| {
            let st = ProfileState::load(state_dir, &p.name);
            let offset = crate::agent::schedule::jitter_offset(&p.schedule, &host, &p.name);
            let runs = next_runs(&p.schedule, offset, &st.starts, now, CHECK_RUNS);
            (p, check_profile(p, offline), runs)
        })
        .collect();
    let ok = folder_problems.is_empty()
        && bad.is_empty()
        && checked.iter().all(|(_, c, _)| c.problems.is_empty());
    if ctx.json {
        print_json(&super::json::AgentCheck {
            broken: bad
                .iter()
                .map(|(file, error)| BrokenRow { file, error })
                .collect(),
            folder_problems,
            ok,
            profiles: checked
                .iter()
                .map(|(p, c, runs)| super::json::AgentCheckRow {
                    file: &p.file,
                    next_runs: runs.clone(),
                    not_checked: &c.skipped,
                    problems: &c.problems,
                    profile: &p.name,
                })
                .collect(),
        })?;
    } else {
        for line in &folder_problems {
            println!("error   {}", text::message(line));
        }
        for (p, c, runs) in &checked {
            let who = format!("{} ({})", text::name_str(&p.name), text::path(&p.file));
            let verdict = if c.problems.is_empty() {
                "ok"
            } else {
                "FAILED"
            };
            let first = runs.first().copied().unwrap_or(now);
            println!(
                "{verdict:<7} {who}: next run {}",
                crate::time::rfc3339_offset(first)
            );
            for t in runs.iter().skip(1) {
                println!("          then {}", crate::time::rfc3339_offset(*t));
            }
            for s in &c.skipped {
                println!("          not checked: {s}");
            }
            for e in &c.problems {
                println!("error   {who}: {}: {}", e.what, text::message(&e.message));
            }
        }
        for (path, e) in &bad {
            println!("BROKEN  {}: {}", text::path(path), text::message(e));
        }
    }
    Ok(if ok { Exit::Success } else { Exit::Usage })
}

/// The agent's signals: SIGTERM or SIGINT end it; each SIGHUP reloads.
fn signals() -> std::io::Result<(
    impl std::future::Future<Output = ()>,
    tokio::sync::mpsc::Receiver<()>,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            // One pending reload is enough: more in the meantime are the same.
            let _ = tx.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    Ok((shutdown, rx))
}

impl StatusRow {
    fn of(
        p: &crate::config::Profile,
        state_dir: &std::path::Path,
        now: jiff::Timestamp,
    ) -> StatusRow {
        let st = ProfileState::load(state_dir, &p.name);
        let last = st.last.as_ref();
        let figures = st.repository_figures();
        StatusRow {
            profile: p.name.clone(),
            repository: p.repository.clone(),
            repository_counted: figures.as_ref().map(|f| f.at),
            runs_partial: st.runs_partial,
            skipped_files: last.map(|l| l.skipped.len()),
            file: p.file.clone(),
            running_since: st.running_since,
            last_run: last.map(|l| l.started),
            result: last.map(|l| l.status),
            seconds: last.map(|l| l.seconds),
            bytes_added: last.map(|l| l.bytes_added),
            snapshot: last.and_then(|l| l.snapshot.clone()),
            last_error: last.and_then(|l| l.error.clone()),
            last_success: st.last_success,
            next_run: planned(p, state_dir, now),
            snapshots: figures.as_ref().map(|f| f.snapshots),
            storage_bytes: figures.as_ref().map(|f| f.storage_bytes),
            runs_ok: st.runs_ok,
            runs_failed: st.runs_failed,
        }
    }

    fn print(&self) {
        let time = |t: Option<jiff::Timestamp>| {
            t.map(crate::time::human).unwrap_or_else(|| "never".into())
        };
        let bytes = |n: Option<u64>| n.map(super::backup::human).unwrap_or_else(|| "-".into());
        let result = match (self.running_since, self.result) {
            (Some(_), _) => "running",
            (None, Some(r)) => r.as_str(),
            (None, None) => "-",
        };
        println!(
            "{:<14} {:<23} {:<9} {:>7} {:>10} {:<23} {:>10} {:>11}  {}",
            text::name_str(&self.profile),
            time(self.last_run),
            result,
            self.seconds
                .map(|x| format!("{x:.0}s"))
                .unwrap_or_else(|| "-".into()),
            bytes(self.bytes_added),
            time(Some(self.next_run)),
            self.snapshots
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into()),
            bytes(self.storage_bytes),
            text::message(self.last_error.as_deref().unwrap_or(""))
        );
    }
}

/// The state folder `status` reads: the one named, else the user's own if
/// it holds state of these profiles, else the installed agent's; says on
/// stderr which it read when it looked for one, and what to do if none.
fn status_state_dir(named: Option<PathBuf>, profiles: &[crate::config::Profile]) -> PathBuf {
    if let Some(dir) = named {
        return dir;
    }
    let own = state::default_dir();
    let candidates = [own.clone(), state::installed_dir()];
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    match state::find_dir(&candidates, &names) {
        state::Found::Dir(dir) => {
            eprintln!(
                "coffer: agent state read from {} (set COFFER_STATE_DIR or pass --state-dir to read another)",
                text::path(&dir)
            );
            dir
        }
        state::Found::None { unreadable } => {
            for (dir, why) in &unreadable {
                eprintln!(
                    "coffer: cannot read the agent state in {}: {}; run as root or as the agent's user",
                    text::path(dir),
                    text::message(why)
                );
            }
            let looked: Vec<String> = candidates
                .iter()
                .map(|d| text::path(d).into_owned())
                .collect();
            eprintln!(
                "coffer: no agent state for these profiles in {}: they have not run here yet, or the agent keeps its state elsewhere; set COFFER_STATE_DIR or pass --state-dir",
                looked.join(" or ")
            );
            own
        }
    }
}

pub fn status(ctx: &Context, a: StatusArgs) -> Result<Exit> {
    let (profiles, broken) = match &ctx.profile {
        Some(p) => (vec![p.clone()], vec![]),
        None => load_profiles(&a.profiles_dir)?,
    };
    let state_dir = status_state_dir(a.state_dir, &profiles);
    let now = jiff::Timestamp::now();
    let rows: Vec<StatusRow> = profiles
        .iter()
        .map(|p| StatusRow::of(p, &state_dir, now))
        .collect();
    if ctx.json {
        let broken: Vec<BrokenRow> = broken
            .iter()
            .map(|(file, error)| BrokenRow { file, error })
            .collect();
        print_json(&super::json::Status {
            broken,
            profiles: &rows,
        })?;
    } else {
        println!(
            "{:<14} {:<23} {:<9} {:>7} {:>10} {:<23} {:>10} {:>11}  last error",
            "profile",
            "last run",
            "result",
            "took",
            "added",
            "next run",
            "repo snaps",
            "repo stored"
        );
        for r in &rows {
            r.print();
        }
        for (p, e) in &broken {
            println!("BROKEN {}: {}", text::path(p), text::message(e));
        }
    }
    let failing = rows.iter().any(|r| r.result == Some(RunStatus::Failed));
    Ok(if failing || !broken.is_empty() {
        Exit::Failure
    } else {
        Exit::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_phase_files_bytes_time_and_rate() {
        let line = progress_line(
            "backup",
            1200,
            600 << 20,
            std::time::Duration::from_secs(120),
        );
        assert!(line.starts_with("progress: backup: 1200 files, "), "{line}");
        assert!(line.contains("600.0 MiB read in 2m"), "{line}");
        assert!(line.contains("5.0 MiB/s"), "{line}");
        // No division by zero at the very start.
        let line = progress_line("index", 1, 0, std::time::Duration::ZERO);
        assert!(line.contains("1 file, 0 B read in 0s, 0 B/s"), "{line}");
    }
}
