//! `coffer audit`: the log of operator actions (restores, exports, erasures,
//! key exports), from the repository and the local catalog; and the helper
//! the operator commands record with.

use super::{Context, Exit, print_json, text};
use crate::catalog::Catalog;
use crate::engine::{AuditSource, audit_log, record_audit};
use crate::repo::Repository;
use anyhow::{Context as _, Result};
use clap::Args;
use jiff::Timestamp;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only events at or after this time (RFC 3339, "2026-11-20 14:00", a date, "7 days ago").
    #[arg(long, value_parser = since)]
    since: Option<Timestamp>,
}

fn since(s: &str) -> Result<Timestamp, String> {
    super::select::parse_when(s, false, Timestamp::now())
}

/// Records an operator action in the repository and the catalog. A failure
/// never fails the action: it is a warning on stderr.
pub fn record(repo: &Repository, catalog: &Catalog, action: &str, detail: &str) {
    if let Err(e) = record_audit(repo, catalog, action, detail) {
        eprintln!(
            "coffer: warning: the {action} was not recorded in the audit log: {e}; it happened nonetheless"
        );
    }
}

pub fn run(ctx: &Context, args: AuditArgs) -> Result<Exit> {
    let repo = ctx
        .open_operator()
        .context("audit events are sealed to the operator")?;
    // The catalog only adds rows the repository lacks; a broken one is no reason to fail.
    let catalog = match ctx.open_catalog(&repo) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("coffer: warning: {e:#}; listing the repository's events only");
            None
        }
    };
    let log = audit_log(&repo, catalog.as_ref(), args.since)?;
    for p in &log.problems {
        eprintln!("coffer: warning: audit event {}", text::message(p));
    }
    if ctx.json {
        print_json(&log.entries)?;
    } else {
        for e in &log.entries {
            println!(
                "{}  {:<24} {:<10} {}{}",
                e.time
                    .to_zoned(jiff::tz::TimeZone::system())
                    .strftime("%Y-%m-%d %H:%M:%S %z"),
                text::name_str(&e.actor),
                text::name_str(&e.action),
                text::message(&e.detail),
                if e.source == AuditSource::Catalog {
                    "  (this machine's catalog only)"
                } else {
                    ""
                }
            );
        }
        if log.entries.is_empty() && !ctx.quiet {
            eprintln!("no audit events recorded");
        }
    }
    Ok(if log.problems.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}
