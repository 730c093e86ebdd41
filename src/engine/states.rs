//! How whole each snapshot is, whether its time can be believed, and the
//! choice of the newest whole one whose time can.

use super::health::Health;
use super::{RefsPiece, Skipped, walk_refs};
use crate::Result;
use crate::catalog::{BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::snapshot::Snapshot;
use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;

/// How far a snapshot's claimed time may run ahead of the time storage
/// recorded writing its object before the snapshot is suspect. A snapshot
/// is written at the end of its backup, after the time it claims, so an
/// honest one only runs ahead by the agent's clock error; NTP keeps that to
/// well under a second, and ten minutes allows a clock that drifted
/// unsynced for weeks, while a snapshot planted to win `latest` must claim
/// a time past every real one and so, soon, far ahead of storage's.
pub const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(600);

/// Whether `snap` claims a time later than storage recorded writing it,
/// by more than [`CLOCK_SKEW`]: planted to win `latest`, or written by a
/// machine whose clock runs ahead. Without a storage time, not suspect.
pub fn is_suspect(snap: &Snapshot) -> bool {
    claims_past_storage(snap.time, snap.stored)
}

/// [`is_suspect`] of a snapshot claiming `time` that storage recorded at `stored`.
pub fn claims_past_storage(time: Timestamp, stored: Option<Timestamp>) -> bool {
    stored.is_some_and(|stored| time.duration_since(stored) > CLOCK_SKEW)
}

/// Why `snap` is suspect, in words for the operator; None if it is not.
pub fn suspicion(snap: &Snapshot) -> Option<String> {
    let stored = snap.stored.filter(|_| is_suspect(snap))?;
    Some(claim_against_storage(snap.time, stored))
}

/// "it claims T but storage recorded writing it at S".
pub fn claim_against_storage(claimed: Timestamp, stored: Timestamp) -> String {
    // Whole seconds: S3 gives no more, and the gap is minutes or years.
    let when = crate::time::human;
    format!(
        "it claims {} but storage recorded writing it at {}",
        when(claimed),
        when(stored)
    )
}

/// The time retention judges `snap` by: for a suspect one, the time storage
/// recorded (min(claimed, stored): a claim later than the write can not be
/// true, and a planted snapshot must not look newer than it is); else its
/// claim. An earlier claim is believed, as a backdated import (`backup
/// --time`) or a repository copied to new storage rightly makes. A claim
/// later by less than [`CLOCK_SKEW`] is kept too: S3 records whole seconds
/// and clocks differ a little, so taking the minimum there would tie or
/// swap honest snapshots written within a second, and `keep_last` and
/// "newest" go by their order.
pub fn retention_time(snap: &Snapshot) -> Timestamp {
    match snap.stored {
        Some(stored) if is_suspect(snap) => snap.time.min(stored),
        _ => snap.time,
    }
}

/// How whole a snapshot is, as far as can be told without reading data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Everything it references is indexed and its packs exist.
    Complete,
    /// Complete, and `check --read-data` verified every blob since.
    Verified,
    /// Some blob it needs is missing or known bad, or its file list is invalid.
    Damaged,
}

/// The state of each snapshot (same order as `snaps`) and, for a damaged
/// one, why: each is judged on its own, whatever the order. A blob counts
/// when its copy is in storage at its indexed size and no read found it bad
/// (`health`); reference lists come from the catalog's cache.
pub fn snapshot_states(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &BlobMap,
    health: &Health,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<Vec<(SnapshotState, Option<String>)>> {
    let why_not = |id: &BlobId| -> Option<String> {
        match blobs.get(id) {
            None => Some(format!("blob {} is in no index", id.short())),
            Some(l) => health.problem(&l),
        }
    };
    let verified = catalog.verified_snapshots()?;
    let mut why: Vec<Option<String>> = snaps
        .iter()
        .map(|(sid, s)| {
            health
                .snapshot_problem(sid)
                .map(|r| format!("its file list: {r}"))
                .or_else(|| s.tree.iter().chain(&s.refs).find_map(why_not))
        })
        .collect();
    let mut memo: HashMap<RefsPiece, Option<String>> = HashMap::new();
    let unreadable = walk_refs(repo, catalog, blobs, snaps, |n, piece, ids| {
        let bad = match ids {
            Some(ids) => {
                let bad = ids.iter().find_map(why_not);
                memo.insert(piece, bad.clone());
                bad
            }
            None => memo.get(&piece).cloned().flatten(),
        };
        if why[n].is_none() {
            why[n] = bad;
        }
        Ok(())
    })?;
    for (n, e) in unreadable {
        if why[n].is_none() {
            why[n] = Some(format!("its reference list can not be read: {e}"));
        }
    }
    Ok(snaps
        .iter()
        .zip(why)
        .map(|((id, _), why)| match (why, verified.contains(id)) {
            (Some(w), _) => (SnapshotState::Damaged, Some(w)),
            (None, true) => (SnapshotState::Verified, None),
            (None, false) => (SnapshotState::Complete, None),
        })
        .collect())
}

/// What [`newest_whole`] found, places in `snaps`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Newest {
    /// The newest snapshot that is neither damaged nor suspect.
    pub whole: Option<usize>,
    /// The damaged ones passed over on the way (place, why), newest first.
    pub damaged: Vec<Skipped>,
    /// The suspect ones passed over on the way ([`is_suspect`]), newest first.
    pub suspect: Vec<usize>,
}

