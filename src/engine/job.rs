//! The profile job, the one use case both front ends run: before hook,
//! backup, copy, retention, prune, after hook, and the run record in the
//! catalog's job history. `coffer backup` (with or without `--profile`) runs
//! the backup-and-copy part, `coffer run` (and so the agent, which starts
//! `coffer run` for each run) the whole job.
//!
//! Plans before actions: a [`JobPlan`] is built from a profile and the
//! command line's overrides by pure functions (each engine's options come
//! from a profile in one place here), then [`execute`] carries it out.
//! Hooks live beside the job (`job::hooks`): only the job runs them.

pub mod hooks;

use crate::catalog::{Catalog, RunRecord};
use crate::config::{Profile, Retention, RetentionBy};
use crate::engine::Progress;
use crate::engine::backup::{BackupOptions, BackupReport, backup};
use crate::engine::copy::{CopyReport, copy};
use crate::engine::forget::{Filter, ForgetOptions, forget};
use crate::engine::prune::{PruneOptions, prune};
use crate::repo::Repository;
use crate::repo::keys::AgentKey;
use crate::repo::lock::hostname;
use crate::repo::store::Store;
use hooks::HookError;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crate::catalog::RunStatus;

/// What a run did; also the JSON that `coffer run --json` prints and the
/// agent reads, logs and forwards to notifications.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobReport {
    pub profile: String,
    pub host: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub started: Timestamp,
    pub seconds: f64,
    pub status: RunStatus,
    pub snapshot: Option<String>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes stored by this backup (after dedup and compression).
    pub bytes_added: u64,
    pub skipped: Vec<String>,
    pub forgotten: usize,
    pub pruned_packs: usize,
    pub pruned_bytes: u64,
    /// Who applies retention: with `maintainer`, this run did not.
    #[serde(default)]
    pub retention_by: RetentionBy,
    pub snapshots: usize,
    /// Bytes of packs in the repository after the run.
    pub storage_bytes: u64,
    pub error: Option<String>,
}

impl JobReport {
    /// A report of a run that has not done anything yet (status failed).
    pub fn new(profile: &str, started: Timestamp) -> JobReport {
        JobReport {
            profile: profile.to_string(),
            host: hostname(),
            started,
            ..Default::default()
        }
    }

    /// A run that failed before it could report (it could not start, say).
    pub fn failed(profile: &str, started: Timestamp, error: String) -> JobReport {
        JobReport {
            error: Some(error),
            ..JobReport::new(profile, started)
        }
    }
}

/// Why a job failed. The messages are the ones `coffer run` reports.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The repository or catalog could not be opened.
    #[error("{0}")]
    Open(String),
    #[error(transparent)]
    BeforeHook(HookError),
    #[error("{}", if .0.storage_gave_up() { format!("{}; the next run resumes from what was uploaded", .0) } else { .0.to_string() })]
    Backup(crate::Error),
    /// A step after the snapshot was saved.
    #[error("snapshot {short} is saved, but {step}")]
    AfterBackup { short: String, step: Box<StepError> },
}

/// A step after the backup that failed (the snapshot stays).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{0}")]
    CopyTarget(crate::storage::StorageError),
    #[error("the copy to {to} failed: {source}")]
    Copy { to: String, source: crate::Error },
    #[error("retention failed: {0}")]
    Retention(crate::Error),
    #[error("prune failed: {0}")]
    Prune(crate::Error),
    #[error(transparent)]
    AfterHook(HookError),
}

impl JobError {
    /// Whether the job stopped at a cancel (rather than failing).
    fn interrupted(&self) -> bool {
        let e = match self {
            JobError::Backup(e) => e,
            JobError::AfterBackup { step, .. } => match step.as_ref() {
                StepError::Copy { source: e, .. }
                | StepError::Retention(e)
                | StepError::Prune(e) => e,
                _ => return false,
            },
            _ => return false,
        };
        matches!(e, crate::Error::Interrupted)
    }
}

// ---------------------------------------------------------------------------
// Options from a profile, with the command line's overrides on top
// ---------------------------------------------------------------------------

/// `coffer backup`'s arguments that override the profile.
#[derive(Clone, Debug, Default)]
pub struct BackupOverrides {
    /// Paths to back up instead of the profile's sources.
    pub paths: Vec<PathBuf>,
    /// Excludes added to the profile's.
    pub exclude: Vec<String>,
    pub host: Option<String>,
    pub compression: Option<i32>,
    pub time: Option<Timestamp>,
}

