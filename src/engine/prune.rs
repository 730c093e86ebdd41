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
//! storage.
//!
//! Three steps, as rustic's `prune_plan` → `prune`: [`gather`] reads what
//! the repository holds ([`PruneFacts`]), [`plan`] decides from that alone,
//! without I/O, what happens to every pack and why ([`PrunePlan`]), and the
//! executor runs the plan in named phases: `repack` (new packs), `index`
//! (the new index, then the old index objects go), `delete` (the old packs),
//! `tidy` (spent damage records). A prune cut off at any point leaves every
//! snapshot whole. A dry run stops after the plan: it takes no lock and
//! changes nothing in the repository.

use super::health::{Health, PackInfo};
use super::packer::Packer;
use super::{Run, adopt_orphan_packs, stop, sync, walk_refs};
use crate::Result;
use crate::catalog::{BlobLocation, BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::damage::{BadPack, DamageRecord};
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::IndexedPack;
use crate::repo::lock::WriterLock;
use crate::repo::pack::{PackEntry, SealedBlob};
use crate::repo::snapshot::Snapshot;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;

/// Each backup writes at least one index object, and a reader with an
/// empty catalog reads every one: 540 after three months of six backups a
/// day. Once more than this many are small, prune merges the small ones.
const SMALL_INDEXES_KEPT: usize = 8;

/// An index object is small below a quarter of the limits a writer splits
/// at ([`crate::repo::limits`]): merging those stays within one object's
/// bounds for a few rounds, and big ones are never rewritten for it.
const SMALL_INDEX_BLOBS: usize = crate::repo::limits::MAX_INDEX_BLOBS / 4;
const SMALL_INDEX_PACKS: usize = crate::repo::limits::MAX_INDEX_PACKS / 4;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unreferenced packs younger than this are left alone: defence in depth
    /// for a backup whose lock was taken over while it still uploaded.
    pub grace: jiff::SignedDuration,
    /// Repack a pack once more than this percentage of it is unused.
    pub max_unused: u32,
    /// Repack a pack older than this that holds any unreferenced blob.
    pub repack_older_than: Option<jiff::SignedDuration>,
    /// Plan only: no lock, nothing in the repository changes.
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
    /// On a repository under Object Lock: the old versions whose lock had
    /// ended (see [`super::expire`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<super::expire::Expired>,
}

/// Why prune can not go on.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// Without a snapshot's reference list, what it needs is unknown.
    #[error(
        "prune stopped, nothing deleted: the reference list of snapshot {} can not be read ({why}), so what it needs is unknown (unreadable: {}); run `coffer repair snapshots --forget` as the operator, or `coffer forget` those snapshots",
        .snapshot.short(),
        shorts(.unreadable)
    )]
    RefsUnreadable {
        snapshot: SnapshotId,
        why: String,
        unreadable: Vec<SnapshotId>,
    },
}

fn shorts(ids: &[SnapshotId]) -> String {
    ids.iter()
        .map(SnapshotId::short)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

/// What prune does with one pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackAction {
    Keep,
    Delete,
    Repack,
}

/// Why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackReason {
    /// Every blob it holds is needed.
    InUse,
    /// Its unused share is below `max_unused` and it is not old enough to
    /// be repacked anyway.
    UnusedBelowThreshold,
    /// It holds needed blobs a read found bad, with no good copy elsewhere:
    /// repacking would copy bad bytes into a pack that looks whole, and
    /// deleting it would lose the evidence.
    HoldsDamagedLive,
    /// It would go, but is younger than the grace period.
    Young,
    /// No index lists it and its trailer can not be read while an index
    /// object is unreadable: it may be that index's, and live.
    MaybeUnreadableIndexes,
    /// No blob in it is needed.
    NothingUsed,
    /// Its unused share passes `max_unused`.
    UnusedAboveThreshold,
    /// It holds unused blobs and is older than `repack_older_than`.
    OldWithUnused,
    /// No index lists it (a backup cut off after uploading).
    NotIndexed,
}

/// The verdict on one pack in storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackPlan {
    pub pack: PackId,
    /// Its size as indexed (as listed, for a pack no index lists).
    pub size: u64,
    pub indexed: bool,
    pub action: PackAction,
    pub reason: PackReason,
    /// Bytes of blobs some snapshot needs, and of the others.
    pub live_bytes: u64,
    pub unused_bytes: u64,
}

impl PackPlan {
    fn goes(&self) -> bool {
        self.action != PackAction::Keep
    }
}