/// The newest snapshot at or before `before` (a place in `snaps`, oldest
/// first; all when None) that is neither suspect nor damaged, and those
/// passed over on the way. Checks newest first and stops at the first
/// whole one, so choosing `latest` reads one snapshot's reference list,
/// not all of them; a suspect one is passed over unread.
pub fn newest_whole(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &BlobMap,
    health: &Health,
    snaps: &[(SnapshotId, Snapshot)],
    before: Option<usize>,
) -> Result<Newest> {
    let end = before.map_or(snaps.len(), |b| (b + 1).min(snaps.len()));
    let mut found = Newest::default();
    for i in (0..end).rev() {
        if is_suspect(&snaps[i].1) {
            found.suspect.push(i);
            continue;
        }
        let state = snapshot_states(repo, catalog, blobs, health, &snaps[i..=i])?;
        match state.into_iter().next() {
            Some((SnapshotState::Damaged, why)) => found.damaged.push((i, why.unwrap_or_default())),
            _ => {
                found.whole = Some(i);
                return Ok(found);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(time: &str, stored: Option<&str>) -> Snapshot {
        Snapshot {
            paths: vec!["/".into()],
            stored: stored.map(|t| t.parse().unwrap()),
            ..Snapshot::bare(time.parse().unwrap(), "h")
        }
    }

    #[test]
    fn a_claim_later_than_storage_beyond_the_skew_is_suspect() {
        let stored = Some("2026-12-07T03:00:00Z");
        // Planted far ahead.
        assert!(is_suspect(&snap("2099-01-01T00:00:00Z", stored)));
        // Just past the skew, and just within it.
        assert!(is_suspect(&snap("2026-12-07T03:10:01Z", stored)));
        assert!(!is_suspect(&snap("2026-12-07T03:10:00Z", stored)));
        // Written after the time it claims: an honest backup, or a backdated one.
        assert!(!is_suspect(&snap("2026-12-07T02:59:00Z", stored)));
        assert!(!is_suspect(&snap("2020-01-01T00:00:00Z", stored)));
        // Storage gave no time: nothing to judge by.
        assert!(!is_suspect(&snap("2099-01-01T00:00:00Z", None)));
        let why = suspicion(&snap("2099-01-01T00:00:00Z", stored)).unwrap();
        let human = |s: &str| crate::time::human(s.parse().unwrap());
        assert_eq!(
            why,
            format!(
                "it claims {} but storage recorded writing it at {}",
                human("2099-01-01T00:00:00Z"),
                human("2026-12-07T03:00:00Z")
            )
        );
        assert_eq!(suspicion(&snap("2026-12-07T02:59:00Z", stored)), None);
    }

    #[test]
    fn retention_believes_storage_over_a_suspect_claim_only() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let stored = Some("2026-12-07T03:00:00Z");
        assert_eq!(
            retention_time(&snap("2099-01-01T00:00:00Z", stored)),
            t("2026-12-07T03:00:00Z")
        );
        // Within the skew the claim stands: two backups in one second on
        // S3 (whole seconds) keep their order.
        let (a, b) = (
            snap("2026-12-07T03:00:00.2Z", stored),
            snap("2026-12-07T03:00:00.7Z", stored),
        );
        assert!(retention_time(&a) < retention_time(&b));
        assert_eq!(
            retention_time(&snap("2026-12-07T03:05:00Z", stored)),
            t("2026-12-07T03:05:00Z")
        );
        assert_eq!(
            retention_time(&snap("2026-03-01T10:00:00Z", stored)),
            t("2026-03-01T10:00:00Z")
        );
        assert_eq!(
            retention_time(&snap("2099-01-01T00:00:00Z", None)),
            t("2099-01-01T00:00:00Z")
        );
    }
}
