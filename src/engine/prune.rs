//! Prune: delete the data that no remaining snapshot references, with the
//! agent key alone (docs/FORMAT.md, "Prune").
//!
//! What is live comes from each snapshot's reference list (agent-readable);
//! its blobs are cached in the catalog, so a prune reads only the lists of
//! snapshots it has not seen before, and its requests grow with what it
//! deletes, not with the repository. Packs wholly unused are deleted; packs
//! partly unused are repacked (their live blobs copied as ciphertext into new
//! packs) once the unused share passes `max_unused`, or whatever the share
//! once they are older than `repack_older_than`, so expired data really leaves
//! storage. Order: new packs, then the new index, then the old indexes, then
//! the old packs: a prune cut off at any point leaves every snapshot whole.

use super::packer::Packer;
use super::{Run, sync_index, sync_snapshots, walk_refs};
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::IndexedPack;
use crate::repo::lock::{LEASE, RepoLock};
use crate::repo::pack::{PackEntry, SealedBlob};
use crate::repo::snapshot::Snapshot;
use crate::repo::{RepoError, Repository};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unreferenced packs younger than this are left alone: defence in depth
    /// for a backup whose lock was taken over while it still uploaded.
    pub grace: chrono::Duration,
    /// Repack a pack once more than this percentage of it is unused.
    pub max_unused: u32,
    /// Repack a pack older than this that holds any unreferenced blob.
    pub repack_older_than: Option<chrono::Duration>,
    pub dry_run: bool,
    pub lock_wait: std::time::Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        let s = crate::config::PruneSettings::default();
        PruneOptions {
            grace: s.grace,
            max_unused: s.max_unused,
            repack_older_than: None,
            dry_run: false,
            lock_wait: std::time::Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: usize,
    pub packs: usize,
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    /// Packs no index lists (a backup cut off after uploading) that were deleted.
    pub orphans_deleted: usize,
    /// Unreferenced packs left because they are younger than the grace period.
    pub kept_by_grace: usize,
    pub packs_written: usize,
    /// Live bytes copied into new packs by repacking.
    pub bytes_repacked: u64,
    /// Bytes removed from storage, net of the new packs.
    pub bytes_freed: u64,
    /// Unreferenced bytes left inside packs below the repack threshold.
    pub unused_left: u64,
    pub indexes_rewritten: usize,
    pub dry_run: bool,
}

/// What prune does with one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    Delete,
    Repack,
}

pub fn prune(repo: &Repository, catalog: &mut Catalog, opts: &PruneOptions) -> Result<PruneReport> {
    let mut lock = RepoLock::acquire_wait(&repo.store, &repo.keys, LEASE, opts.lock_wait)?;
    let result = prune_locked(repo, catalog, opts, &mut lock);
    let released = lock.release(&repo.store, &repo.keys);
    let report = result?;
    released?;
    Ok(report)
}

fn corrupt(object: String, reason: &str) -> Error {
    RepoError::Corrupt {
        object,
        reason: reason.into(),
    }
    .into()
}

/// Every blob some snapshot needs: its file list, its reference list, and
/// the blobs that list names.
fn live_set(
    repo: &Repository,
    catalog: &Catalog,
    snaps: &[(SnapshotId, Snapshot)],
    blobs: &HashMap<BlobId, BlobLocation>,
) -> Result<HashSet<BlobId>> {
    let mut live: HashSet<BlobId> = HashSet::new();
    for (_, s) in snaps {
        live.extend(s.tree.iter().copied());
        live.extend(s.refs.iter().copied());
    }
    walk_refs(repo, catalog, blobs, snaps, |_, _, ids| {
        if let Some(ids) = ids {
            live.extend(ids.iter().copied());
        }
        Ok(())
    })?;
    Ok(live)
}

