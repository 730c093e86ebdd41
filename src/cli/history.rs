//! `coffer find` (versions of matching files across snapshots) and `coffer
//! diff` (what changed between two snapshots).

use super::json::{FindJson, SnapRef};
use super::select;
use super::{Context, Exit, print_json, text};
use crate::engine::history::{self, Pattern};
use crate::repo::tree::EntryKind;
use anyhow::{Context as _, Result};
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub struct FindArgs {
    /// A glob: without '/', matched against file names anywhere; with '/', against whole snapshot paths (no leading '/').
    pattern: String,
    #[command(flatten)]
    filter: select::FilterArgs,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The snapshot to compare from: id prefix or `latest` (or give --at).
    a: Option<String>,
    /// The snapshot to compare to: id prefix or `latest` (or give --at).
    b: Option<String>,
    /// The newest snapshot at or before this time, for a side no SNAPSHOT names (twice: from, then to).
    #[arg(long, value_parser = select::at)]
    at: Vec<jiff::Timestamp>,
    #[command(flatten)]
    filter: select::FilterArgs,
}

/// One side of a diff: a snapshot named by id (or `latest`), or by time.
type Side<'a> = (Option<&'a str>, Option<jiff::Timestamp>);

impl DiffArgs {
    /// The two sides, from and to: the SNAPSHOTs given, in order, then the
    /// `--at` times, in order. Anything but two in all is a usage error.
    pub fn sides(&self) -> Result<[Side<'_>; 2], String> {
        let named = [&self.a, &self.b]
            .into_iter()
            .flatten()
            .map(|s| (Some(s.as_str()), None));
        let timed = self.at.iter().map(|t| (None, Some(*t)));
        let all: Vec<Side<'_>> = named.chain(timed).collect();
        match all.as_slice() {
            [from, to] => Ok([*from, *to]),
            _ => Err(format!(
                "diff compares two snapshots; {} given: name them by SNAPSHOT (id or `latest`) or --at TIME, e.g. `diff A B`, `diff A --at T`, `diff --at T1 --at T2`",
                all.len()
            )),
        }
    }
}

fn time(t: &jiff::Timestamp) -> String {
    crate::time::rfc3339_secs(*t)
}

fn shown(path: &[u8], kind: EntryKind) -> String {
    let slash = if kind == EntryKind::Dir { "/" } else { "" };
    format!("/{}{slash}", text::name(path))
}

pub fn find(ctx: &Context, args: FindArgs) -> Result<Exit> {
    let pattern = Pattern::new(&args.pattern)?;
    let view = select::open_view(ctx, &args.filter)?;
    let found = history::find(&view.repo, &view.blobs, &view.snaps, &pattern).context("find")?;
    let refs: Vec<SnapRef> = view
        .snaps
        .iter()
        .map(|(id, s)| SnapRef {
            id: id.short(),
            time: time(&s.time),
        })
        .collect();
    if ctx.json {
        // Streamed: `find '*'` over a long history is millions of references.
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        serde_json::to_writer_pretty(
            &mut out,
            &FindJson {
                found: &found,
                refs: &refs,
            },
        )?;
        writeln!(out)?;
        out.flush()?;
        return Ok(Exit::Success);
    }
    if found.is_empty() {
        if !ctx.quiet {
            eprintln!(
                "coffer: nothing matches {:?} in {}",
                args.pattern,
                text::count(view.snaps.len() as u64, "snapshot", "snapshots")
            );
        }
        return Ok(Exit::Success);
    }
    // The same references in the time people read.
    let refs: Vec<SnapRef> = view
        .snaps
        .iter()
        .map(|(id, s)| SnapRef {
            id: id.short(),
            time: crate::time::human(s.time),
        })
        .collect();
    for f in &found {
        println!("/{}", text::name(&f.path));
        for v in &f.versions {
            let held: Vec<&SnapRef> = v.snapshots.iter().map(|n| &refs[*n]).collect();
            let held = match held.as_slice() {
                [one] => format!("{} {}", one.id, one.time),
                [a, b] => format!("{} {}, {} {}", a.id, a.time, b.id, b.time),
                [first, .., last] => format!(
                    "{} {} … {} {} ({} snapshots)",
                    first.id,
                    first.time,
                    last.id,
                    last.time,
                    held.len()
                ),
                [] => String::new(),
            };
            println!(
                "  {:<8} {:>12}  {}  in {held}",
                v.kind.name(),
                v.size,
                crate::time::human_nanos(v.mtime)
            );
        }
    }
    Ok(Exit::Success)
}

pub fn diff(ctx: &Context, args: DiffArgs) -> Result<Exit> {
    let [(spec_a, at_a), (spec_b, at_b)] = args.sides().map_err(|e| anyhow::anyhow!(e))?;
    let view = select::open_view(ctx, &args.filter)?;
    let a = select::pick(&view, spec_a, at_a, "")?;
    let b = select::pick(&view, spec_b, at_b, "")?;
    let (sa, sb) = (&view.snaps[a], &view.snaps[b]);
    let report = history::diff(&view.repo, &view.blobs, sa, sb)
        .with_context(|| format!("diff of {} and {}", sa.0.short(), sb.0.short()))?;
    let (added, removed, changed) = (
        report.added.len(),
        report.removed.len(),
        report.changed.len(),
    );
    if ctx.json {
        let path = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let paths = |v: &[(Vec<u8>, EntryKind)]| v.iter().map(|(p, _)| path(p)).collect();
        print_json(&super::json::Diff {
            added: paths(&report.added),
            changed: report
                .changed
                .iter()
                .map(|(p, _, what)| super::json::Changed {
                    path: path(p),
                    what: what.clone(),
                })
                .collect(),
            from: sa.0.short(),
            removed: paths(&report.removed),
            summary: super::json::DiffSummary {
                added,
                changed,
                removed,
            },
            to: sb.0.short(),
        })?;
        return Ok(Exit::Success);
    }
    for (p, kind) in &report.removed {
        println!("-  {}", shown(p, *kind));
    }
    for (p, kind) in &report.added {
        println!("+  {}", shown(p, *kind));
    }
    for (p, kind, what) in &report.changed {
        println!("M  {}  ({})", shown(p, *kind), what.join(", "));
    }
    if !ctx.quiet {
        println!(
            "{} ({}) → {} ({}): {added} added, {removed} removed, {changed} changed",
            sa.0.short(),
            crate::time::human(sa.1.time),
            sb.0.short(),
            crate::time::human(sb.1.time)
        );
    }
    Ok(Exit::Success)
}
