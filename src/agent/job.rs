//! One scheduled run of a profile, as the agent does it (and `coffer run`):
//! before hook, backup, copy, retention, prune, after hook; the result goes
//! to the job history (catalog) and the profile's state file.

use super::hooks;
use super::state::ProfileState;
use crate::catalog::{Catalog, RunRecord};
use crate::config::Profile;
use crate::engine::backup::{BackupOptions, backup};
use crate::engine::forget::{Filter, ForgetOptions, forget};
use crate::engine::prune::{PruneOptions, prune};
use crate::engine::{NoProgress, Progress};
use crate::repo::Repository;
use crate::repo::keys::AgentKey;
use crate::repo::lock::hostname;
use crate::repo::store::Store;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug)]
pub struct JobOptions {
    pub state_dir: PathBuf,
    /// How long to wait for another writer (a manual prune, say).
    pub lock_wait: std::time::Duration,
    /// The agent started this run and has recorded its start already.
    pub scheduled: bool,
}

/// What a run did; also the JSON that `coffer run --json` prints and the
/// agent reads, logs and forwards to notifications.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobReport {
    pub profile: String,
    pub host: String,
    pub started: DateTime<Utc>,
    pub seconds: f64,
    /// ok, partial (some files unreadable), failed, cancelled.
    pub status: String,
    pub snapshot: Option<String>,
    pub files: u64,
    pub bytes: u64,
    /// Bytes stored by this backup (after dedup and compression).
    pub bytes_added: u64,
    pub skipped: Vec<String>,
    pub forgotten: usize,
    pub pruned_packs: usize,
    pub pruned_bytes: u64,
    pub snapshots: usize,
    /// Bytes of packs in the repository after the run.
    pub storage_bytes: u64,
    pub error: Option<String>,
}

/// Runs the profile's job. Never fails: a failure is a report with status
/// `failed` and the reason, recorded like a success.
pub fn run(profile: &Profile, opts: &JobOptions, cancel: &AtomicBool) -> JobReport {
    let started = Utc::now();
    let clock = std::time::Instant::now();
    let mut state = ProfileState::load(&opts.state_dir, &profile.name);
    if opts.scheduled {
        state.running_since = Some(started);
    } else {
        state.started(started);
    }
    let _ = state.save(&opts.state_dir);
    let mut report = JobReport {
        profile: profile.name.clone(),
        host: hostname(),
        started,
        status: "failed".into(),
        ..Default::default()
    };
    let mut catalog: Option<Catalog> = None;
    let outcome = steps(profile, opts, cancel, &mut report, &mut catalog);
    if let Err(e) = outcome {
        report.status = if cancel.load(Ordering::Relaxed) {
            "cancelled".into()
        } else {
            "failed".into()
        };
        report.error = Some(e);
    }
    report.seconds = clock.elapsed().as_secs_f64();
    // Successful backups are in the history already (the engine records them).
    if let Some(c) = &catalog
        && report.status != "ok"
        && report.status != "partial"
    {
        let _ = c.record_run(&RunRecord {
            profile: profile.name.clone(),
            started,
            seconds: report.seconds,
            status: report.status.clone(),
            snapshot: report.snapshot.clone(),
            files: report.files,
            bytes: report.bytes,
            added: report.bytes_added,
            error: report.error.clone(),
        });
    }
    state.finished(&report);
    let _ = state.save(&opts.state_dir);
    report
}

fn open(profile: &Profile) -> Result<Repository, String> {
    let key_path = profile.agent_key.as_ref().ok_or_else(|| {
        format!(
            "profile {}: no agent_key; set `agent_key` to the file `coffer init` wrote",
            profile.file.display()
        )
    })?;
    let key = AgentKey::load(key_path).map_err(|e| e.to_string())?;
    let store = Store::open(&profile.repository, &profile.s3).map_err(|e| {
        if e.gave_up() {
            format!("{e}; the next run tries again")
        } else {
            e.to_string()
        }
    })?;
    Repository::open_agent(store, &key).map_err(|e| e.to_string())
}