/// What a prune will read, write and delete, and why; computed by [`plan`]
/// without I/O.
#[derive(Clone, Debug, Default)]
pub struct PrunePlan {
    /// Every pack in storage, by id.
    pub packs: Vec<PackPlan>,
    /// The live blobs of each pack to repack, by offset: read, then copied
    /// into new packs.
    pub repack: Vec<(PackId, Vec<PackEntry>)>,
    /// Packs an index lists that storage lost, with nothing needed from
    /// them (not needed, or stored again elsewhere): their entries go.
    pub vanished: Vec<PackId>,
    /// Index objects naming a pack that goes or vanished: replaced by new
    /// ones holding the rest of what they list, then deleted.
    pub indexes_replaced: BTreeSet<IndexId>,
}

impl PrunePlan {
    /// Whether the plan writes or deletes anything in storage.
    pub fn has_work(&self) -> bool {
        self.packs.iter().any(PackPlan::goes)
            || !self.vanished.is_empty()
            || !self.indexes_replaced.is_empty()
    }

    /// The packs to delete (those repacked too), by id.
    pub fn doomed(&self) -> Vec<PackId> {
        self.packs
            .iter()
            .filter(|p| p.goes())
            .map(|p| p.pack)
            .collect()
    }

    fn count(&self, f: impl Fn(&PackPlan) -> bool) -> usize {
        self.packs.iter().filter(|p| f(p)).count()
    }

    fn bytes_going(&self) -> u64 {
        self.packs.iter().filter(|p| p.goes()).map(|p| p.size).sum()
    }

    /// The report of this plan, before anything is done: what a dry run
    /// says, and what a run starts from.
    pub fn report(&self, facts: &PruneFacts, dry_run: bool) -> PruneReport {
        use PackAction::*;
        use PackReason::*;
        let bytes_repacked: u64 = self
            .packs
            .iter()
            .filter(|p| p.action == Repack)
            .map(|p| p.live_bytes)
            .sum();
        PruneReport {
            snapshots: facts.snapshots,
            packs: self.packs.len(),
            packs_deleted: self.count(|p| p.action == Delete && p.indexed),
            packs_repacked: self.count(|p| p.action == Repack),
            orphans_deleted: self.count(|p| p.action == Delete && !p.indexed),
            kept_by_grace: self.count(|p| matches!(p.reason, Young | MaybeUnreadableIndexes)),
            bytes_repacked,
            bytes_freed: self.bytes_going().saturating_sub(bytes_repacked),
            unused_left: self
                .packs
                .iter()
                .filter(|p| matches!(p.reason, InUse | UnusedBelowThreshold))
                .map(|p| p.unused_bytes)
                .sum(),
            indexes_rewritten: self.indexes_replaced.len(),
            damaged_kept: self.count(|p| p.reason == HoldsDamagedLive),
            missing_dropped: self.vanished.len(),
            warnings: facts.warnings.clone(),
            dry_run,
            ..Default::default()
        }
    }
}

/// What the repository holds, as prune needs it: gathered by [`gather`].
#[derive(Debug, Default)]
pub struct PruneFacts {
    pub now: Timestamp,
    pub snapshots: usize,
    /// The packs in storage and what is known bad.
    pub health: Health,
    /// Every blob, at the one location readers use.
    pub blobs: BlobMap,
    /// Every blob some snapshot needs.
    pub live: HashSet<BlobId>,
    /// Each indexed pack's size, as its index says.
    pub indexed_sizes: HashMap<PackId, u64>,
    /// The index objects that list each pack.
    pub pack_indexes: HashMap<PackId, Vec<IndexId>>,
    /// Packs no index lists that are kept all the same (see
    /// [`PackReason::MaybeUnreadableIndexes`]).
    pub keep_unreadable: HashSet<PackId>,
    /// Objects skipped or kept, and why.
    pub warnings: Vec<String>,
}

impl PruneFacts {
    /// Each pack's blobs, by the one location recorded for each.
    fn contents(&self) -> HashMap<PackId, Vec<PackEntry>> {
        let mut contents: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        for loc in self.blobs.values() {
            contents.entry(loc.pack).or_default().push(loc.entry);
        }
        contents
    }

    /// Packs holding a live blob that a read found bad, with no good copy
    /// elsewhere (the chosen copy is the good one when there is one).
    fn damaged_live(&self) -> HashSet<PackId> {
        self.blobs
            .iter()
            .filter(|(id, l)| {
                self.live.contains(id)
                    && self.health.stored.contains_key(&l.pack)
                    && !self.health.usable(l)
            })
            .map(|(_, l)| l.pack)
            .collect()
    }
}

