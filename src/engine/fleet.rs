//! The fleet view (docs/FLEET.md): every repository under a bucket or a
//! folder, judged from one status object and one listing of `snapshots/`
//! each, so the requests grow with the repositories, not with their
//! snapshots or packs. Also the writer's side: the status object a backup
//! and a prune leave behind.

use super::{claims_past_storage, par_map};
use crate::Result;
use crate::catalog::{Catalog, SnapshotHead};
use crate::repo::keys::{AgentKey, OperatorIdentity};
use crate::repo::status::{self, Recent, STATUS_KEY, Status};
use crate::repo::store::Store;
use crate::repo::{CONFIG_KEY, Repository};
use crate::storage::{Cap, Level, StorageError};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeSet, HashSet};

/// How many folders deep `fleet` looks for repositories by default.
pub const DEFAULT_DEPTH: usize = 3;
/// Requests in flight while surveying.
const IN_FLIGHT: usize = 16;
/// The schedule assumed when the snapshots do not show one: the agent's
/// default cap of six a day.
pub const DEFAULT_PER_DAY: u32 = 6;
/// The most a strip assumes a day (the agent's cap).
const MAX_PER_DAY: u32 = 6;
/// The days of history whose daily counts show the schedule.
const SCHEDULE_DAYS: i64 = 14;

// ---------------------------------------------------------------------------
// The writer's side: the status object
// ---------------------------------------------------------------------------

/// The repository's status as the catalog knows it after a backup or a
/// prune: no request but the write.
pub fn status_of(repo: &Repository, catalog: &Catalog, now: Timestamp) -> Result<Status> {
    let snaps = catalog.snapshot_heads()?;
    let records = catalog.damage_records()?;
    let damaged: HashSet<_> = records
        .iter()
        .flat_map(|(_, r)| r.snapshots.iter().map(|s| s.id))
        .collect();
    let whole =
        |s: &&SnapshotHead| !damaged.contains(&s.id) && !claims_past_storage(s.time, s.stored);
    let hosts: Vec<String> = snaps
        .iter()
        .map(|s| s.host.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let since = now - crate::time::days(status::RECENT_DAYS);
    let mut recent: Vec<Recent> = snaps
        .iter()
        .filter(|s| s.time >= since)
        .map(|s| Recent {
            time: s.time,
            damaged: damaged.contains(&s.id),
        })
        .collect();
    recent.drain(..recent.len().saturating_sub(status::MAX_RECENT));
    Ok(Status {
        format: status::FORMAT.into(),
        version: status::VERSION,
        repository: repo.config.id.clone(),
        written: now,
        snapshots: snaps.len() as u64,
        oldest: snaps.first().map(|s| s.time),
        last_snapshot: snaps.last().map(|s| s.time),
        last_complete: snaps.iter().rev().find(whole).map(|s| s.time),
        damaged_snapshots: snaps.iter().filter(|s| damaged.contains(&s.id)).count() as u64,
        damage_records: records.len() as u64,
        stored_bytes: catalog.packs()?.values().sum(),
        recent,
        hosts: status::seal_hosts(&repo.keys, &hosts),
    })
}

/// Writes the status object again, after a backup or a prune (under its
/// lock). Its failure costs only the fleet view's freshness: the warning
/// to report, if any.
pub fn refresh_status(repo: &Repository, catalog: &Catalog) -> Option<String> {
    let written = status_of(repo, catalog, Timestamp::now()).and_then(|s| {
        repo.store
            .put(STATUS_KEY, s.to_bytes().into())
            .map_err(|e| crate::repo::RepoError::from(e).into())
    });
    written.err().map(|e| {
        format!("the status object (for `coffer fleet`) was not written: {e}; the next backup writes it again")
    })
}

// ---------------------------------------------------------------------------
// The reader's side: surveying a fleet
// ---------------------------------------------------------------------------

/// What may open the sealed host names: the operator's identity opens every
/// repository's, an agent key its own repository's only.
#[derive(Default)]
pub struct Readers {
    pub operator: Option<OperatorIdentity>,
    pub agent: Option<AgentKey>,
}

impl Readers {
    /// The host names of `s`: None when nothing here may open them.
    fn hosts(&self, s: &Status, what: &str) -> Option<std::result::Result<Vec<String>, String>> {
        let mut ids: Vec<&dyn age::Identity> = Vec::new();
        if let Some(op) = &self.operator {
            ids.extend(op.identities.iter().map(|i| i as &dyn age::Identity));
        }
        if let Some(a) = self
            .agent
            .as_ref()
            .filter(|a| a.repository_id == s.repository)
        {
            ids.push(&a.agent_identity);
        }
        if ids.is_empty() {
            return None;
        }
        Some(
            s.open_hosts(ids, self.operator.is_some(), what)
                .map_err(|e| e.to_string()),
        )
    }
}

/// How to survey.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// How many folders deep repositories are looked for.
    pub depth: usize,
    /// A repository whose last complete snapshot is older than this is stale.
    pub stale_after: Option<SignedDuration>,
    pub now: Timestamp,
}