/// Prune under a writer lock the caller holds (erase holds one across its
/// rewrite and this prune, so no backup slips in between).
pub(crate) fn prune_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    lock: &mut RepoLock,
) -> Result<PruneReport> {
    let now = Utc::now();
    repo.store.remove_stale_temp()?;
    let blobs = sync_index(repo, catalog)?;
    let snaps = sync_snapshots(repo, catalog)?;
    let live = live_set(repo, catalog, &snaps, &blobs)?;
    let pack_indexes = catalog.pack_indexes()?;
    let indexed_sizes = catalog.packs()?;

    // Each pack's blobs (by their one recorded location) and live bytes.
    let mut contents: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for loc in blobs.values() {
        contents.entry(loc.pack).or_default().push(loc.entry);
    }
    let mut report = PruneReport {
        snapshots: snaps.len(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut verdicts: BTreeMap<PackId, Verdict> = BTreeMap::new();
    let mut orphans: Vec<(PackId, u64)> = Vec::new();
    let young = |modified: Option<DateTime<Utc>>| modified.is_some_and(|m| now - m < opts.grace);
    for obj in repo.store.list("data/")? {
        let Some(pack) = PackId::from_key(&obj.key) else {
            continue;
        };
        report.packs += 1;
        let Some(&size) = indexed_sizes.get(&pack) else {
            if young(obj.modified) {
                report.kept_by_grace += 1;
            } else {
                orphans.push((pack, obj.size));
            }
            continue;
        };
        let entries = contents.get(&pack).map(Vec::as_slice).unwrap_or(&[]);
        let used: u64 = entries
            .iter()
            .filter(|e| live.contains(&e.id))
            .map(|e| e.length)
            .sum();
        let dead: u64 = entries
            .iter()
            .filter(|e| !live.contains(&e.id))
            .map(|e| e.length)
            .sum();
        let old_enough = opts
            .repack_older_than
            .zip(obj.modified)
            .is_some_and(|(limit, m)| now - m > limit);
        let verdict = if used == 0 {
            Verdict::Delete
        } else if dead > 0
            && (dead.saturating_mul(100) > size.saturating_mul(opts.max_unused as u64)
                || old_enough)
        {
            Verdict::Repack
        } else {
            report.unused_left += dead;
            Verdict::Keep
        };
        if verdict != Verdict::Keep && young(obj.modified) {
            report.kept_by_grace += 1;
            continue;
        }
        verdicts.insert(pack, verdict);
    }
    let doomed: Vec<PackId> = verdicts
        .iter()
        .filter(|(_, v)| **v != Verdict::Keep)
        .map(|(p, _)| *p)
        .collect();
    report.packs_deleted = verdicts.values().filter(|v| **v == Verdict::Delete).count();
    report.packs_repacked = verdicts.values().filter(|v| **v == Verdict::Repack).count();
    report.orphans_deleted = orphans.len();
    let doomed_bytes: u64 = doomed.iter().map(|p| indexed_sizes[p]).sum::<u64>()
        + orphans.iter().map(|(_, s)| s).sum::<u64>();
    let affected: HashSet<IndexId> = doomed
        .iter()
        .flat_map(|p| pack_indexes.get(p).into_iter().flatten().copied())
        .collect();
    report.indexes_rewritten = affected.len();
    if opts.dry_run {
        report.bytes_repacked = doomed
            .iter()
            .filter(|p| verdicts[*p] == Verdict::Repack)
            .flat_map(|p| contents.get(p).into_iter().flatten())
            .filter(|e| live.contains(&e.id))
            .map(|e| e.length)
            .sum();
        report.bytes_freed = doomed_bytes.saturating_sub(report.bytes_repacked);
        return Ok(report);
    }
    if doomed.is_empty() && orphans.is_empty() {
        catalog.trim_refs_cache()?;
        return Ok(report);
    }

    // 1. Live blobs of repacked packs go into new packs. The coalesced reads
    //    run ahead of the packing, several in flight, and each new pack
    //    uploads while the next fills: on S3 the repack is bound by requests.
    let keep: Vec<(PackId, Vec<PackEntry>)> = doomed
        .iter()
        .filter(|p| verdicts[*p] == Verdict::Repack)
        .map(|pack| {
            let mut live_here: Vec<PackEntry> = contents[pack]
                .iter()
                .filter(|e| live.contains(&e.id))
                .copied()
                .collect();
            live_here.sort_by_key(|e| e.offset);
            (*pack, live_here)
        })
        .collect();
    let gap = repo.store.read_gap();
    let runs: Vec<(PackId, &[PackEntry], Run)> = keep
        .iter()
        .flat_map(|(pack, entries)| {
            coalesce(entries, gap)
                .into_iter()
                .map(|r| (*pack, &entries[r.items.clone()], r))
        })
        .collect();
    let reads = runs.iter().map(|(pack, _, r)| r.read(pack.key())).collect();
    let mut packer = Packer::new(repo);
    let fetched = repo.store.read_ahead(reads, repo.store.read_concurrency());
    for ((pack, entries, run), bytes) in runs.iter().zip(fetched) {
        lock.refresh_if_due(&repo.store, &repo.keys)?;
        let bytes = bytes?;
        if bytes.len() as u64 != run.length {
            return Err(corrupt(pack.key(), "shorter than its index says"));
        }
        for e in *entries {
            let at = (e.offset - run.offset) as usize;
            packer.add(SealedBlob {
                id: e.id,
                kind: e.kind,
                raw_length: e.raw_length,
                bytes: bytes[at..at + e.length as usize].to_vec(),
            })?;
            report.bytes_repacked += e.length;
        }
    }
    let written = packer.finish()?;
    report.packs_written = written.len();

    // 2. One index for the new packs and the survivors of every index that
    //    named a doomed pack; then the old indexes go, then the old packs.
    let doomed_set: HashSet<PackId> = doomed.iter().copied().collect();
    let mut survivors: Vec<IndexedPack> = Vec::new();
    let mut seen: HashSet<PackId> = HashSet::new();
    for (pack, idxs) in &pack_indexes {
        if doomed_set.contains(pack) || !idxs.iter().any(|i| affected.contains(i)) {
            continue;
        }
        if seen.insert(*pack) {
            let mut blobs = contents.get(pack).cloned().unwrap_or_default();
            blobs.sort_by_key(|e| e.offset);
            survivors.push(IndexedPack {
                id: *pack,
                size: indexed_sizes[pack],
                blobs,
            });
        }
    }
    survivors.sort_by_key(|p| p.id.0);
    survivors.extend(written.iter().cloned());
    // Split into objects of a bounded number of blobs (repo::limits): the
    // survivors of many indexes could otherwise make one of any size.
    let new_indexes = repo.write_indexes(survivors)?;
    lock.refresh_if_due(&repo.store, &repo.keys)?;
    let old: Vec<String> = affected.iter().map(|i| i.key()).collect();
    repo.store.delete_many(&old)?;
    for i in &affected {
        catalog.remove_index(i)?;
    }
    for (id, index) in &new_indexes {
        catalog.add_index(id, index)?;
    }
    let mut gone: Vec<String> = doomed.iter().map(|p| p.key()).collect();
    gone.extend(orphans.iter().map(|(p, _)| p.key()));
    repo.store.delete_many(&gone)?;
    catalog.trim_refs_cache()?;
    let new_bytes: u64 = written.iter().map(|p| p.size).sum();
    report.bytes_freed = doomed_bytes.saturating_sub(new_bytes);
    Ok(report)
}

/// Runs of blobs (sorted by offset) read with one ranged GET each:
/// neighbours at most `gap` bytes apart share a read, up to 8 MiB.
fn coalesce(entries: &[PackEntry], gap: u64) -> Vec<Run> {
    const MAX: u64 = 8 * 1024 * 1024;
    super::coalesce(entries, |e| (e.offset, e.length), gap, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::BlobKind;

    fn e(offset: u64, length: u64) -> PackEntry {
        PackEntry {
            id: BlobId([offset as u8; 32]),
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: length,
        }
    }

    #[test]
    fn neighbours_share_a_read_and_far_blobs_do_not() {
        let v = [e(0, 100), e(100, 100), e(1_000_000, 10), e(1_000_010, 5)];
        let runs: Vec<usize> = coalesce(&v, 256 << 10)
            .iter()
            .map(|r| r.items.len())
            .collect();
        assert_eq!(runs, [2, 2]);
        let wide: Vec<usize> = coalesce(&v, 1 << 20)
            .iter()
            .map(|r| r.items.len())
            .collect();
        assert_eq!(wide, [4], "a wider gap (S3) bridges them");
        assert!(coalesce(&[], 256 << 10).is_empty());
        let big = [e(0, 6 << 20), e(6 << 20, 6 << 20)];
        assert_eq!(coalesce(&big, 1 << 20).len(), 2, "a run stops at 8 MiB");
    }
}