/// The profile name snapshots and runs of a backup without profile carry.
pub const NO_PROFILE: &str = "cli";

pub fn backup_options(
    profile: Option<&Profile>,
    o: BackupOverrides,
    lock_wait: Duration,
) -> BackupOptions {
    let sources = if o.paths.is_empty() {
        profile.map(|p| p.sources.clone()).unwrap_or_default()
    } else {
        o.paths
    };
    let mut exclude = profile.map(|p| p.exclude.clone()).unwrap_or_default();
    exclude.extend(o.exclude);
    BackupOptions {
        sources,
        exclude,
        host: o.host,
        profile: profile.map_or_else(|| NO_PROFILE.into(), |p| p.name.clone()),
        compression: o
            .compression
            .or(profile.map(|p| p.compression))
            .unwrap_or(crate::config::DEFAULT_COMPRESSION),
        time: o.time,
        lock_wait,
    }
}

/// `coffer forget`'s policy arguments (each replaces the profile's rule).
#[derive(Clone, Debug, Default)]
pub struct RetentionOverrides {
    pub keep_within: Option<jiff::SignedDuration>,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
}

/// The profile's policy (else the default) with the overrides laid on.
pub fn retention(profile: Option<&Profile>, o: &RetentionOverrides) -> Retention {
    let base = profile.map(|p| p.retention.clone()).unwrap_or_default();
    Retention {
        run_by: base.run_by,
        keep_within: o.keep_within.unwrap_or(base.keep_within),
        keep_last: o.keep_last.unwrap_or(base.keep_last),
        keep_hourly: o.keep_hourly.unwrap_or(base.keep_hourly),
        keep_daily: o.keep_daily.unwrap_or(base.keep_daily),
        keep_weekly: o.keep_weekly.unwrap_or(base.keep_weekly),
        keep_monthly: o.keep_monthly.unwrap_or(base.keep_monthly),
    }
}

/// Whose snapshots `coffer forget` judges.
#[derive(Clone, Debug, Default)]
pub struct FilterOverrides {
    pub host: Option<String>,
    pub snapshot_profile: Option<String>,
    /// Every host and profile.
    pub all: bool,
}

/// With a profile, this machine's snapshots of that profile by default.
pub fn forget_filter(profile: Option<&Profile>, o: &FilterOverrides) -> Filter {
    if o.all {
        return Filter::default();
    }
    Filter {
        host: o.host.clone().or_else(|| profile.map(|_| hostname())),
        profile: o
            .snapshot_profile
            .clone()
            .or_else(|| profile.map(|p| p.name.clone())),
    }
}

pub fn forget_options(
    profile: Option<&Profile>,
    policy: &RetentionOverrides,
    filter: &FilterOverrides,
    now: Timestamp,
    dry_run: bool,
    lock_wait: Duration,
) -> ForgetOptions {
    ForgetOptions {
        policy: retention(profile, policy),
        filter: forget_filter(profile, filter),
        tz: profile.map_or(jiff::tz::TimeZone::UTC, |p| p.schedule.tz()),
        now,
        dry_run,
        lock_wait,
        prune_follows: false,
    }
}

/// `coffer prune`'s arguments that override the profile's `[prune]`.
#[derive(Clone, Debug, Default)]
pub struct PruneOverrides {
    pub grace: Option<jiff::SignedDuration>,
    pub max_unused: Option<u32>,
    pub repack_older_than: Option<jiff::SignedDuration>,
}

/// Packs older than the profile's `keep_within` are repacked when they hold
/// unused data; without a profile, only when asked.
pub fn prune_options(
    profile: Option<&Profile>,
    o: &PruneOverrides,
    dry_run: bool,
    lock_wait: Duration,
) -> PruneOptions {
    let settings = profile.map(|p| p.prune.clone()).unwrap_or_default();
    PruneOptions {
        grace: o.grace.unwrap_or(settings.grace),
        max_unused: o.max_unused.unwrap_or(settings.max_unused),
        repack_older_than: o
            .repack_older_than
            .or_else(|| profile.map(|p| p.retention.keep_within)),
        dry_run,
        lock_wait,
    }
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

/// A hook command with its timeout.
#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub command: String,
    pub timeout: Duration,
    /// Secret variables it inherits all the same (`[hooks] pass_env`).
    pub pass_env: Vec<String>,
}

