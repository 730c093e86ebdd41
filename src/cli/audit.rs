//! `coffer audit`: the log of operator actions (restores, exports, erasures,
//! key exports), from the repository and the local catalog; and the helper
//! the operator commands record with.

use super::{Context, Exit, print_json, text};
use crate::catalog::Catalog;
use crate::engine::{AuditEntry, AuditSource, audit_log, record_audit};
use crate::repo::Repository;
use crate::repo::audit::Signed;
use crate::repo::keys::{OWN_SIGNER, signing_key_path};
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

/// Records an operator action in the repository and the catalog, signed
/// with the signing key beside the identity. A failure never fails the
/// action: it is a warning on stderr; without a usable signing key the event
/// is recorded unsigned, and a warning says so.
pub fn record(ctx: &Context, repo: &Repository, catalog: &Catalog, action: &str, detail: &str) {
    if let Some(at) = repo.store.as_of() {
        // A reading of the past writes nothing; the present may be an
        // attacker's state, which `undelete` would hide again anyway.
        super::warn(&format!(
            "the {action} reads the repository as of {} and is not recorded in the audit log (--as-of writes nothing)",
            crate::time::human(at)
        ));
        return;
    }
    let key = match ctx.signing_key() {
        Ok(Some(key)) => Some(key),
        Ok(None) => {
            let identity = ctx.identity.as_deref().unwrap_or("IDENTITY".as_ref());
            super::warn(&format!(
                "no signing key {}: the {action} is recorded unsigned, and `coffer audit` will not show it as yours; create one with `coffer key add-signing --identity {}`",
                signing_key_path(identity).display(),
                identity.display()
            ));
            None
        }
        Err(e) => {
            super::warn(&format!(
                "{}; the {action} is recorded unsigned",
                super::render_error(&e)
            ));
            None
        }
    };
    if let Err(e) = record_audit(repo, catalog, key.as_ref(), action, detail) {
        eprintln!(
            "coffer: warning: the {action} was not recorded in the audit log: {e}; it happened nonetheless"
        );
    }
}

pub fn run(ctx: &Context, args: AuditArgs) -> Result<Exit> {
    let repo = ctx
        .open_operator()
        .context("audit events are sealed to the operator")?;
    let trusted = ctx.trusted_signers()?;
    // The catalog only adds rows the repository lacks; a broken one is no reason to fail.
    let catalog = match ctx.open_catalog(&repo) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("coffer: warning: {e:#}; listing the repository's events only");
            None
        }
    };
    let log = audit_log(&repo, catalog.as_ref(), args.since, &trusted)?;
    for p in &log.problems {
        eprintln!("coffer: warning: audit event {}", text::message(p));
    }
    if ctx.json {
        print_json(&log.entries)?;
    } else {
        print_text(&log.entries);
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

/// The operator's events first, as one line each; then, under a heading of
/// their own, the events no trusted key signed, each marked with why.
fn print_text(entries: &[AuditEntry]) {
    let (ours, others): (Vec<&AuditEntry>, Vec<&AuditEntry>) =
        entries.iter().partition(|e| e.signed == Signed::Operator);
    for e in &ours {
        let by = match e.signer.as_deref() {
            Some(name) if name != OWN_SIGNER => format!("  (signed by {})", text::name_str(name)),
            _ => String::new(),
        };
        println!("{}{by}", line(e));
    }
    if others.is_empty() {
        return;
    }
    if !ours.is_empty() {
        println!();
    }
    println!(
        "NOT THE OPERATOR'S: {} no trusted signing key signed; anyone who can write to the repository (the agent too) could have written these:",
        super::text::count(others.len() as u64, "event", "events")
    );
    for e in &others {
        let why = match (e.signed, e.signer.as_deref()) {
            (Signed::UnknownSigner, Some(key)) => format!("unknown signer {}", text::name_str(key)),
            (Signed::BadSignature, _) => "bad signature".to_string(),
            _ => "unsigned".to_string(),
        };
        println!("{}  [{why}]", line(e));
    }
}

fn line(e: &AuditEntry) -> String {
    format!(
        "{}  {:<24} {:<10} {}{}",
        crate::time::human(e.time),
        text::name_str(&e.actor),
        text::name_str(&e.action),
        text::message(&e.detail),
        if e.source == AuditSource::Catalog {
            "  (this machine's catalog only)"
        } else {
            ""
        }
    )
}
