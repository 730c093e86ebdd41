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
//!
//! Steps 1 and 2 gather the facts (they read file and reference lists);
//! [`plan`] then decides, without I/O, which snapshots are rewritten and
//! which a cut-off erase already rewrote ([`ErasePlan`]). A dry run stops
//! there: no lock, nothing written. The executor runs the phases `rewrite`,
//! `commit`, `prune` and `verify`.

use super::prune::{PruneOptions, PruneReport, prune_locked};
use super::rewrite::{BlobWriter, ListWriter};
use super::{Progress, RefsPiece, stop, sync_index, sync_snapshots, walk_refs};
use crate::catalog::{BlobMap, Catalog};
use crate::repo::RepoError;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::IndexedPack;
use crate::repo::lock::WriterLock;
use crate::repo::pack::BlobKind;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Entry, EntryKind, TreeParser};
use crate::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use jiff::Timestamp;
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
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
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

/// Why erase refused or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("erase needs at least one --path GLOB (snapshot paths, without the leading '/')")]
    NoPattern,
    #[error(
        "--path {pattern:?} names no path; give the files to erase, e.g. 'srv/crm/customer-42/**'"
    )]
    EmptyPattern { pattern: String },
    #[error("--path {pattern:?}: {glob}")]
    BadPattern {
        pattern: String,
        glob: globset::Error,
    },
    #[error("{0}")]
    Patterns(globset::Error),
    /// A snapshot's file list can not be read: it can not be erased from.
    #[error(
        "snapshot {}: {error}; erase changed nothing (run `coffer check`, and `coffer forget` a snapshot that cannot be read)",
        .snapshot.short()
    )]
    SnapshotUnreadable {
        snapshot: SnapshotId,
        error: Box<Error>,
    },
    /// The rewrite met an extent of a mixed bundle the scan did not.
    #[error(
        "/{path}: its extent in blob {} was not seen by the scan; nothing was deleted, run erase again",
        .blob.short()
    )]
    ExtentNotScanned { path: String, blob: BlobId },
    #[error(
        "the snapshots were rewritten, but removing the erased data from storage failed: {error}; run the same erase again to finish"
    )]
    PruneFailed { error: Box<Error> },
}

