//! Erase: remove the files matching some globs from every snapshot that
//! holds them, and make their data leave storage (docs/FORMAT.md, "Erasure").
//!
//! 1. **Scan** every snapshot's file list: which entries go (a match, what is
//!    below a match, and hard links to an erased file: they are the same
//!    data), and which byte ranges of which blobs the erased and the kept
//!    files use.
//! 2. **Mixed bundles.** Small files share *bundle* blobs. A bundle holding
//!    erased bytes that kept files also use would stay referenced, and the
//!    erased bytes with it; so the kept files' bytes are re-stored in a new
//!    blob (the kept ranges of the old bundle, in order) and their extents
//!    point there. A chunk that an erased and a kept file share (dedup) is the
//!    kept file's data too and stays.
//! 3. **Rewrite**, under the writer lock, every snapshot that loses an entry or
//!    uses a mixed bundle: a new file list, tree index and reference list, the
//!    same time, host, profile and paths, and a summary without the erased
//!    entries. Unchanged snapshots are left alone. Write order: packs, their
//!    index, the new snapshot objects, and only then the old ones are deleted,
//!    so a cut-off erase leaves every snapshot whole (old and new side by
//!    side); running it again finishes the job.
//! 4. **Prune**, under the same lock, with no grace and no unused share
//!    allowed, so every pack that holds an erased blob is deleted or repacked.

use super::prune::{PruneOptions, PruneReport, prune_locked};
use super::rewrite::{BlobWriter, ListWriter};
use super::{Progress, RefsPiece, stop, sync_index, sync_snapshots, walk_refs};
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::RepoError;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::lock::{LEASE, RepoLock};
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Entry, EntryKind, TreeParser};
use crate::{Error, Result};
use chrono::{DateTime, Utc};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug, Default)]
pub struct EraseOptions {
    /// Globs over snapshot paths (no leading `/`); a match takes what is below it too.
    pub patterns: Vec<String>,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    pub lock_wait: std::time::Duration,
}

/// What happened (or, in a dry run, would happen) to one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotErasure {
    /// The snapshot as it was.
    pub id: String,
    /// The snapshot that replaces it (none in a dry run).
    pub new_id: Option<String>,
    pub time: DateTime<Utc>,
    pub host: String,
    pub profile: String,
    /// Entries removed: files, folders, links and what else matched.
    pub entries_removed: u64,
    pub files_removed: u64,
    pub bytes_removed: u64,
    /// Kept files moved out of a bundle that also held erased bytes.
    pub files_restored: u64,
    /// `rewritten`; `finished` (a cut-off erase had already written its
    /// replacement, so only the old object was deleted); `planned` (dry run).
    pub action: &'static str,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct EraseReport {
    pub dry_run: bool,
    pub patterns: Vec<String>,
    /// Every snapshot that changes, oldest first.
    pub snapshots: Vec<SnapshotErasure>,
    /// The distinct paths erased (snapshot form, no leading `/`), sorted.
    pub paths: Vec<String>,
    pub entries_removed: u64,
    /// Bundles that held erased and kept files; their kept files were re-stored.
    pub bundles_restored: usize,
    pub files_restored: u64,
    pub blobs_written: usize,
    pub packs_written: usize,
    /// The prune that removed the erased data from storage.
    pub prune: Option<PruneReport>,
    /// Bytes removed from storage by that prune (net of the packs it wrote).
    pub bytes_freed: u64,
    /// Blobs that held erased data and are still stored after the prune
    /// (0 unless the storage's clock is ahead of this machine's).
    pub still_stored: usize,
}

/// Which entries go: the globs, matched against a path and its parents.
struct Matcher {
    set: GlobSet,
}

