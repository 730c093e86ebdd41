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
use super::{Run, adopt_orphan_packs, sync, walk_refs};
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::Repository;
use crate::repo::damage::{BadPack, DamageRecord};
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::IndexedPack;
use crate::repo::lock::RepoLock;
use crate::repo::pack::{PackEntry, SealedBlob};
use crate::repo::snapshot::Snapshot;
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Packs kept because they hold live blobs a read found bad (see `coffer check`).
    pub damaged_kept: usize,
    /// Index entries dropped for packs storage lost, nothing needed from them.
    pub missing_dropped: usize,
    /// Damage records deleted because every pack they name is gone.
    pub damage_records_dropped: usize,
    /// Objects skipped or kept, and why.
    pub warnings: Vec<String>,
    pub dry_run: bool,
}

/// What prune does with one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    Delete,
    Repack,
}

/// Prunes under the writer lock. `cancel` stops it at a safe point (before
/// the new index is written, so what it repacked is an orphan the next prune
/// deletes) with [`Error::Interrupted`]; the lock is released.
pub fn prune(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    cancel: &AtomicBool,
) -> Result<PruneReport> {
    super::with_writer_lock(repo, opts.lock_wait, |lock| {
        prune_locked(repo, catalog, opts, lock, cancel)
    })
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
    let unreadable = walk_refs(repo, catalog, blobs, snaps, |_, _, ids| {
        if let Some(ids) = ids {
            live.extend(ids.iter().copied());
        }
        Ok(())
    })?;
    // Without a snapshot's list, what it needs is unknown: deleting
    // anything could delete that. Stop, and say how to get going again.
    if let Some((n, e)) = unreadable.first() {
        let names: Vec<String> = unreadable
            .iter()
            .map(|(n, _)| snaps[*n].0.short())
            .collect();
        return Err(Error::Invalid(format!(
            "prune stopped, nothing deleted: the reference list of snapshot {} can not be read ({e}), so what it needs is unknown (unreadable: {}); run `coffer repair snapshots --forget` as the operator, or `coffer forget` those snapshots",
            snaps[*n].0.short(),
            names.join(", ")
        )));
    }
    Ok(live)
}

