//! Choosing snapshots: filters (host, profile name, source path, since,
//! until), and a snapshot named by id prefix, `latest` (the newest complete
//! one) or a time (the newest at or before it); and, after a restore, the
//! older snapshots that hold intact what the chosen one could not give.
//! `latest` and a time never choose a suspect snapshot (one that claims a
//! time later than storage wrote it: [`is_suspect`]); an id still does.
//!
//! Times are RFC 3339 (`2026-11-20T14:00:00+01:00`), a local date and time
//! (`2026-11-20 14:00`, in the zone of `TZ`), a date (`2026-11-20`: its end for
//! `at`/`until`, its start for `since`), `now`, or a span ago
//! (`2 days ago`, `3h ago`).
//!
//! Nothing here prints: what a front end should tell the operator comes
//! back as values ([`Note`], [`View::open`]'s warnings).

use super::health::Health;
use super::restore::{Failure, Overwrite, RestoreOptions, RestoreReport, restore};
use super::sync::{Wanted, sync_wanting};
use super::{Newest, NoProgress, for_each_entry, is_suspect, newest_whole, suspicion};
use crate::catalog::{BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::EntryKind;
use crate::{Error, Result};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;

/// Which snapshots to consider; every unset field lets all through.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub host: Option<String>,
    pub profile_name: Option<String>,
    /// Sources include this path (or a folder above it).
    pub path: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
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

/// A lower bound in time: a date means its start.
pub fn since(s: &str) -> std::result::Result<Timestamp, String> {
    parse_when(s, false, Timestamp::now())
}

/// An upper bound in time (also `at`): a date means its end.
pub fn until(s: &str) -> std::result::Result<Timestamp, String> {
    parse_when(s, true, Timestamp::now())
}

/// For "the snapshot at": a date means its end.
pub fn at(s: &str) -> std::result::Result<Timestamp, String> {
    until(s)
}

/// Parses a time as the module docs describe; `end`: a bare date means its end.
pub fn parse_when(s: &str, end: bool, now: Timestamp) -> std::result::Result<Timestamp, String> {
    let s = s.trim();
    let tz = jiff::tz::TimeZone::system();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = crate::time::parse(s) {
        return Ok(t);
    }
    if let Some(ago) = s.strip_suffix(" ago").or_else(|| s.strip_suffix("ago")) {
        let span: jiff::Span = ago
            .trim()
            .parse()
            .map_err(|e| format!("{s:?}: {e}; write e.g. \"2 days ago\" or \"3h ago\""))?;
        let then = now
            .to_zoned(tz)
            .checked_sub(span)
            .map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(then.timestamp());
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
        return z.map_err(|e| format!("{s:?}: {e}"));
    }
    if let Ok(dt) = s.replacen(' ', "T", 1).parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz)
            .map(|z| z.timestamp())
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
    pub blobs: BlobMap,
    /// The packs in storage and what is known bad.
    pub health: Health,
    pub snaps: Vec<(SnapshotId, Snapshot)>,
    /// Some snapshot in storage was left unread ([`View::open_one`]).
    pub partial: bool,
}

/// Something the operator should hear about a choice of snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// `skipped` is damaged (`why`), so the older `using` was chosen.
    SkippedDamaged {
        skipped: (SnapshotId, Timestamp),
        why: String,
        using: (SnapshotId, Timestamp),
    },
    /// Every snapshot (at or before the time asked, if `at`) is damaged;
    /// the newest, `using`, was chosen anyway.
    AllDamaged {
        at: bool,
        using: (SnapshotId, Timestamp),
        why: String,
    },
    /// `skipped` is suspect (`why`), so the older `using` was chosen.
    SkippedSuspect {
        skipped: SnapshotId,
        why: String,
        using: (SnapshotId, Timestamp),
    },
    /// The snapshot named by id is suspect (`why`); chosen as asked.
    ChosenSuspect { id: SnapshotId, why: String },
    /// `latest` or a time chose among the snapshots of `hosts` hosts (no
    /// `--host` narrowed them): the newest, of `host`.
    HostChosen { host: String, hosts: usize },
}