/// What one repository's objects say, before judging: the facts storage
/// recorded (verified) and what the status claims.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The repository's prefix under the surveyed location (`web-1/`).
    pub prefix: String,
    /// The status object, parsed (or why it could not be), if there is one.
    pub status: Option<std::result::Result<Status, String>>,
    /// When storage recorded writing the status object.
    pub status_stored: Option<Timestamp>,
    /// When storage recorded writing each snapshot object, oldest first.
    pub snapshots_stored: Vec<Timestamp>,
    /// The host names, opened (or why not); None when sealed to others.
    pub hosts: Option<std::result::Result<Vec<String>, String>>,
}

/// Why a repository is listed where it is: stale first, then damaged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    Stale,
    Damaged,
    /// Its status claims what storage contradicts.
    Disputed,
    /// No readable status: judged from the listing alone.
    Unknown,
    Ok,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Stale => "stale",
            RowState::Damaged => "damaged",
            RowState::Disputed => "disputed",
            RowState::Unknown => "unknown",
            RowState::Ok => "ok",
        }
    }
}

/// A 90-day strip of schedule slots, oldest first, one character each:
/// `c` complete, `d` damaged, `u` stored (no status says how whole it is),
/// `m` missing where the schedule expected one, `-` none expected (before
/// the first snapshot, or not over yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Strip {
    #[serde(with = "crate::time::serde_rfc3339")]
    pub start: Timestamp,
    pub per_day: u32,
    pub cells: String,
}

/// One repository, judged.
#[derive(Clone, Debug, Serialize)]
pub struct FleetRow {
    pub prefix: String,
    pub state: RowState,
    pub stale: bool,
    pub damaged: bool,
    /// The repository id its status claims.
    pub id: Option<String>,
    pub hosts: Option<Vec<String>>,
    /// The last complete snapshot, as judged (the claim, unless storage
    /// contradicts it; the newest snapshot object without a status).
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub last_complete: Option<Timestamp>,
    /// Seconds since `last_complete`.
    pub age_seconds: Option<i64>,
    /// Snapshot objects storage lists (verified).
    pub snapshots: u64,
    /// When storage recorded writing the newest snapshot object (verified).
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub newest_stored: Option<Timestamp>,
    pub stored_bytes: Option<u64>,
    pub damaged_snapshots: Option<u64>,
    pub damage_records: Option<u64>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub status_written: Option<Timestamp>,
    pub strip: Strip,
    pub notes: Vec<String>,
}

/// Folders whose listing failed: (prefix, why).
pub type Unlisted = Vec<(String, String)>;

/// The fleet, stale and damaged repositories first.
#[derive(Clone, Debug, Serialize)]
pub struct FleetReport {
    pub location: String,
    pub rows: Vec<FleetRow>,
    /// Folders whose listing failed (prefix, why): repositories there are not shown.
    pub unlisted: Unlisted,
}

/// Surveys every repository under `store`'s location: a repository is a
/// folder holding `config`, looked for `opts.depth` folders deep and not
/// looked into further. Per repository: its level of the listing, its
/// status object, one listing of `snapshots/`.
pub fn survey(store: &Store, readers: &Readers, opts: &FleetOptions) -> Result<FleetReport> {
    let (found, unlisted) = discover(store, opts.depth)?;
    let facts = par_map(found, IN_FLIGHT, |(prefix, level)| {
        gather(store, readers, prefix, &level)
    });
    let mut rows: Vec<FleetRow> = facts
        .into_iter()
        .map(|f| judge(f, opts.now, opts.stale_after))
        .collect();
    order(&mut rows);
    Ok(FleetReport {
        location: store.location(),
        rows,
        unlisted,
    })
}