/// Prune under a writer lock the caller holds (erase holds one across its
/// rewrite and this prune, so no backup slips in between).
pub(crate) fn prune_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    lock: &mut RepoLock,
    cancel: &AtomicBool,
) -> Result<PruneReport> {
    let stop = || -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    };
    let now = Utc::now();
    repo.store.remove_stale_temp()?;
    let synced = sync(repo, catalog)?;
    let mut report = PruneReport {
        snapshots: synced.snaps.len(),
        dry_run: opts.dry_run,
        warnings: synced.warnings(),
        ..Default::default()
    };
    let (health, snaps, mut blobs) = (synced.health, synced.snaps, synced.blobs);
    let synced_bad = synced.bad_objects;
    // Packs no readable index lists may be a lost index's: adopt those whose
    // trailer reads, so what they hold is judged like every other pack.
    // While an index object is unreadable, a pack whose trailer is
    // unreadable too is kept: it may be that index's, and live.
    let index_unreadable = synced_bad.iter().any(|(k, _)| k.starts_with("index/"));
    let mut keep_unreadable: HashSet<PackId> = HashSet::new();
    if !opts.dry_run {
        let super::Adopted {
            index: adopted,
            unreadable,
            ..
        } = adopt_orphan_packs(repo, catalog, &health.stored)?;
        BlobLocation::lay_over(&mut blobs, &adopted, &|l| health.usable(l));
        for (pack, why) in unreadable {
            if index_unreadable {
                keep_unreadable.insert(pack);
                report.warnings.push(format!(
                    "{}: no index lists it and its trailer can not be read ({why}); kept while an index object is unreadable",
                    pack.key()
                ));
            }
        }
    }
    let live = live_set(repo, catalog, &snaps, &blobs)?;
    stop()?;
    let pack_indexes = catalog.pack_indexes()?;
    let indexed_sizes = catalog.packs()?;

    // Each pack's blobs (by their one recorded location) and live bytes.
    let mut contents: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for loc in blobs.values() {
        contents.entry(loc.pack).or_default().push(loc.entry);
    }
    // A pack holding a live blob that a read found bad, with no good copy
    // elsewhere, is kept: repacking would copy the bad bytes into a pack
    // that looks whole, and deleting it would lose the evidence.
    let damaged_live: HashSet<PackId> = blobs
        .iter()
        .filter(|(id, l)| {
            live.contains(*id) && health.stored.contains_key(&l.pack) && !health.usable(l)
        })
        .map(|(_, l)| l.pack)
        .collect();
    let mut verdicts: BTreeMap<PackId, Verdict> = BTreeMap::new();
    let mut orphans: Vec<(PackId, u64)> = Vec::new();
    let young = |modified: Option<DateTime<Utc>>| modified.is_some_and(|m| now - m < opts.grace);
    for obj in repo.store.list("data/")? {
        let Some(pack) = PackId::from_key(&obj.key) else {
            continue;
        };
        report.packs += 1;
        let Some(&size) = indexed_sizes.get(&pack) else {
            if young(obj.modified) || keep_unreadable.contains(&pack) {
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
        let verdict = if damaged_live.contains(&pack) {
            report.damaged_kept += 1;
            Verdict::Keep
        } else if used == 0 {
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
    // Packs an index lists that storage lost, with nothing needed from
    // them (not needed, or stored again elsewhere): their index entries go.
    let vanished: Vec<PackId> = indexed_sizes
        .keys()
        .filter(|p| !health.stored.contains_key(p))
        .filter(|p| {
            contents
                .get(p)
                .is_none_or(|es| es.iter().all(|e| !live.contains(&e.id)))
        })
        .copied()
        .collect();
    report.missing_dropped = vanished.len();
    let affected: HashSet<IndexId> = doomed
        .iter()
        .chain(&vanished)
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
    if doomed.is_empty() && orphans.is_empty() && vanished.is_empty() {
        catalog.trim_refs_cache()?;
        drop_spent_records(repo, catalog, &health, &mut report)?;
        return Ok(report);
    }
    stop()?;

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
    let mut packer = Packer::new(repo, super::packer::ReadBack::of(lock));
    let fetched = repo.store.read_ahead(reads, repo.store.read_concurrency());
    // A pack that reads back short or not at all is kept (and recorded as
    // damaged): its live blobs are not copied, and it is not deleted.
    let mut record = DamageRecord::new("prune");
    let mut unreadable: HashSet<PackId> = HashSet::new();
    for ((pack, entries, run), bytes) in runs.iter().zip(fetched) {
        stop()?;
        lock.refresh_if_due(&repo.store, &repo.keys)?;
        if unreadable.contains(pack) {
            continue;
        }
        let bytes = match bytes {
            Ok(b) if b.len() as u64 == run.length => b,
            Ok(_) => {
                unreadable.insert(*pack);
                record.packs.push(BadPack {
                    id: *pack,
                    reason: "shorter than its index says".into(),
                    blobs: Vec::new(),
                });
                continue;
            }
            Err(e) if e.is_object_fault() => {
                unreadable.insert(*pack);
                if !e.is_not_found() {
                    record.packs.push(BadPack {
                        id: *pack,
                        reason: e.to_string(),
                        blobs: Vec::new(),
                    });
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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
    if !record.is_empty() {
        repo.write_damage(&record)?;
    }
    for pack in &unreadable {
        report.warnings.push(format!(
            "{}: could not be read to repack it; kept (see `coffer check --read-data`)",
            pack.key()
        ));
    }
    let doomed: Vec<PackId> = doomed
        .into_iter()
        .filter(|p| !unreadable.contains(p))
        .collect();
    report.packs_repacked = report.packs_repacked.saturating_sub(unreadable.len());
    let doomed_bytes = doomed_bytes
        - unreadable
            .iter()
            .map(|p| indexed_sizes.get(p).copied().unwrap_or(0))
            .sum::<u64>();
    // The last safe point: from here on, commit (a cut leaves orphans only).
    stop()?;

    // 2. One index for the new packs and the survivors of every index that
    //    named a doomed pack; then the old indexes go, then the old packs.
    let doomed_set: HashSet<PackId> = doomed.iter().chain(&vanished).copied().collect();
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
    // Before each deletion: our lock is still ours (fencing).
    lock.confirm(&repo.store, &repo.keys)?;
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
    lock.confirm(&repo.store, &repo.keys)?;
    repo.store.delete_many(&gone)?;
    catalog.trim_refs_cache()?;
    let mut health = health;
    for p in doomed.iter().chain(orphans.iter().map(|(p, _)| p)) {
        health.stored.remove(p);
    }
    drop_spent_records(repo, catalog, &health, &mut report)?;
    let new_bytes: u64 = written.iter().map(|p| p.size).sum();
    report.bytes_freed = doomed_bytes.saturating_sub(new_bytes);
    Ok(report)
}

/// Deletes the damage records whose packs have all left storage.
fn drop_spent_records(
    repo: &Repository,
    catalog: &Catalog,
    health: &super::health::Health,
    report: &mut PruneReport,
) -> Result<()> {
    let spent = health.spent_records();
    let keys: Vec<String> = spent
        .iter()
        .map(|id| format!("{}{}", crate::repo::damage::PREFIX, hex::encode(id)))
        .collect();
    repo.store.delete_many(&keys)?;
    for id in &spent {
        catalog.remove_damage(id)?;
    }
    report.damage_records_dropped = spent.len();
    Ok(())
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