impl Matcher {
    fn new(patterns: &[String]) -> Result<Matcher, EraseError> {
        if patterns.is_empty() {
            return Err(EraseError::NoPattern);
        }
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            let g = p.trim_start_matches('/').trim_end_matches('/');
            if g.is_empty() {
                return Err(EraseError::EmptyPattern { pattern: p.clone() });
            }
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|glob| EraseError::BadPattern {
                    pattern: p.clone(),
                    glob,
                })?;
            b.add(glob);
        }
        Ok(Matcher {
            set: b.build().map_err(EraseError::Patterns)?,
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
    blobs: &BlobMap,
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

/// What the scan of every snapshot's file list found.
#[derive(Default)]
struct Scan {
    /// What each snapshot loses, in the order of the snapshots.
    losses: Vec<Loss>,
    paths: BTreeSet<Vec<u8>>,
    /// Byte ranges of blobs that erased files use.
    erased_ranges: HashMap<BlobId, HashSet<(u64, u64)>>,
    /// Ranges of blobs that kept files use in part (bundles); whole chunks
    /// need no re-store.
    kept_ranges: HashMap<BlobId, HashSet<(u64, u64)>>,
}

impl Scan {
    /// Takes in one entry of snapshot `n`.
    fn entry(
        &mut self,
        n: usize,
        e: Entry,
        m: &Matcher,
        erased_files: &mut HashSet<Vec<u8>>,
        blobs: &BlobMap,
    ) {
        if m.erases(&e, erased_files) {
            let loss = &mut self.losses[n];
            loss.entries += 1;
            match e.kind {
                EntryKind::File => {
                    loss.files += 1;
                    loss.bytes += e.size;
                    for x in &e.content {
                        self.erased_ranges
                            .entry(x.blob)
                            .or_default()
                            .insert((x.offset, x.length));
                    }
                }
                EntryKind::Hardlink => loss.files += 1,
                EntryKind::Dir => loss.dirs += 1,
                _ => {}
            }
            self.paths.insert(e.path);
        } else if e.kind == EntryKind::File {
            for x in &e.content {
                let whole = blobs
                    .get(&x.blob)
                    .is_some_and(|l| x.offset == 0 && x.length == l.entry.raw_length);
                if !whole {
                    self.kept_ranges
                        .entry(x.blob)
                        .or_default()
                        .insert((x.offset, x.length));
                }
            }
        }
    }
}

/// Reads every snapshot's file list: which entries go, and which byte
/// ranges of which blobs the erased and the kept files use.
fn scan(
    repo: &Repository,
    blobs: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    m: &Matcher,
    progress: &dyn Progress,
    mut lock: Option<&mut WriterLock>,
    cancel: &AtomicBool,
) -> Result<Scan> {
    progress.phase("scan", None);
    let mut cache = TreeCache::default();
    let mut found = Scan {
        losses: vec![Loss::default(); snaps.len()],
        ..Default::default()
    };
    for (n, (sid, snap)) in snaps.iter().enumerate() {
        stop(cancel)?;
        if let Some(l) = lock.as_deref_mut() {
            l.refresh_if_due()?;
        }
        let mut erased_files = HashSet::new();
        stream(repo, blobs, &mut cache, sid, snap, |e| {
            found.entry(n, e, m, &mut erased_files, blobs);
            Ok(())
        })
        .map_err(|e| EraseError::SnapshotUnreadable {
            snapshot: *sid,
            error: Box::new(e),
        })?;
        progress.advance(1);
    }
    Ok(found)
}

/// The mixed bundles and where their kept bytes go: blobs with erased
/// bytes that kept files use in part, where the kept ranges do not cover
/// the erased ones.
fn mixed_bundles(
    erased_ranges: &HashMap<BlobId, HashSet<(u64, u64)>>,
    kept_ranges: &HashMap<BlobId, HashSet<(u64, u64)>>,
) -> HashMap<BlobId, Intervals> {
    let mut mixed = HashMap::new();
    for (blob, erased) in erased_ranges {
        let Some(kept) = kept_ranges.get(blob) else {
            continue;
        };
        let iv = merge(kept);
        if !erased.iter().all(|&(o, l)| covered(&iv, o, l)) {
            mixed.insert(*blob, iv);
        }
    }
    mixed
}

/// Which snapshots use a mixed bundle: their reference lists say (cached).
/// An erase must reach every snapshot that holds the files: a list that
/// can not be read is an error.
fn bundle_users(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    mixed: &HashMap<BlobId, Intervals>,
) -> Result<Vec<bool>> {
    let mut users = vec![false; snaps.len()];
    if mixed.is_empty() {
        return Ok(users);
    }
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
        users[n] |= hit;
        Ok(())
    })?;
    if let Some((_, e)) = unreadable.into_iter().next() {
        return Err(e);
    }
    Ok(users)
}

/// What erase does to one snapshot that changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// A new snapshot without the erased entries replaces it.
    Rewrite,
    /// A cut-off erase already wrote its replacement: only the old goes.
    Finished(SnapshotId),
}

/// What erase will write and delete, and why: decided by [`plan`] from
/// what the scan found, without I/O.
struct ErasePlan {
    /// Every snapshot that changes (its place, what it loses, the step),
    /// oldest first.
    changes: Vec<(usize, Loss, Step)>,
    /// The distinct paths erased.
    paths: BTreeSet<Vec<u8>>,
    /// Mixed bundles and where their kept bytes go.
    mixed: HashMap<BlobId, Intervals>,
    /// Every blob an erased file used: its data leaves storage.
    erased_blobs: HashSet<BlobId>,
}

/// Decides what happens to every snapshot: `losses` from the scan, with
/// `bundle` set for the users of a mixed bundle.
fn plan(
    snaps: &[(SnapshotId, Snapshot)],
    scan: Scan,
    mixed: HashMap<BlobId, Intervals>,
) -> ErasePlan {
    let losses = scan.losses;
    // A replacement already written by a cut-off erase: a snapshot that does
    // not change, with the same time, host, profile, paths and the summary
    // the rewrite gives.
    let replacement = |n: usize| -> Option<SnapshotId> {
        let (_, s) = &snaps[n];
        let want = losses[n].summary(&s.summary);
        snaps
            .iter()
            .zip(&losses)
            .find(|((_, o), loss)| {
                !loss.changes()
                    && o.time == s.time
                    && o.host == s.host
                    && o.profile == s.profile
                    && o.paths == s.paths
                    && o.summary == want
            })
            .map(|((id, _), _)| *id)
    };
    let changes = (0..snaps.len().min(losses.len()))
        .filter(|&n| losses[n].changes())
        .map(|n| {
            let step = replacement(n).map_or(Step::Rewrite, Step::Finished);
            (n, losses[n], step)
        })
        .collect();
    ErasePlan {
        changes,
        paths: scan.paths,
        mixed,
        erased_blobs: scan.erased_ranges.into_keys().collect(),
    }
}

