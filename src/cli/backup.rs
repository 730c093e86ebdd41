//! `coffer backup`.

use super::json::{BackupJson, SkippedRow};
use super::{Context, Exit, print_json, text};
use crate::engine::backup::Seen;
use crate::engine::job::{self, BackupOverrides, JobError, JobPlan, JobReport, StepError};
use crate::repo::Repository;
use crate::repo::keys::OperatorIdentity;
use crate::repo::snapshot::Summary;
use anyhow::{Result, anyhow};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Paths to back up (default: the profile's sources).
    paths: Vec<PathBuf>,
    /// Glob to leave out; without '/', matched against file names. Repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// zstd level 1..=19 (default: the profile's, else 3).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression: Option<i32>,
    /// Record this time (RFC 3339) as the snapshot's, instead of now: for
    /// importing history and for benchmarks of retention.
    #[arg(long)]
    time: Option<jiff::Timestamp>,
}

/// The demo profile's first run: make an identity and a repository.
fn auto_init(ctx: &Context) -> Result<()> {
    let Some(profile) = ctx.profile.as_ref().filter(|p| p.auto_init) else {
        return Ok(());
    };
    let store = ctx.store()?;
    if store.stat(crate::repo::CONFIG_KEY)?.is_some() {
        return Ok(());
    }
    let (Some(identity), Some(agent_key)) = (&ctx.identity, &ctx.agent_key) else {
        return Err(anyhow!(
            "auto_init needs `identity` and `agent_key` paths in the profile"
        ));
    };
    let existed = identity.exists();
    let recipient = if existed {
        ctx.load_identity(identity)?.identities[0].to_public()
    } else {
        OperatorIdentity::generate(identity, None)?
    };
    let (_, agent, _) = Repository::init(
        store,
        vec![recipient],
        crate::repo::chunker::ChunkerParams::DATA,
        None,
    )?;
    agent.save(agent_key)?;
    if !ctx.quiet && !ctx.json {
        let keys = if existed {
            format!("used identity {}", identity.display())
        } else {
            format!(
                "created identity {} (signing key {})",
                identity.display(),
                crate::repo::keys::signing_key_path(identity).display()
            )
        };
        eprintln!(
            "first run of profile {}: {keys}, created agent key {} and repository {}",
            profile.name,
            agent_key.display(),
            ctx.repo_url()?
        );
    }
    Ok(())
}

/// What a backup that storage failed says: only a backup has a next run to
/// resume from what it uploaded.
const RESUMES: &str = "the next backup resumes from what was uploaded";

pub fn run(ctx: &Context, args: BackupArgs) -> Result<Exit> {
    auto_init(ctx)?;
    let profile = ctx.profile.as_ref();
    let plan = JobPlan::backup(
        profile,
        BackupOverrides {
            paths: args.paths,
            exclude: args.exclude,
            host: args.host,
            compression: args.compression,
            time: args.time,
        },
        ctx.lock_wait,
    );
    if plan.backup.sources.is_empty() {
        return Err(anyhow!(
            "nothing to back up: name paths, or use --profile with sources"
        ));
    }
    let repo = ctx
        .open_agent()
        .map_err(|e| super::if_gave_up(e, RESUMES))?;
    // Installed once keys are loaded: a passphrase prompt stays killable.
    let cancel = super::signal::Cancel::install()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let bar = ctx.progress();
    let began = std::time::Instant::now();
    let report = JobReport::new(&plan.backup.profile, jiff::Timestamp::now());
    let done = job::execute(
        &repo,
        &mut catalog,
        &plan,
        &bar,
        cancel.flag(),
        report,
        began,
    );
    bar.finish();
    let Some(report) = &done.backup else {
        let e = match done.error {
            Some(JobError::Backup(e)) => anyhow::Error::from(e),
            Some(other) => anyhow::Error::from(other),
            None => anyhow!("the backup ended without a report"),
        };
        return Err(cancel.explain(
            "backup",
            super::if_gave_up(e, RESUMES),
            "the lock is released and no spool file is left; the next backup reuses what was uploaded",
        ));
    };
    print_backup(ctx, report)?;
    if let Some(JobError::AfterBackup { short, step }) = done.error {
        return Err(copy_failed(&cancel, short, *step));
    }
    if let Some((copied, location)) = &done.copied
        && !ctx.quiet
        && !ctx.json
    {
        println!(
            "copied {} new objects ({}) to {}",
            copied.objects_copied,
            human(copied.bytes_copied),
            location
        );
    }
    if report.skipped.is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!(
            "coffer: backup finished but {} could not be read (exit code 3)",
            text::count(report.skipped.len() as u64, "item", "items")
        );
        Ok(Exit::Partial)
    }
}

