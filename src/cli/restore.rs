//! `coffer ls` and `coffer restore`.

use super::json::{FailedJson, FallbackJson, PlanEntryJson, PlanJson, RestoreJson};
use super::select::{self, View};
use super::{Context, Exit, print_json, text};
use crate::engine::for_each_entry;
use crate::engine::restore::{
    Overwrite, RestoreOptions, RestorePlan, RestoreReport, execute, prepare, write_file,
};
use crate::engine::select::{Recovered, unrecovered};
use crate::repo::ids::SnapshotId;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::EntryKind;
use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest` (default).
    snapshot: Option<String>,
    /// Only entries at or below this path.
    path: Option<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<jiff::Timestamp>,
    #[command(flatten)]
    filter: select::FilterArgs,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest` (the newest complete one; the default).
    snapshot: Option<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<jiff::Timestamp>,
    #[command(flatten)]
    filter: select::FilterArgs,
    /// Folder to restore into; entries keep their full path below it.
    #[arg(
        long,
        required_unless_present = "in_place",
        conflicts_with = "in_place"
    )]
    target: Option<PathBuf>,
    /// Restore to the original locations (the target is `/`).
    #[arg(long)]
    in_place: bool,
    /// Restore only entries matching this glob (and what is below them). Repeatable.
    #[arg(long)]
    include: Vec<String>,
    /// Leave out entries matching this glob (and what is below them). Repeatable.
    #[arg(long)]
    exclude: Vec<String>,
    /// Existing files: never, if-changed (size or time differ; default), always.
    #[arg(long, value_enum, default_value_t = OverwriteArg::IfChanged)]
    overwrite: OverwriteArg,
    /// List what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Read every written file back and compare it with the snapshot.
    #[arg(long)]
    verify: bool,
    /// Files the snapshot cannot give (damaged data) come from the newest older snapshot that holds them intact.
    #[arg(long)]
    fallback: bool,
}

#[derive(Args, Debug)]
pub struct CatArgs {
    /// The snapshot (id prefix or `latest`; left out: `latest`, or the one --at names) and the file's path in it.
    #[arg(value_name = "[SNAPSHOT] PATH", num_args = 1..=2, required = true)]
    words: Vec<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<jiff::Timestamp>,
    #[command(flatten)]
    filter: select::FilterArgs,
}

impl CatArgs {
    /// The snapshot named (if any) and the path.
    fn spec_and_path(&self) -> (Option<&str>, &str) {
        match self.words.as_slice() {
            [snapshot, path, ..] => (Some(snapshot), path),
            [path] => (None, path),
            [] => (None, ""),
        }
    }

    pub fn at_misuse(&self) -> Option<String> {
        select::at_misuse(self.spec_and_path().0, self.at.is_some())
    }
}

impl LsArgs {
    pub fn at_misuse(&self) -> Option<String> {
        select::at_misuse(self.snapshot.as_deref(), self.at.is_some())
    }
}

impl RestoreArgs {
    pub fn at_misuse(&self) -> Option<String> {
        select::at_misuse(self.snapshot.as_deref(), self.at.is_some())
    }
}

/// `--overwrite`: the values of [`Overwrite`]. (No doc comments on the
/// values: clap would list them one per line in `--help`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OverwriteArg {
    Never,
    IfChanged,
    Always,
}

impl From<OverwriteArg> for Overwrite {
    fn from(a: OverwriteArg) -> Overwrite {
        match a {
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::Always => Overwrite::Always,
        }
    }
}

/// What a restore stopped by a signal leaves.
const STOPPED: &str = "the files written whole stay, unfinished ones were removed and existing files left as they were; run it again to finish";

/// The operator's view and the place in it of the snapshot `spec` or `at` names.
fn choose(
    ctx: &Context,
    spec: Option<&str>,
    at: Option<jiff::Timestamp>,
    filter: &select::FilterArgs,
) -> Result<(View, usize)> {
    let hint = "; --fallback recovers what older ones hold";
    select::open_one(ctx, filter, (spec, at), hint)
}

fn rfc3339_ns(ns: i64) -> String {
    crate::time::from_unix_nanos(ns)
        .map(crate::time::rfc3339_secs)
        .unwrap_or_default()
}