/// Decides, from `facts` alone, what happens to every pack in storage, and
/// which index objects are replaced.
pub fn plan(facts: &PruneFacts, opts: &PruneOptions) -> PrunePlan {
    let contents = facts.contents();
    let damaged_live = facts.damaged_live();
    let mut stored: Vec<(&PackId, &PackInfo)> = facts.health.stored.iter().collect();
    stored.sort_by_key(|(p, _)| **p);
    let packs: Vec<PackPlan> = stored
        .into_iter()
        .map(|(pack, info)| {
            let entries = contents.get(pack).map(Vec::as_slice).unwrap_or(&[]);
            judge(
                facts,
                opts,
                *pack,
                info,
                entries,
                damaged_live.contains(pack),
            )
        })
        .collect();
    let repack = packs
        .iter()
        .filter(|p| p.action == PackAction::Repack)
        .map(|p| {
            let mut live: Vec<PackEntry> = contents
                .get(&p.pack)
                .into_iter()
                .flatten()
                .filter(|e| facts.live.contains(&e.id))
                .copied()
                .collect();
            live.sort_by_key(|e| e.offset);
            (p.pack, live)
        })
        .collect();
    let mut vanished: Vec<PackId> = facts
        .indexed_sizes
        .keys()
        .filter(|p| !facts.health.stored.contains_key(p))
        .filter(|p| {
            contents
                .get(p)
                .is_none_or(|es| es.iter().all(|e| !facts.live.contains(&e.id)))
        })
        .copied()
        .collect();
    vanished.sort();
    let mut indexes_replaced: BTreeSet<IndexId> = packs
        .iter()
        .filter(|p| p.goes())
        .map(|p| p.pack)
        .chain(vanished.iter().copied())
        .flat_map(|p| facts.pack_indexes.get(&p).into_iter().flatten().copied())
        .collect();
    indexes_replaced.extend(small_indexes(&facts.pack_indexes, &contents));
    PrunePlan {
        packs,
        repack,
        vanished,
        indexes_replaced,
    }
}

/// The small index objects, when there are more than [`SMALL_INDEXES_KEPT`]
/// of them: replaced by one (or a few) holding what they list, so the
/// objects a cold reader fetches stay few however long the history.
fn small_indexes(
    pack_indexes: &HashMap<PackId, Vec<IndexId>>,
    contents: &HashMap<PackId, Vec<PackEntry>>,
) -> Vec<IndexId> {
    let mut sizes: HashMap<IndexId, (usize, usize)> = HashMap::new();
    for (pack, idxs) in pack_indexes {
        let blobs = contents.get(pack).map_or(0, Vec::len);
        for i in idxs {
            let s = sizes.entry(*i).or_default();
            s.0 += 1;
            s.1 += blobs;
        }
    }
    let small: Vec<IndexId> = sizes
        .into_iter()
        .filter(|(_, (packs, blobs))| *packs < SMALL_INDEX_PACKS && *blobs < SMALL_INDEX_BLOBS)
        .map(|(i, _)| i)
        .collect();
    if small.len() > SMALL_INDEXES_KEPT {
        small
    } else {
        Vec::new()
    }
}

/// The verdict on one pack in storage; `entries` are its blobs.
fn judge(
    facts: &PruneFacts,
    opts: &PruneOptions,
    pack: PackId,
    info: &PackInfo,
    entries: &[PackEntry],
    damaged_live: bool,
) -> PackPlan {
    use PackAction::*;
    use PackReason::*;
    let now = facts.now;
    let young = info
        .modified
        .is_some_and(|m| now.duration_since(m) < opts.grace);
    let (live_bytes, unused_bytes) =
        entries
            .iter()
            .fold((0, 0), |(l, u), e| match facts.live.contains(&e.id) {
                true => (l + e.length, u),
                false => (l, u + e.length),
            });
    let Some(&size) = facts.indexed_sizes.get(&pack) else {
        let (action, reason) = if young {
            (Keep, Young)
        } else if facts.keep_unreadable.contains(&pack) {
            (Keep, MaybeUnreadableIndexes)
        } else {
            (Delete, NotIndexed)
        };
        return PackPlan {
            pack,
            size: info.size,
            indexed: false,
            action,
            reason,
            live_bytes,
            unused_bytes,
        };
    };
    let old_enough = opts
        .repack_older_than
        .zip(info.modified)
        .is_some_and(|(limit, m)| now.duration_since(m) > limit);
    let over = unused_bytes.saturating_mul(100) > size.saturating_mul(opts.max_unused as u64);
    let (action, reason) = if damaged_live {
        (Keep, HoldsDamagedLive)
    } else if live_bytes == 0 {
        (Delete, NothingUsed)
    } else if unused_bytes > 0 && over {
        (Repack, UnusedAboveThreshold)
    } else if unused_bytes > 0 && old_enough {
        (Repack, OldWithUnused)
    } else if unused_bytes > 0 {
        (Keep, UnusedBelowThreshold)
    } else {
        (Keep, InUse)
    };
    let (action, reason) = match action != Keep && young {
        true => (Keep, Young),
        false => (action, reason),
    };
    PackPlan {
        pack,
        size,
        indexed: true,
        action,
        reason,
        live_bytes,
        unused_bytes,
    }
}

