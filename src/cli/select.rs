//! Choosing snapshots: filters (`--host`, `--profile-name`, `--path`,
//! `--since`, `--until`), and a snapshot named by id prefix, `latest` (the
//! newest complete one) or a time (`--at`: the newest at or before it).
//!
//! Times are RFC 3339 (`2026-11-20T14:00:00+01:00`), a local date and time
//! (`2026-11-20 14:00`, in the zone of `TZ`), a date (`2026-11-20`: its end for
//! `--at`/`--until`, its start for `--since`), `now`, or a span ago
//! (`2 days ago`, `3h ago`).

use super::Context;
use crate::catalog::{BlobLocation, Catalog};
use crate::engine::health::Health;
use crate::engine::{newest_whole, sync};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::snapshot::Snapshot;
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use clap::Args;
use std::collections::HashMap;

#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots made by this profile (name; `--profile` is the profile file).
    #[arg(long)]
    pub profile_name: Option<String>,
    /// Only snapshots whose sources include this path (or a folder above it).
    #[arg(long = "path", id = "source_path")]
    pub path: Option<String>,
    /// Only snapshots at or after this time.
    #[arg(long, value_parser = since)]
    pub since: Option<DateTime<Utc>>,
    /// Only snapshots at or before this time.
    #[arg(long, value_parser = until)]
    pub until: Option<DateTime<Utc>>,
}

fn since(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, false, Utc::now())
}

fn until(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, true, Utc::now())
}

/// For `--at`: a date means its end.
pub fn at(s: &str) -> Result<DateTime<Utc>, String> {
    parse_when(s, true, Utc::now())
}

impl Filter {
    pub fn matches_all(&self) -> bool {
        self.host.is_none()
            && self.profile_name.is_none()
            && self.path.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    pub fn matches(&self, s: &Snapshot) -> bool {
        let path_ok = self.path.as_ref().is_none_or(|p| {
            let p = format!("/{}", p.trim_matches('/'));
            s.paths.iter().any(|src| {
                let src = src.trim_end_matches('/');
                p == src || p.starts_with(&format!("{src}/")) || src.is_empty()
            })
        });
        self.host.as_ref().is_none_or(|h| *h == s.host)
            && self.profile_name.as_ref().is_none_or(|n| *n == s.profile)
            && self.since.is_none_or(|t| s.time >= t)
            && self.until.is_none_or(|t| s.time <= t)
            && path_ok
    }
}

fn to_chrono(t: jiff::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32).unwrap_or_default()
}

/// Parses a time as the module docs describe; `end`: a bare date means its end.
pub fn parse_when(s: &str, end: bool, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let tz = jiff::tz::TimeZone::system();
    let now_j =
        jiff::Timestamp::from_second(now.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(ago) = s.strip_suffix(" ago").or_else(|| s.strip_suffix("ago")) {
        let span: jiff::Span = ago
            .trim()
            .parse()
            .map_err(|e| format!("{s:?}: {e}; write e.g. \"2 days ago\" or \"3h ago\""))?;
        let then = now_j
            .to_zoned(tz)
            .checked_sub(span)
            .map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(to_chrono(then.timestamp()));
    }
    // jiff reads a date out of a date-time too: only a bare date is one.
    if let Some(d) = (!s.contains(':'))
        .then(|| s.parse::<jiff::civil::Date>().ok())
        .flatten()
    {
        let z = if end {
            d.tomorrow()
                .and_then(|d| d.to_zoned(tz))
                .map(|z| z.timestamp() - jiff::SignedDuration::from_nanos(1))
        } else {
            d.to_zoned(tz).map(|z| z.timestamp())
        };
        return z.map(to_chrono).map_err(|e| format!("{s:?}: {e}"));
    }
    if let Ok(dt) = s.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz)
            .map(|z| to_chrono(z.timestamp()))
            .map_err(|e| format!("{s:?}: {e}"));
    }
    Err(format!(
        "{s:?} is not a time: use RFC 3339 (2026-11-20T14:00:00Z), a local \"2026-11-20 14:00\", a date, or \"2 days ago\""
    ))
}

/// The operator's view of the repository, synced into the catalog: the
/// index, the packs in storage, and the snapshots a filter keeps.
pub struct View {
    pub repo: Repository,
    pub catalog: Catalog,
    pub blobs: HashMap<BlobId, BlobLocation>,
    /// The packs in storage and what is known bad.
    pub health: Health,
    pub snaps: Vec<(SnapshotId, Snapshot)>,
}