pub fn ls(ctx: &Context, args: LsArgs) -> Result<Exit> {
    let (c, index) = choose(ctx, args.snapshot.as_deref(), args.at, &args.filter)?;
    let (repo, blobs) = (&c.repo, &c.blobs);
    let snap = &c.snaps[index].1;
    let prefix = args
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').as_bytes().to_vec());
    let mut rows = Vec::new();
    for_each_entry(repo, blobs, snap, |e| {
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
            .map(|e| super::json::EntryRow {
                mode: e.mode,
                mtime: rfc3339_ns(e.mtime),
                path: e.path_display(),
                size: e.size,
                kind: e.kind.name(),
            })
            .collect();
        print_json(&v)?;
    } else {
        for e in rows {
            let suffix = match (&e.kind, &e.target) {
                (EntryKind::Symlink, Some(t)) => format!(" -> {}", text::name(t)),
                (EntryKind::Hardlink, Some(t)) => format!(" => /{}", text::name(t)),
                (EntryKind::Dir, _) => "/".into(),
                _ => String::new(),
            };
            println!(
                "{:<8} {:>12} {}  /{}{}",
                e.kind.name(),
                e.size,
                crate::time::human_nanos(e.mtime),
                text::name(&e.path),
                suffix
            );
        }
    }
    Ok(Exit::Success)
}

pub fn restore(ctx: &Context, args: RestoreArgs) -> Result<Exit> {
    let (mut c, mut index) = choose(ctx, args.snapshot.as_deref(), args.at, &args.filter)?;
    // Installed once keys are loaded: a passphrase prompt stays killable.
    let cancel = super::signal::Cancel::install()?;
    let (id, snap) = c.snaps[index].clone();
    // Without --target, --in-place is set (clap requires one of them).
    let target = args.target.clone().unwrap_or_else(|| PathBuf::from("/"));
    let opts = RestoreOptions {
        target: target.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        only: None,
        overwrite: args.overwrite.into(),
        verify: args.verify,
    };
    let failed = |e: crate::Error| {
        let e = anyhow::Error::new(e).context(format!("restore of snapshot {}", id.short()));
        cancel.explain("restore", e, STOPPED)
    };
    if args.dry_run {
        let plan = prepare(&c.repo, &c.blobs, &snap, &opts, cancel.flag()).map_err(failed)?;
        print_plan(ctx, &id, &plan)?;
        return Ok(Exit::Success);
    }
    let bar = ctx.progress();
    let result = prepare(&c.repo, &c.blobs, &snap, &opts, cancel.flag())
        .and_then(|plan| execute(&c.repo, plan, opts.verify, &bar, cancel.flag()));
    bar.finish();
    let report = result.map_err(failed)?;
    // Files the snapshot could not give: where an older snapshot holds them.
    let recovered = if report.failures.is_empty() {
        Vec::new()
    } else {
        // The search needs the history the choice did not read.
        (c, index) = select::whole(c, &args.filter, index)?;
        c.fallback(index, &report, &opts, args.fallback, cancel.flag())
            .map_err(|e| cancel.explain("restore", e.into(), STOPPED))?
    };
    super::audit::record(
        ctx,
        &c.repo,
        &c.catalog,
        "restore",
        &format!(
            "snapshot {} to {} include {:?} exclude {:?}: {}, {} failed, {} from older snapshots",
            id.short(),
            target.display(),
            args.include,
            args.exclude,
            text::count(report.files, "file", "files"),
            report.failures.len(),
            recovered.iter().filter(|r| r.restored).count()
        ),
    );
    if ctx.json {
        print_json(&RestoreJson::new(&id, &report, &recovered, args.verify))?;
    } else if !ctx.quiet {
        print_restored(&id, &snap, &target, &report, args.verify);
        print_recovered(&recovered);
    }
    for w in &report.warnings {
        eprintln!("coffer: warning: {}", text::message(w));
    }
    let still_failed = unrecovered(&report.failures, &recovered);
    for f in &still_failed {
        eprintln!(
            "coffer: could not restore /{}: {}",
            text::name(&f.path),
            text::message(&f.message)
        );
    }
    if still_failed.is_empty() {
        return Ok(Exit::Success);
    }
    eprintln!(
        "coffer: error: {} of snapshot {} could not be restored (listed above); the others were restored. If the reasons name the repository's data, `coffer check --read-data` tells what is damaged{}.",
        text::count(still_failed.len() as u64, "entry", "entries"),
        id.short(),
        if args.fallback {
            ""
        } else {
            ", and --fallback takes damaged files from older snapshots"
        }
    );
    Ok(Exit::Failure)
}

/// A dry run: every selected entry and what would happen to it.
fn print_plan(ctx: &Context, id: &SnapshotId, plan: &RestorePlan) -> Result<()> {
    if ctx.json {
        return print_json(&PlanJson {
            dry_run: true,
            entries: plan
                .entries
                .iter()
                .map(|p| PlanEntryJson {
                    action: p.action,
                    path: p.entry.path_display(),
                    kind: p.entry.kind.name(),
                })
                .collect(),
            snapshot: &id.to_hex(),
        });
    }
    for p in &plan.entries {
        println!(
            "{:<14} {:<8} {}",
            p.action.name(),
            p.entry.kind.name(),
            text::path(&plan.target.join(p.entry.path_display()))
        );
    }
    println!(
        "dry run of snapshot {} into {}: {}, {} would be skipped; nothing written",
        id.short(),
        text::path(&plan.target),
        text::count(plan.entries.len() as u64, "entry", "entries"),
        plan.skipped
    );
    Ok(())
}

impl<'a> RestoreJson<'a> {
    fn new(
        id: &SnapshotId,
        report: &'a RestoreReport,
        recovered: &'a [Recovered],
        verify: bool,
    ) -> RestoreJson<'a> {
        RestoreJson {
            bytes: report.bytes,
            dirs: report.dirs,
            failed: report
                .failures
                .iter()
                .map(|f| FailedJson {
                    error: &f.message,
                    path: f.path_display(),
                })
                .collect(),
            fallback: recovered
                .iter()
                .map(|r| FallbackJson {
                    error: r.error.as_deref(),
                    from: r.from.as_ref().map(|f| f.0.to_hex()),
                    path: String::from_utf8_lossy(&r.path).into_owned(),
                    restored: r.restored,
                    time: r.from.as_ref().map(|f| f.1),
                })
                .collect(),
            files: report.files,
            links: report.links,
            skipped: report.skipped,
            snapshot: id.to_hex(),
            verified: verify.then_some(report.verified),
            warnings: &report.warnings,
        }
    }
}