/// What a job will do, in order. Steps that are `None` are left out.
pub struct JobPlan {
    pub before: Option<Hook>,
    pub backup: BackupOptions,
    /// A second repository the backup is copied to, and how to reach it.
    pub copy_to: Option<(String, crate::storage::S3Options)>,
    /// Retention; its `now` is taken when the step runs.
    pub forget: Option<ForgetOptions>,
    pub prune: Option<PruneOptions>,
    pub after: Option<Hook>,
}

impl JobPlan {
    /// `coffer backup`: the backup and the profile's copy, nothing else.
    pub fn backup(profile: Option<&Profile>, o: BackupOverrides, lock_wait: Duration) -> JobPlan {
        JobPlan {
            before: None,
            backup: backup_options(profile, o, lock_wait),
            copy_to: profile.and_then(|p| p.copy_to.clone().map(|to| (to, p.s3.clone()))),
            forget: None,
            prune: None,
            after: None,
        }
    }

    /// A scheduled run (`coffer run`, the agent): the whole job.
    pub fn run(profile: &Profile, now: Timestamp, lock_wait: Duration) -> JobPlan {
        let hook = |c: &Option<String>| {
            c.clone().map(|command| Hook {
                command,
                timeout: profile.hooks.timeout_std(),
                pass_env: profile.hooks.pass_env.clone(),
            })
        };
        let none = Default::default();
        // An append-only agent leaves retention to the maintainer.
        let retains = profile.retention.run_by == RetentionBy::Agent;
        JobPlan {
            before: hook(&profile.hooks.before),
            forget: retains.then(|| {
                forget_options(
                    Some(profile),
                    &none,
                    &FilterOverrides::default(),
                    now,
                    false,
                    lock_wait,
                )
            }),
            prune: (retains && profile.prune.enabled).then(|| {
                prune_options(Some(profile), &PruneOverrides::default(), false, lock_wait)
            }),
            after: hook(&profile.hooks.after),
            ..JobPlan::backup(Some(profile), BackupOverrides::default(), lock_wait)
        }
    }
}

// ---------------------------------------------------------------------------
// Carrying it out
// ---------------------------------------------------------------------------

/// What a job did: the report (recorded in the job history), and for
/// `coffer backup`'s output the backup's and the copy's own reports.
#[derive(Debug)]
pub struct JobDone {
    pub report: JobReport,
    pub backup: Option<BackupReport>,
    /// What the copy did, and where the target is.
    pub copied: Option<(CopyReport, String)>,
    pub error: Option<JobError>,
}

/// Carries out `plan` on an open repository, records the run in the job
/// history and returns what happened; never fails (a failure is in `error`,
/// and the report says `failed` or `cancelled`). `began` is when the run
/// began, for its duration.
pub fn execute(
    repo: &Repository,
    catalog: &mut Catalog,
    plan: &JobPlan,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    mut report: JobReport,
    began: Instant,
) -> JobDone {
    let mut done = JobDone {
        report: JobReport::default(),
        backup: None,
        copied: None,
        error: None,
    };
    let outcome = steps(
        repo,
        catalog,
        plan,
        progress,
        cancel,
        &mut report,
        &mut done,
    );
    if let Err(e) = outcome {
        report.status = if cancel.load(Ordering::Relaxed) || e.interrupted() {
            RunStatus::Cancelled
        } else {
            RunStatus::Failed
        };
        report.error = Some(e.to_string());
        done.error = Some(e);
    }
    report.seconds = began.elapsed().as_secs_f64();
    record(catalog, &report);
    done.report = report;
    done
}

/// The one writer of the job history. A history that cannot be written
/// costs the history line, never the run.
fn record(catalog: &Catalog, r: &JobReport) {
    let _ = catalog.record_run(&RunRecord {
        profile: r.profile.clone(),
        started: r.started,
        seconds: r.seconds,
        status: r.status,
        snapshot: r.snapshot.clone(),
        files: r.files,
        bytes: r.bytes,
        added: r.bytes_added,
        error: r.error.clone(),
    });
}

fn hook_env(report: &JobReport, after: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![("COFFER_PROFILE", report.profile.clone())];
    if after {
        env.push(("COFFER_STATUS", report.status.to_string()));
        env.push((
            "COFFER_SNAPSHOT",
            report.snapshot.clone().unwrap_or_default(),
        ));
    }
    env
}

