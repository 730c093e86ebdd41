//! The audit log: who changed the repository, when, and how.

use super::par_map;
use crate::Result;
use crate::catalog::Catalog;
use crate::repo::Repository;
use crate::repo::audit::{Signed, verify};
use crate::repo::keys::{SigningKey, TrustedSigners};

/// Who runs this process, as `user@host`, for audit events: `USER`, else
/// `LOGNAME`, else the name the system gives the uid, else `uid<N>`.
pub fn audit_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            crate::host::user_name(uid).unwrap_or_else(|| format!("uid{uid}"))
        });
    format!("{user}@{}", crate::repo::lock::hostname())
}

/// Records an operator action (restore, export, erase, key-export, ...) in
/// the repository (an `audit/` object, sealed to the operator) and in the
/// local catalog, signed with `key` when the operator has one. Both are
/// attempted; the first failure is returned, and the caller warns and carries
/// on: recording must never fail the action itself.
pub fn record_audit(
    repo: &Repository,
    catalog: &Catalog,
    key: Option<&SigningKey>,
    action: &str,
    detail: &str,
) -> Result<()> {
    let event = crate::repo::audit::AuditEvent {
        time: jiff::Timestamp::now(),
        actor: audit_actor(),
        action: action.to_string(),
        detail: detail.to_string(),
        signer: None,
        signature: None,
    };
    let in_repo = repo.write_audit(&event, key);
    let in_catalog = catalog.audit(&event.actor, &event.action, &event.detail);
    in_repo?;
    in_catalog?;
    Ok(())
}

/// Where an audit event was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSource {
    Repository,
    Catalog,
}

/// One audit event, from the repository or only from the local catalog.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: jiff::Timestamp,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub source: AuditSource,
    /// Whose it is: only `operator` events are signed by a trusted key.
    /// Catalog rows carry no signature, so one no event matches is `unsigned`.
    pub signed: Signed,
    /// Who signed: the trusted name (`self` for the reader's own key), or
    /// the key as written for an unknown or bad signer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// The audit log: repository events merged with the catalog's rows, oldest first.
#[derive(Debug, Default)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
    /// Audit objects that could not be read or verified (named, with the reason).
    pub problems: Vec<String>,
}

/// A catalog row and a repository event are one action when they agree on
/// actor, action and detail and lie this close in time (the catalog stamps
/// its row a moment after the event).
const AUDIT_SAME_EVENT: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// Reads every audit event of the repository (operator only) and merges the
/// local catalog's rows in: a row that records the same action as an event is
/// shown once, as the repository's. `since` drops older events; objects
/// storage wrote before it are not even read. Each event's signature is
/// checked against the `trusted` keys.
pub fn audit_log(
    repo: &Repository,
    catalog: Option<&Catalog>,
    since: Option<jiff::Timestamp>,
    trusted: &TrustedSigners,
) -> Result<AuditLog> {
    let objects: Vec<_> = repo
        .list_audit()?
        .into_iter()
        // Storage writes an object after its event's time (allow for skewed clocks).
        .filter(|o| match (since, o.modified) {
            (Some(s), Some(m)) => m >= s - jiff::SignedDuration::from_hours(1),
            _ => true,
        })
        .collect();
    let found = par_map(objects, 4, |o| {
        repo.read_audit(&o).map_err(|e| format!("{}: {e}", o.key))
    });
    let mut log = AuditLog::default();
    for r in found {
        match r {
            Ok((ev, json)) => {
                let (signed, signer) = verify(&json, &ev, trusted);
                log.entries.push(AuditEntry {
                    time: ev.time,
                    actor: ev.actor,
                    action: ev.action,
                    detail: ev.detail,
                    source: AuditSource::Repository,
                    signed,
                    signer,
                })
            }
            Err(p) => log.problems.push(p),
        }
    }
    log.problems.sort();
    if let Some(catalog) = catalog {
        let mut matched = vec![false; log.entries.len()];
        let mut extra = Vec::new();
        for row in catalog.audit_rows()? {
            let twin = log
                .entries
                .iter()
                .enumerate()
                .filter(|(i, e)| {
                    !matched[*i]
                        && e.actor == row.actor
                        && e.action == row.action
                        && e.detail == row.detail
                        && e.time.duration_since(row.time).abs() <= AUDIT_SAME_EVENT
                })
                .min_by_key(|(_, e)| e.time.duration_since(row.time).abs())
                .map(|(i, _)| i);
            match twin {
                Some(i) => matched[i] = true,
                None => extra.push(AuditEntry {
                    time: row.time,
                    actor: row.actor,
                    action: row.action,
                    detail: row.detail,
                    source: AuditSource::Catalog,
                    signed: Signed::Unsigned,
                    signer: None,
                }),
            }
        }
        log.entries.extend(extra);
    }
    log.entries.retain(|e| since.is_none_or(|s| e.time >= s));
    log.entries
        .sort_by(|a, b| (a.time, &a.action, &a.detail).cmp(&(b.time, &b.action, &b.detail)));
    Ok(log)
}