// ---------------------------------------------------------------------------
// Gathering the facts, and running the plan
// ---------------------------------------------------------------------------

/// Prunes under the writer lock; with `opts.dry_run`, plans only, without
/// the lock. `cancel` stops it at a safe point (before the new index is
/// written, so what it repacked is an orphan the next prune deletes) with
/// [`crate::Error::Interrupted`]; the lock is released.
pub fn prune(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    cancel: &AtomicBool,
) -> Result<PruneReport> {
    if opts.dry_run {
        let facts = gather(repo, catalog, None)?;
        let mut report = plan(&facts, opts).report(&facts, true);
        clear_expired(repo, &mut report);
        return Ok(report);
    }
    let mut lock = WriterLock::of(repo, opts.lock_wait)?;
    let pruned = prune_locked(repo, catalog, opts, &mut lock, cancel).map(|mut r| {
        r.warnings
            .extend(super::fleet::refresh_status(repo, catalog));
        r
    });
    lock.release_after(pruned)
}

/// Prune under a writer lock the caller holds (erase holds one across its
/// rewrite and this prune, so no backup slips in between).
pub(crate) fn prune_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &PruneOptions,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<PruneReport> {
    // We hold the lock: temporary files in the repository are a killed writer's.
    repo.store.remove_stale_temp()?;
    let facts = gather(repo, catalog, Some(lock))?;
    stop(cancel)?;
    let plan = plan(&facts, opts);
    let mut report = plan.report(&facts, false);
    execute(repo, catalog, facts, &plan, lock, cancel, &mut report)?;
    clear_expired(repo, &mut report);
    Ok(report)
}

/// Clears the versions whose lock has ended. Prune's own work is done by
/// then, so a failure here is a warning: the next prune tries again.
fn clear_expired(repo: &Repository, report: &mut PruneReport) {
    match super::expire::run(repo, Timestamp::now(), report.dry_run, &mut report.warnings) {
        Ok(v) => report.versions = v,
        Err(e) => report.warnings.push(format!(
            "versions whose lock has ended were not cleared ({e}); the next prune tries again"
        )),
    }
}

/// Reads what prune decides by: the index, snapshots and damage records
/// (into the catalog), and what every snapshot needs. With the lock
/// (`adopt`), packs no readable index lists are adopted first, so what they
/// hold is judged like every other pack; a dry run judges them unindexed.
fn gather(
    repo: &Repository,
    catalog: &mut Catalog,
    adopt: Option<&mut WriterLock>,
) -> Result<PruneFacts> {
    let now = Timestamp::now();
    let synced = sync(repo, catalog)?;
    let mut warnings = synced.warnings();
    let (health, snaps, mut blobs) = (synced.health, synced.snaps, synced.blobs);
    // While an index object is unreadable, a pack whose trailer is
    // unreadable too is kept: it may be that index's, and live.
    let index_unreadable = synced
        .bad_objects
        .iter()
        .any(|(k, _)| k.starts_with("index/"));
    let mut keep_unreadable: HashSet<PackId> = HashSet::new();
    if adopt.is_some() {
        let super::Adopted {
            index: adopted,
            unreadable,
            ..
        } = adopt_orphan_packs(repo, catalog, &health.stored)?;
        BlobLocation::lay_over(&mut blobs, &adopted, &|l| health.usable(l));
        for (pack, why) in unreadable.into_iter().filter(|_| index_unreadable) {
            keep_unreadable.insert(pack);
            warnings.push(format!(
                "{}: no index lists it and its trailer can not be read ({why}); kept while an index object is unreadable",
                pack.key()
            ));
        }
    }
    let live = live_set(repo, catalog, &snaps, &blobs)?;
    Ok(PruneFacts {
        now,
        snapshots: snaps.len(),
        health,
        blobs,
        live,
        indexed_sizes: catalog.packs()?,
        pack_indexes: catalog.pack_indexes()?,
        keep_unreadable,
        warnings,
    })
}