fn steps(
    profile: &Profile,
    opts: &JobOptions,
    cancel: &AtomicBool,
    report: &mut JobReport,
    catalog_out: &mut Option<Catalog>,
) -> Result<(), String> {
    let timeout = profile
        .hooks
        .timeout
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(900));
    let mut env = vec![("COFFER_PROFILE", profile.name.clone())];
    let repo = open(profile)?;
    let catalog_path = profile
        .catalog
        .clone()
        .unwrap_or_else(|| Catalog::default_path(&repo.config.id));
    let catalog = catalog_out
        .insert(Catalog::open(&catalog_path, &repo.config.id).map_err(|e| e.to_string())?);
    if let Some(cmd) = &profile.hooks.before {
        hooks::run("before", cmd, &env, timeout).map_err(|e| e.to_string())?;
    }
    let backup_opts = BackupOptions {
        sources: profile.sources.clone(),
        exclude: profile.exclude.clone(),
        host: None,
        profile: profile.name.clone(),
        compression: profile.compression,
        time: None,
        lock_wait: opts.lock_wait,
    };
    let progress: &dyn Progress = &NoProgress;
    let done = backup(&repo, catalog, &backup_opts, progress, cancel).map_err(|e| {
        if e.storage_gave_up() {
            format!("{e}; the next run resumes from what was uploaded")
        } else {
            e.to_string()
        }
    })?;
    report.snapshot = Some(done.snapshot.to_hex());
    report.files = done.summary.files;
    report.bytes = done.summary.bytes;
    report.bytes_added = done.summary.stored_added;
    report.skipped = done
        .skipped
        .iter()
        .map(|(p, e)| format!("{p}: {e}"))
        .collect();
    let short = done.snapshot.short();
    let saved = |e: String| format!("snapshot {short} is saved, but {e}");
    if let Some(to) = &profile.copy_to {
        let target = Store::open(to, &profile.s3).map_err(|e| saved(e.to_string()))?;
        crate::engine::copy::copy(&repo, &target, &NoProgress, cancel)
            .map_err(|e| saved(format!("the copy to {to} failed: {e}")))?;
    }
    let tz = profile.schedule.tz();
    let filter = Filter {
        host: Some(hostname()),
        profile: Some(profile.name.clone()),
    };
    let forgot = forget(
        &repo,
        catalog,
        &ForgetOptions {
            policy: profile.retention.clone(),
            filter,
            tz,
            now: Utc::now(),
            dry_run: false,
            lock_wait: opts.lock_wait,
        },
    )
    .map_err(|e| saved(format!("retention failed: {e}")))?;
    report.forgotten = forgot.removed;
    if profile.prune.enabled && !cancel.load(Ordering::Relaxed) {
        let pruned = prune(
            &repo,
            catalog,
            &PruneOptions {
                grace: profile.prune.grace,
                max_unused: profile.prune.max_unused,
                repack_older_than: Some(profile.retention.keep_within),
                dry_run: false,
                lock_wait: opts.lock_wait,
            },
            cancel,
        )
        .map_err(|e| saved(format!("prune failed: {e}")))?;
        report.pruned_packs = pruned.packs_deleted + pruned.packs_repacked + pruned.orphans_deleted;
        report.pruned_bytes = pruned.bytes_freed;
    }
    report.snapshots = catalog.snapshots().map(|s| s.len()).unwrap_or(0);
    report.storage_bytes = catalog.packs().map(|p| p.values().sum()).unwrap_or(0);
    report.status = if done.skipped.is_empty() {
        "ok".into()
    } else {
        "partial".into()
    };
    if let Some(cmd) = &profile.hooks.after {
        env.push(("COFFER_STATUS", report.status.clone()));
        env.push(("COFFER_SNAPSHOT", done.snapshot.to_hex()));
        hooks::run("after", cmd, &env, timeout).map_err(|e| saved(e.to_string()))?;
    }
    Ok(())
}
