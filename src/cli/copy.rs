//! `coffer copy --to URL`.

use super::{Context, Exit, print_json};
use crate::engine::copy::copy;
use crate::repo::store::Store;
use anyhow::{Context as _, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The second repository's URL (s3://bucket/prefix, file:///path or a path).
    #[arg(long)]
    to: String,
}

pub fn run(ctx: &Context, args: CopyArgs) -> Result<Exit> {
    let repo = ctx.open_any()?;
    // Installed once keys are loaded: a passphrase prompt stays killable.
    let cancel = super::signal::Cancel::install()?;
    let s3 = ctx
        .profile
        .as_ref()
        .map(|p| p.s3.clone())
        .unwrap_or_default();
    let target = Store::open(&args.to, &s3)?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let bar = ctx.progress();
    let result = copy(&repo, &target, &mut catalog, &bar, cancel.flag());
    bar.finish();
    let report = result
        .with_context(|| format!("copy to {}", args.to))
        .map_err(|e| {
            cancel.explain(
                "copy",
                e,
                "the target's lock is released; what was copied stays, and the next `coffer copy` goes on from there",
            )
        })?;
    for w in &report.warnings {
        super::warn(w);
    }
    if ctx.json {
        print_json(&super::json::Copied {
            bytes_copied: report.bytes_copied,
            locks_extended: report.locks_extended,
            objects_copied: report.objects_copied,
            objects_present: report.objects_present,
            to: target.location(),
        })?;
    } else if !ctx.quiet {
        println!(
            "copied {} ({}) to {}; {} already there",
            super::text::count(report.objects_copied as u64, "object", "objects"),
            super::backup::human(report.bytes_copied),
            target.location(),
            match report.objects_present {
                1 => "1 was".to_string(),
                n => format!("{n} were"),
            }
        );
        if report.locks_extended > 0 {
            println!(
                "lengthened the Object Lock of {} of the copy",
                super::text::count(report.locks_extended as u64, "object", "objects")
            );
        }
    }
    Ok(Exit::Success)
}
