//! `coffer snapshots`, `coffer check`, `coffer catalog …`.

use super::{Context, Exit, print_json, text};
use crate::engine::check::check as run_check;
use crate::engine::rebuild::rebuild;
use crate::engine::{SnapshotState, is_suspect, snapshot_states, suspicion, sync};
use crate::repo::ids::SnapshotId;
use crate::repo::snapshot::Snapshot;
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
    #[command(after_help = super::help::CATALOG_REBUILD)]
    Rebuild,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: super::select::FilterArgs,
}

pub fn snapshots(ctx: &Context, args: SnapshotsArgs) -> Result<Exit> {
    let repo = ctx.open_any()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let synced = sync(&repo, &mut catalog)?;
    for w in &synced.warnings() {
        super::warn(w);
    }
    let filter = args.filter.filter();
    let snaps: Vec<_> = synced
        .snaps
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    let states = snapshot_states(&repo, &catalog, &synced.blobs, &synced.health, &snaps)?;
    if ctx.json {
        let v: Vec<_> = snaps
            .iter()
            .zip(&states)
            .map(|((id, s), state)| super::json::SnapshotRow {
                bytes: s.summary.bytes,
                damage: state.1.as_deref(),
                data_added: s.summary.data_added,
                dirs: s.summary.dirs,
                files: s.summary.files,
                host: &s.host,
                id: id.to_hex(),
                paths: &s.paths,
                profile: &s.profile,
                short_id: id.short(),
                state: state.0,
                stored: s.stored.map(crate::time::rfc3339_secs),
                suspect: is_suspect(s),
                time: crate::time::rfc3339_secs(s.time),
                tree_blobs: s.tree.len(),
            })
            .collect();
        print_json(&v)?;
        return Ok(Exit::Success);
    }
    if snaps.is_empty() {
        println!(
            "no snapshots yet{}",
            if filter.matches_all() {
                ""
            } else {
                " that match"
            }
        );
        return Ok(Exit::Success);
    }
    let tz = crate::time::people_zone();
    let zone = tz.iana_name().unwrap_or("local").to_string();
    println!(
        "{:<9} {:<25} {:<16} {:<12} {:>8} {:>10} {:<9} paths",
        "id",
        format!("time ({zone})"),
        "host",
        "profile",
        "files",
        "size",
        "state"
    );
    for ((id, s), state) in snaps.iter().zip(&states) {
        let t = crate::time::human_in(s.time, &tz);
        println!(
            "{:<9} {:<25} {:<16} {:<12} {:>8} {:>10} {:<9} {}",
            id.short(),
            t,
            text::name_str(&s.host),
            text::name_str(&s.profile),
            s.summary.files,
            super::backup::human(s.summary.bytes),
            state_text(state.0, is_suspect(s)),
            s.paths
                .iter()
                .map(|p| text::name_str(p))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let damaged: Vec<_> = snaps
        .iter()
        .zip(&states)
        .filter(|(_, s)| s.0 == SnapshotState::Damaged)
        .collect();
    if !damaged.is_empty() {
        println!(
            "{} damaged: `coffer check` names what is lost; restore --fallback takes files from older snapshots; `coffer repair snapshots` writes repaired copies",
            damaged.len()
        );
        for ((id, _), (_, why)) in damaged {
            println!("  {}: {}", id.short(), why.as_deref().unwrap_or(""));
        }
    }
    print_suspect(&snaps);
    Ok(Exit::Success)
}

/// Below the table: the suspect snapshots, each with why.
fn print_suspect(snaps: &[(SnapshotId, Snapshot)]) {
    let suspect: Vec<_> = snaps
        .iter()
        .filter_map(|(id, s)| Some((id, suspicion(s)?)))
        .collect();
    if suspect.is_empty() {
        return;
    }
    println!(
        "{} suspect: each claims a time more than {} later than storage wrote it (planted, or a clock running ahead); `latest` and retention pass them over; choose one by id only if you trust it",
        suspect.len(),
        crate::engine::forget::format_duration(crate::engine::CLOCK_SKEW)
    );
    for (id, why) in suspect {
        println!("  {}: {why}", id.short());
    }
}

/// The state column: `suspect` instead of complete or verified (a damaged
/// one stays `damaged`: it is listed under both).
fn state_text(state: SnapshotState, suspect: bool) -> String {
    match state {
        SnapshotState::Complete | SnapshotState::Verified if suspect => "suspect".into(),
        _ => serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
    }
}

pub fn check(ctx: &Context, args: CheckArgs) -> Result<Exit> {
    let repo = ctx.open_any()?;
    let bar = ctx.progress();
    let report = run_check(&repo, args.read_data, &bar)?;
    bar.finish();
    if !report.lock_gaps.is_empty() {
        // Storage's word over the ledger's: the next backup reads these
        // locks afresh and lengthens them.
        let gaps: Vec<(String, jiff::Timestamp)> = report
            .lock_gaps
            .iter()
            .map(|g| (g.object.clone(), g.ends))
            .collect();
        ctx.open_catalog(&repo)?
            .correct_locks(crate::catalog::OWN_LOCKS, &gaps)?;
    }
    if args.read_data && repo.keys.is_operator() {
        // Every blob was decrypted: snapshots no problem names are verified.
        let mut catalog = ctx.open_catalog(&repo)?;
        catalog.set_verified(&report.sound)?;
    }
    for key in &report.damage_recorded {
        if !ctx.json {
            eprintln!(
                "coffer: recorded the damage found in {key}: later backups store that data again, and every command shows the snapshots as damaged"
            );
        }
    }
    if ctx.json {
        print_json(&report)?;
    } else {
        for n in report.notes.iter().filter(|_| !ctx.quiet) {
            println!("note: {}", text::message(n));
        }
        for g in &report.lock_gaps {
            println!(
                "LOCK GAP {}: {}",
                text::name_str(&g.object),
                text::message(&g.problem)
            );
        }
        for p in &report.problems {
            println!(
                "DAMAGED {}: {}",
                text::name_str(&p.object),
                text::message(&p.problem)
            );
            if !p.snapshots.is_empty() {
                println!("  affects snapshots: {}", p.snapshots.join(", "));
            }
            for f in &p.files {
                println!("  affects file: {}", text::name_str(f));
            }
        }
        for s in &report.suspect {
            println!(
                "SUSPECT {}: {s}; `latest` and retention pass it over (planted, or its writer's clock runs ahead)",
                s.object
            );
        }
        if !ctx.quiet {
            println!(
                "checked {}, {}, {}{}: {}{}",
                super::text::count(report.snapshots as u64, "snapshot", "snapshots"),
                super::text::count(report.packs as u64, "pack", "packs"),
                super::text::count(report.blobs as u64, "blob", "blobs"),
                if args.read_data {
                    format!(
                        ", read {}",
                        super::text::count(report.packs_read as u64, "pack", "packs")
                    )
                } else {
                    String::new()
                },
                if report.ok {
                    "no problems found"
                } else if report.problems.is_empty() {
                    "LOCK GAPS FOUND"
                } else {
                    "DAMAGE FOUND"
                },
                match report.suspect.len() {
                    0 => String::new(),
                    n => format!(
                        " ({})",
                        super::text::count(n as u64, "suspect snapshot", "suspect snapshots")
                    ),
                }
            );
        }
    }
    if report.ok {
        Ok(Exit::Success)
    } else if report.problems.is_empty() {
        eprintln!(
            "coffer: {} objects history needs are locked for less time than it needs them (see above); the next backup lengthens their locks",
            report.lock_gaps.len()
        );
        Ok(Exit::Failure)
    } else {
        for p in &report.problems {
            eprintln!(
                "coffer: damaged {}: {}{}",
                text::name_str(&p.object),
                text::message(&p.problem),
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
            for w in &r.warnings {
                super::warn(w);
            }
            if ctx.json {
                print_json(&super::json::Rebuilt {
                    blobs: r.blobs,
                    catalog: &path,
                    files: r.files,
                    snapshots: r.snapshots,
                })?;
            } else if !ctx.quiet {
                println!(
                    "catalog {} rebuilt: {}, {}, {}{}",
                    text::path(&path),
                    super::text::count(r.blobs as u64, "blob", "blobs"),
                    super::text::count(r.snapshots as u64, "snapshot", "snapshots"),
                    super::text::count(r.files as u64, "cached file", "cached files"),
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