impl Matcher {
    fn new(patterns: &[String]) -> Result<Matcher> {
        if patterns.is_empty() {
            return Err(Error::Invalid(
                "erase needs at least one --path GLOB (snapshot paths, without the leading '/')"
                    .into(),
            ));
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = p.trim_start_matches('/').trim_end_matches('/');
            if g.is_empty() {
                return Err(Error::Invalid(format!(
                    "--path {p:?} names no path; give the files to erase, e.g. 'srv/crm/customer-42/**'"
                )));
            }
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Invalid(format!("--path {p:?}: {e}")))?;
            b.add(glob);
        }
        Ok(Matcher {
            set: b.build().map_err(|e| Error::Invalid(e.to_string()))?,
        })
    }

    /// Whether the path or a folder above it matches.
    fn matches(&self, path: &[u8]) -> bool {
        let mut p: &[u8] = path;
        loop {
            if self.set.is_match(Path::new(OsStr::from_bytes(p))) {
                return true;
            }
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => return false,
            }
        }
    }

    /// Whether `e` goes. `erased_files` holds the files of this snapshot
    /// already erased: a hard link to one is the same data and goes too.
    fn erases(&self, e: &Entry, erased_files: &mut HashSet<Vec<u8>>) -> bool {
        let erased = self.matches(&e.path)
            || (e.kind == EntryKind::Hardlink
                && e.target.as_ref().is_some_and(|t| erased_files.contains(t)));
        if erased && e.kind == EntryKind::File {
            erased_files.insert(e.path.clone());
        }
        erased
    }
}

/// The decrypted tree blobs of the snapshot at hand: consecutive snapshots
/// share most of them, so each is fetched once while it keeps being used.
#[derive(Default)]
struct TreeCache {
    blobs: HashMap<BlobId, Arc<Vec<u8>>>,
}

/// Streams a snapshot's entries (like [`super::for_each_entry`], with the cache).
fn stream(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    cache: &mut TreeCache,
    sid: &SnapshotId,
    snap: &Snapshot,
    mut f: impl FnMut(Entry) -> Result<()>,
) -> Result<()> {
    let need: HashSet<&BlobId> = snap.tree.iter().collect();
    cache.blobs.retain(|id, _| need.contains(id));
    let what = format!("file list of snapshot {}", sid.short());
    let mut parser = TreeParser::default();
    for id in &snap.tree {
        let data = match cache.blobs.get(id) {
            Some(d) => d.clone(),
            None => {
                let loc = blobs.get(id).ok_or_else(|| RepoError::Corrupt {
                    object: what.clone(),
                    reason: format!(
                        "blob {} is missing from the index; run `coffer check`",
                        id.short()
                    ),
                })?;
                let d = Arc::new(repo.read_blob(&loc.pack, &loc.entry)?);
                cache.blobs.insert(*id, d.clone());
                d
            }
        };
        for e in parser.feed(&data, &what)? {
            f(e)?;
        }
    }
    parser.finish(&what)?;
    Ok(())
}

/// What one snapshot loses.
#[derive(Clone, Copy, Debug, Default)]
struct Loss {
    entries: u64,
    files: u64,
    dirs: u64,
    bytes: u64,
    /// It uses a mixed bundle (for kept files).
    bundle: bool,
}

impl Loss {
    fn changes(&self) -> bool {
        self.entries > 0 || self.bundle
    }

    /// The summary of the snapshot once its erased entries are gone.
    fn summary(&self, old: &Summary) -> Summary {
        Summary {
            files: old.files.saturating_sub(self.files),
            dirs: old.dirs.saturating_sub(self.dirs),
            bytes: old.bytes.saturating_sub(self.bytes),
            ..old.clone()
        }
    }
}

/// Where the kept bytes of a mixed bundle go: `[start, end)` of the old blob
/// lands at `new_start` of the new one.
type Intervals = Vec<(u64, u64, u64)>;

/// Sorted, merged ranges, each with its place in the concatenation.
fn merge(ranges: &HashSet<(u64, u64)>) -> Intervals {
    let mut r: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(o, l)| (o, o.saturating_add(l)))
        .collect();
    r.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in r {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut at = 0;
    merged
        .into_iter()
        .map(|(s, e)| {
            let out = (s, e, at);
            at += e - s;
            out
        })
        .collect()
}

/// Whether `[off, off+len)` lies inside one interval.
fn covered(iv: &Intervals, off: u64, len: u64) -> bool {
    iv.iter()
        .any(|&(s, e, _)| s <= off && off.saturating_add(len) <= e)
}

/// Where `[off, off+len)` of the old blob is in the new one.
fn remap(iv: &Intervals, off: u64, len: u64) -> Option<u64> {
    iv.iter()
        .find(|&&(s, e, _)| s <= off && off.saturating_add(len) <= e)
        .map(|&(s, _, n)| n + (off - s))
}

