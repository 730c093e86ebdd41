//! `coffer erase`: remove files from every snapshot and their data from
//! storage (a data subject's erasure request).

use super::backup::human;
use super::{Context, Exit, print_json, text};
use crate::engine::erase::{EraseOptions, EraseReport, erase};
use anyhow::{Result, anyhow};
use clap::Args;

#[derive(Args, Debug)]
pub struct EraseArgs {
    /// Erase the entries matching this glob over snapshot paths (no leading
    /// '/'; `*` stops at '/', `**` does not), and what is below them. Repeatable.
    #[arg(long = "path", required = true, value_name = "GLOB")]
    paths: Vec<String>,
    /// List what would be removed; change nothing (takes no lock).
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &Context, args: EraseArgs) -> Result<Exit> {
    let repo = ctx.open_operator()?;
    // Installed once keys are loaded: a passphrase prompt stays killable.
    let cancel = super::signal::Cancel::install()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let opts = EraseOptions {
        patterns: args.paths.clone(),
        dry_run: args.dry_run,
        lock_wait: ctx.lock_wait,
    };
    let bar = if args.dry_run {
        super::progress::Bar::new(false)
    } else {
        ctx.progress()
    };
    let result = erase(&repo, &mut catalog, &opts, &bar, cancel.flag());
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if !args.dry_run {
                super::audit::record(
                    ctx,
                    &repo,
                    &catalog,
                    "erase",
                    &format!("paths {:?}: failed: {e}", args.paths),
                );
            }
            return Err(cancel.explain(
                "erase",
                anyhow!(e).context("erase"),
                "the lock is released and no spool file is left; every snapshot is whole (old and new side by side until it finishes): run the same erase again to finish",
            ));
        }
    };
    if !args.dry_run {
        super::audit::record(ctx, &repo, &catalog, "erase", &detail(&report));
    }
    if ctx.json {
        print_json(&report)?;
    } else if !ctx.quiet {
        print(&report);
    }
    if report.still_stored > 0 {
        eprintln!(
            "coffer: warning: {} that held erased data still stored (the storage's clock is ahead of this machine's, so their packs looked new); run the same erase again",
            super::text::count(report.still_stored as u64, "blob", "blobs")
        );
    }
    Ok(Exit::Success)
}

/// The audit record: what was asked and what it did (counts, not the paths).
fn detail(r: &EraseReport) -> String {
    format!(
        "paths {:?}: {} rewritten, {} removed ({}), {} re-stored for {}, {} freed",
        r.patterns,
        super::text::count(r.snapshots.len() as u64, "snapshot", "snapshots"),
        super::text::count(r.entries_removed, "entry", "entries"),
        super::text::count(r.paths.len() as u64, "distinct path", "distinct paths"),
        super::text::count(r.bundles_restored as u64, "bundle", "bundles"),
        super::text::count(r.files_restored, "kept file", "kept files"),
        human(r.bytes_freed)
    )
}

fn print(r: &EraseReport) {
    let verb = if r.dry_run { "would lose" } else { "lost" };
    for s in &r.snapshots {
        let short = &s.id[..8.min(s.id.len())];
        let then = crate::time::human(s.time);
        let what = if s.entries_removed > 0 {
            format!(
                "{verb} {} ({}, {})",
                super::text::count(s.entries_removed, "entry", "entries"),
                super::text::count(s.files_removed, "file", "files"),
                human(s.bytes_removed)
            )
        } else {
            format!("{verb} nothing, but shares a bundle with erased files")
        };
        let into = match (&s.new_id, s.action) {
            (Some(n), "finished") => {
                format!("; already rewritten as {} by an earlier erase", &n[..8])
            }
            (Some(n), _) if s.files_restored > 0 => format!(
                "; {} re-stored; now {}",
                super::text::count(s.files_restored, "kept file", "kept files"),
                &n[..8]
            ),
            (Some(n), _) => format!("; now {}", &n[..8]),
            (None, _) => String::new(),
        };
        println!(
            "snapshot {short} ({then}, {} {}) {what}{into}",
            text::name_str(&s.host),
            text::name_str(&s.profile)
        );
    }
    for p in &r.paths {
        println!(
            "{} /{}",
            if r.dry_run { "would erase" } else { "erased" },
            text::name_str(p)
        );
    }
    if r.dry_run {
        println!(
            "dry run: {} would be rewritten, {} removed, {} re-stored; nothing changed",
            super::text::count(r.snapshots.len() as u64, "snapshot", "snapshots"),
            super::text::count(r.entries_removed, "entry", "entries"),
            super::text::count(r.bundles_restored as u64, "bundle", "bundles")
        );
    } else {
        let (deleted, repacked) = r
            .prune
            .as_ref()
            .map(|p| (p.packs_deleted, p.packs_repacked))
            .unwrap_or_default();
        println!(
            "{} rewritten, {} removed, {} re-stored; {} freed ({} deleted, {repacked} repacked)",
            super::text::count(r.snapshots.len() as u64, "snapshot", "snapshots"),
            super::text::count(r.entries_removed, "entry", "entries"),
            super::text::count(r.bundles_restored as u64, "bundle", "bundles"),
            human(r.bytes_freed),
            super::text::count(deleted as u64, "pack", "packs")
        );
    }
    if r.snapshots.is_empty() {
        println!("no snapshot holds a path matching {:?}", r.patterns);
    }
}