/// Every blob some snapshot needs: its file list, its reference list, and
/// the blobs that list names.
fn live_set(
    repo: &Repository,
    catalog: &Catalog,
    snaps: &[(SnapshotId, Snapshot)],
    blobs: &BlobMap,
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
        return Err(PruneError::RefsUnreadable {
            snapshot: snaps[*n].0,
            why: e.to_string(),
            unreadable: unreadable.iter().map(|(n, _)| snaps[*n].0).collect(),
        }
        .into());
    }
    Ok(live)
}

/// Runs `plan` in its phases: `repack`, `index`, `delete`, `tidy`.
/// Order: new packs, then the new index, then the old indexes, then the
/// old packs; the lock is confirmed before each deletion.
fn execute(
    repo: &Repository,
    catalog: &mut Catalog,
    facts: PruneFacts,
    plan: &PrunePlan,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
    report: &mut PruneReport,
) -> Result<()> {
    let contents = facts.contents();
    let mut health = facts.health;
    if !plan.has_work() {
        return tidy(repo, catalog, &health, report);
    }
    stop(cancel)?;
    let repacked = repack(repo, plan, lock, cancel)?;
    report.packs_written = repacked.written.len();
    report.bytes_repacked = repacked.bytes;
    if !repacked.record.is_empty() {
        repo.write_damage(&repacked.record)?;
    }
    let mut skipped: Vec<&PackId> = repacked.unreadable.iter().collect();
    skipped.sort();
    for pack in skipped {
        report.warnings.push(format!(
            "{}: could not be read to repack it; kept (see `coffer check --read-data`)",
            pack.key()
        ));
    }
    // A pack that could not be read is kept, not deleted.
    let gone: Vec<PackPlan> = plan
        .packs
        .iter()
        .filter(|p| p.goes() && !repacked.unreadable.contains(&p.pack))
        .cloned()
        .collect();
    report.packs_repacked = report
        .packs_repacked
        .saturating_sub(repacked.unreadable.len());
    // The last safe point: from here on, commit (a cut leaves orphans only).
    stop(cancel)?;
    let old_packs: HashSet<PackId> = gone
        .iter()
        .filter(|p| p.indexed)
        .map(|p| p.pack)
        .chain(plan.vanished.iter().copied())
        .collect();
    let kept = survivors(
        &facts.pack_indexes,
        &facts.indexed_sizes,
        &contents,
        &plan.indexes_replaced,
        &old_packs,
    );
    replace_indexes(repo, catalog, plan, kept, &repacked.written, lock)?;
    let keys: Vec<String> = gone.iter().map(|p| p.pack.key()).collect();
    lock.confirm()?;
    repo.store.delete_many(&keys)?;
    for p in &gone {
        health.stored.remove(&p.pack);
    }
    let freed: u64 = gone.iter().map(|p| p.size).sum();
    let new_bytes: u64 = repacked.written.iter().map(|p| p.size).sum();
    report.bytes_freed = freed.saturating_sub(new_bytes);
    tidy(repo, catalog, &health, report)
}

/// What the `repack` phase did.
struct Repacked {
    /// The new packs.
    written: Vec<IndexedPack>,
    /// Live bytes copied into them.
    bytes: u64,
    /// Packs that read back short or not at all: kept, not copied.
    unreadable: HashSet<PackId>,
    /// What was found bad, to record.
    record: DamageRecord,
}