/// The result of the scan.
struct Plan {
    losses: Vec<Loss>,
    paths: BTreeSet<Vec<u8>>,
    /// Mixed bundles and where their kept bytes go.
    mixed: HashMap<BlobId, Intervals>,
    /// Every blob an erased file used.
    erased_blobs: HashSet<BlobId>,
}

fn corrupt_snapshot(sid: &SnapshotId, e: Error) -> Error {
    Error::Invalid(format!(
        "snapshot {}: {e}; erase changed nothing (run `coffer check`, and `coffer forget` a snapshot that cannot be read)",
        sid.short()
    ))
}

#[allow(clippy::too_many_arguments)]
fn scan(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &HashMap<BlobId, BlobLocation>,
    snaps: &[(SnapshotId, Snapshot)],
    m: &Matcher,
    progress: &dyn Progress,
    mut lock: Option<&mut RepoLock>,
    cancel: &AtomicBool,
) -> Result<Plan> {
    progress.phase("scan", None);
    let mut cache = TreeCache::default();
    let mut losses = vec![Loss::default(); snaps.len()];
    let mut paths = BTreeSet::new();
    let mut erased_ranges: HashMap<BlobId, HashSet<(u64, u64)>> = HashMap::new();
    // Ranges of blobs that kept files use in part (bundles); whole chunks need no re-store.
    let mut kept_ranges: HashMap<BlobId, HashSet<(u64, u64)>> = HashMap::new();
    for (n, (sid, snap)) in snaps.iter().enumerate() {
        stop(cancel)?;
        if let Some(l) = lock.as_deref_mut() {
            l.refresh_if_due(&repo.store, &repo.keys)?;
        }
        let loss = &mut losses[n];
        let mut erased_files = HashSet::new();
        stream(repo, blobs, &mut cache, sid, snap, |e| {
            if m.erases(&e, &mut erased_files) {
                loss.entries += 1;
                match e.kind {
                    EntryKind::File => {
                        loss.files += 1;
                        loss.bytes += e.size;
                        for x in &e.content {
                            erased_ranges
                                .entry(x.blob)
                                .or_default()
                                .insert((x.offset, x.length));
                        }
                    }
                    EntryKind::Hardlink => loss.files += 1,
                    EntryKind::Dir => loss.dirs += 1,
                    _ => {}
                }
                paths.insert(e.path);
            } else if e.kind == EntryKind::File {
                for x in &e.content {
                    let whole = blobs
                        .get(&x.blob)
                        .is_some_and(|l| x.offset == 0 && x.length == l.entry.raw_length);
                    if !whole {
                        kept_ranges
                            .entry(x.blob)
                            .or_default()
                            .insert((x.offset, x.length));
                    }
                }
            }
            Ok(())
        })
        .map_err(|e| corrupt_snapshot(sid, e))?;
        progress.advance(1);
    }
    // A blob with erased bytes that kept files use in part, where the kept
    // ranges do not cover the erased ones, is a mixed bundle.
    let mut mixed = HashMap::new();
    for (blob, erased) in &erased_ranges {
        let Some(kept) = kept_ranges.get(blob) else {
            continue;
        };
        let iv = merge(kept);
        if erased.iter().all(|&(o, l)| covered(&iv, o, l)) {
            continue;
        }
        mixed.insert(*blob, iv);
    }
    // Which snapshots use a mixed bundle: their reference lists say (cached).
    if !mixed.is_empty() {
        let mut memo: HashMap<RefsPiece, bool> = HashMap::new();
        let unreadable = walk_refs(repo, catalog, blobs, snaps, |n, piece, ids| {
            let hit = match ids {
                Some(ids) => {
                    let hit = ids.iter().any(|id| mixed.contains_key(id));
                    memo.insert(piece, hit);
                    hit
                }
                None => memo.get(&piece).copied().unwrap_or(false),
            };
            losses[n].bundle |= hit;
            Ok(())
        })?;
        // An erase must reach every snapshot that holds the files.
        if let Some((_, e)) = unreadable.into_iter().next() {
            return Err(e);
        }
    }
    Ok(Plan {
        losses,
        paths,
        mixed,
        erased_blobs: erased_ranges.into_keys().collect(),
    })
}

