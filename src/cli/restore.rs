//! `coffer ls` and `coffer restore`.

use super::{Context, Exit, print_json};
use crate::engine::restore::{RestoreOptions, restore as run_restore};
use crate::engine::{for_each_entry, sync_index, sync_snapshots};
use crate::repo::Repository;
use crate::repo::tree::EntryKind;
use anyhow::{Context as _, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest`.
    snapshot: String,
    /// Only entries at or below this path.
    path: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest`.
    snapshot: String,
    /// Folder to restore into; entries keep their full path below it.
    #[arg(long)]
    target: PathBuf,
    /// Restore only entries matching this glob (and what is below them). Repeatable.
    #[arg(long)]
    include: Vec<String>,
}

fn rfc3339_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    .unwrap_or_default()
}

pub fn ls(ctx: &Context, args: LsArgs) -> Result<Exit> {
    let repo = ctx.open_operator()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let blobs = sync_index(&repo, &mut catalog)?;
    let snaps = sync_snapshots(&repo, &mut catalog)?;
    let (_, snap) = Repository::resolve_snapshot(&snaps, &args.snapshot)?;
    let prefix = args
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').as_bytes().to_vec());
    let mut rows = Vec::new();
    for_each_entry(&repo, &blobs, snap, |e| {
        let under = prefix.as_ref().is_none_or(|p| {
            p.is_empty()
                || e.path == *p
                || (e.path.starts_with(p) && e.path.get(p.len()) == Some(&b'/'))
        });
        if under {
            rows.push(e);
        }
        Ok(())
    })?;
    if ctx.json {
        let v: Vec<_> = rows
            .iter()
            .map(|e| {
                serde_json::json!({"path": e.path_display(), "type": e.kind.name(), "size": e.size,
                    "mode": e.mode, "mtime": rfc3339_ns(e.mtime)})
            })
            .collect();
        print_json(&v)?;
    } else {
        for e in rows {
            let suffix = match (&e.kind, &e.target) {
                (EntryKind::Symlink, Some(t)) => format!(" -> {}", String::from_utf8_lossy(t)),
                (EntryKind::Hardlink, Some(t)) => format!(" => /{}", String::from_utf8_lossy(t)),
                (EntryKind::Dir, _) => "/".into(),
                _ => String::new(),
            };
            println!(
                "{:<8} {:>12} {}  /{}{}",
                e.kind.name(),
                e.size,
                rfc3339_ns(e.mtime),
                e.path_display(),
                suffix
            );
        }
    }
    Ok(Exit::Success)
}

pub fn restore(ctx: &Context, args: RestoreArgs) -> Result<Exit> {
    let repo = ctx.open_operator()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let blobs = sync_index(&repo, &mut catalog)?;
    let snaps = sync_snapshots(&repo, &mut catalog)?;
    let (id, snap) = Repository::resolve_snapshot(&snaps, &args.snapshot)?;
    let bar = ctx.progress();
    let opts = RestoreOptions {
        target: args.target.clone(),
        include: args.include.clone(),
    };
    let report = run_restore(&repo, &blobs, snap, &opts, &bar)
        .with_context(|| format!("restore of snapshot {}", id.short()))?;
    bar.finish();
    let _ = catalog.audit(
        &whoami(),
        "restore",
        &format!(
            "snapshot {} to {} include {:?}: {} files, {} failed",
            id.short(),
            args.target.display(),
            args.include,
            report.files,
            report.failed.len()
        ),
    );
    if ctx.json {
        print_json(&serde_json::json!({
            "snapshot": id.to_hex(), "files": report.files, "dirs": report.dirs, "links": report.links,
            "bytes": report.bytes,
            "failed": report.failed.iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "warnings": report.warnings,
        }))?;
    } else if !ctx.quiet {
        println!(
            "restored snapshot {} to {}: {} files ({}), {} folders, {} links",
            id.short(),
            args.target.display(),
            report.files,
            super::backup::human(report.bytes),
            report.dirs,
            report.links
        );
    }
    for w in &report.warnings {
        eprintln!("coffer: warning: {w}");
    }
    for (path, err) in &report.failed {
        eprintln!("coffer: could not restore /{path}: {err}");
    }
    if report.failed.is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!(
            "coffer: error: {} entr{} of snapshot {} could not be restored (listed above); the others were restored. If the reasons name the repository's data, `coffer check --read-data` tells what is damaged.",
            report.failed.len(),
            if report.failed.len() == 1 { "y" } else { "ies" },
            id.short()
        );
        Ok(Exit::Failure)
    }
}

pub fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid {}", unsafe { libc::getuid() })
        })
}