/// The one line that sums up a restore.
fn print_restored(
    id: &SnapshotId,
    snap: &Snapshot,
    target: &Path,
    report: &RestoreReport,
    verify: bool,
) {
    println!(
        "restored snapshot {} ({}) to {}: {} ({}), {}, {}{}{}",
        id.short(),
        crate::time::human(snap.time),
        text::path(target),
        text::count(report.files, "file", "files"),
        super::backup::human(report.bytes),
        text::count(report.dirs, "folder", "folders"),
        text::count(report.links, "link", "links"),
        if report.skipped > 0 {
            format!(", {} existing left as they were", report.skipped)
        } else {
            String::new()
        },
        if verify {
            format!(
                "; {} read back and verified",
                text::count(report.verified, "file", "files")
            )
        } else {
            String::new()
        }
    );
}

/// Where each file the snapshot could not give was found, or not.
fn print_recovered(recovered: &[Recovered]) {
    for r in recovered {
        let p = text::name(&r.path);
        match (&r.from, r.restored) {
            (Some((sid, t)), true) => println!(
                "restored /{p} from older snapshot {} ({})",
                sid.short(),
                crate::time::human(*t)
            ),
            (Some((sid, t)), false) => println!(
                "/{p} is intact in older snapshot {} ({}){}",
                sid.short(),
                crate::time::human(*t),
                match &r.error {
                    Some(e) =>
                        format!(", but restoring it from there failed: {}", text::message(e)),
                    None => "; restore with --fallback to take it from there".into(),
                }
            ),
            (None, _) => println!("/{p}: no older snapshot holds it intact"),
        }
    }
}

pub fn cat(ctx: &Context, args: CatArgs) -> Result<Exit> {
    let (spec, path) = args.spec_and_path();
    let (c, index) = choose(ctx, spec, args.at, &args.filter)?;
    let (id, snap) = &c.snaps[index];
    let path = path.trim_start_matches('/');
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let n = write_file(&c.repo, &c.blobs, snap, path.as_bytes(), &mut out)
        .with_context(|| format!("snapshot {}", id.short()))?;
    super::audit::record(
        ctx,
        &c.repo,
        &c.catalog,
        "restore",
        &format!(
            "snapshot {} file /{path} to standard output: {n} bytes",
            id.short()
        ),
    );
    Ok(Exit::Success)
}