/// Opens the repository as the operator and syncs the catalog with it.
/// Objects that can not be read are named on stderr and skipped.
pub fn open_view(ctx: &Context, filter: &Filter) -> Result<View> {
    let repo = ctx.open_operator()?;
    let mut catalog = ctx.open_catalog(&repo)?;
    let synced = sync(&repo, &mut catalog)?;
    for w in &synced.warnings() {
        super::warn(w);
    }
    Ok(View {
        repo,
        catalog,
        blobs: synced.blobs,
        health: synced.health,
        snaps: synced
            .snaps
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect(),
    })
}

impl View {
    /// Chooses one snapshot: the newest at or before `at`, an id prefix, or
    /// `latest`, the newest that is not damaged (checked newest first, so
    /// only the snapshots passed over and the chosen one have their
    /// reference lists read). When every snapshot is damaged, `latest` is the
    /// newest, with a warning that ends in `hint`. The one place restore, ls,
    /// cat, export, find and diff choose a snapshot; returns its place in
    /// [`View::snaps`].
    pub fn pick(&self, spec: Option<&str>, at: Option<DateTime<Utc>>, hint: &str) -> Result<usize> {
        let snaps = &self.snaps;
        let before = match at {
            Some(t) => Some(
                snaps
                    .iter()
                    .rposition(|(_, s)| s.time <= t)
                    .ok_or_else(|| {
                        anyhow!(
                            "no snapshot at or before {}; list them with `coffer snapshots`",
                            t.to_rfc3339()
                        )
                    })?,
            ),
            None => None,
        };
        let spec = spec.unwrap_or("latest");
        if at.is_none() && spec != "latest" {
            let id = Repository::resolve_snapshot(snaps, spec)?.0;
            return Ok(snaps.iter().position(|(s, _)| *s == id).unwrap_or_default());
        }
        if snaps.is_empty() {
            return Err(anyhow!(
                "no snapshots (that match the filters); list them with `coffer snapshots`"
            ));
        }
        let (whole, skipped) = newest_whole(
            &self.repo,
            &self.catalog,
            &self.blobs,
            &self.health,
            snaps,
            before,
        )?;
        let when = |i: usize| snaps[i].1.time.format("%Y-%m-%d %H:%M:%S UTC");
        if let Some(w) = whole {
            for (i, why) in &skipped {
                super::warn(&format!(
                    "skipped damaged snapshot {} ({}): {why}; using {} ({}){hint}",
                    snaps[*i].0.short(),
                    when(*i),
                    snaps[w].0.short(),
                    when(w)
                ));
            }
            return Ok(w);
        }
        let newest = before.unwrap_or(snaps.len() - 1);
        super::warn(&format!(
            "every snapshot{} is damaged; using the newest ({}), of {}: {}{hint}",
            if at.is_some() {
                " at or before that time"
            } else {
                ""
            },
            snaps[newest].0.short(),
            when(newest),
            skipped.first().map(|s| s.1.as_str()).unwrap_or("")
        ));
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_every_accepted_form() {
        let now: DateTime<Utc> = "2026-11-22T12:00:00Z".parse().unwrap();
        let p = |s: &str, end: bool| parse_when(s, end, now).unwrap().to_rfc3339();
        assert_eq!(
            p("2026-11-20T14:00:00+09:00", false),
            "2026-11-20T05:00:00+00:00"
        );
        assert_eq!(p("2 days ago", false), "2026-11-20T12:00:00+00:00");
        assert_eq!(p("3h ago", false), "2026-11-22T09:00:00+00:00");
        assert_eq!(p("now", true), now.to_rfc3339());
        assert!(parse_when("yesterday-ish", false, now).is_err());
        // Local forms follow TZ; with TZ unset or UTC they are UTC.
        if std::env::var("TZ").is_err() && jiff::tz::TimeZone::system() == jiff::tz::TimeZone::UTC {
            assert_eq!(p("2026-11-20 14:00", false), "2026-11-20T14:00:00+00:00");
            assert!(p("2026-11-20", true).starts_with("2026-11-20T23:59:59"));
            assert_eq!(p("2026-11-20", false), "2026-11-20T00:00:00+00:00");
        }
    }
}