/// The index and snapshots, read; what erase works on.
struct Gathered {
    blobs: BlobMap,
    snaps: Vec<(SnapshotId, Snapshot)>,
}

/// Reads the index, the snapshots and their file lists, and plans.
fn gather_and_plan(
    repo: &Repository,
    catalog: &mut Catalog,
    m: &Matcher,
    progress: &dyn Progress,
    lock: Option<&mut WriterLock>,
    cancel: &AtomicBool,
) -> Result<(Gathered, ErasePlan)> {
    let blobs = sync_index(repo, catalog)?.blobs;
    let (snaps, _) = sync_snapshots(repo, catalog)?;
    let mut found = scan(repo, &blobs, &snaps, m, progress, lock, cancel)?;
    let mixed = mixed_bundles(&found.erased_ranges, &found.kept_ranges);
    let users = bundle_users(repo, catalog, &blobs, &snaps, &mixed)?;
    for (loss, uses) in found.losses.iter_mut().zip(users) {
        loss.bundle |= uses;
    }
    let plan = plan(&snaps, found, mixed);
    Ok((Gathered { blobs, snaps }, plan))
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
                let offset =
                    remap(iv, x.offset, x.length).ok_or_else(|| EraseError::ExtentNotScanned {
                        path: String::from_utf8_lossy(path).into_owned(),
                        blob: x.blob,
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
/// A dry run plans only: no lock, nothing written. `cancel` stops it at a
/// safe point with [`Error::Interrupted`] (the lock released, no spool file
/// left): running it again finishes the job.
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
        let (got, plan) = gather_and_plan(repo, catalog, &m, progress, None, cancel)?;
        fill_plan(&mut report, &plan, &got.snaps);
        return Ok(report);
    }
    // One lock across the rewrite and the prune: a backup in between could
    // re-use a mixed bundle through its file cache and keep erased bytes alive.
    let mut lock = WriterLock::of(repo, opts.lock_wait)?;
    let done = erase_locked(repo, catalog, &m, &mut report, progress, &mut lock, cancel);
    let plan = lock.release_after(done)?;
    report.still_stored = still_stored(repo, catalog, &plan)?;
    Ok(report)
}

/// Plans, then runs the phases `rewrite`, `commit` and `prune` under `lock`.
fn erase_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    m: &Matcher,
    report: &mut EraseReport,
    progress: &dyn Progress,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<ErasePlan> {
    let (got, plan) = gather_and_plan(repo, catalog, m, progress, Some(&mut *lock), cancel)?;
    fill_plan(report, &plan, &got.snaps);
    if !plan.changes.is_empty() {
        let rewritten = rewrite_snapshots(repo, &got, &plan, m, progress, lock, cancel)?;
        // The last safe point before the commit: the new packs are orphans then.
        stop(cancel)?;
        commit(repo, catalog, &got.snaps, &plan, rewritten, report, lock)?;
    }
    // The erased data leaves storage: nothing unreferenced may stay behind.
    progress.phase("prune", None);
    let opts = PruneOptions {
        grace: jiff::SignedDuration::ZERO,
        max_unused: 0,
        repack_older_than: None,
        dry_run: false,
        lock_wait: std::time::Duration::ZERO,
    };
    let pruned = prune_locked(repo, catalog, &opts, lock, cancel).map_err(|e| match e {
        Error::Interrupted => e,
        e => EraseError::PruneFailed { error: Box::new(e) }.into(),
    })?;
    report.bytes_freed = pruned.bytes_freed;
    report.prune = Some(pruned);
    Ok(plan)
}

/// The `verify` phase: what prune could not remove, erased blobs still
/// stored and unused, or mixed bundles still in use (packs a storage clock
/// ahead of ours made look new; no backup can run in between, the lock
/// was held throughout).
fn still_stored(repo: &Repository, catalog: &mut Catalog, plan: &ErasePlan) -> Result<usize> {
    let blobs = sync_index(repo, catalog)?.blobs;
    let (snaps, _) = sync_snapshots(repo, catalog)?;
    let mut live: HashSet<BlobId> = HashSet::new();
    // A list that can not be read only makes this count smaller.
    let _unreadable = walk_refs(repo, catalog, &blobs, &snaps, |_, _, ids| {
        live.extend(ids.into_iter().flatten().copied());
        Ok(())
    })?;
    Ok(plan
        .erased_blobs
        .iter()
        .chain(plan.mixed.keys())
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|b| blobs.contains_key(b) && (!live.contains(b) || plan.mixed.contains_key(b)))
        .count())
}

