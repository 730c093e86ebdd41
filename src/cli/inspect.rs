//! `coffer snapshots`, `coffer check`, `coffer catalog …`.

use super::{Context, Exit, print_json};
use crate::engine::check::check as run_check;
use crate::engine::rebuild::rebuild;
use crate::engine::sync_snapshots;
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Download every pack and verify it (with the identity: every blob).
    #[arg(long)]
    read_data: bool,
}

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Recreate the catalog from the repository.
    Rebuild,
}

pub fn snapshots(ctx: &Context) -> Result<Exit> {
    let repo = ctx.open_any()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let snaps = sync_snapshots(&repo, &mut catalog)?;
    if ctx.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|(id, s)| {
                serde_json::json!({
                    "id": id.to_hex(), "short_id": id.short(),
                    "time": s.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "host": s.host, "profile": s.profile, "paths": s.paths,
                    "files": s.summary.files, "dirs": s.summary.dirs, "bytes": s.summary.bytes,
                    "data_added": s.summary.data_added, "tree_blobs": s.tree.len(),
                })
            })
            .collect();
        print_json(&v)?;
        return Ok(Exit::Success);
    }
    if snaps.is_empty() {
        println!("no snapshots yet");
        return Ok(Exit::Success);
    }
    println!(
        "{:<9} {:<20} {:<16} {:<12} {:>8} {:>10}  paths",
        "id", "time (UTC)", "host", "profile", "files", "size"
    );
    for (id, s) in &snaps {
        println!(
            "{:<9} {:<20} {:<16} {:<12} {:>8} {:>10}  {}",
            id.short(),
            s.time.format("%Y-%m-%d %H:%M:%S"),
            s.host,
            s.profile,
            s.summary.files,
            super::backup::human(s.summary.bytes),
            s.paths.join(", ")
        );
    }
    Ok(Exit::Success)
}

pub fn check(ctx: &Context, args: CheckArgs) -> Result<Exit> {
    let repo = ctx.open_any()?;
    let bar = ctx.progress();
    let report = run_check(&repo, args.read_data, &bar)?;
    bar.finish();
    if ctx.json {
        print_json(&report)?;
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        for p in &report.problems {
            println!("DAMAGED {}: {}", p.object, p.problem);
            if !p.snapshots.is_empty() {
                println!("  affects snapshots: {}", p.snapshots.join(", "));
            }
            for f in &p.files {
                println!("  affects file: {f}");
            }
        }
        println!(
            "checked {} snapshots, {} packs, {} blobs{}: {}",
            report.snapshots,
            report.packs,
            report.blobs,
            if args.read_data {
                format!(", read {} packs", report.packs_read)
            } else {
                String::new()
            },
            if report.ok {
                "no problems found"
            } else {
                "DAMAGE FOUND"
            }
        );
    }
    if report.ok {
        Ok(Exit::Success)
    } else {
        for p in &report.problems {
            eprintln!(
                "coffer: damaged {}: {}{}",
                p.object,
                p.problem,
                if p.snapshots.is_empty() {
                    String::new()
                } else {
                    format!(" (snapshots {})", p.snapshots.join(", "))
                }
            );
        }
        Ok(Exit::Damaged)
    }
}

pub fn catalog(ctx: &Context, cmd: CatalogCommand) -> Result<Exit> {
    match cmd {
        CatalogCommand::Rebuild => {
            let repo = ctx.open_any()?;
            let path = ctx.catalog_path(&repo);
            let bar = ctx.progress();
            let r = rebuild(&repo, &path, &bar)?;
            bar.finish();
            if ctx.json {
                print_json(
                    &serde_json::json!({"catalog": path, "blobs": r.blobs, "snapshots": r.snapshots, "files": r.files}),
                )?;
            } else if !ctx.quiet {
                println!(
                    "catalog {} rebuilt: {} blobs, {} snapshots, {} cached files{}",
                    path.display(),
                    r.blobs,
                    r.snapshots,
                    r.files,
                    if repo.keys.is_operator() {
                        ""
                    } else {
                        " (file cache needs the identity)"
                    }
                );
            }
            Ok(Exit::Success)
        }
    }
}
