//! Use cases: the only layer that combines the repository format, storage and
//! the catalog. Front ends (CLI, agent) call these and render the results.

pub mod backup;
pub mod check;
pub mod copy;
pub mod erase;
pub mod export;
pub mod forget;
pub mod history;
mod packer;
pub mod prune;
pub mod rebuild;
pub mod restore;
mod walk;

use crate::Result;
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::snapshot::Snapshot;
use crate::repo::store::Read;
use std::collections::{HashMap, HashSet};

/// Progress reports from the engines; the CLI draws bars, tests ignore them.
pub trait Progress: Sync {
    /// A new phase; `total` in the phase's unit if known.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// Units done in the current phase (bytes, or objects).
    fn advance(&self, _n: u64) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Takes one work item; the lock is released before the caller works on it.
fn pop<T>(work: &std::sync::Mutex<Vec<T>>) -> Option<T> {
    work.lock().ok()?.pop()
}

/// Runs `f` on every item with up to `threads` threads; results in item order.
pub(crate) fn par_map<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    let work = std::sync::Mutex::new(items.into_iter().enumerate().rev().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| {
                while let Some((i, item)) = pop(&work) {
                    let r = f(item);
                    if let Ok(mut d) = done.lock() {
                        d.push((i, r));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// What the repository holds, read into the catalog: every blob and where it
/// is, every snapshot (oldest first), and every pack in storage.
pub struct Synced {
    pub blobs: HashMap<BlobId, BlobLocation>,
    pub snaps: Vec<(SnapshotId, Snapshot)>,
    pub packs: HashSet<PackId>,
}

/// Brings the catalog's index and snapshot list up to date and lists the
/// packs, all three listings and the new objects fetched at once: with a cold
/// catalog (a new machine) they would otherwise wait on one another.
pub fn sync(repo: &Repository, catalog: &mut Catalog) -> Result<Synced> {
    let known_indexes = catalog.known_indexes()?;
    let known_snaps = catalog.snapshot_ids()?;
    let (indexes, snaps, packs) = std::thread::scope(|s| {
        let indexes = s.spawn(|| fetch_indexes(repo, &known_indexes));
        let packs = s.spawn(|| repo.list_packs());
        let snaps = fetch_snapshots(repo, &known_snaps);
        // A panic there is a bug, not bad input: it goes on as one.
        fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
        (join(indexes), snaps, join(packs))
    });
    Ok(Synced {
        blobs: apply_indexes(catalog, &known_indexes, indexes?)?,
        snaps: apply_snapshots(catalog, &known_snaps, snaps?)?,
        packs: packs?.into_iter().map(|(p, _)| p).collect(),
    })
}

/// Brings the catalog's copy of the index up to date with the repository:
/// reads index objects it has not seen, forgets ones that are gone.
pub fn sync_index(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<HashMap<BlobId, BlobLocation>> {
    let known = catalog.known_indexes()?;
    let fetched = fetch_indexes(repo, &known)?;
    apply_indexes(catalog, &known, fetched)
}

/// Brings the catalog's snapshot list up to date; returns all, oldest first.
pub fn sync_snapshots(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let known = catalog.snapshot_ids()?;
    let fetched = fetch_snapshots(repo, &known)?;
    apply_snapshots(catalog, &known, fetched)
}

/// The ids of objects of one kind in the repository, and those of them the
/// catalog lacks, read.
struct Fetched<I, T> {
    in_repo: HashSet<I>,
    new: Vec<(I, T)>,
}

/// Lists the index objects and reads the new ones, several at once: opening
/// one (decrypt, decompress, parse) costs CPU, so they open in parallel too.
fn fetch_indexes(
    repo: &Repository,
    known: &HashSet<IndexId>,
) -> Result<Fetched<IndexId, IndexFile>> {
    let in_repo: HashSet<_> = repo.list_indexes()?.into_iter().collect();
    let new: Vec<IndexId> = in_repo.difference(known).copied().collect();
    let threads = repo.store.read_concurrency();
    let read = par_map(new, threads, |id| repo.read_index(&id).map(|ix| (id, ix)));
    Ok(Fetched {
        in_repo,
        new: read.into_iter().collect::<Result<_, _>>()?,
    })
}

fn fetch_snapshots(
    repo: &Repository,
    known: &HashSet<SnapshotId>,
) -> Result<Fetched<SnapshotId, Snapshot>> {
    let in_repo: HashSet<_> = repo.list_snapshot_ids()?.into_iter().collect();
    let new: Vec<SnapshotId> = in_repo.difference(known).copied().collect();
    let read = new.iter().copied().zip(repo.read_snapshots(&new));
    Ok(Fetched {
        new: read
            .map(|(id, s)| s.map(|s| (id, s)))
            .collect::<Result<_, _>>()?,
        in_repo,
    })
}

/// Records the fetched index objects in the catalog; returns the whole blob
/// map. The new objects' blobs are laid over what the catalog had in the
/// order the catalog records them (a later one wins), so the map is not read
/// back from SQLite.
fn apply_indexes(
    catalog: &mut Catalog,
    known: &HashSet<IndexId>,
    fetched: Fetched<IndexId, IndexFile>,
) -> Result<HashMap<BlobId, BlobLocation>> {
    for gone in known.difference(&fetched.in_repo) {
        catalog.remove_index(gone)?;
    }
    let mut blobs = catalog.blobs()?;
    for (id, index) in &fetched.new {
        catalog.add_index(id, index)?;
        BlobLocation::lay_over(&mut blobs, index);
    }
    Ok(blobs)
}

fn apply_snapshots(
    catalog: &mut Catalog,
    known: &HashSet<SnapshotId>,
    fetched: Fetched<SnapshotId, Snapshot>,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    for gone in known.difference(&fetched.in_repo) {
        catalog.remove_snapshot(gone)?;
    }
    for (id, snap) in &fetched.new {
        catalog.put_snapshot(id, snap)?;
    }
    Ok(catalog.snapshots()?)
}

/// Finds packs that no index lists (a backup cut off after uploading them)
/// and writes an index for them from their trailers, so their blobs are
/// reused. Returns that index (no packs if none were adopted), which the
/// catalog has recorded too. Needs the writer lock.
pub fn adopt_orphan_packs(repo: &Repository, catalog: &mut Catalog) -> Result<IndexFile> {
    let indexed = catalog.packs()?;
    let orphans: Vec<(PackId, u64)> = repo
        .list_packs()?
        .into_iter()
        .filter(|(pack, _)| !indexed.contains_key(pack))
        .collect();
    // Two ranged reads a trailer: several packs at once. A pack whose
    // trailer cannot be read is left for `check` to report.
    let threads = repo.store.read_concurrency();
    let read = par_map(orphans, threads, |(id, size)| {
        let blobs = repo.read_pack_trailer(&id, size).ok()?;
        Some(IndexedPack { id, size, blobs })
    });
    let packs: Vec<IndexedPack> = read.into_iter().flatten().collect();
    for (id, index) in repo.write_indexes(packs.clone())? {
        catalog.add_index(&id, &index)?;
    }
    Ok(IndexFile { packs })
}

/// Reads the blobs of a stream (tree or refs) in order, handing each to `f`.
pub fn read_stream(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    ids: &[BlobId],
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    for data in read_blobs(repo, blobs, ids) {
        f(&data?)?;
    }
    Ok(())
}

/// Reads and opens blobs in the order of `ids`, several requests in flight.
/// A blob missing from the index ends the stream with an error at its place.
pub fn read_blobs<'a>(
    repo: &'a Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    ids: &[BlobId],
) -> impl Iterator<Item = Result<Vec<u8>>> + 'a {
    let locs: Vec<BlobLocation> = ids.iter().map_while(|id| blobs.get(id).copied()).collect();
    let missing = ids.get(locs.len()).map(|id| {
        Err(crate::repo::RepoError::Corrupt {
            object: format!("blob {}", id.short()),
            reason: "missing from the index".into(),
        }
        .into())
    });
    let reads = locs
        .iter()
        .map(|l| Read::Range {
            key: l.pack.key(),
            offset: l.entry.offset,
            length: l.entry.length,
        })
        .collect();
    repo.store
        .read_ahead(reads, repo.store.read_concurrency())
        .zip(locs)
        .map(|(sealed, loc)| {
            Ok(crate::repo::pack::open_blob(
                &repo.keys, &loc.entry, &loc.pack, &sealed?,
            )?)
        })
        .chain(missing)
}

/// The entries of a snapshot's file list, streamed blob by blob.
pub fn for_each_entry(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    mut f: impl FnMut(crate::repo::tree::Entry) -> Result<()>,
) -> Result<()> {
    let mut parser = crate::repo::tree::TreeParser::default();
    let what = "snapshot file list";
    read_stream(repo, blobs, &snap.tree, |data| {
        for e in parser.feed(data, what)? {
            f(e)?;
        }
        Ok(())
    })?;
    parser.finish(what)?;
    Ok(())
}

/// The entries at or below `prefix` (a snapshot path, no leading `/`), in
/// order. With a tree index (format 2) only the index and the tree blobs that
/// hold them are read: finding one file costs a few small reads, not the
/// whole file list. Without one, the whole list is read.
pub fn for_each_entry_under(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    prefix: &[u8],
    mut f: impl FnMut(crate::repo::tree::Entry) -> Result<()>,
) -> Result<()> {
    use crate::repo::tree::{TreeParser, parse_index, walk_order};
    let under =
        |p: &[u8]| p == prefix || (p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/'));
    let Some(ix_id) = snap.usable_tree_index() else {
        return for_each_entry(repo, blobs, snap, |e| {
            if under(&e.path) { f(e) } else { Ok(()) }
        });
    };
    let what = "snapshot file list";
    let corrupt = |reason: String| crate::repo::RepoError::Corrupt {
        object: format!("{what} index"),
        reason,
    };
    let mut index_data = None;
    read_stream(repo, blobs, &[ix_id], |d| {
        index_data = Some(d.to_vec());
        Ok(())
    })?;
    let index = parse_index(&index_data.unwrap_or_default()).map_err(corrupt)?;
    let start = index
        .iter()
        .rev()
        .find(|l| walk_order(&l.path, prefix).is_le());
    let (first, offset) = start
        .map(|l| (l.blob as usize, l.offset as usize))
        .unwrap_or((0, 0));
    // The index is untrusted too: the entry it points at must be there and
    // be the one it names, or entries would silently go missing.
    if start.is_some() && first >= snap.tree.len() {
        let e = corrupt("it names a file list blob the snapshot does not have".into());
        return Err(e.into());
    }
    let mut expect = start.map(|l| l.path.as_slice());
    let mut parser = TreeParser::default();
    let mut done = false;
    for (k, id) in snap.tree.iter().enumerate().skip(first) {
        let mut result = Ok(());
        read_stream(repo, blobs, std::slice::from_ref(id), |data| {
            let data = if k == first {
                data.get(offset..)
                    .ok_or_else(|| corrupt("an offset points past its blob".into()))?
            } else {
                data
            };
            for e in parser.feed(data, what)? {
                if expect.take().is_some_and(|p| p != e.path) {
                    return Err(corrupt("it does not match the file list".into()).into());
                }
                if under(&e.path) {
                    result = f(e);
                    if result.is_err() {
                        done = true;
                        break;
                    }
                } else if walk_order(&e.path, prefix).is_gt() {
                    done = true;
                    break;
                }
            }
            Ok(())
        })?;
        result?;
        if done {
            return Ok(());
        }
    }
    parser.finish(what)?;
    Ok(())
}

/// One ranged read planned by [`coalesce`]: the items it covers and the
/// byte range of the pack it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub items: std::ops::Range<usize>,
    pub offset: u64,
    pub length: u64,
}

impl Run {
    /// The read of this run from the object `key`.
    pub fn read(&self, key: String) -> Read {
        Read::Range {
            key,
            offset: self.offset,
            length: self.length,
        }
    }
}

/// Groups the blobs of one pack, sorted by offset, into ranged reads:
/// neighbours at most `gap` bytes apart share a read of at most `max` bytes
/// (one blob alone may be longer). `span` gives an item's offset and length.
/// Restore and prune's repack both read through it.
pub fn coalesce<T>(items: &[T], span: impl Fn(&T) -> (u64, u64), gap: u64, max: u64) -> Vec<Run> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some((start, length)) = items.get(i).map(&span) {
        // Saturating: numbers from an index are bounded when it is read, but
        // a catalog filled by an older coffer was not.
        let mut end = start.saturating_add(length);
        let mut j = i + 1;
        while let Some((offset, length)) = items.get(j).map(&span)
            && offset <= end.saturating_add(gap)
            && offset.saturating_add(length) - start <= max
        {
            end = end.max(offset.saturating_add(length));
            j += 1;
        }
        out.push(Run {
            items: i..j,
            offset: start,
            length: end - start,
        });
        i = j;
    }
    out
}

/// The blob ids a snapshot references (its refs stream).
pub fn snapshot_refs(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
) -> Result<Vec<BlobId>> {
    let mut parts = Vec::with_capacity(snap.refs.len());
    for data in read_blobs(repo, blobs, &snap.refs) {
        parts.push(data?);
    }
    decode_refs(parts.iter().map(Vec::as_slice))
}

/// The ids of a reference list from its blobs' plaintext, in order.
pub fn decode_refs<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<BlobId>> {
    let mut out = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    for data in parts {
        rest.extend_from_slice(data);
        let whole = rest.len() / 32 * 32;
        out.extend(
            rest[..whole]
                .chunks_exact(32)
                .map(|c| BlobId(c.try_into().unwrap_or([0; 32]))),
        );
        rest.drain(..whole);
    }
    if !rest.is_empty() {
        return Err(crate::repo::RepoError::Corrupt {
            object: "snapshot reference list".into(),
            reason: "length is not a multiple of 32".into(),
        }
        .into());
    }
    Ok(out)
}

/// A piece of a snapshot's reference list: the whole ids inside one refs
/// blob at one alignment, or the one id that straddles two neighbours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefsPiece {
    Inner(BlobId, u64),
    Straddle(BlobId, BlobId, u64),
}

fn corrupt_refs(sid: &SnapshotId, reason: &str) -> crate::Error {
    crate::repo::RepoError::Corrupt {
        object: format!("snapshot {}", sid.short()),
        reason: reason.into(),
    }
    .into()
}

/// Walks the reference lists of `snaps`, calling `f(snapshot index, piece,
/// ids)` for every piece; `ids` is `Some` the first time a piece is met and
/// `None` after (callers memoise per piece).
///
/// A reference list is a byte stream of 32-byte ids cut into blobs at
/// content-defined points, so an id may straddle two blobs. Consecutive
/// snapshots share most blobs at the same alignment, so each (blob, alignment)
/// is decoded once and each straddling pair once: the work grows with the
/// distinct lists, not with snapshots × blobs. Decoded blobs are cached in the
/// catalog (they never change), so only new snapshots' lists are downloaded.
pub fn walk_refs(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &HashMap<BlobId, BlobLocation>,
    snaps: &[(SnapshotId, Snapshot)],
    mut f: impl FnMut(usize, RefsPiece, Option<&[BlobId]>) -> Result<()>,
) -> Result<()> {
    // Blobs of the lists that the catalog does not hold yet are fetched
    // together, several in flight, not one request after another. One that
    // cannot be read is left to the walk below, which reports it.
    let cached = catalog.refs_blob_ids()?;
    let fetch: Vec<BlobId> = snaps
        .iter()
        .flat_map(|(_, s)| s.refs.iter())
        .filter(|id| !cached.contains(id) && blobs.contains_key(id))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for (id, data) in fetch.iter().zip(read_blobs(repo, blobs, &fetch)) {
        if let Ok(data) = data {
            catalog.put_refs_blob(id, &data)?;
        }
    }
    let mut seen: HashSet<RefsPiece> = HashSet::new();
    let mut loaded: HashMap<BlobId, std::sync::Arc<Vec<u8>>> = HashMap::new();
    let mut load = |id: &BlobId, sid: &SnapshotId| -> Result<std::sync::Arc<Vec<u8>>> {
        if let Some(d) = loaded.get(id) {
            return Ok(d.clone());
        }
        let data = match catalog.refs_blob(id)? {
            Some(d) => d,
            None => {
                let loc = blobs.get(id).ok_or_else(|| {
                    corrupt_refs(
                        sid,
                        "a blob of its reference list is missing from the index; run `coffer check`",
                    )
                })?;
                let d = repo.read_blob(&loc.pack, &loc.entry)?;
                catalog.put_refs_blob(id, &d)?;
                d
            }
        };
        // Only the blobs of the snapshot at hand and its neighbour are needed
        // again (and a hostile list's blobs can be 16 MiB each: bounded in bytes too).
        if loaded.len() > 64 || loaded.values().map(|d| d.len()).sum::<usize>() > 64 << 20 {
            loaded.clear();
        }
        let data = std::sync::Arc::new(data);
        loaded.insert(*id, data.clone());
        Ok(data)
    };
    let to_ids = |bytes: &[u8]| -> Vec<BlobId> {
        bytes
            .chunks_exact(32)
            .map(|c| BlobId(c.try_into().unwrap_or([0; 32])))
            .collect()
    };
    for (n, (sid, s)) in snaps.iter().enumerate() {
        let lengths = s
            .refs
            .iter()
            .map(|id| {
                blobs.get(id).map(|l| l.entry.raw_length).ok_or_else(|| {
                    corrupt_refs(
                        sid,
                        "a blob of its reference list is missing from the index; run `coffer check`",
                    )
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        let mut offset = 0u64;
        for (i, id) in s.refs.iter().enumerate() {
            let len = lengths[i];
            let align = offset % 32;
            let piece = RefsPiece::Inner(*id, align);
            if seen.insert(piece) {
                let data = load(id, sid)?;
                if data.len() as u64 != len {
                    return Err(corrupt_refs(
                        sid,
                        "a reference blob's length differs from the index",
                    ));
                }
                let head = ((32 - align) % 32) as usize;
                f(n, piece, Some(&to_ids(&data[head.min(data.len())..])))?;
            } else {
                f(n, piece, None)?;
            }
            let end_align = (offset + len) % 32;
            if end_align != 0
                && let Some(next) = s.refs.get(i + 1)
            {
                let piece = RefsPiece::Straddle(*id, *next, end_align);
                if seen.insert(piece) {
                    let (a, b) = (load(id, sid)?, load(next, sid)?);
                    let (tail, need) = (end_align as usize, 32 - end_align as usize);
                    if a.len() < tail || b.len() < need {
                        return Err(corrupt_refs(sid, "its reference list is cut short"));
                    }
                    let mut joined = a[a.len() - tail..].to_vec();
                    joined.extend_from_slice(&b[..need]);
                    f(n, piece, Some(&to_ids(&joined)))?;
                } else {
                    f(n, piece, None)?;
                }
            }
            offset += len;
        }
        if !offset.is_multiple_of(32) {
            return Err(corrupt_refs(
                sid,
                "its reference list is not a whole number of ids",
            ));
        }
    }
    Ok(())
}

/// How whole a snapshot is, as far as can be told without reading data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Everything it references is indexed and its packs exist.
    Complete,
    /// Complete, and `check --read-data` verified every blob since.
    Verified,
    /// Some blob it needs is missing (from the index or from storage).
    Damaged,
}

/// The state of each snapshot (same order as `snaps`), given the packs in
/// storage ([`Synced::packs`]); reference lists come from the catalog's cache.
pub fn snapshot_states(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &HashMap<BlobId, BlobLocation>,
    packs: &HashSet<PackId>,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<Vec<SnapshotState>> {
    let present = |id: &BlobId| blobs.get(id).is_some_and(|l| packs.contains(&l.pack));
    let verified = catalog.verified_snapshots()?;
    let mut whole: Vec<bool> = snaps
        .iter()
        .map(|(_, s)| s.tree.iter().chain(&s.refs).all(present))
        .collect();
    let mut memo: HashMap<RefsPiece, bool> = HashMap::new();
    let walked = walk_refs(repo, catalog, blobs, snaps, |n, piece, ids| {
        let ok = match ids {
            Some(ids) => {
                let ok = ids.iter().all(present);
                memo.insert(piece, ok);
                ok
            }
            None => memo.get(&piece).copied().unwrap_or(false),
        };
        whole[n] &= ok;
        Ok(())
    });
    // A reference list that cannot be read is itself damage, not an error here.
    if walked.is_err() {
        for (n, (_, s)) in snaps.iter().enumerate() {
            whole[n] &= s.refs.iter().all(present);
        }
    }
    Ok(snaps
        .iter()
        .zip(whole)
        .map(|((id, _), ok)| match (ok, verified.contains(id)) {
            (false, _) => SnapshotState::Damaged,
            (true, true) => SnapshotState::Verified,
            (true, false) => SnapshotState::Complete,
        })
        .collect())
}

/// The place in `snaps` (oldest first) of the newest snapshot that is not
/// damaged; `None` if every one is. Checks newest first and stops at the
/// first whole one, so choosing `latest` reads one snapshot's reference
/// list, not all of them.
pub fn newest_whole(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &HashMap<BlobId, BlobLocation>,
    packs: &HashSet<PackId>,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<Option<usize>> {
    for i in (0..snaps.len()).rev() {
        let state = snapshot_states(repo, catalog, blobs, packs, &snaps[i..=i])?;
        if state.first() != Some(&SnapshotState::Damaged) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// Who runs this process, as `user@host`, for audit events.
pub fn audit_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid{}", unsafe { libc::getuid() })
        });
    format!("{user}@{}", crate::repo::lock::hostname())
}

/// Records an operator action (restore, export, erase, key-export, ...) in
/// the repository (an `audit/` object, sealed to the operator) and in the
/// local catalog. Both are attempted; the first failure is returned, and the
/// caller warns and carries on: recording must never fail the action itself.
pub fn record_audit(
    repo: &Repository,
    catalog: &Catalog,
    action: &str,
    detail: &str,
) -> Result<()> {
    let event = crate::repo::audit::AuditEvent {
        time: chrono::Utc::now(),
        actor: audit_actor(),
        action: action.to_string(),
        detail: detail.to_string(),
    };
    let in_repo = repo.write_audit(&event);
    let in_catalog = catalog.audit(&event.actor, &event.action, &event.detail);
    in_repo?;
    in_catalog?;
    Ok(())
}

/// Where an audit event was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSource {
    Repository,
    Catalog,
}

/// One audit event, from the repository or only from the local catalog.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub source: AuditSource,
}

/// The audit log: repository events merged with the catalog's rows, oldest first.
#[derive(Debug, Default)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
    /// Audit objects that could not be read or verified (named, with the reason).
    pub problems: Vec<String>,
}

/// A catalog row and a repository event are one action when they agree on
/// actor, action and detail and lie this close in time (the catalog stamps
/// its row a moment after the event).
const AUDIT_SAME_EVENT: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Reads every audit event of the repository (operator only) and merges the
/// local catalog's rows in: a row that records the same action as an event is
/// shown once, as the repository's. `since` drops older events; objects
/// storage wrote before it are not even read.
pub fn audit_log(
    repo: &Repository,
    catalog: Option<&Catalog>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<AuditLog> {
    let objects: Vec<_> = repo
        .list_audit()?
        .into_iter()
        // Storage writes an object after its event's time (allow for skewed clocks).
        .filter(|o| match (since, o.modified) {
            (Some(s), Some(m)) => m >= s - chrono::TimeDelta::hours(1),
            _ => true,
        })
        .collect();
    let found = par_map(objects, 4, |o| {
        repo.read_audit(&o).map_err(|e| format!("{}: {e}", o.key))
    });
    let mut log = AuditLog::default();
    for r in found {
        match r {
            Ok(ev) => log.entries.push(AuditEntry {
                time: ev.time,
                actor: ev.actor,
                action: ev.action,
                detail: ev.detail,
                source: AuditSource::Repository,
            }),
            Err(p) => log.problems.push(p),
        }
    }
    log.problems.sort();
    if let Some(catalog) = catalog {
        let mut matched = vec![false; log.entries.len()];
        let mut extra = Vec::new();
        for row in catalog.audit_rows()? {
            let twin = log
                .entries
                .iter()
                .enumerate()
                .filter(|(i, e)| {
                    !matched[*i]
                        && e.actor == row.actor
                        && e.action == row.action
                        && e.detail == row.detail
                        && (e.time - row.time).abs() <= AUDIT_SAME_EVENT
                })
                .min_by_key(|(_, e)| (e.time - row.time).abs())
                .map(|(i, _)| i);
            match twin {
                Some(i) => matched[i] = true,
                None => extra.push(AuditEntry {
                    time: row.time,
                    actor: row.actor,
                    action: row.action,
                    detail: row.detail,
                    source: AuditSource::Catalog,
                }),
            }
        }
        log.entries.extend(extra);
    }
    log.entries.retain(|e| since.is_none_or(|s| e.time >= s));
    log.entries
        .sort_by(|a, b| (a.time, &a.action, &a.detail).cmp(&(b.time, &b.action, &b.detail)));
    Ok(log)
}