/// The report's account of the plan (every changing snapshot `planned`).
fn fill_plan(report: &mut EraseReport, plan: &ErasePlan, snaps: &[(SnapshotId, Snapshot)]) {
    report.paths = plan
        .paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    report.bundles_restored = plan.mixed.len();
    for (n, loss, _) in &plan.changes {
        let (sid, snap) = &snaps[*n];
        report.entries_removed += loss.entries;
        report.snapshots.push(erasure(sid, snap, loss, "planned"));
    }
}

/// What the `rewrite` phase wrote.
struct Rewritten {
    /// The new snapshots, by the place of the one each replaces.
    new_snaps: Vec<(usize, Snapshot)>,
    /// One account per changing snapshot, in the plan's order.
    done: Vec<SnapshotErasure>,
    written: Vec<IndexedPack>,
    blobs_written: usize,
}

/// The `rewrite` phase: the new file lists, tree indexes and reference
/// lists of the snapshots the plan rewrites, sealed into new packs.
fn rewrite_snapshots(
    repo: &Repository,
    got: &Gathered,
    plan: &ErasePlan,
    m: &Matcher,
    progress: &dyn Progress,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<Rewritten> {
    progress.phase("rewrite", None);
    let mut w = Writer {
        blobs: BlobWriter::new(repo, &got.blobs, super::packer::ReadBack::of(lock)),
        restored: HashMap::new(),
    };
    let mut cache = TreeCache::default();
    let mut new_snaps: Vec<(usize, Snapshot)> = Vec::new();
    let mut done: Vec<SnapshotErasure> = Vec::new();
    for (n, loss, step) in &plan.changes {
        stop(cancel)?;
        lock.refresh_if_due()?;
        let (sid, snap) = &got.snaps[*n];
        match step {
            Step::Finished(existing) => {
                let mut e = erasure(sid, snap, loss, "finished");
                e.new_id = Some(existing.to_hex());
                done.push(e);
            }
            Step::Rewrite => {
                let (new, moved) = rewrite(&mut w, &mut cache, sid, snap, loss, m, &plan.mixed)?;
                let mut e = erasure(sid, snap, loss, "rewritten");
                e.files_restored = moved;
                done.push(e);
                new_snaps.push((*n, new));
            }
        }
        progress.advance(1);
    }
    let blobs_written = w.blobs.blobs_written;
    Ok(Rewritten {
        new_snaps,
        done,
        written: w.blobs.finish()?,
        blobs_written,
    })
}

/// The `commit` phase: the index of the new packs, the new snapshots, then
/// the old ones go (an old snapshot only once its replacement is stored,
/// never when the replacement is the very same object).
fn commit(
    repo: &Repository,
    catalog: &mut Catalog,
    snaps: &[(SnapshotId, Snapshot)],
    plan: &ErasePlan,
    rewritten: Rewritten,
    report: &mut EraseReport,
    lock: &mut WriterLock,
) -> Result<()> {
    let Rewritten {
        new_snaps,
        mut done,
        written,
        blobs_written,
    } = rewritten;
    report.packs_written = written.len();
    for (id, index) in repo.write_indexes(written)? {
        catalog.add_index(&id, &index)?;
    }
    report.blobs_written = blobs_written;
    lock.refresh_if_due()?;
    let mut new_ids = HashMap::new();
    for (n, snap) in &new_snaps {
        let id = repo.write_snapshot(snap)?;
        catalog.put_snapshot(&id, snap)?;
        new_ids.insert(*n, id);
    }
    let kept: HashSet<SnapshotId> = new_ids.values().copied().collect();
    let old: Vec<SnapshotId> = plan
        .changes
        .iter()
        .map(|(n, _, _)| snaps[*n].0)
        .filter(|id| !kept.contains(id))
        .collect();
    lock.confirm()?;
    repo.store
        .delete_many(&old.iter().map(|id| id.key()).collect::<Vec<_>>())?;
    for id in &old {
        catalog.remove_snapshot(id)?;
    }
    for (e, (n, _, _)) in done.iter_mut().zip(&plan.changes) {
        if let Some(id) = new_ids.get(n) {
            e.new_id = Some(id.to_hex());
        }
    }
    report.files_restored = done.iter().map(|e| e.files_restored).sum();
    report.snapshots = done;
    Ok(())
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

    fn snap(id: u8, files: u64, bytes: u64) -> (SnapshotId, Snapshot) {
        (
            SnapshotId([id; 32]),
            Snapshot {
                paths: vec!["/srv".into()],
                summary: Summary {
                    files,
                    bytes,
                    ..Summary::default()
                },
                ..Snapshot::bare("2026-11-20T12:00:00Z".parse().unwrap(), "h")
            },
        )
    }

    fn loss(entries: u64, files: u64, bytes: u64, bundle: bool) -> Loss {
        Loss {
            entries,
            files,
            dirs: 0,
            bytes,
            bundle,
        }
    }

    #[test]
    fn the_plan_rewrites_what_changes_and_finishes_what_a_cut_off_erase_wrote() {
        // 1 loses a file; 2 is 1 as a cut-off erase rewrote it; 3 loses a
        // file with no replacement; 4 only uses a mixed bundle; 5 is untouched.
        let snaps = vec![
            snap(1, 10, 1000),
            snap(2, 9, 900),
            snap(3, 10, 1000),
            snap(4, 7, 700),
            snap(5, 10, 1000),
        ];
        let mut snaps = snaps;
        snaps[2].1.host = "other".into();
        let scan = Scan {
            losses: vec![
                loss(1, 1, 100, false),
                Loss::default(),
                loss(2, 1, 100, false),
                loss(0, 0, 0, true),
                Loss::default(),
            ],
            paths: [b"srv/a".to_vec()].into_iter().collect(),
            erased_ranges: [(BlobId([9; 32]), [(0, 100)].into_iter().collect())]
                .into_iter()
                .collect(),
            kept_ranges: HashMap::new(),
        };
        let p = plan(&snaps, scan, HashMap::new());
        let steps: Vec<(usize, Step)> = p.changes.iter().map(|(n, _, s)| (*n, *s)).collect();
        assert_eq!(
            steps,
            vec![
                (0, Step::Finished(SnapshotId([2; 32]))),
                (2, Step::Rewrite),
                (3, Step::Rewrite),
            ]
        );
        assert_eq!(p.erased_blobs, [BlobId([9; 32])].into_iter().collect());
        let mut report = EraseReport::default();
        fill_plan(&mut report, &p, &snaps);
        assert_eq!(report.snapshots.len(), 3);
        assert_eq!(report.entries_removed, 3);
        assert!(report.snapshots.iter().all(|s| s.action == "planned"));
        assert_eq!(report.paths, ["srv/a"]);
    }

    #[test]
    fn a_bundle_is_mixed_only_where_kept_ranges_leave_erased_bytes_out() {
        let b = |n: u8| BlobId([n; 32]);
        let set = |r: &[(u64, u64)]| r.iter().copied().collect::<HashSet<_>>();
        let erased = HashMap::from([
            (b(1), set(&[(10, 10)])),
            (b(2), set(&[(0, 10)])),
            (b(3), set(&[(0, 10)])),
        ]);
        let kept = HashMap::from([
            // 1: kept files use 0..10 and 20..30, the erased 10..20 is not kept.
            (b(1), set(&[(0, 10), (20, 10)])),
            // 2: a kept file (dedup) uses the very bytes erased: nothing to re-store.
            (b(2), set(&[(0, 10)])),
        ]);
        let mixed = mixed_bundles(&erased, &kept);
        assert_eq!(mixed.len(), 1, "3 is used by erased files only");
        assert_eq!(mixed[&b(1)], vec![(0, 10, 0), (20, 30, 10)]);
    }
}