/// The profile's copy (`copy_to`) did not finish: the snapshot is saved.
fn copy_failed(cancel: &super::signal::Cancel, short: String, step: StepError) -> anyhow::Error {
    match step {
        StepError::CopyTarget(e) => e.into(),
        StepError::Copy { to, source } if matches!(source, crate::Error::Interrupted) => cancel
            .explain(
                "backup",
                source.into(),
                &format!(
                    "snapshot {short} is saved; the copy to {to} stopped: run `coffer copy --to {to}` to finish it"
                ),
            ),
        StepError::Copy { to, source } => anyhow!(
            "snapshot {short} is saved, but the copy to {to} failed: {source}; run `coffer copy --to {to}` to retry"
        ),
        other => anyhow!("snapshot {short} is saved, but {other}"),
    }
}

fn print_backup(ctx: &Context, report: &crate::engine::backup::BackupReport) -> Result<()> {
    let s = &report.summary;
    if ctx.json {
        let skipped: Vec<SkippedRow> = report
            .skipped
            .iter()
            .map(|(path, error)| SkippedRow { path, error })
            .collect();
        print_json(&BackupJson {
            snapshot: report.snapshot.to_hex(),
            files: s.files,
            dirs: s.dirs,
            bytes: s.bytes,
            files_new: s.files_new,
            files_changed: s.files_changed,
            files_unchanged: s.files_unchanged,
            hardlinks: report.seen.hardlinks,
            symlinks: report.seen.symlinks,
            special: report.seen.other,
            sockets: report.seen.sockets,
            data_added: s.data_added,
            stored_added: s.stored_added,
            packs_added: report.packs_added,
            skipped,
            changed_during_backup: &report.changed,
            warnings: &report.warnings,
            seconds: s.seconds,
        })?;
    } else if !ctx.quiet {
        println!(
            "snapshot {} saved: {}; added {} of data, {} stored, in {:.1}s",
            report.snapshot.short(),
            seen_text(s, &report.seen, report.skipped.len() as u64),
            human(s.data_added),
            human(s.stored_added),
            s.seconds
        );
    }
    for w in &report.warnings {
        super::warn(w);
    }
    for path in &report.changed {
        eprintln!(
            "coffer: warning: {} changed while it was read; stored as read, it will be read again next time",
            text::name_str(path)
        );
    }
    for (path, err) in &report.skipped {
        eprintln!(
            "coffer: skipped {}: {}",
            text::name_str(path),
            text::message(err)
        );
    }
    Ok(())
}

/// Everything a backup met, in words, so the counts add up: files (with
/// what became of them), folders, symlinks, special files, sockets left
/// out, items that could not be read; the last four only when there are any.
fn seen_text(s: &Summary, seen: &Seen, unreadable: u64) -> String {
    let mut how = vec![
        format!("{} new", s.files_new),
        format!("{} changed", s.files_changed),
        format!("{} unchanged", s.files_unchanged),
    ];
    if seen.hardlinks > 0 {
        how.push(text::count(seen.hardlinks, "hard link", "hard links"));
    }
    let mut parts = vec![
        format!(
            "{} ({}; {})",
            text::count(s.files, "file", "files"),
            human(s.bytes),
            how.join(", ")
        ),
        text::count(s.dirs, "folder", "folders"),
    ];
    let optional = [
        (seen.symlinks, "symlink", "symlinks"),
        (seen.other, "special file", "special files"),
        (seen.sockets, "socket left out", "sockets left out"),
        (unreadable, "item not readable", "items not readable"),
    ];
    for (n, one, many) in optional {
        if n > 0 {
            parts.push(text::count(n, one, many));
        }
    }
    parts.join(", ")
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_line_names_everything_seen_with_plurals() {
        let s = Summary {
            files: 45008,
            dirs: 1,
            bytes: 2048,
            files_new: 45002,
            ..Summary::default()
        };
        let seen = Seen {
            hardlinks: 6,
            symlinks: 1,
            other: 2,
            sockets: 0,
        };
        assert_eq!(
            seen_text(&s, &seen, 1),
            "45008 files (2.0 KiB; 45002 new, 0 changed, 0 unchanged, 6 hard links), 1 folder, 1 symlink, 2 special files, 1 item not readable"
        );
        let one = Summary {
            files: 1,
            files_unchanged: 1,
            ..Summary::default()
        };
        assert_eq!(
            seen_text(&one, &Seen::default(), 0),
            "1 file (0 B; 0 new, 0 changed, 1 unchanged), 0 folders"
        );
    }
}
