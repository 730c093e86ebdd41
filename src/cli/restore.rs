//! `coffer ls` and `coffer restore`.

use super::select::{self, View};
use super::{Context, Exit, print_json, text};
use crate::engine::for_each_entry;
use crate::engine::restore::{Overwrite, RestoreOptions, restore as run_restore, write_file};
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::tree::EntryKind;
use anyhow::{Context as _, Result};
use clap::Args;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id prefix or `latest` (default).
    snapshot: Option<String>,
    /// Only entries at or below this path.
    path: Option<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    filter: select::Filter,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Snapshot id prefix or `latest` (the newest complete one; the default).
    snapshot: Option<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    filter: select::Filter,
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
    #[arg(long, default_value = "if-changed", value_parser = ["never", "if-changed", "always"])]
    overwrite: String,
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
    /// Snapshot id prefix or `latest`.
    snapshot: String,
    /// The file's path in the snapshot.
    path: String,
    #[arg(long, value_parser = select::at)]
    at: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    filter: select::Filter,
}

/// What a restore stopped by a signal leaves.
const STOPPED: &str = "the files written whole stay, unfinished ones were removed and existing files left as they were; run it again to finish";

/// The operator's view and the place in it of the snapshot `spec` or `at` names.
fn choose(
    ctx: &Context,
    spec: Option<&str>,
    at: Option<chrono::DateTime<chrono::Utc>>,
    filter: &select::Filter,
) -> Result<(View, usize)> {
    let view = select::open_view(ctx, filter)?;
    let hint = "; --fallback recovers what older ones hold";
    let index = view.pick(spec, at, hint)?;
    Ok((view, index))
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
            .map(|e| {
                serde_json::json!({"path": e.path_display(), "type": e.kind.name(), "size": e.size,
                    "mode": e.mode, "mtime": rfc3339_ns(e.mtime)})
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
                rfc3339_ns(e.mtime),
                text::name(&e.path),
                suffix
            );
        }
    }
    Ok(Exit::Success)
}

