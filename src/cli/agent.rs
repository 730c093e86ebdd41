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
use anyhow::{Context as _, Result, anyhow};
use clap::Args;
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
    #[arg(long)]
    keep_last: Option<u32>,
    #[arg(long)]
    keep_hourly: Option<u32>,
    #[arg(long)]
    keep_daily: Option<u32>,
    #[arg(long)]
    keep_weekly: Option<u32>,
    #[arg(long)]
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
    /// Check every profile in the folder, print the plan, and exit (2 if any is broken).
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The folder of profiles (default: the agent's); --profile shows one.
    #[arg(long = "profiles", default_value = "/etc/coffer/profiles")]
    profiles_dir: PathBuf,
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
    let opts = job::forget_options(
        ctx.profile.as_ref(),
        &a.policy(),
        &a.filter(),
        jiff::Timestamp::now(),
        a.dry_run,
        ctx.lock_wait,
    );
    let policy = opts.policy.clone();
    let cancel = super::signal::Cancel::install()?;
    let repo = ctx.open_agent()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let report = forget(&repo, &mut catalog, &opts)?;
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
        .ok_or_else(|| anyhow!("`coffer run` runs a profile: pass --profile FILE"))?;
    // SIGTERM and SIGINT stop the run at a safe point; it reports `cancelled`.
    let cancel = super::signal::Cancel::install()?;
    let state_dir = a.state_dir.unwrap_or_else(state::default_dir);
    let started = jiff::Timestamp::now();
    let report = state::record_around(&state_dir, &profile.name, a.scheduled, started, || {
        job::run(profile, started, ctx.lock_wait, cancel.flag())
    });
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
        let (good, bad) = load_profiles(&a.profiles_dir)?;
        let now = jiff::Timestamp::now();
        for p in &good {
            println!(
                "ok      {} ({}): next run {}",
                text::name_str(&p.name),
                text::path(&p.file),
                // RFC 3339: a validation line scripts and installers read.
                crate::time::rfc3339_offset(planned(p, &state_dir, now))
            );
        }
        for (path, e) in &bad {
            println!("BROKEN  {}: {}", text::path(path), text::message(e));
        }
        return Ok(if bad.is_empty() {
            Exit::Success
        } else {
            Exit::Usage
        });
    }
    let json = matches!(a.log_format, LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
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
        StatusRow {
            profile: p.name.clone(),
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
            snapshots: last.map(|l| l.snapshots),
            storage_bytes: last.map(|l| l.storage_bytes),
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
            "{:<14} {:<23} {:<9} {:>7} {:>10} {:<23} {:>6} {:>10}  {}",
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

pub fn status(ctx: &Context, a: StatusArgs) -> Result<Exit> {
    let state_dir = a.state_dir.unwrap_or_else(state::default_dir);
    let (profiles, broken) = match &ctx.profile {
        Some(p) => (vec![p.clone()], vec![]),
        None => load_profiles(&a.profiles_dir)?,
    };
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
            "{:<14} {:<23} {:<9} {:>7} {:>10} {:<23} {:>6} {:>10}  last error",
            "profile", "last run", "result", "took", "added", "next run", "snaps", "stored"
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