impl Note {
    /// Whether the note is about damage (what `--fallback` can make good).
    pub fn is_damage(&self) -> bool {
        matches!(self, Note::SkippedDamaged { .. } | Note::AllDamaged { .. })
    }
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = |t: &Timestamp| crate::time::human(*t);
        match self {
            Note::SkippedDamaged {
                skipped,
                why,
                using,
            } => write!(
                f,
                "skipped damaged snapshot {} ({}): {why}; using {} ({})",
                skipped.0.short(),
                when(&skipped.1),
                using.0.short(),
                when(&using.1)
            ),
            Note::AllDamaged { at, using, why } => write!(
                f,
                "every snapshot{} is damaged; using the newest ({}), of {}: {why}",
                if *at { " at or before that time" } else { "" },
                using.0.short(),
                when(&using.1),
            ),
            Note::SkippedSuspect {
                skipped,
                why,
                using,
            } => write!(
                f,
                "passed over suspect snapshot {}: {why}; using {} ({})",
                skipped.short(),
                using.0.short(),
                when(&using.1)
            ),
            Note::HostChosen { host, hosts } => write!(
                f,
                "the snapshots come from {hosts} hosts; using the newest, of host {host}: pass --host to choose"
            ),
            Note::ChosenSuspect { id, why } => write!(
                f,
                "snapshot {} is suspect: {why}; it may have been planted: use it only if you trust it",
                id.short()
            ),
        }
    }
}