/// Seals new blobs into packs, and re-stores the kept part of mixed bundles.
struct Writer<'a> {
    blobs: BlobWriter<'a>,
    /// Mixed bundle → the blob of its kept bytes.
    restored: HashMap<BlobId, BlobId>,
}

impl Writer<'_> {
    fn store(&mut self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        self.blobs.store(kind, data)
    }

    /// The blob holding the kept bytes of mixed bundle `old`.
    fn restored(&mut self, old: BlobId, iv: &Intervals) -> Result<BlobId> {
        if let Some(id) = self.restored.get(&old) {
            return Ok(*id);
        }
        let loc = self
            .blobs
            .known
            .get(&old)
            .ok_or_else(|| RepoError::Corrupt {
                object: format!("blob {}", old.short()),
                reason: "missing from the index; run `coffer check`".into(),
            })?;
        let plain = self.blobs.repo.read_blob(&loc.pack, &loc.entry)?;
        let mut data = Vec::new();
        for &(s, e, _) in iv {
            let piece = plain
                .get(s as usize..e as usize)
                .ok_or_else(|| RepoError::Corrupt {
                    object: format!("blob {}", old.short()),
                    reason: "a file's extent lies outside the blob".into(),
                })?;
            data.extend_from_slice(piece);
        }
        let id = self.store(BlobKind::Data, &data)?;
        self.restored.insert(old, id);
        Ok(id)
    }
}

/// Writes the new version of one snapshot's file list, tree index and
/// reference list; returns the new snapshot and how many files moved.
fn rewrite(
    w: &mut Writer,
    cache: &mut TreeCache,
    sid: &SnapshotId,
    snap: &Snapshot,
    loss: &Loss,
    m: &Matcher,
    mixed: &HashMap<BlobId, Intervals>,
) -> Result<(Snapshot, u64)> {
    let repo = w.blobs.repo;
    let mut list = ListWriter::new(repo);
    let mut erased_files = HashSet::new();
    let mut moved = 0u64;
    let known = w.blobs.known;
    stream(repo, known, cache, sid, snap, |mut e| {
        if m.erases(&e, &mut erased_files) {
            return Ok(());
        }
        let mut here = false;
        let path = &e.path;
        for x in &mut e.content {
            if let Some(iv) = mixed.get(&x.blob) {
                let offset = remap(iv, x.offset, x.length).ok_or_else(|| {
                    Error::Invalid(format!(
                        "/{}: its extent in blob {} was not seen by the scan; nothing was deleted, run erase again",
                        String::from_utf8_lossy(path),
                        x.blob.short()
                    ))
                })?;
                x.blob = w.restored(x.blob, iv)?;
                x.offset = offset;
                here = true;
            }
        }
        moved += u64::from(here);
        list.push(&mut w.blobs, &e)
    })?;
    let written = list.finish(&mut w.blobs)?;
    Ok((
        written.snapshot_like(snap, loss.summary(&snap.summary)),
        moved,
    ))
}

fn erasure(
    sid: &SnapshotId,
    snap: &Snapshot,
    loss: &Loss,
    action: &'static str,
) -> SnapshotErasure {
    SnapshotErasure {
        id: sid.to_hex(),
        new_id: None,
        time: snap.time,
        host: snap.host.clone(),
        profile: snap.profile.clone(),
        entries_removed: loss.entries,
        files_removed: loss.files,
        bytes_removed: loss.bytes,
        files_restored: 0,
        action,
    }
}

