//! `coffer undelete --as-of TIME`: the repository as it stood at TIME
//! becomes the current state again (the plan and its rules:
//! [`crate::engine::undelete`]).
//!
//! The operator's: it opens the repository as of TIME with the identity,
//! which proves the state brought back is the operator's repository and
//! names the snapshots it restores. The agent key is refused: a stolen
//! server must not be able to roll history back to a time of its choosing
//! (hiding every snapshot made since), and its credentials should not
//! hold `s3:DeleteObjectVersion`, which removing delete markers needs.

use super::json::{UndeleteFailure, Undeleted};
use super::{Context, Exit, print_json, text};
use crate::engine::undelete::{Plan, Revert, Spare, execute, plan};
use crate::repo::Repository;
use crate::repo::ids::SnapshotId;
use crate::repo::lock::{LOCK_KEY, LOCKS_PREFIX, WriterLock};
use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use jiff::Timestamp;

/// Where packs are (counted in the text output, not listed).
const PACK_PREFIX: &str = "data/";

#[derive(Args, Debug)]
pub struct UndeleteArgs {
    /// Print what would be restored and hidden; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What undelete never touches, or never hides (see the engine's docs):
/// the writer locks, the storage probes and the record of what they found
/// (`capabilities`: the writer that undelete is probes again when it is
/// missing, and its own finding is as good as the old one).
fn spare() -> Spare {
    Spare {
        untouched: [
            LOCK_KEY,
            LOCKS_PREFIX,
            crate::repo::caps::PROBE_PREFIX,
            crate::repo::caps::CAPS_KEY,
        ]
        .map(String::from)
        .to_vec(),
        never_hidden: vec![crate::repo::audit::PREFIX.to_string()],
    }
}

pub fn run(ctx: &Context, args: UndeleteArgs) -> Result<Exit> {
    let at = ctx
        .as_of
        .ok_or_else(|| anyhow!("undelete needs --as-of TIME"))?;
    if ctx.identity.is_none() {
        return Err(anyhow!(
            "undelete is the operator's: pass --identity FILE or set COFFER_IDENTITY (the agent key can not roll history back)"
        ));
    }
    // The repository as it stood then, opened with the identity.
    let past = ctx
        .open_operator()
        .context("the repository as of then can not be opened")?;
    let store = ctx.current_store()?;
    // What undelete writes (the writer lock, a version copied back) is
    // locked as every writer's objects are: a copy is a new version.
    store.set_write_lock(past.config.object_lock.map(|l| l.write_lock()))?;
    if args.dry_run {
        let plan = plan(&store.list_versions("")?, at, &spare());
        show(ctx, &past, at, &plan, None)?;
        return Ok(Exit::Success);
    }
    let mut lock = WriterLock::take(&store, &past.keys, past.config.pack_size, ctx.lock_wait)?;
    // Listed under the lock: no writer changes it between plan and execution.
    let plan = plan(&store.list_versions("")?, at, &spare());
    lock.confirm()?;
    let done = execute(&store, &plan);
    // What was done is shown whether or not the lock goes back cleanly.
    let released = lock.release();
    show(ctx, &past, at, &plan, Some(&done))?;
    released?;
    record(ctx, &plan, at);
    if done.failed.is_empty() {
        Ok(Exit::Success)
    } else {
        Ok(Exit::Failure)
    }
}

/// Records the undelete in the audit log of the repository as it is now
/// (the state just brought back); a failure is a warning, as for every
/// operator action.
fn record(ctx: &Context, plan: &Plan, at: Timestamp) {
    let detail = format!(
        "as of {}: restored {}, hid {}",
        crate::time::rfc3339_secs(at),
        plan.restore.len(),
        plan.hide.len()
    );
    let opened = ctx
        .identity
        .as_deref()
        .ok_or_else(|| anyhow!("no identity"))
        .and_then(|path| Ok((ctx.load_identity(path)?, ctx.current_store()?)))
        .and_then(|(identity, store)| Ok(Repository::open_operator(store, identity)?));
    match opened {
        Ok(now) => match ctx.open_catalog(&now) {
            Ok(catalog) => super::audit::record(ctx, &now, &catalog, "undelete", &detail),
            Err(e) => super::warn(&format!(
                "the undelete was not recorded in the audit log: {}",
                super::render_error(&e)
            )),
        },
        Err(e) => super::warn(&format!(
            "the repository does not open after the undelete, which was not recorded: {}",
            super::render_error(&e)
        )),
    }
}

/// Prints the plan, and what was done when it ran.
fn show(
    ctx: &Context,
    past: &Repository,
    at: Timestamp,
    plan: &Plan,
    done: Option<&crate::engine::undelete::Done>,
) -> Result<()> {
    if ctx.json {
        return print_json(&Undeleted {
            as_of: crate::time::rfc3339_secs(at),
            dry_run: done.is_none(),
            failed: done
                .map(|d| {
                    d.failed
                        .iter()
                        .map(|(key, reason)| UndeleteFailure {
                            key: key.clone(),
                            reason: reason.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            hidden: done.map_or(0, |d| d.hidden),
            plan: serde_json::to_value(plan)?,
            restored: done.map_or(0, |d| d.restored),
        });
    }
    let when = crate::time::human(at);
    // Packs are many and say nothing one by one: counted, not listed.
    let (packs, others): (Vec<_>, Vec<_>) = plan
        .restore
        .iter()
        .partition(|r| r.key.starts_with(PACK_PREFIX));
    if !packs.is_empty() {
        let copies = packs.iter().filter(|r| r.revert == Revert::Copy).count();
        println!(
            "restore {} under {PACK_PREFIX}: {} by removing delete markers, {copies} by a copy",
            super::text::count(packs.len() as u64, "pack", "packs"),
            packs.len() - copies
        );
    }
    for r in others {
        let how = match &r.revert {
            Revert::RemoveMarkers { markers } => {
                format!(
                    "remove {}",
                    super::text::count(markers.len() as u64, "delete marker", "delete markers")
                )
            }
            Revert::Copy => format!("copy version {} over the current one", r.version),
        };
        println!(
            "restore {}{}: {how}",
            text::name_str(&r.key),
            snapshot_note(past, &r.key)
        );
    }
    for key in &plan.hide {
        println!("hide {}: not there as of {when}", text::name_str(key));
    }
    if !plan.spared.is_empty() {
        println!(
            "leave {} as they are: writer locks, storage probes, audit events",
            super::text::count(plan.spared.len() as u64, "object", "objects")
        );
    }
    let verb = if done.is_some() { "" } else { "would " };
    let summary = |line: String| {
        if !ctx.quiet {
            println!("{line}");
        }
    };
    summary(format!(
        "as of {when}: {verb}restore {}, {verb}hide {}, {} already as they were{}",
        super::text::count(plan.restore.len() as u64, "object", "objects"),
        plan.hide.len(),
        plan.unchanged,
        if done.is_none() {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    ));
    if let Some(d) = done {
        for (key, reason) in &d.failed {
            println!("FAILED {}: {}", text::name_str(key), text::message(reason));
        }
        summary(format!(
            "restored {}, hid {}, {} failed",
            d.restored,
            d.hidden,
            d.failed.len()
        ));
    }
    Ok(())
}

/// " (snapshot of HOST at TIME)" for a snapshot key the past repository
/// can read; nothing for other keys.
fn snapshot_note(past: &Repository, key: &str) -> String {
    let Some(id) = SnapshotId::from_key(key) else {
        return String::new();
    };
    match past.read_snapshot(&id) {
        Ok(s) => format!(
            " (snapshot {} of {} at {})",
            id.short(),
            text::name_str(&s.host),
            crate::time::human(s.time)
        ),
        Err(_) => format!(" (snapshot {}, unreadable)", id.short()),
    }
}