/// Retention's warnings go out with the backup's (its output prints
/// them, and `--json` lists them): they were dropped before.
fn warn_with_backup(done: &mut JobDone, warnings: Vec<String>) {
    if let Some(b) = &mut done.backup {
        b.warnings.extend(warnings);
    }
}

fn steps(
    repo: &Repository,
    catalog: &mut Catalog,
    plan: &JobPlan,
    progress: &dyn Progress,
    cancel: &AtomicBool,
    report: &mut JobReport,
    done: &mut JobDone,
) -> Result<(), JobError> {
    if let Some(h) = &plan.before {
        let env = hook_env(report, false);
        hooks::run("before", &h.command, &env, &h.pass_env, h.timeout)
            .map_err(JobError::BeforeHook)?;
    }
    let b = backup(repo, catalog, &plan.backup, progress, cancel).map_err(JobError::Backup)?;
    report.snapshot = Some(b.snapshot.to_hex());
    report.files = b.summary.files;
    report.bytes = b.summary.bytes;
    report.bytes_added = b.summary.stored_added;
    report.skipped = b.skipped.iter().map(|(p, e)| format!("{p}: {e}")).collect();
    let short = b.snapshot.short();
    let saved = |step: StepError| JobError::AfterBackup {
        short: short.clone(),
        step: Box::new(step),
    };
    let status = if b.skipped.is_empty() {
        RunStatus::Ok
    } else {
        RunStatus::Partial
    };
    done.backup = Some(b);
    if let Some((to, s3)) = &plan.copy_to {
        let target = Store::open(to, s3).map_err(|e| saved(StepError::CopyTarget(e)))?;
        let copied =
            copy(repo, &target, catalog, &crate::engine::NoProgress, cancel).map_err(|e| {
                saved(StepError::Copy {
                    to: to.clone(),
                    source: e,
                })
            })?;
        done.copied = Some((copied, target.location()));
    }
    if let Some(f) = &plan.forget {
        // "Now" for keep_within is after the backup, as the snapshot's age is.
        let opts = ForgetOptions {
            now: Timestamp::now().max(f.now),
            prune_follows: plan.prune.is_some(),
            ..f.clone()
        };
        let forgot = forget(repo, catalog, &opts).map_err(|e| saved(StepError::Retention(e)))?;
        report.forgotten = forgot.removed;
        warn_with_backup(done, forgot.warnings);
    }
    if let Some(p) = &plan.prune
        && !cancel.load(Ordering::Relaxed)
    {
        let pruned = prune(repo, catalog, p, cancel).map_err(|e| saved(StepError::Prune(e)))?;
        report.pruned_packs = pruned.packs_deleted + pruned.packs_repacked + pruned.orphans_deleted;
        report.pruned_bytes = pruned.bytes_freed;
        warn_with_backup(done, pruned.warnings);
    }
    report.snapshots = catalog.snapshot_count().unwrap_or(0) as usize;
    report.storage_bytes = catalog.packs().map(|p| p.values().sum()).unwrap_or(0);
    report.status = status;
    if let Some(h) = &plan.after {
        let env = hook_env(report, true);
        hooks::run("after", &h.command, &env, &h.pass_env, h.timeout)
            .map_err(|e| saved(StepError::AfterHook(e)))?;
    }
    Ok(())
}

/// Opens the profile's repository with its agent key, and its catalog.
fn open(profile: &Profile) -> Result<(Repository, Catalog), JobError> {
    let key_path = profile.agent_key.as_ref().ok_or_else(|| {
        JobError::Open(format!(
            "profile {}: no agent_key; set `agent_key` to the file `coffer init` wrote",
            profile.file.display()
        ))
    })?;
    let key = AgentKey::load(key_path).map_err(|e| JobError::Open(e.to_string()))?;
    let store = Store::open(&profile.repository, &profile.s3).map_err(|e| {
        JobError::Open(if e.gave_up() {
            format!("{e}; the next run tries again")
        } else {
            e.to_string()
        })
    })?;
    let repo = Repository::open_agent(store, &key).map_err(|e| JobError::Open(e.to_string()))?;
    let catalog_path = profile
        .catalog
        .clone()
        .unwrap_or_else(|| Catalog::default_path(&repo.config.id));
    let catalog =
        Catalog::open(&catalog_path, &repo.config.id).map_err(|e| JobError::Open(e.to_string()))?;
    Ok((repo, catalog))
}