/// Erases the files matching `opts.patterns` from every snapshot, then
/// prunes so their data leaves storage. Needs the operator identity.
/// `cancel` stops it at a safe point with [`Error::Interrupted`] (the
/// lock released, no spool file left): running it again finishes the job.
pub fn erase(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &EraseOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<EraseReport> {
    if !repo.keys.is_operator() {
        return Err(RepoError::NeedIdentity {
            what: "erasing files (their file lists)".into(),
        }
        .into());
    }
    let m = Matcher::new(&opts.patterns)?;
    let mut report = EraseReport {
        dry_run: opts.dry_run,
        patterns: opts.patterns.clone(),
        ..Default::default()
    };
    if opts.dry_run {
        let blobs = sync_index(repo, catalog)?.blobs;
        let (snaps, _) = sync_snapshots(repo, catalog)?;
        let plan = scan(repo, catalog, &blobs, &snaps, &m, progress, None, cancel)?;
        fill_plan(&mut report, &plan, &snaps);
        return Ok(report);
    }
    // One lock across the rewrite and the prune: a backup in between could
    // re-use a mixed bundle through its file cache and keep erased bytes alive.
    let mut lock = RepoLock::for_writer(
        &repo.store,
        &repo.keys,
        repo.config.pack_size,
        LEASE,
        opts.lock_wait,
    )?;
    let result = rewrite_all(repo, catalog, &m, &mut report, progress, &mut lock, cancel).and_then(|plan| {
        // The erased data leaves storage: nothing unreferenced may stay behind.
        progress.phase("prune", None);
        let opts = PruneOptions {
            grace: chrono::Duration::zero(),
            max_unused: 0,
            repack_older_than: None,
            dry_run: false,
            lock_wait: std::time::Duration::ZERO,
        };
        let pruned = prune_locked(repo, catalog, &opts, &mut lock, cancel).map_err(|e| match e {
            Error::Interrupted => e,
            e => Error::Invalid(format!(
                "the snapshots were rewritten, but removing the erased data from storage failed: {e}; run the same erase again to finish"
            )),
        })?;
        report.bytes_freed = pruned.bytes_freed;
        report.prune = Some(pruned);
        Ok(plan)
    });
    let released = lock.release(&repo.store, &repo.keys);
    let plan = result?;
    released?;

    // What prune could not remove: erased blobs still stored and unused, or
    // mixed bundles still in use (packs a storage clock ahead of ours made
    // look new; no backup can run in between, the lock was held throughout).
    let blobs = sync_index(repo, catalog)?.blobs;
    let (snaps, _) = sync_snapshots(repo, catalog)?;
    let mut live: HashSet<BlobId> = HashSet::new();
    // A list that can not be read only makes this count smaller.
    let _unreadable = walk_refs(repo, catalog, &blobs, &snaps, |_, _, ids| {
        live.extend(ids.into_iter().flatten().copied());
        Ok(())
    })?;
    report.still_stored = plan
        .erased_blobs
        .iter()
        .chain(plan.mixed.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|b| blobs.contains_key(b) && (!live.contains(b) || plan.mixed.contains_key(b)))
        .count();
    Ok(report)
}

fn fill_plan(report: &mut EraseReport, plan: &Plan, snaps: &[(SnapshotId, Snapshot)]) {
    report.paths = plan
        .paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    report.bundles_restored = plan.mixed.len();
    for ((sid, snap), loss) in snaps.iter().zip(&plan.losses) {
        if loss.changes() {
            report.entries_removed += loss.entries;
            report.snapshots.push(erasure(sid, snap, loss, "planned"));
        }
    }
}

fn rewrite_all(
    repo: &Repository,
    catalog: &mut Catalog,
    m: &Matcher,
    report: &mut EraseReport,
    progress: &dyn Progress,
    lock: &mut RepoLock,
    cancel: &AtomicBool,
) -> Result<Plan> {
    let blobs = sync_index(repo, catalog)?.blobs;
    let (snaps, _) = sync_snapshots(repo, catalog)?;
    let plan = scan(
        repo,
        catalog,
        &blobs,
        &snaps,
        m,
        progress,
        Some(&mut *lock),
        cancel,
    )?;
    fill_plan(report, &plan, &snaps);
    let todo: Vec<usize> = (0..snaps.len())
        .filter(|&n| plan.losses[n].changes())
        .collect();
    if todo.is_empty() {
        return Ok(plan);
    }
    // A replacement already written by a cut-off erase: a snapshot that does
    // not change, with the same time, host, profile, paths and the summary
    // the rewrite gives.
    let replacement = |n: usize| -> Option<SnapshotId> {
        let (_, s) = &snaps[n];
        let want = plan.losses[n].summary(&s.summary);
        snaps
            .iter()
            .enumerate()
            .find(|(k, (_, o))| {
                !plan.losses[*k].changes()
                    && o.time == s.time
                    && o.host == s.host
                    && o.profile == s.profile
                    && o.paths == s.paths
                    && o.summary == want
            })
            .map(|(_, (id, _))| *id)
    };

    progress.phase("rewrite", None);
    let mut w = Writer {
        blobs: BlobWriter::new(repo, &blobs, super::packer::ReadBack::of(lock)),
        restored: HashMap::new(),
    };
    let mut cache = TreeCache::default();
    let mut new_snaps: Vec<(usize, Snapshot)> = Vec::new();
    let mut done: Vec<SnapshotErasure> = Vec::new();
    let result = (|| -> Result<()> {
        for &n in &todo {
            stop(cancel)?;
            lock.refresh_if_due(&repo.store, &repo.keys)?;
            let (sid, snap) = &snaps[n];
            let loss = &plan.losses[n];
            if let Some(existing) = replacement(n) {
                let mut e = erasure(sid, snap, loss, "finished");
                e.new_id = Some(existing.to_hex());
                done.push(e);
            } else {
                let (new, moved) = rewrite(&mut w, &mut cache, sid, snap, loss, m, &plan.mixed)?;
                let mut e = erasure(sid, snap, loss, "rewritten");
                e.files_restored = moved;
                done.push(e);
                new_snaps.push((n, new));
            }
            progress.advance(1);
        }
        Ok(())
    })();
    result?;
    let blobs_written = w.blobs.blobs_written;
    let written = w.blobs.finish()?;
    // The last safe point before the commit: the new packs are orphans then.
    stop(cancel)?;

    // Commit: the index of the new packs, the new snapshots, then the old go.
    report.packs_written = written.len();
    for (id, index) in repo.write_indexes(written)? {
        catalog.add_index(&id, &index)?;
    }
    report.blobs_written = blobs_written;
    lock.refresh_if_due(&repo.store, &repo.keys)?;
    let mut new_ids = HashMap::new();
    for (n, snap) in &new_snaps {
        let id = repo.write_snapshot(snap)?;
        catalog.put_snapshot(&id, snap)?;
        new_ids.insert(*n, id);
    }
    // An old snapshot is deleted only once its replacement is stored (never
    // when the replacement is the very same object).
    let kept: HashSet<SnapshotId> = new_ids.values().copied().collect();
    let old: Vec<SnapshotId> = todo
        .iter()
        .map(|&n| snaps[n].0)
        .filter(|id| !kept.contains(id))
        .collect();
    lock.confirm(&repo.store, &repo.keys)?;
    repo.store
        .delete_many(&old.iter().map(|id| id.key()).collect::<Vec<_>>())?;
    for id in &old {
        catalog.remove_snapshot(id)?;
    }
    for (e, &n) in done.iter_mut().zip(&todo) {
        if let Some(id) = new_ids.get(&n) {
            e.new_id = Some(id.to_hex());
        }
    }
    report.files_restored = done.iter().map(|e| e.files_restored).sum();
    report.snapshots = done;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_ranges_merge_and_remap() {
        let kept: HashSet<(u64, u64)> = [(0, 10), (30, 5), (10, 5), (50, 0)].into_iter().collect();
        let iv = merge(&kept);
        assert_eq!(iv, vec![(0, 15, 0), (30, 35, 15), (50, 50, 20)]);
        assert_eq!(remap(&iv, 10, 5), Some(10));
        assert_eq!(remap(&iv, 30, 5), Some(15));
        assert!(covered(&iv, 0, 15));
        assert!(
            !covered(&iv, 15, 10),
            "the erased range between is not kept"
        );
        assert_eq!(remap(&iv, 20, 3), None);
    }

    #[test]
    fn globs_take_what_is_below_a_match() {
        let m = Matcher::new(&["/srv/secret".into(), "home/*/customer-42.txt".into()]).unwrap();
        assert!(m.matches(b"srv/secret"));
        assert!(m.matches(b"srv/secret/a/b"));
        assert!(!m.matches(b"srv/secrets"));
        assert!(m.matches(b"home/ann/customer-42.txt"));
        assert!(!m.matches(b"home/ann/x/customer-42.txt"), "* stops at /");
        assert!(Matcher::new(&[]).is_err());
        assert!(Matcher::new(&["/".into()]).is_err());
    }
}
