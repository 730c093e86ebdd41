//! How whole each snapshot is, and the choice of the newest whole one.

use super::health::Health;
use super::{RefsPiece, Skipped, walk_refs};
use crate::Result;
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::snapshot::Snapshot;
use std::collections::HashMap;

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
    blobs: &HashMap<BlobId, BlobLocation>,
    health: &Health,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<Vec<(SnapshotState, Option<String>)>> {
    let why_not = |id: &BlobId| -> Option<String> {
        match blobs.get(id) {
            None => Some(format!("blob {} is in no index", id.short())),
            Some(l) => health.problem(l),
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

/// The place in `snaps` (oldest first) of the newest snapshot at or before
/// `before` (a place; all when None) that is not damaged, and the damaged
/// ones passed over on the way (place, why), newest first. Checks newest
/// first and stops at the first whole one, so choosing `latest` reads one
/// snapshot's reference list, not all of them.
pub fn newest_whole(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &HashMap<BlobId, BlobLocation>,
    health: &Health,
    snaps: &[(SnapshotId, Snapshot)],
    before: Option<usize>,
) -> Result<(Option<usize>, Vec<Skipped>)> {
    let end = before.map_or(snaps.len(), |b| (b + 1).min(snaps.len()));
    let mut skipped = Vec::new();
    for i in (0..end).rev() {
        let state = snapshot_states(repo, catalog, blobs, health, &snaps[i..=i])?;
        match state.into_iter().next() {
            Some((SnapshotState::Damaged, why)) => skipped.push((i, why.unwrap_or_default())),
            _ => return Ok((Some(i), skipped)),
        }
    }
    Ok((None, skipped))
}
