//! `coffer repair index|snapshots|keyring`.

use super::{Context, Exit, print_json, warn};
use crate::engine::repair::{repair_index, repair_keyring, repair_snapshots};
use crate::repo::keys::AgentKey;
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    /// Rebuild index objects from the packs' trailers (agent key is enough).
    #[command(after_help = super::help::REPAIR_INDEX)]
    Index(RepairArgs),
    /// Write a repaired copy of each damaged snapshot (operator).
    #[command(after_help = super::help::REPAIR_SNAPSHOTS)]
    Snapshots(SnapshotsArgs),
    /// Write the keyring and its copy again from the agent key file.
    #[command(after_help = super::help::REPAIR_KEYRING)]
    Keyring(RepairArgs),
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Say what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Say what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Delete each damaged snapshot once its repaired copy is stored.
    #[arg(long)]
    forget: bool,
}

pub fn run(ctx: &Context, cmd: RepairCommand) -> Result<Exit> {
    match cmd {
        RepairCommand::Index(a) => index(ctx, a),
        RepairCommand::Snapshots(a) => snapshots(ctx, a),
        RepairCommand::Keyring(a) => keyring(ctx, a),
    }
}

fn index(ctx: &Context, a: RepairArgs) -> Result<Exit> {
    let repo = ctx.open_agent()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let cancel = super::signal::Cancel::install()?;
    let r = repair_index(&repo, &mut catalog, a.dry_run, ctx.lock_wait, cancel.flag()).map_err(
        |e| {
            cancel.explain(
                "repair index",
                e.into(),
                "the index is as it was, plus any index object already written; run it again",
            )
        },
    )?;
    if ctx.json {
        print_json(&r)?;
    } else if !ctx.quiet {
        let verb = if r.dry_run { "would index" } else { "indexed" };
        println!(
            "repair index{}: {verb} {} from their trailers in {}; {} {}",
            if r.dry_run { " (dry run)" } else { "" },
            super::text::count(r.packs_indexed as u64, "pack", "packs"),
            super::text::count(
                r.indexes_written as u64,
                "new index object",
                "new index objects"
            ),
            super::text::count(
                r.indexes_removed as u64,
                "unreadable index object",
                "unreadable index objects"
            ),
            if r.dry_run {
                "would be removed"
            } else {
                "removed"
            }
        );
        if r.packs_missing > 0 {
            println!(
                "{} the index lists missing from storage: `coffer check` names the snapshots that lose data; the next backup stores again what the sources still hold",
                super::text::count(r.packs_missing as u64, "pack", "packs")
            );
        }
    }
    for (key, why) in &r.indexes_unreadable {
        warn(&format!("{key} can not be read: {why}"));
    }
    for (key, why) in &r.packs_unreadable {
        warn(&format!(
            "{key}: its trailer can not be read ({why}); what only it holds is lost"
        ));
    }
    Ok(Exit::Success)
}

fn keyring(ctx: &Context, a: RepairArgs) -> Result<Exit> {
    let Some(path) = &ctx.agent_key else {
        return Err(super::usage(
            "repair keyring writes the keyring from the agent key file: pass --agent-key FILE (or COFFER_AGENT_KEY)",
        ));
    };
    let agent = AgentKey::load(path)?;
    let repo = crate::repo::Repository::open_agent(ctx.store()?, &agent)?;
    let written = repair_keyring(&repo, &agent, a.dry_run, ctx.lock_wait)?;
    if ctx.json {
        print_json(&super::json::KeyringRepaired {
            dry_run: a.dry_run,
            written: &written,
        })?;
    } else if !ctx.quiet {
        println!(
            "repair keyring{}: {} {} from {}",
            if a.dry_run { " (dry run)" } else { "" },
            if a.dry_run { "would write" } else { "wrote" },
            written.join(" and "),
            path.display()
        );
    }
    Ok(Exit::Success)
}

fn snapshots(ctx: &Context, a: SnapshotsArgs) -> Result<Exit> {
    let repo = ctx.open_operator()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let cancel = super::signal::Cancel::install()?;
    let bar = ctx.progress();
    let r = repair_snapshots(
        &repo,
        &mut catalog,
        a.forget,
        a.dry_run,
        ctx.lock_wait,
        &bar,
        cancel.flag(),
    )
    .map_err(|e| {
        cancel.explain(
            "repair snapshots",
            e.into(),
            "no snapshot was written or deleted; run it again",
        )
    })?;
    bar.finish();
    for w in &r.warnings {
        warn(w);
    }
    if ctx.json {
        print_json(&r)?;
        return Ok(Exit::Success);
    }
    if r.snapshots.is_empty() {
        if !ctx.quiet {
            println!("repair snapshots: no snapshot is damaged");
        }
        return Ok(Exit::Success);
    }
    for s in &r.snapshots {
        let short = &s.id[..8.min(s.id.len())];
        println!(
            "snapshot {short} ({}, {} / {}): {}",
            crate::time::human(s.time),
            s.host,
            s.profile,
            s.damage
        );
        match (&s.new_id, r.dry_run) {
            (_, true) => println!(
                "  would write a repaired snapshot: {} from older snapshots, {} left out",
                super::text::count(s.replaced.len() as u64, "file", "files"),
                s.lost.len()
            ),
            (Some(id), false) => println!(
                "  repaired as {}{}: {} from older snapshots, {} left out",
                &id[..8.min(id.len())],
                if s.forgotten {
                    "; the damaged original is forgotten"
                } else {
                    "; the damaged original stays (--forget deletes it)"
                },
                super::text::count(s.replaced.len() as u64, "file", "files"),
                s.lost.len()
            ),
            (None, false) => {}
        }
        for (path, from) in &s.replaced {
            println!("  from {from}: {path}");
        }
        for path in &s.lost {
            println!("  lost: {path}");
        }
        for range in &s.unreadable_ranges {
            println!("  file list unreadable {range}");
        }
    }
    Ok(Exit::Success)
}