pub fn restore(ctx: &Context, args: RestoreArgs) -> Result<Exit> {
    let (c, index) = choose(ctx, args.snapshot.as_deref(), args.at, &args.filter)?;
    // Installed once keys are loaded: a passphrase prompt stays killable.
    let cancel = super::signal::Cancel::install()?;
    let (id, snap) = c.snaps[index].clone();
    let target = match (&args.target, args.in_place) {
        (Some(t), _) => t.clone(),
        (None, _) => PathBuf::from("/"),
    };
    let opts = RestoreOptions {
        target: target.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        only: None,
        overwrite: match args.overwrite.as_str() {
            "never" => Overwrite::Never,
            "always" => Overwrite::Always,
            _ => Overwrite::IfChanged,
        },
        dry_run: args.dry_run,
        verify: args.verify,
    };
    let bar = if args.dry_run {
        super::progress::Bar::new(false)
    } else {
        ctx.progress()
    };
    let result = run_restore(&c.repo, &c.blobs, &snap, &opts, &bar, cancel.flag());
    bar.finish();
    let report = result
        .with_context(|| format!("restore of snapshot {}", id.short()))
        .map_err(|e| cancel.explain("restore", e, STOPPED))?;
    if args.dry_run {
        if ctx.json {
            print_json(&serde_json::json!({
                "snapshot": id.to_hex(), "dry_run": true,
                "entries": report.plan.iter().map(|(p, k, a)| serde_json::json!({"path": p, "type": k, "action": a})).collect::<Vec<_>>(),
            }))?;
        } else {
            for (p, k, a) in &report.plan {
                let a = serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                println!("{a:<14} {k:<8} {}", text::path(&target.join(p)));
            }
            println!(
                "dry run of snapshot {} into {}: {} entries, {} would be skipped; nothing written",
                id.short(),
                text::path(&target),
                report.plan.len(),
                report.skipped
            );
        }
        return Ok(Exit::Success);
    }
    // Files the snapshot could not give: where an older snapshot holds them.
    let recovered = if report.failed_paths.is_empty() {
        Vec::new()
    } else {
        fallback(&c, index, &report, &opts, args.fallback, cancel.flag())
            .map_err(|e| cancel.explain("restore", e, STOPPED))?
    };
    super::audit::record(
        &c.repo,
        &c.catalog,
        "restore",
        &format!(
            "snapshot {} to {} include {:?} exclude {:?}: {} files, {} failed, {} from older snapshots",
            id.short(),
            target.display(),
            args.include,
            args.exclude,
            report.files,
            report.failed.len(),
            recovered.iter().filter(|r| r.restored).count()
        ),
    );
    // (raw path, reason) of what is still missing.
    let still_failed: Vec<(&Vec<u8>, &String)> = report
        .failed
        .iter()
        .zip(&report.failed_paths)
        .filter(|(_, raw)| !recovered.iter().any(|r| r.restored && &r.path == *raw))
        .map(|((_, err), raw)| (raw, err))
        .collect();
    if ctx.json {
        print_json(&serde_json::json!({
            "snapshot": id.to_hex(), "files": report.files, "dirs": report.dirs, "links": report.links,
            "bytes": report.bytes, "skipped": report.skipped,
            "verified": if args.verify { Some(report.verified) } else { None },
            "failed": report.failed.iter().map(|(p, e)| serde_json::json!({"path": p, "error": e})).collect::<Vec<_>>(),
            "fallback": recovered.iter().map(|r| serde_json::json!({
                "path": String::from_utf8_lossy(&r.path), "from": r.from.as_ref().map(|f| f.0.to_hex()),
                "time": r.from.as_ref().map(|f| f.1), "restored": r.restored, "error": r.error,
            })).collect::<Vec<_>>(),
            "warnings": report.warnings,
        }))?;
    } else if !ctx.quiet {
        println!(
            "restored snapshot {} ({}) to {}: {} files ({}), {} folders, {} links{}{}",
            id.short(),
            snap.time.format("%Y-%m-%d %H:%M:%S UTC"),
            text::path(&target),
            report.files,
            super::backup::human(report.bytes),
            report.dirs,
            report.links,
            if report.skipped > 0 {
                format!(", {} existing left as they were", report.skipped)
            } else {
                String::new()
            },
            if args.verify {
                format!("; {} files read back and verified", report.verified)
            } else {
                String::new()
            }
        );
        for r in &recovered {
            let p = text::name(&r.path);
            match (&r.from, r.restored) {
                (Some((sid, t)), true) => println!(
                    "restored /{p} from older snapshot {} ({})",
                    sid.short(),
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                (Some((sid, t)), false) => println!(
                    "/{p} is intact in older snapshot {} ({}){}",
                    sid.short(),
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
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
    for w in &report.warnings {
        eprintln!("coffer: warning: {}", text::message(w));
    }
    for (path, err) in &still_failed {
        eprintln!(
            "coffer: could not restore /{}: {}",
            text::name(path),
            text::message(err)
        );
    }
    if still_failed.is_empty() {
        Ok(Exit::Success)
    } else {
        eprintln!(
            "coffer: error: {} entr{} of snapshot {} could not be restored (listed above); the others were restored. If the reasons name the repository's data, `coffer check --read-data` tells what is damaged{}.",
            still_failed.len(),
            if still_failed.len() == 1 { "y" } else { "ies" },
            id.short(),
            if args.fallback {
                ""
            } else {
                ", and --fallback takes damaged files from older snapshots"
            }
        );
        Ok(Exit::Failure)
    }
}

/// One file the chosen snapshot could not give, and where it is intact.
struct Recovered {
    path: Vec<u8>,
    from: Option<(SnapshotId, chrono::DateTime<chrono::Utc>)>,
    restored: bool,
    error: Option<String>,
}

/// For each failed file, the newest older snapshot that holds it with every
/// blob present and none known bad; with `apply`, restores it from there.
fn fallback(
    c: &View,
    index: usize,
    report: &crate::engine::restore::RestoreReport,
    opts: &RestoreOptions,
    apply: bool,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Vec<Recovered>> {
    let intact = |id: &BlobId| {
        !report.bad_blobs.contains(id) && c.blobs.get(id).is_some_and(|l| c.health.usable(l))
    };
    let mut missing: HashSet<Vec<u8>> = report.failed_paths.iter().cloned().collect();
    let mut found: Vec<(usize, HashSet<Vec<u8>>)> = Vec::new();
    for j in (0..index).rev() {
        if missing.is_empty() {
            break;
        }
        let mut here = HashSet::new();
        let _ = for_each_entry(&c.repo, &c.blobs, &c.snaps[j].1, |e| {
            if missing.contains(&e.path)
                && e.kind == EntryKind::File
                && e.content.iter().all(|x| intact(&x.blob))
            {
                here.insert(e.path.clone());
            }
            Ok(())
        });
        missing.retain(|p| !here.contains(p));
        if !here.is_empty() {
            found.push((j, here));
        }
    }
    let mut out: Vec<Recovered> = missing
        .into_iter()
        .map(|path| Recovered {
            path,
            from: None,
            restored: false,
            error: None,
        })
        .collect();
    for (j, paths) in found {
        let (sid, snap) = &c.snaps[j];
        let mut errors: HashMap<Vec<u8>, String> = HashMap::new();
        if apply {
            let o = RestoreOptions {
                only: Some(paths.clone()),
                overwrite: Overwrite::Always,
                dry_run: false,
                include: Vec::new(),
                exclude: Vec::new(),
                ..opts.clone()
            };
            match run_restore(
                &c.repo,
                &c.blobs,
                snap,
                &o,
                &crate::engine::NoProgress,
                cancel,
            ) {
                Err(crate::Error::Interrupted) => return Err(crate::Error::Interrupted.into()),
                Ok(r) => {
                    for (raw, (_, e)) in r.failed_paths.iter().zip(&r.failed) {
                        errors.insert(raw.clone(), e.clone());
                    }
                }
                Err(e) => {
                    for p in &paths {
                        errors.insert(p.clone(), e.to_string());
                    }
                }
            }
        }
        for p in paths {
            let error = errors.remove(&p);
            out.push(Recovered {
                restored: apply && error.is_none(),
                path: p,
                from: Some((*sid, snap.time)),
                error,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

pub fn cat(ctx: &Context, args: CatArgs) -> Result<Exit> {
    let (c, index) = choose(ctx, Some(&args.snapshot), args.at, &args.filter)?;
    let (id, snap) = &c.snaps[index];
    let path = args.path.trim_start_matches('/');
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let n = write_file(&c.repo, &c.blobs, snap, path.as_bytes(), &mut out)
        .with_context(|| format!("snapshot {}", id.short()))?;
    super::audit::record(
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