/// Adds the warnings of a second sync that the first did not give.
pub fn merge_warnings(warnings: &mut Vec<String>, more: Vec<String>) {
    for w in more {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
}

/// A snapshot chosen by [`View::pick`]: its place in [`View::snaps`], and
/// what the operator should hear about the choice.
#[derive(Debug)]
pub struct Choice {
    pub index: usize,
    pub notes: Vec<Note>,
}

impl View {
    /// Syncs the catalog with the repository and keeps the snapshots
    /// `filter` lets through. Returns the view and, as warnings, the objects
    /// that could not be read (they are skipped).
    pub fn open(
        repo: Repository,
        catalog: Catalog,
        filter: &Filter,
    ) -> Result<(View, Vec<String>)> {
        Self::open_wanting(repo, catalog, filter, &Wanted::All)
    }

    fn open_wanting(
        repo: Repository,
        mut catalog: Catalog,
        filter: &Filter,
        wanted: &Wanted,
    ) -> Result<(View, Vec<String>)> {
        let synced = sync_wanting(&repo, &mut catalog, wanted)?;
        let warnings = synced.warnings();
        let view = View {
            repo,
            catalog,
            blobs: synced.blobs,
            health: synced.health,
            snaps: synced
                .snaps
                .into_iter()
                .filter(|(_, s)| filter.matches(s))
                .collect(),
            partial: synced.partial,
        };
        Ok((view, warnings))
    }

    /// Opens the view to choose one snapshot (restore, ls, cat, export) and
    /// chooses it as [`View::pick`] does. Of the snapshots the catalog
    /// lacks (all, on a new machine) it reads only those that decide the
    /// choice: an id's matches, or for `latest` the newest by storage time
    /// ([`Wanted::Newest`]), not the whole history. A choice that is not
    /// plain (the newest damaged or suspect, no match; a note on a snapshot
    /// named by id is plain) is made again over the whole history, so it
    /// is the same choice with the same notes,
    /// but for [`Note::HostChosen`], which then counts the hosts of the
    /// snapshots read. [`View::whole`] reads the rest (what
    /// [`View::fallback`] searches).
    pub fn open_one(
        repo: Repository,
        catalog: Catalog,
        filter: &Filter,
        (spec, at): (Option<&str>, Option<Timestamp>),
    ) -> Result<(View, Choice, Vec<String>)> {
        let spec_l = spec.unwrap_or("latest").to_ascii_lowercase();
        let keeps = |s: &Snapshot| filter.matches(s);
        let wanted = match (at, spec_l.as_str()) {
            (None, "latest") => Wanted::Newest(&keeps),
            (None, p) if p.len() >= 4 && p.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Wanted::Prefix(p)
            }
            _ => Wanted::All,
        };
        let (view, mut warnings) = Self::open_wanting(repo, catalog, filter, &wanted)?;
        if view.partial {
            // A note on the one snapshot named by id needs no other snapshot.
            let plain = |c: &Choice| {
                c.notes
                    .iter()
                    .all(|n| matches!(n, Note::HostChosen { .. } | Note::ChosenSuspect { .. }))
            };
            match view.pick(spec, at) {
                Ok(c) if plain(&c) => return Ok((view, c, warnings)),
                // Decided over the whole history below.
                _ => {}
            }
        }
        let (view, _, more) = view.whole(filter, 0)?;
        merge_warnings(&mut warnings, more);
        let choice = view.pick(spec, at)?;
        Ok((view, choice, warnings))
    }

    /// The view over the whole history: reads what [`View::open_one`] left
    /// unread, and moves `index` (a place in `snaps`) to the same snapshot.
    pub fn whole(self, filter: &Filter, index: usize) -> Result<(View, usize, Vec<String>)> {
        if !self.partial {
            return Ok((self, index, Vec::new()));
        }
        let id = self.snaps.get(index).map(|(id, _)| *id);
        let (view, warnings) = Self::open_wanting(self.repo, self.catalog, filter, &Wanted::All)?;
        let index = id
            .and_then(|id| view.snaps.iter().position(|(s, _)| *s == id))
            .unwrap_or(index);
        Ok((view, index, warnings))
    }

    /// Chooses one snapshot: the newest at or before `at`, an id prefix, or
    /// `latest`, the newest that is neither suspect nor damaged (checked
    /// newest first, so only the snapshots passed over and the chosen one
    /// have their reference lists read). When every snapshot is damaged,
    /// `latest` is the newest that is not suspect, with a note; when every
    /// one is suspect, [`Error::AllSuspect`]. The one place restore, ls,
    /// cat, export and diff choose a snapshot.
    pub fn pick(&self, spec: Option<&str>, at: Option<Timestamp>) -> Result<Choice> {
        let snaps = &self.snaps;
        let before = match at {
            Some(t) => Some(
                snaps
                    .iter()
                    .rposition(|(_, s)| s.time <= t)
                    .ok_or_else(|| Error::NoSnapshotBefore {
                        at: crate::time::human(t),
                    })?,
            ),
            None => None,
        };
        let spec = spec.unwrap_or("latest");
        if at.is_none() && spec != "latest" {
            let id = Repository::resolve_snapshot(snaps, spec)?.0;
            let index = snaps.iter().position(|(s, _)| *s == id).unwrap_or_default();
            let notes = snaps
                .get(index)
                .and_then(|(_, s)| suspicion(s))
                .map(|why| Note::ChosenSuspect { id, why })
                .into_iter()
                .collect();
            return Ok(Choice { index, notes });
        }
        if snaps.is_empty() {
            return Err(Error::NoSnapshots);
        }
        let found = newest_whole(
            &self.repo,
            &self.catalog,
            &self.blobs,
            &self.health,
            snaps,
            before,
        )?;
        let mut chosen = choice(snaps, before, at.is_some(), found)?;
        chosen.notes.extend(host_note(snaps, chosen.index));
        Ok(chosen)
    }

    /// For each path the restore in `report` could not give, the newest
    /// snapshot older than the one at `index` that holds it as a file with
    /// every blob present and none known bad; with `apply`, restores it from
    /// there (as `opts` says, replacing what is in the target). Only
    /// [`Error::Interrupted`] stops it; other errors are in the answers.
    pub fn fallback(
        &self,
        index: usize,
        report: &RestoreReport,
        opts: &RestoreOptions,
        apply: bool,
        cancel: &AtomicBool,
    ) -> Result<Vec<Recovered>> {
        let intact = |id: &BlobId| {
            !report.bad_blobs.contains(id)
                && self.blobs.get(id).is_some_and(|l| self.health.usable(&l))
        };
        let mut missing: HashSet<Vec<u8>> =
            report.failures.iter().map(|f| f.path.clone()).collect();
        let mut found: Vec<(usize, HashSet<Vec<u8>>)> = Vec::new();
        for j in (0..index.min(self.snaps.len())).rev() {
            if missing.is_empty() {
                break;
            }
            // Files are not taken from a snapshot that may have been planted.
            if is_suspect(&self.snaps[j].1) {
                continue;
            }
            let mut here = HashSet::new();
            // A list that can not be read holds nothing to recover from.
            let _ = for_each_entry(&self.repo, &self.blobs, &self.snaps[j].1, |e| {
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
            let (sid, snap) = &self.snaps[j];
            let mut errors = if apply {
                self.restore_only(snap, &paths, opts, cancel)?
            } else {
                HashMap::new()
            };
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

    /// Restores exactly `paths` of `snap`, replacing what is there; returns
    /// the error of each path that failed.
    fn restore_only(
        &self,
        snap: &Snapshot,
        paths: &HashSet<Vec<u8>>,
        opts: &RestoreOptions,
        cancel: &AtomicBool,
    ) -> Result<HashMap<Vec<u8>, String>> {
        let o = RestoreOptions {
            only: Some(paths.clone()),
            overwrite: Overwrite::Always,
            include: Vec::new(),
            exclude: Vec::new(),
            ..opts.clone()
        };
        Ok(
            match restore(&self.repo, &self.blobs, snap, &o, &NoProgress, cancel) {
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Ok(r) => r
                    .failures
                    .into_iter()
                    .map(|f| (f.path, f.message))
                    .collect(),
                Err(e) => paths.iter().map(|p| (p.clone(), e.to_string())).collect(),
            },
        )
    }
}

/// The choice among `snaps` once [`newest_whole`] answered: the whole one
/// it found, else the newest damaged one that is not suspect (noting that
/// all are damaged), noting the snapshots passed over, newest first. When
/// every one at or before `before` is suspect, none is chosen. `snaps` is
/// not empty.
fn choice(
    snaps: &[(SnapshotId, Snapshot)],
    before: Option<usize>,
    at: bool,
    found: Newest,
) -> Result<Choice> {
    let it = |i: usize| (snaps[i].0, snaps[i].1.time);
    let Newest {
        whole,
        damaged,
        suspect,
    } = found;
    let all_damaged = whole.is_none();
    let index = match (whole, damaged.first(), suspect.first()) {
        (Some(w), _, _) => w,
        (None, Some((d, _)), _) => *d,
        (None, None, Some(&newest)) => {
            let snap = &snaps[newest].1;
            return Err(Error::AllSuspect {
                at,
                newest: snaps[newest].0.short(),
                why: suspicion(snap).unwrap_or_default(),
            });
        }
        (None, None, None) => before.unwrap_or(snaps.len().saturating_sub(1)),
    };
    let mut notes: Vec<(usize, Note)> = suspect
        .into_iter()
        .filter(|i| *i > index)
        .map(|i| {
            let why = suspicion(&snaps[i].1).unwrap_or_default();
            let note = Note::SkippedSuspect {
                skipped: snaps[i].0,
                why,
                using: it(index),
            };
            (i, note)
        })
        .collect();
    if all_damaged {
        let why = damaged.into_iter().next().map(|s| s.1).unwrap_or_default();
        let note = Note::AllDamaged {
            at,
            using: it(index),
            why,
        };
        notes.push((index, note));
    } else {
        notes.extend(damaged.into_iter().map(|(i, why)| {
            let note = Note::SkippedDamaged {
                skipped: it(i),
                why,
                using: it(index),
            };
            (i, note)
        }));
    }
    notes.sort_by_key(|n| std::cmp::Reverse(n.0));
    Ok(Choice {
        index,
        notes: notes.into_iter().map(|(_, n)| n).collect(),
    })
}

/// When `snaps` come from more than one host, which one `latest` or a
/// time chose (`index`): a prefix shared by several hosts would otherwise
/// hand one host's files to the operator of another without a word.
fn host_note(snaps: &[(SnapshotId, Snapshot)], index: usize) -> Option<Note> {
    let hosts: HashSet<&str> = snaps.iter().map(|(_, s)| s.host.as_str()).collect();
    let host = &snaps.get(index)?.1.host;
    (hosts.len() > 1).then(|| Note::HostChosen {
        host: host.clone(),
        hosts: hosts.len(),
    })
}

/// One file the chosen snapshot could not give, and where it is intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub path: Vec<u8>,
    /// The newest older snapshot that holds it intact, if any.
    pub from: Option<(SnapshotId, Timestamp)>,
    /// Restored from there (only when asked to).
    pub restored: bool,
    /// Why restoring it from there failed.
    pub error: Option<String>,
}

/// The failures of a restore that no older snapshot made good.
pub fn unrecovered<'a>(failures: &'a [Failure], recovered: &[Recovered]) -> Vec<&'a Failure> {
    let made_good: HashSet<&[u8]> = recovered
        .iter()
        .filter(|r| r.restored)
        .map(|r| r.path.as_slice())
        .collect();
    failures
        .iter()
        .filter(|f| !made_good.contains(f.path.as_slice()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::restore::FailKind;

    #[test]
    fn times_in_every_accepted_form() {
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().unwrap();
        let p = |s: &str, end: bool| crate::time::rfc3339_offset(parse_when(s, end, now).unwrap());
        assert_eq!(
            p("2026-11-20T14:00:00+09:00", false),
            "2026-11-20T05:00:00+00:00"
        );
        assert_eq!(p("2 days ago", false), "2026-11-20T12:00:00+00:00");
        assert_eq!(p("3h ago", false), "2026-11-22T09:00:00+00:00");
        assert_eq!(p("now", true), crate::time::rfc3339_offset(now));
        assert!(parse_when("yesterday-ish", false, now).is_err());
        // Local forms follow TZ; with TZ unset or UTC they are UTC.
        if std::env::var("TZ").is_err() && jiff::tz::TimeZone::system() == jiff::tz::TimeZone::UTC {
            assert_eq!(p("2026-11-20 14:00", false), "2026-11-20T14:00:00+00:00");
            assert!(p("2026-11-20", true).starts_with("2026-11-20T23:59:59"));
            assert_eq!(p("2026-11-20", false), "2026-11-20T00:00:00+00:00");
        }
    }

    fn snap(host: &str, profile: &str, paths: &[&str], time: &str) -> Snapshot {
        Snapshot {
            profile: profile.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..Snapshot::bare(time.parse().unwrap(), host)
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    #[test]
    fn filters_keep_what_they_name() {
        let s = snap(
            "db1",
            "nightly",
            &["/srv/data", "/etc/"],
            "2026-11-20T12:00:00Z",
        );
        assert!(Filter::default().matches_all() && Filter::default().matches(&s));
        let f = |f: Filter| f.matches(&s);
        assert!(f(Filter {
            host: Some("db1".into()),
            profile_name: Some("nightly".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            host: Some("db2".into()),
            ..Filter::default()
        }));
        assert!(f(Filter {
            path: Some("srv/data/x/".into()),
            ..Filter::default()
        }));
        assert!(f(Filter {
            path: Some("/etc".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            path: Some("/srv/database".into()),
            ..Filter::default()
        }));
        let t = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        assert!(f(Filter {
            since: t("2026-11-20T12:00:00Z"),
            until: t("2026-11-20T12:00:00Z"),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            since: t("2026-11-20T12:00:01Z"),
            ..Filter::default()
        }));
        assert!(
            !Filter {
                until: t("2026-11-20T11:00:00Z"),
                ..Filter::default()
            }
            .matches_all()
        );
    }

    #[test]
    fn a_choice_notes_the_damaged_snapshots_passed_over() {
        let snaps: Vec<_> = (0..3u8)
            .map(|n| {
                let t = format!("2026-11-2{n}T12:00:00Z");
                (id(n), snap("h", "p", &["/"], &t))
            })
            .collect();
        let found = |whole, damaged: Vec<(usize, &str)>, suspect| Newest {
            whole,
            damaged: damaged
                .into_iter()
                .map(|(i, w)| (i, w.to_string()))
                .collect(),
            suspect,
        };
        let c = choice(
            &snaps,
            None,
            false,
            found(Some(0), vec![(2, "x"), (1, "y")], vec![]),
        )
        .unwrap();
        assert_eq!(c.index, 0);
        assert_eq!(c.notes.len(), 2);
        let first = c.notes[0].to_string();
        assert!(
            first.starts_with(&format!(
                "skipped damaged snapshot {} ({}): x; using {} ({})",
                id(2).short(),
                crate::time::human(snaps[2].1.time),
                id(0).short(),
                crate::time::human(snaps[0].1.time)
            )),
            "{first}"
        );
        // None whole: the newest at or before the bound, with the first reason.
        let c = choice(
            &snaps,
            Some(1),
            true,
            found(None, vec![(1, "a"), (0, "b")], vec![]),
        )
        .unwrap();
        assert_eq!(c.index, 1);
        assert_eq!(
            c.notes,
            vec![Note::AllDamaged {
                at: true,
                using: (id(1), snaps[1].1.time),
                why: "a".into()
            }]
        );
        assert!(
            c.notes[0]
                .to_string()
                .starts_with("every snapshot at or before that time is damaged; using the newest")
        );
        let c = choice(&snaps, None, false, found(None, vec![], vec![])).unwrap();
        assert_eq!(c.index, 2);
    }

    /// Three snapshots; the newest claims 2099 but was stored in 2026.
    fn with_planted() -> Vec<(SnapshotId, Snapshot)> {
        let mut snaps: Vec<_> = (0..2u8)
            .map(|n| {
                let t = format!("2026-11-2{n}T12:00:00Z");
                let mut s = snap("h", "p", &["/"], &t);
                s.stored = Some(s.time);
                (id(n), s)
            })
            .collect();
        let mut planted = snap("h", "p", &["/"], "2099-01-01T00:00:00Z");
        planted.stored = Some("2026-11-22T12:00:00Z".parse().unwrap());
        snaps.push((id(9), planted));
        snaps
    }

    #[test]
    fn a_choice_passes_over_suspect_snapshots_and_says_so() {
        let snaps = with_planted();
        let found = Newest {
            whole: Some(1),
            damaged: vec![],
            suspect: vec![2],
        };
        let c = choice(&snaps, None, false, found).unwrap();
        assert_eq!(c.index, 1);
        assert_eq!(c.notes.len(), 1);
        assert!(!c.notes[0].is_damage());
        assert_eq!(
            c.notes[0].to_string(),
            format!(
                "passed over suspect snapshot {}: it claims {} but storage recorded writing it at {}; using {} ({})",
                id(9).short(),
                crate::time::human(t("2099-01-01T00:00:00Z")),
                crate::time::human(t("2026-11-22T12:00:00Z")),
                id(1).short(),
                crate::time::human(t("2026-11-21T12:00:00Z")),
            )
        );
        // The rest damaged: the newest of them that is not suspect, never the planted one.
        let found = Newest {
            whole: None,
            damaged: vec![(1, "gone".into()), (0, "gone too".into())],
            suspect: vec![2],
        };
        let c = choice(&snaps, None, false, found).unwrap();
        assert_eq!(c.index, 1);
        assert!(matches!(c.notes[0], Note::SkippedSuspect { skipped, .. } if skipped == id(9)));
        assert!(
            matches!(&c.notes[1], Note::AllDamaged { using, why, .. } if using.0 == id(1) && why == "gone")
        );
    }

    #[test]
    fn a_choice_among_several_hosts_names_the_host() {
        let snaps = vec![
            (id(1), snap("web-1", "p", &["/"], "2026-11-20T12:00:00Z")),
            (id(2), snap("web-2", "p", &["/"], "2026-11-21T12:00:00Z")),
        ];
        let note = host_note(&snaps, 1);
        assert_eq!(
            note,
            Some(Note::HostChosen {
                host: "web-2".into(),
                hosts: 2
            })
        );
        assert_eq!(
            note.map(|n| n.to_string()).unwrap_or_default(),
            "the snapshots come from 2 hosts; using the newest, of host web-2: pass --host to choose"
        );
        assert_eq!(host_note(&snaps[..1], 0), None);
    }

    #[test]
    fn when_every_snapshot_is_suspect_none_is_chosen() {
        // Only the planted one (a filter let no other through).
        let snaps = &with_planted()[2..];
        let found = Newest {
            whole: None,
            damaged: vec![],
            suspect: vec![0],
        };
        let err = choice(snaps, None, false, found).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::AllSuspect { at: false, .. }), "{text}");
        assert_eq!(
            text,
            format!(
                "every snapshot is suspect: the newest, {}: it claims {} but storage recorded writing it at {}; choose a snapshot by id (`coffer snapshots` lists them) if you trust it",
                id(9).short(),
                crate::time::human(t("2099-01-01T00:00:00Z")),
                crate::time::human(t("2026-11-22T12:00:00Z")),
            )
        );
    }

    #[test]
    fn only_failures_no_older_snapshot_made_good_remain() {
        let fail = |p: &str| Failure {
            path: p.as_bytes().to_vec(),
            kind: FailKind::DamagedBlob,
            message: "bad".into(),
        };
        let failures = vec![fail("a"), fail("b"), fail("c")];
        let rec = |p: &str, restored: bool| Recovered {
            path: p.as_bytes().to_vec(),
            from: Some((id(1), Timestamp::now())),
            restored,
            error: None,
        };
        let left = unrecovered(&failures, &[rec("a", true), rec("b", false)]);
        let left: Vec<&[u8]> = left.iter().map(|f| f.path.as_slice()).collect();
        assert_eq!(left, vec![b"b".as_slice(), b"c".as_slice()]);
    }
}