/// Copies the live blobs of the packs to repack into new packs. The
/// coalesced reads run ahead of the packing, several in flight, and each
/// new pack uploads while the next fills: on S3 the repack is bound by
/// requests.
fn repack(
    repo: &Repository,
    plan: &PrunePlan,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<Repacked> {
    let gap = repo.store.read_gap();
    let runs: Vec<(PackId, &[PackEntry], Run)> = plan
        .repack
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
    let mut done = Repacked {
        written: Vec::new(),
        bytes: 0,
        unreadable: HashSet::new(),
        record: DamageRecord::new("prune"),
    };
    for ((pack, entries, run), bytes) in runs.iter().zip(fetched) {
        stop(cancel)?;
        lock.refresh_if_due()?;
        if done.unreadable.contains(pack) {
            continue;
        }
        let bad = |reason: String| BadPack {
            id: *pack,
            reason,
            blobs: Vec::new(),
        };
        let bytes = match bytes {
            Ok(b) if b.len() as u64 == run.length => b,
            Ok(_) => {
                done.unreadable.insert(*pack);
                done.record
                    .packs
                    .push(bad("shorter than its index says".into()));
                continue;
            }
            Err(e) if e.is_object_fault() => {
                done.unreadable.insert(*pack);
                if !e.is_not_found() {
                    done.record.packs.push(bad(e.to_string()));
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
            done.bytes += e.length;
        }
    }
    done.written = packer.finish()?;
    Ok(done)
}

/// The packs that stay listed by the replaced index objects: those the
/// index objects in `replaced` list, less `old` (packs that go or that
/// storage lost), with their blobs by offset, by id.
fn survivors(
    pack_indexes: &HashMap<PackId, Vec<IndexId>>,
    indexed_sizes: &HashMap<PackId, u64>,
    contents: &HashMap<PackId, Vec<PackEntry>>,
    replaced: &BTreeSet<IndexId>,
    old: &HashSet<PackId>,
) -> Vec<IndexedPack> {
    let mut out: Vec<IndexedPack> = pack_indexes
        .iter()
        .filter(|(pack, idxs)| !old.contains(pack) && idxs.iter().any(|i| replaced.contains(i)))
        .filter_map(|(pack, _)| {
            let mut blobs = contents.get(pack).cloned().unwrap_or_default();
            blobs.sort_by_key(|e| e.offset);
            Some(IndexedPack {
                id: *pack,
                size: *indexed_sizes.get(pack)?,
                blobs,
            })
        })
        .collect();
    out.sort_by_key(|p| p.id.0);
    out
}

/// The `index` phase: one index for the new packs and the survivors of
/// every replaced index object (split into objects of a bounded number of
/// blobs, repo::limits), then the replaced objects go.
fn replace_indexes(
    repo: &Repository,
    catalog: &mut Catalog,
    plan: &PrunePlan,
    mut packs: Vec<IndexedPack>,
    written: &[IndexedPack],
    lock: &mut WriterLock,
) -> Result<()> {
    packs.extend(written.iter().cloned());
    let new_indexes = repo.write_indexes(packs)?;
    // Before each deletion: our lock is still ours (fencing).
    lock.confirm()?;
    let old: Vec<String> = plan.indexes_replaced.iter().map(|i| i.key()).collect();
    repo.store.delete_many(&old)?;
    // The catalog never lists the old and the new index objects apart.
    let tx = catalog.begin()?;
    for i in &plan.indexes_replaced {
        tx.remove_index(i)?;
    }
    for (id, index) in &new_indexes {
        tx.add_index(id, index)?;
    }
    tx.commit()?;
    Ok(())
}

/// The `tidy` phase: the catalog's cache of reference lists is trimmed,
/// and the damage records whose packs have all left storage are deleted.
fn tidy(
    repo: &Repository,
    catalog: &Catalog,
    health: &Health,
    report: &mut PruneReport,
) -> Result<()> {
    catalog.trim_refs_cache()?;
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
    use crate::repo::damage::DamageRecord;
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

    /// A repository to plan over: packs by number, each with blobs of
    /// (blob number, offset, length, live), its age in hours, and whether
    /// an index lists it (index object = the pack's number + 100).
    struct Repo {
        now: Timestamp,
        facts: PruneFacts,
    }

    impl Repo {
        fn new() -> Repo {
            let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
            Repo {
                now,
                facts: PruneFacts {
                    now,
                    ..Default::default()
                },
            }
        }

        fn pack(
            &mut self,
            n: u8,
            hours_old: i64,
            indexed: bool,
            stored: bool,
            blobs: &[(u8, u64, u64, bool)],
        ) {
            let pack = PackId([n; 32]);
            let size: u64 = blobs.iter().map(|b| b.2).sum::<u64>() + 100;
            for &(b, offset, length, live) in blobs {
                let id = BlobId([b; 32]);
                let entry = PackEntry {
                    id,
                    kind: BlobKind::Data,
                    offset,
                    length,
                    raw_length: length,
                };
                self.facts.blobs.insert(BlobLocation { pack, entry });
                if live {
                    self.facts.live.insert(id);
                }
            }
            if stored {
                self.facts.health.stored.insert(
                    pack,
                    PackInfo {
                        size,
                        modified: Some(self.now - jiff::SignedDuration::from_hours(hours_old)),
                    },
                );
            }
            if indexed {
                self.facts.indexed_sizes.insert(pack, size);
                self.facts
                    .pack_indexes
                    .insert(pack, vec![IndexId([n + 100; 32])]);
            }
        }

        /// Health rebuilt with a damage record naming `bad` in pack `n`.
        fn damage(&mut self, n: u8, bad: u8) {
            let mut rec = DamageRecord::new("check");
            rec.packs.push(BadPack {
                id: PackId([n; 32]),
                reason: "blob fails to decrypt".into(),
                blobs: vec![BlobId([bad; 32])],
            });
            let stored = std::mem::take(&mut self.facts.health.stored);
            self.facts.health =
                Health::new(stored, &self.facts.indexed_sizes, vec![([1; 32], rec)]);
        }

        fn verdict(&self, plan: &PrunePlan, n: u8) -> (PackAction, PackReason) {
            let p = plan
                .packs
                .iter()
                .find(|p| p.pack == PackId([n; 32]))
                .expect("the pack is planned");
            (p.action, p.reason)
        }
    }

    fn opts() -> PruneOptions {
        PruneOptions {
            grace: jiff::SignedDuration::from_hours(2),
            max_unused: 20,
            repack_older_than: None,
            dry_run: true,
            lock_wait: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn each_pack_gets_an_action_and_the_reason_for_it() {
        use PackAction::*;
        use PackReason::*;
        let mut r = Repo::new();
        r.pack(
            1,
            100,
            true,
            true,
            &[(10, 0, 500, true), (11, 500, 500, true)],
        );
        r.pack(2, 100, true, true, &[(20, 0, 500, false)]);
        r.pack(
            3,
            100,
            true,
            true,
            &[(30, 0, 400, false), (31, 400, 600, true)],
        );
        r.pack(
            4,
            100,
            true,
            true,
            &[(40, 0, 50, false), (41, 50, 950, true)],
        );
        r.pack(5, 100, false, true, &[]);
        r.pack(6, 1, false, true, &[]);
        r.pack(7, 1, true, true, &[(70, 0, 500, false)]);
        r.pack(8, 100, true, false, &[(80, 0, 500, false)]);
        r.pack(9, 100, true, false, &[(90, 0, 500, true)]);
        let plan = plan(&r.facts, &opts());
        assert_eq!(r.verdict(&plan, 1), (Keep, InUse));
        assert_eq!(r.verdict(&plan, 2), (Delete, NothingUsed));
        assert_eq!(r.verdict(&plan, 3), (Repack, UnusedAboveThreshold));
        assert_eq!(r.verdict(&plan, 4), (Keep, UnusedBelowThreshold));
        assert_eq!(r.verdict(&plan, 5), (Delete, NotIndexed));
        assert_eq!(r.verdict(&plan, 6), (Keep, Young), "an orphan in its grace");
        assert_eq!(r.verdict(&plan, 7), (Keep, Young), "unused, but young");
        assert_eq!(plan.packs.len(), 7, "packs storage lost are not judged");
        // Storage lost 8 (nothing needed from it) and 9 (a blob needed).
        assert_eq!(plan.vanished, vec![PackId([8; 32])]);
        // Only the live blob of 3 is copied.
        assert_eq!(plan.repack.len(), 1);
        assert_eq!(plan.repack[0].0, PackId([3; 32]));
        let ids: Vec<BlobId> = plan.repack[0].1.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![BlobId([31; 32])]);
        // The index objects of 2, 3 (they go) and 8 (lost) are replaced.
        let replaced: Vec<u8> = plan.indexes_replaced.iter().map(|i| i.0[0]).collect();
        assert_eq!(replaced, vec![102, 103, 108]);
        assert_eq!(
            plan.doomed(),
            vec![PackId([2; 32]), PackId([3; 32]), PackId([5; 32])]
        );
        assert!(plan.has_work());

        let report = plan.report(&r.facts, true);
        assert_eq!(report.packs, 7);
        assert_eq!(report.packs_deleted, 1);
        assert_eq!(report.packs_repacked, 1);
        assert_eq!(report.orphans_deleted, 1);
        assert_eq!(report.kept_by_grace, 2);
        assert_eq!(report.missing_dropped, 1);
        assert_eq!(report.indexes_rewritten, 3);
        assert_eq!(report.bytes_repacked, 600);
        assert_eq!(report.unused_left, 50, "the unused part of 4");
        // 2 (600) + 3 (1100) + 5 (100, as listed), less what is copied.
        assert_eq!(report.bytes_freed, 600 + 1100 + 100 - 600);
        assert!(report.dry_run);
    }

    #[test]
    fn old_packs_are_repacked_whatever_their_unused_share() {
        let mut r = Repo::new();
        r.pack(
            4,
            100,
            true,
            true,
            &[(40, 0, 50, false), (41, 50, 950, true)],
        );
        let o = PruneOptions {
            repack_older_than: Some(jiff::SignedDuration::from_hours(50)),
            ..opts()
        };
        let p = plan(&r.facts, &o);
        assert_eq!(
            r.verdict(&p, 4),
            (PackAction::Repack, PackReason::OldWithUnused)
        );
        let younger = PruneOptions {
            repack_older_than: Some(jiff::SignedDuration::from_hours(200)),
            ..opts()
        };
        let p = plan(&r.facts, &younger);
        assert_eq!(r.verdict(&p, 4).0, PackAction::Keep);
        assert!(!p.has_work());
    }

    #[test]
    fn a_pack_with_needed_damaged_blobs_and_a_possible_index_orphan_are_kept() {
        let mut r = Repo::new();
        r.pack(
            1,
            100,
            true,
            true,
            &[(10, 0, 500, true), (11, 500, 500, false)],
        );
        r.pack(5, 100, false, true, &[]);
        r.damage(1, 10);
        r.facts.keep_unreadable.insert(PackId([5; 32]));
        let p = plan(&r.facts, &opts());
        assert_eq!(
            r.verdict(&p, 1),
            (PackAction::Keep, PackReason::HoldsDamagedLive)
        );
        assert_eq!(
            r.verdict(&p, 5),
            (PackAction::Keep, PackReason::MaybeUnreadableIndexes)
        );
        let report = p.report(&r.facts, false);
        assert_eq!((report.damaged_kept, report.kept_by_grace), (1, 1));
        assert_eq!(report.unused_left, 0, "a damaged pack is not counted");
        assert!(!p.has_work());
    }

    #[test]
    fn survivors_are_the_other_packs_of_replaced_indexes() {
        let mut r = Repo::new();
        r.pack(1, 100, true, true, &[(11, 500, 5, true), (10, 0, 5, true)]);
        r.pack(2, 100, true, true, &[(20, 0, 5, false)]);
        r.pack(3, 100, true, true, &[(30, 0, 5, true)]);
        // 1 and 2 share index 102; 3 is alone in 103.
        r.facts
            .pack_indexes
            .insert(PackId([1; 32]), vec![IndexId([102; 32])]);
        let p = plan(&r.facts, &opts());
        assert_eq!(p.indexes_replaced.len(), 1);
        let old: HashSet<PackId> = p.doomed().into_iter().collect();
        let kept = survivors(
            &r.facts.pack_indexes,
            &r.facts.indexed_sizes,
            &r.facts.contents(),
            &p.indexes_replaced,
            &old,
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].id, PackId([1; 32]));
        let offsets: Vec<u64> = kept[0].blobs.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, vec![0, 500], "blobs by offset");
    }

    #[test]
    fn small_index_objects_are_merged_once_there_are_more_than_eight() {
        let mut r = Repo::new();
        // Nine backups, one live pack and one index object each: all kept,
        // yet every index object is replaced and every pack survives them.
        for n in 1..=9 {
            r.pack(n, 100, true, true, &[(n + 10, 0, 5, true)]);
        }
        let p = plan(&r.facts, &opts());
        assert!(p.doomed().is_empty(), "consolidating deletes no pack");
        assert!(p.has_work(), "merging index objects is work");
        let replaced: Vec<u8> = p.indexes_replaced.iter().map(|i| i.0[0]).collect();
        assert_eq!(replaced, (101..=109).collect::<Vec<u8>>());
        let kept = survivors(
            &r.facts.pack_indexes,
            &r.facts.indexed_sizes,
            &r.facts.contents(),
            &p.indexes_replaced,
            &HashSet::new(),
        );
        assert_eq!(kept.len(), 9, "every pack is listed again");

        // Eight small ones stay as they are: nothing to do.
        let mut r = Repo::new();
        for n in 1..=8 {
            r.pack(n, 100, true, true, &[(n + 10, 0, 5, true)]);
        }
        let p = plan(&r.facts, &opts());
        assert!(p.indexes_replaced.is_empty() && !p.has_work());
    }

    #[test]
    fn a_big_index_object_is_not_rewritten_to_merge_small_ones() {
        let mut contents: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
        let mut pack_indexes: HashMap<PackId, Vec<IndexId>> = HashMap::new();
        let entry = PackEntry {
            id: BlobId([0; 32]),
            kind: BlobKind::Data,
            offset: 0,
            length: 1,
            raw_length: 1,
        };
        for n in 0..10u8 {
            let blobs = if n == 0 { SMALL_INDEX_BLOBS } else { 1 };
            contents.insert(PackId([n; 32]), vec![entry; blobs]);
            pack_indexes.insert(PackId([n; 32]), vec![IndexId([n; 32])]);
        }
        let mut small = small_indexes(&pack_indexes, &contents);
        small.sort();
        assert_eq!(
            small,
            (1..10u8).map(|n| IndexId([n; 32])).collect::<Vec<_>>()
        );
    }
}