/// A scheduled run of `profile` (`coffer run`): opens its repository and
/// carries out the whole job. Never fails: a failure is a report with status
/// `failed` (or `cancelled`) and the reason.
pub fn run(
    profile: &Profile,
    started: Timestamp,
    lock_wait: Duration,
    cancel: &AtomicBool,
    progress: &dyn Progress,
) -> JobReport {
    let began = Instant::now();
    let report = JobReport {
        retention_by: profile.retention.run_by,
        ..JobReport::new(&profile.name, started)
    };
    let (repo, mut catalog) = match open(profile) {
        Ok(x) => x,
        Err(e) => {
            return JobReport {
                seconds: began.elapsed().as_secs_f64(),
                error: Some(e.to_string()),
                ..report
            };
        }
    };
    let plan = JobPlan::run(profile, started, lock_wait);
    execute(&repo, &mut catalog, &plan, progress, cancel, report, began).report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const PROFILE: &str = r#"
name = "web"
sources = ["/srv"]
exclude = ["*.tmp"]
repository = "/backup/repo"
copy_to = "/backup/copy"
compression = 7

[retention]
keep_within = "30d"
keep_daily = 7

[prune]
grace = "1h"

[hooks]
before = "dump"
after = "notify"
timeout = "2m"
pass_env = ["PGPASSWORD"]
"#;

    fn profile(text: &str) -> Profile {
        Profile::parse(text, Path::new("/etc/coffer/web.toml")).unwrap()
    }

    #[test]
    fn status_serializes_to_the_words_users_see() {
        for (s, word) in [
            (RunStatus::Ok, "ok"),
            (RunStatus::Partial, "partial"),
            (RunStatus::Failed, "failed"),
            (RunStatus::Cancelled, "cancelled"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{word}\""));
            assert_eq!(s.to_string(), word);
            let back: RunStatus = serde_json::from_str(&format!("\"{word}\"")).unwrap();
            assert_eq!(back, s);
        }
        assert!(RunStatus::Ok.succeeded() && RunStatus::Partial.succeeded());
        assert!(!RunStatus::Failed.succeeded() && !RunStatus::Cancelled.succeeded());
        let r = JobReport::new("web", Timestamp::UNIX_EPOCH);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "failed");
    }

    #[test]
    fn a_run_plans_every_step_from_the_profile() {
        let p = profile(PROFILE);
        let now = "2026-05-01T12:00:00Z".parse().unwrap();
        let plan = JobPlan::run(&p, now, Duration::from_secs(9));
        let two_min = Duration::from_secs(120);
        assert_eq!(
            plan.before,
            Some(Hook {
                command: "dump".into(),
                timeout: two_min,
                pass_env: vec!["PGPASSWORD".into()],
            })
        );
        assert_eq!(
            plan.after.as_ref().map(|h| h.command.as_str()),
            Some("notify")
        );
        assert_eq!(plan.backup.sources, vec![PathBuf::from("/srv")]);
        assert_eq!(plan.backup.exclude, vec!["*.tmp".to_string()]);
        assert_eq!(plan.backup.profile, "web");
        assert_eq!(plan.backup.compression, 7);
        assert_eq!(plan.backup.host, None);
        assert_eq!(plan.backup.lock_wait, Duration::from_secs(9));
        assert_eq!(
            plan.copy_to.as_ref().map(|c| c.0.as_str()),
            Some("file:///backup/copy")
        );
        let f = plan.forget.as_ref().unwrap();
        assert_eq!(f.policy.keep_within, crate::time::days(30));
        assert_eq!(f.policy.keep_daily, 7);
        assert_eq!(f.filter.host, Some(hostname()));
        assert_eq!(f.filter.profile.as_deref(), Some("web"));
        assert_eq!(f.now, now);
        assert!(!f.dry_run);
        let pr = plan.prune.as_ref().unwrap();
        assert_eq!(pr.grace, jiff::SignedDuration::from_hours(1));
        assert_eq!(pr.max_unused, 20);
        assert_eq!(pr.repack_older_than, Some(crate::time::days(30)));
        // prune off: no prune step.
        let off = profile(&PROFILE.replace("grace = \"1h\"", "enabled = false"));
        assert!(JobPlan::run(&off, now, Duration::ZERO).prune.is_none());
    }

    #[test]
    fn a_backup_plans_only_backup_and_copy_with_overrides_on_top() {
        let p = profile(PROFILE);
        let o = BackupOverrides {
            paths: vec![PathBuf::from("/home")],
            exclude: vec!["*.bak".into()],
            host: Some("other".into()),
            compression: Some(12),
            time: None,
        };
        let plan = JobPlan::backup(Some(&p), o, Duration::ZERO);
        assert!(plan.before.is_none() && plan.after.is_none());
        assert!(plan.forget.is_none() && plan.prune.is_none());
        assert!(plan.copy_to.is_some());
        assert_eq!(plan.backup.sources, vec![PathBuf::from("/home")]);
        assert_eq!(
            plan.backup.exclude,
            vec!["*.tmp".to_string(), "*.bak".into()]
        );
        assert_eq!(plan.backup.host.as_deref(), Some("other"));
        assert_eq!(plan.backup.compression, 12);
        let bare = JobPlan::backup(None, BackupOverrides::default(), Duration::ZERO);
        assert_eq!(bare.backup.profile, NO_PROFILE);
        assert_eq!(bare.backup.compression, crate::config::DEFAULT_COMPRESSION);
        assert!(bare.backup.sources.is_empty() && bare.copy_to.is_none());
    }

    #[test]
    fn forget_and_prune_options_lay_overrides_on_the_profile_or_defaults() {
        let p = profile(PROFILE);
        let now = Timestamp::UNIX_EPOCH;
        let policy = RetentionOverrides {
            keep_last: Some(3),
            ..Default::default()
        };
        let o = forget_options(
            Some(&p),
            &policy,
            &Default::default(),
            now,
            true,
            Duration::ZERO,
        );
        assert_eq!(o.policy.keep_within, crate::time::days(30));
        assert_eq!((o.policy.keep_last, o.policy.keep_daily), (3, 7));
        assert!(o.dry_run);
        // No profile: 90 days, every host and profile unless named.
        let o = forget_options(
            None,
            &policy,
            &Default::default(),
            now,
            false,
            Duration::ZERO,
        );
        assert_eq!(o.policy.keep_within, crate::time::days(90));
        assert_eq!((o.filter.host, o.filter.profile), (None, None));
        let all = FilterOverrides {
            all: true,
            host: None,
            snapshot_profile: None,
        };
        let f = forget_filter(Some(&p), &all);
        assert_eq!((f.host, f.profile), (None, None));
        let named = FilterOverrides {
            host: Some("h".into()),
            snapshot_profile: Some("q".into()),
            all: false,
        };
        let f = forget_filter(Some(&p), &named);
        assert_eq!(
            (f.host.as_deref(), f.profile.as_deref()),
            (Some("h"), Some("q"))
        );

        let pr = prune_options(None, &PruneOverrides::default(), true, Duration::ZERO);
        assert_eq!(pr.grace, jiff::SignedDuration::from_hours(2));
        assert_eq!(pr.repack_older_than, None);
        assert!(pr.dry_run);
        let o = PruneOverrides {
            grace: Some(jiff::SignedDuration::ZERO),
            max_unused: Some(50),
            repack_older_than: Some(crate::time::days(1)),
        };
        let pr = prune_options(Some(&p), &o, false, Duration::ZERO);
        assert_eq!(pr.grace, jiff::SignedDuration::ZERO);
        assert_eq!(pr.max_unused, 50);
        assert_eq!(pr.repack_older_than, Some(crate::time::days(1)));
    }

    #[test]
    fn job_errors_say_what_coffer_run_said() {
        let e = JobError::AfterBackup {
            short: "abcd1234".into(),
            step: Box::new(StepError::Retention(crate::Error::Stopped("x"))),
        };
        assert_eq!(
            e.to_string(),
            "snapshot abcd1234 is saved, but retention failed: x"
        );
        assert!(!e.interrupted());
        let e = JobError::AfterBackup {
            short: "abcd1234".into(),
            step: Box::new(StepError::Copy {
                to: "file:///c".into(),
                source: crate::Error::Interrupted,
            }),
        };
        assert_eq!(
            e.to_string(),
            "snapshot abcd1234 is saved, but the copy to file:///c failed: interrupted"
        );
        assert!(e.interrupted());
        assert!(JobError::Backup(crate::Error::Interrupted).interrupted());
    }
}