/// The repositories' folders, each with its level of the listing, and the
/// folders that could not be listed. The location itself may be one
/// repository; a refused listing of it is an error.
fn discover(store: &Store, depth: usize) -> Result<(Vec<(String, Level)>, Unlisted)> {
    let root = store.list_level("").map_err(crate::repo::RepoError::from)?;
    if root.object("", CONFIG_KEY).is_some() {
        return Ok((vec![(String::new(), root)], Vec::new()));
    }
    let (mut found, mut unlisted) = (Vec::new(), Vec::new());
    let mut frontier = root.folders;
    for _ in 0..depth {
        let levels = par_map(std::mem::take(&mut frontier), IN_FLIGHT, |f| {
            let level = store.list_level(&f);
            (f, level)
        });
        for (folder, level) in levels {
            match level {
                Ok(l) if l.object(&folder, CONFIG_KEY).is_some() => found.push((folder, l)),
                Ok(l) => frontier.extend(l.folders),
                Err(e) => unlisted.push((folder, e.to_string())),
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((found, unlisted))
}

/// One repository's facts: its status (one read, if the level lists one)
/// and its snapshot objects' storage times (one listing per 1,000).
fn gather(store: &Store, readers: &Readers, prefix: String, level: &Level) -> Facts {
    let key = format!("{prefix}{STATUS_KEY}");
    let stored = level.object(&prefix, STATUS_KEY);
    let cap = Cap {
        max: status::MAX_STATUS,
        what: "a status object",
    };
    let status = stored.map(|_| {
        store
            .get_capped(&key, cap)
            .map_err(|e| e.to_string())
            .and_then(|b| Status::parse(&b, &key).map_err(|e| e.to_string()))
    });
    let hosts = match &status {
        Some(Ok(s)) => readers.hosts(s, &key),
        _ => None,
    };
    // `snapshots/` holds no folders: a level of it is the whole listing,
    // and some servers answer a delimiter listing without walking the bucket.
    let listed: std::result::Result<Vec<_>, StorageError> = store
        .list_level(&format!("{prefix}snapshots/"))
        .map(|l| l.objects);
    let mut notes_status = status;
    let snapshots_stored = match listed {
        Ok(l) => {
            let mut t: Vec<Timestamp> = l.iter().filter_map(|o| o.modified).collect();
            t.sort();
            t
        }
        Err(e) => {
            // Without the listing nothing is verified: say so in the status slot.
            if notes_status.is_none() {
                notes_status = Some(Err(format!("snapshots/ can not be listed: {e}")));
            }
            Vec::new()
        }
    };
    Facts {
        prefix,
        status: notes_status,
        status_stored: stored.and_then(|o| o.modified),
        snapshots_stored,
        hosts,
    }
}

/// Stale and damaged repositories first, then by how doubtful, then by name.
pub fn order(rows: &mut [FleetRow]) {
    rows.sort_by(|a, b| {
        (!a.stale, !a.damaged, a.state, &a.prefix).cmp(&(!b.stale, !b.damaged, b.state, &b.prefix))
    });
}

/// Judges one repository from its facts (pure): what storage recorded is
/// verified; the status is a claim, believed where storage does not
/// contradict it (see docs/FLEET.md, "Verified and claimed").
pub fn judge(f: Facts, now: Timestamp, stale_after: Option<SignedDuration>) -> FleetRow {
    let newest_stored = f.snapshots_stored.last().copied();
    let mut notes = Vec::new();
    let mut disputed = false;
    let (status, last_complete) = match f.status {
        Some(Ok(s)) => {
            let last = believed_last(&s, newest_stored, &mut notes);
            disputed = last != s.last_complete;
            if let (Some(n), Some(w)) = (newest_stored, f.status_stored)
                && n.duration_since(w) > super::CLOCK_SKEW
            {
                notes.push(format!(
                    "a snapshot was stored at {} after the status was written: the status is behind (an older coffer wrote it?)",
                    crate::time::rfc3339_secs(n)
                ));
            }
            if s.snapshots != f.snapshots_stored.len() as u64 {
                notes.push(format!(
                    "the status counts {} snapshots, storage lists {}",
                    s.snapshots,
                    f.snapshots_stored.len()
                ));
            }
            (Some(s), last)
        }
        Some(Err(why)) => {
            notes.push(format!(
                "status unreadable ({why}): judged from the listing alone"
            ));
            (None, newest_stored)
        }
        None => {
            notes.push(
                "no status object (written by an older coffer): judged from the listing alone"
                    .into(),
            );
            (None, newest_stored)
        }
    };
    let hosts = match f.hosts {
        Some(Ok(h)) => Some(h),
        Some(Err(why)) => {
            notes.push(format!("host names can not be opened: {why}"));
            None
        }
        None => None,
    };
    let age = last_complete.map(|t| now.duration_since(t));
    let stale = stale_after.is_some_and(|d| age.is_none_or(|a| a > d));
    let damaged = status
        .as_ref()
        .is_some_and(|s| s.damaged_snapshots > 0 || s.damage_records > 0);
    let state = match () {
        _ if stale => RowState::Stale,
        _ if damaged => RowState::Damaged,
        _ if disputed => RowState::Disputed,
        _ if status.is_none() => RowState::Unknown,
        _ => RowState::Ok,
    };
    let strip = match &status {
        Some(s) => {
            let marks: Vec<(Timestamp, char)> = s
                .recent
                .iter()
                .map(|r| (r.time, if r.damaged { 'd' } else { 'c' }))
                .collect();
            strip(&marks, s.oldest, now)
        }
        None => {
            let marks: Vec<(Timestamp, char)> =
                f.snapshots_stored.iter().map(|t| (*t, 'u')).collect();
            strip(&marks, f.snapshots_stored.first().copied(), now)
        }
    };
    FleetRow {
        prefix: f.prefix.trim_end_matches('/').to_string(),
        state,
        stale,
        damaged,
        id: status.as_ref().map(|s| s.repository.clone()),
        hosts,
        last_complete,
        age_seconds: age.map(|a| a.as_secs()),
        snapshots: f.snapshots_stored.len() as u64,
        newest_stored,
        stored_bytes: status.as_ref().map(|s| s.stored_bytes),
        damaged_snapshots: status.as_ref().map(|s| s.damaged_snapshots),
        damage_records: status.as_ref().map(|s| s.damage_records),
        status_written: status.as_ref().map(|s| s.written),
        strip,
        notes,
    }
}

/// The status's last complete snapshot, unless storage contradicts it: a
/// claim later than every snapshot object storage holds (beyond the clock
/// skew) can not be true, and the newest object's storage time stands in.
fn believed_last(
    s: &Status,
    newest_stored: Option<Timestamp>,
    notes: &mut Vec<String>,
) -> Option<Timestamp> {
    let claim = s.last_complete?;
    match newest_stored {
        None => {
            notes.push(format!(
                "the status claims a complete snapshot at {}, but storage lists no snapshot",
                crate::time::rfc3339_secs(claim)
            ));
            None
        }
        Some(n) if claim.duration_since(n) > super::CLOCK_SKEW => {
            notes.push(format!(
                "the status claims a complete snapshot at {}, later than the newest snapshot storage holds ({}): judged by storage's time",
                crate::time::rfc3339_secs(claim),
                crate::time::rfc3339_secs(n)
            ));
            Some(n)
        }
        Some(_) => Some(claim),
    }
}

/// The schedule the snapshots show: the median of the daily counts over
/// the last full days (at most [`SCHEDULE_DAYS`], from the first snapshot
/// on), between 1 and 6; six a day when no full day is known.
pub fn per_day(times: &[Timestamp], oldest: Option<Timestamp>, now: Timestamp) -> u32 {
    let today = day_start(now);
    let first = oldest.map_or(today, day_start);
    let mut counts: Vec<u32> = (1..=SCHEDULE_DAYS)
        .map(|back| today - crate::time::days(back))
        .filter(|d| *d > first) // the first day is partial too
        .map(|d| {
            let end = d + crate::time::days(1);
            times.iter().filter(|t| **t >= d && **t < end).count() as u32
        })
        .collect();
    if counts.is_empty() {
        return DEFAULT_PER_DAY;
    }
    counts.sort_unstable();
    counts[counts.len() / 2].clamp(1, MAX_PER_DAY)
}

/// Midnight UTC of `t`'s day.
fn day_start(t: Timestamp) -> Timestamp {
    let secs = t.as_second();
    Timestamp::from_second(secs - secs.rem_euclid(86_400)).unwrap_or(t)
}

/// The strip of the [`status::RECENT_DAYS`] days up to `now`: `marks` are
/// snapshot times with their cell (`c`, `d` or `u`; the best of a slot
/// wins), `oldest` the repository's first snapshot (slots before it expect
/// none).
pub fn strip(marks: &[(Timestamp, char)], oldest: Option<Timestamp>, now: Timestamp) -> Strip {
    let times: Vec<Timestamp> = marks.iter().map(|(t, _)| *t).collect();
    let per_day = per_day(&times, oldest, now);
    let start = day_start(now) - crate::time::days(status::RECENT_DAYS - 1);
    let slot = SignedDuration::from_secs(86_400 / i64::from(per_day));
    let slots = status::RECENT_DAYS as usize * per_day as usize;
    let mut cells = vec!['-'; slots];
    let index = |t: Timestamp| -> Option<usize> {
        let n = t.duration_since(start).as_secs().div_euclid(slot.as_secs());
        usize::try_from(n).ok().filter(|n| *n < slots)
    };
    let rank = |c: char| match c {
        'c' => 3,
        'u' => 2,
        'd' => 1,
        _ => 0,
    };
    for (t, mark) in marks {
        if let Some(i) = index(*t)
            && rank(*mark) > rank(cells[i])
        {
            cells[i] = *mark;
        }
    }
    for (i, cell) in cells.iter_mut().enumerate() {
        let begins = start + slot * i as i32;
        let over = begins + slot <= now;
        let expected = oldest.is_some_and(|o| begins + slot > o);
        if *cell == '-' && over && expected {
            *cell = 'm';
        }
    }
    Strip {
        start,
        per_day,
        cells: cells.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn status(last: Option<&str>, snapshots: u64) -> Status {
        Status {
            format: status::FORMAT.into(),
            version: status::VERSION,
            repository: "r".into(),
            written: t("2026-12-10T12:00:00Z"),
            snapshots,
            oldest: Some(t("2026-12-01T00:00:00Z")),
            last_snapshot: last.map(t),
            last_complete: last.map(t),
            damaged_snapshots: 0,
            damage_records: 0,
            stored_bytes: 10,
            recent: Vec::new(),
            hosts: String::new(),
        }
    }

    fn facts(prefix: &str, s: Option<Status>, stored: &[&str]) -> Facts {
        Facts {
            prefix: prefix.into(),
            status: s.map(Ok),
            status_stored: Some(t("2026-12-10T12:00:01Z")),
            snapshots_stored: stored.iter().map(|s| t(s)).collect(),
            hosts: None,
        }
    }

    const NOW: &str = "2026-12-10T13:00:00Z";

    #[test]
    fn the_claim_stands_where_storage_agrees_and_gives_way_where_it_does_not() {
        let day = Some(crate::time::days(1));
        let ok = judge(
            facts(
                "a/",
                Some(status(Some("2026-12-10T11:59:00Z"), 1)),
                &["2026-12-10T12:00:00Z"],
            ),
            t(NOW),
            day,
        );
        assert_eq!(
            (ok.state, ok.stale, ok.prefix.as_str()),
            (RowState::Ok, false, "a")
        );
        assert_eq!(ok.last_complete, Some(t("2026-12-10T11:59:00Z")));
        assert!(ok.notes.is_empty(), "{:?}", ok.notes);
        // A status that claims a fresh snapshot storage never got: judged
        // by storage's (old) time, so it is stale.
        let lying = judge(
            facts(
                "b/",
                Some(status(Some("2026-12-10T11:00:00Z"), 1)),
                &["2026-12-01T10:00:00Z"],
            ),
            t(NOW),
            day,
        );
        assert_eq!(lying.last_complete, Some(t("2026-12-01T10:00:00Z")));
        assert!(lying.stale);
        assert!(
            lying.notes[0].contains("later than the newest snapshot"),
            "{:?}",
            lying.notes
        );
        // Without --stale nothing is stale, and the dispute shows.
        let disputed = judge(
            facts(
                "b/",
                Some(status(Some("2026-12-10T11:00:00Z"), 1)),
                &["2026-12-01T10:00:00Z"],
            ),
            t(NOW),
            None,
        );
        assert_eq!(disputed.state, RowState::Disputed);
    }

    #[test]
    fn a_repository_without_status_is_judged_from_its_listing() {
        let f = facts(
            "old/",
            None,
            &["2026-12-08T10:00:00Z", "2026-12-09T10:00:00Z"],
        );
        let row = judge(f, t(NOW), Some(crate::time::days(2)));
        assert_eq!(row.state, RowState::Unknown);
        assert_eq!(row.last_complete, Some(t("2026-12-09T10:00:00Z")));
        assert_eq!(row.snapshots, 2);
        assert!(row.notes[0].contains("no status object"));
        assert!(row.strip.cells.contains('u'));
        // No snapshot at all is stale whatever the threshold.
        let empty = judge(facts("e/", None, &[]), t(NOW), Some(crate::time::days(900)));
        assert!(empty.stale);
    }

    #[test]
    fn stale_then_damaged_rows_come_first() {
        let now = t(NOW);
        let mut damaged = status(Some("2026-12-10T11:59:00Z"), 1);
        damaged.damage_records = 1;
        let fresh = &["2026-12-10T12:00:00Z"];
        let mut rows = vec![
            judge(
                facts("a/", Some(status(Some("2026-12-10T11:59:00Z"), 1)), fresh),
                now,
                None,
            ),
            judge(facts("b/", Some(damaged), fresh), now, None),
            judge(
                facts(
                    "c/",
                    Some(status(Some("2026-12-01T11:59:00Z"), 1)),
                    &["2026-12-01T12:00:00Z"],
                ),
                now,
                Some(crate::time::days(1)),
            ),
        ];
        order(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(names, vec!["c", "b", "a"]);
        assert_eq!(rows[1].state, RowState::Damaged);
    }

    #[test]
    fn the_schedule_is_the_median_day_and_six_when_unknown() {
        let now = t("2026-12-10T13:00:00Z");
        let twice: Vec<Timestamp> = (1..=9)
            .flat_map(|d| {
                [
                    t(&format!("2026-12-0{d}T01:00:00Z")),
                    t(&format!("2026-12-0{d}T13:00:00Z")),
                ]
            })
            .collect();
        assert_eq!(per_day(&twice, Some(t("2026-11-01T00:00:00Z")), now), 2);
        assert_eq!(per_day(&[], None, now), DEFAULT_PER_DAY);
        // A repository made today has no full day yet.
        assert_eq!(per_day(&[now], Some(now), now), DEFAULT_PER_DAY);
    }

    #[test]
    fn a_strip_marks_complete_damaged_and_missing_slots() {
        let now = t("2026-12-10T13:00:00Z");
        // Once a day at 10:00 since Dec 7; Dec 8's is damaged, Dec 9's missing.
        let marks = vec![
            (t("2026-12-07T10:00:00Z"), 'c'),
            (t("2026-12-08T10:00:00Z"), 'd'),
            (t("2026-12-10T10:00:00Z"), 'c'),
        ];
        let s = strip(&marks, Some(t("2026-12-07T10:00:00Z")), now);
        assert_eq!(s.per_day, 1);
        assert_eq!(s.cells.len(), 90);
        assert_eq!(s.start, t("2026-09-12T00:00:00Z"));
        assert!(s.cells.ends_with("-cdmc"), "{}", s.cells);
        assert!(s.cells[..85].chars().all(|c| c == '-'));
        // Six a day: today's slots that are not over expect nothing yet.
        let s = strip(
            &[(t("2026-12-10T01:00:00Z"), 'c')],
            Some(t("2026-12-01T00:00:00Z")),
            now,
        );
        assert_eq!(s.per_day, 1, "one a day shows since Dec 1");
        let s = strip(&[], Some(t("2026-12-10T00:00:00Z")), now);
        assert_eq!(s.per_day, 6);
        assert!(
            s.cells.ends_with("mm---"),
            "{}",
            &s.cells[s.cells.len() - 10..]
        );
    }
}
