//! Use cases: the only layer that combines the repository format, storage and
//! the catalog. Front ends (CLI, agent) call these and render the results.

pub mod backup;
pub mod check;
pub mod copy;
pub mod erase;
pub mod export;
pub mod forget;
pub mod health;
pub mod history;
mod packer;
pub mod prune;
pub mod rebuild;
pub mod repair;
pub mod restore;
mod rewrite;
mod walk;

use crate::Result;
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::Repository;
use crate::repo::damage::{DamageObject, DamageRecord};
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::snapshot::Snapshot;
use crate::repo::store::Read;
use health::Health;
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
    /// The packs in storage and what is known bad (see [`health`]).
    pub health: Health,
    /// When storage wrote each index object (for [`Health::suspects`]).
    pub index_times: HashMap<IndexId, chrono::DateTime<chrono::Utc>>,
    /// Objects that could not be read, decrypted or parsed: (key, why).
    /// They are skipped: one bad object never blocks the rest.
    pub bad_objects: Vec<BadObject>,
}

impl Synced {
    /// The objects skipped, in words, for the operator.
    pub fn warnings(&self) -> Vec<String> {
        self.bad_objects
            .iter()
            .map(|(key, why)| format!("{key}: {why}; skipped"))
            .collect()
    }
}

/// An object that could not be read: (key, why).
pub type BadObject = (String, String);

/// Every snapshot with its id, oldest first.
pub type Snapshots = Vec<(SnapshotId, Snapshot)>;

/// Objects read, and those that were bad.
type Sorted<I, T> = (Vec<(I, T)>, Vec<BadObject>);

/// A snapshot passed over: (its place, why it is damaged).
pub type Skipped = (usize, String);

/// Whether an error reading one object is that object's own fault (it is
/// damaged, forged, too large or gone), so it can be skipped, rather than
/// storage being unreachable, which must stop the command.
pub fn is_bad_object(e: &crate::Error) -> bool {
    use crate::repo::RepoError;
    match e {
        crate::Error::Repo(RepoError::Storage(s)) | crate::Error::Storage(s) => s.is_object_fault(),
        crate::Error::Repo(
            RepoError::Corrupt { .. } | RepoError::WrongKey { .. } | RepoError::NeedIdentity { .. },
        ) => true,
        _ => false,
    }
}

/// Brings the catalog's index, snapshot list and damage records up to date
/// with the repository and lists the packs. The listings and the new
/// objects are fetched at once: with a cold catalog (a new machine) they
/// would otherwise wait on one another.
pub fn sync(repo: &Repository, catalog: &mut Catalog) -> Result<Synced> {
    sync_parts(repo, catalog, true)
}

/// [`sync`] without the snapshots (a backup needs only the index).
pub fn sync_index(repo: &Repository, catalog: &mut Catalog) -> Result<Synced> {
    sync_parts(repo, catalog, false)
}

fn sync_parts(repo: &Repository, catalog: &mut Catalog, with_snaps: bool) -> Result<Synced> {
    let known_indexes = catalog.known_indexes()?;
    let known_snaps = catalog.snapshot_ids()?;
    let known_damage = catalog.damage_records()?;
    let known_damage_ids: HashSet<[u8; 32]> = known_damage.iter().map(|(id, _)| *id).collect();
    let (indexes, snaps, packs, damage) = std::thread::scope(|s| {
        let indexes = s.spawn(|| fetch_indexes(repo, &known_indexes));
        let packs = s.spawn(|| repo.store.list("data/"));
        let damage = s.spawn(|| fetch_damage(repo, &known_damage_ids));
        let snaps = with_snaps.then(|| fetch_snapshots(repo, &known_snaps));
        // A panic there is a bug, not bad input: it goes on as one.
        fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        }
        (join(indexes), snaps, join(packs), join(damage))
    });
    let (indexes, damage) = (indexes?, damage?);
    let mut bad_objects = indexes.bad.clone();
    bad_objects.extend(damage.bad.iter().cloned());
    let stored: HashMap<PackId, health::PackInfo> = packs?
        .into_iter()
        .filter_map(|o| {
            let info = health::PackInfo {
                size: o.size,
                modified: o.modified,
            };
            PackId::from_key(&o.key).map(|p| (p, info))
        })
        .collect();
    // The damage records: the catalog's, less those gone, plus the new ones.
    let mut records: Vec<([u8; 32], DamageRecord)> = Vec::new();
    for (id, rec) in known_damage {
        if damage.in_repo.contains(&id) {
            records.push((id, rec));
        } else {
            catalog.remove_damage(&id)?;
        }
    }
    for (id, rec) in damage.new {
        catalog.put_damage(&id, &rec)?;
        records.push((id, rec));
    }
    // The packs' sizes as indexed: the catalog's, with the new objects laid over.
    for gone in known_indexes.difference(&indexes.in_repo) {
        catalog.remove_index(gone)?;
    }
    let mut indexed = catalog.packs()?;
    for (_, index) in &indexes.new {
        indexed.extend(index.packs.iter().map(|p| (p.id, p.size)));
    }
    let health = Health::new(stored, &indexed, records);
    let blobs = apply_indexes(catalog, indexes.new, &health)?;
    let snaps = match snaps {
        Some(fetched) => {
            let fetched = fetched?;
            bad_objects.extend(fetched.bad.iter().cloned());
            apply_snapshots(catalog, &known_snaps, fetched)?
        }
        None => Vec::new(),
    };
    Ok(Synced {
        blobs,
        snaps,
        health,
        index_times: indexes.times,
        bad_objects,
    })
}

/// Brings the catalog's snapshot list up to date; returns all, oldest first,
/// and the objects skipped because they could not be read.
pub fn sync_snapshots(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<(Snapshots, Vec<BadObject>)> {
    let known = catalog.snapshot_ids()?;
    let fetched = fetch_snapshots(repo, &known)?;
    let bad = fetched.bad.clone();
    Ok((apply_snapshots(catalog, &known, fetched)?, bad))
}

/// The ids of objects of one kind in the repository, those of them the
/// catalog lacks, read, and those that could not be read (named, with why).
struct Fetched<I, T> {
    in_repo: HashSet<I>,
    new: Vec<(I, T)>,
    bad: Vec<BadObject>,
}

/// Reads `new` objects several at once (opening one, decrypt, decompress,
/// parse, costs CPU, so they open in parallel too) and sorts out those that
/// are bad: skipped and named, not an error.
fn read_new<I: Send + Copy, T: Send>(
    new: Vec<I>,
    threads: usize,
    key: impl Fn(&I) -> String + Sync,
    read: impl Fn(&I) -> Result<T> + Sync,
) -> Result<Sorted<I, T>> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (id, r) in par_map(new, threads, |id| (id, read(&id))) {
        match r {
            Ok(v) => ok.push((id, v)),
            Err(e) if is_bad_object(&e) => bad.push((key(&id), one_line(&e.to_string()))),
            Err(e) => return Err(e),
        }
    }
    bad.sort();
    Ok((ok, bad))
}

/// The index objects listed, with when storage wrote them, and the new ones read.
struct FetchedIndexes {
    in_repo: HashSet<IndexId>,
    times: HashMap<IndexId, chrono::DateTime<chrono::Utc>>,
    new: Vec<(IndexId, IndexFile)>,
    bad: Vec<BadObject>,
}

/// Text on one line (age's messages span two).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn fetch_indexes(repo: &Repository, known: &HashSet<IndexId>) -> Result<FetchedIndexes> {
    let listed = repo.store.list("index/")?;
    let mut times = HashMap::new();
    let mut in_repo = HashSet::new();
    for o in listed {
        if let Some(id) = IndexId::from_key(&o.key) {
            in_repo.insert(id);
            if let Some(t) = o.modified {
                times.insert(id, t);
            }
        }
    }
    let new: Vec<IndexId> = in_repo.difference(known).copied().collect();
    let threads = repo.store.read_concurrency();
    let (new, bad) = read_new(new, threads, IndexId::key, |id| Ok(repo.read_index(id)?))?;
    Ok(FetchedIndexes {
        in_repo,
        times,
        new,
        bad,
    })
}

fn fetch_snapshots(
    repo: &Repository,
    known: &HashSet<SnapshotId>,
) -> Result<Fetched<SnapshotId, Snapshot>> {
    let in_repo: HashSet<_> = repo.list_snapshot_ids()?.into_iter().collect();
    let new: Vec<SnapshotId> = in_repo.difference(known).copied().collect();
    let threads = repo.store.read_concurrency();
    let (new, bad) = read_new(new, threads, SnapshotId::key, |id| {
        Ok(repo.read_snapshot(id)?)
    })?;
    Ok(Fetched { in_repo, new, bad })
}

fn fetch_damage(
    repo: &Repository,
    known: &HashSet<[u8; 32]>,
) -> Result<Fetched<[u8; 32], DamageRecord>> {
    let listed = repo.list_damage()?;
    let in_repo: HashSet<[u8; 32]> = listed.iter().map(|o| o.id).collect();
    let new: Vec<DamageObject> = listed
        .into_iter()
        .filter(|o| !known.contains(&o.id))
        .collect();
    let keys: HashMap<[u8; 32], DamageObject> = new.into_iter().map(|o| (o.id, o)).collect();
    let ids: Vec<[u8; 32]> = keys.keys().copied().collect();
    let (new, bad) = read_new(
        ids,
        repo.store.read_concurrency(),
        |id| format!("{}{}", crate::repo::damage::PREFIX, hex::encode(id)),
        |id| match keys.get(id) {
            Some(o) => Ok(repo.read_damage(o)?),
            None => Err(crate::Error::Invalid("damage record vanished".into())),
        },
    )?;
    Ok(Fetched { in_repo, new, bad })
}

/// Records the fetched index objects in the catalog; returns the whole blob
/// map. The new objects' blobs are laid over what the catalog had in the
/// order the catalog records them (a later one wins, unless only the earlier
/// copy is usable), so the map is not read back from SQLite.
fn apply_indexes(
    catalog: &mut Catalog,
    new: Vec<(IndexId, IndexFile)>,
    health: &Health,
) -> Result<HashMap<BlobId, BlobLocation>> {
    let usable = |l: &BlobLocation| health.usable(l);
    let mut blobs = catalog.blobs_preferring(&usable)?;
    for (id, index) in &new {
        catalog.add_index(id, index)?;
        BlobLocation::lay_over(&mut blobs, index, &usable);
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

/// What [`adopt_orphan_packs`] did.
pub struct Adopted {
    /// The packs adopted (none if none were), as one index.
    pub index: IndexFile,
    /// How many index objects were written for them.
    pub objects: usize,
    /// Packs whose trailer could not be read: (pack, why).
    pub unreadable: Vec<(PackId, String)>,
}

/// Finds packs that no index lists (a backup cut off after uploading them,
/// or packs whose index object is lost or unreadable) and writes an index
/// for them from their trailers, so their blobs are found and reused.
/// The catalog records the new index objects too. Needs the writer lock.
pub fn adopt_orphan_packs(
    repo: &Repository,
    catalog: &mut Catalog,
    stored: &HashMap<PackId, health::PackInfo>,
) -> Result<Adopted> {
    let indexed = catalog.packs()?;
    let mut orphans: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|(pack, _)| !indexed.contains_key(pack))
        .map(|(p, i)| (*p, i.size))
        .collect();
    orphans.sort();
    // Two ranged reads a trailer: several packs at once.
    let threads = repo.store.read_concurrency();
    let read = par_map(orphans, threads, |(id, size)| {
        repo.read_pack_trailer(&id, size)
            .map(|blobs| IndexedPack { id, size, blobs })
            .map_err(|e| (id, e.to_string()))
    });
    let mut packs = Vec::new();
    let mut unreadable = Vec::new();
    for r in read {
        match r {
            Ok(p) => packs.push(p),
            Err(e) => unreadable.push(e),
        }
    }
    // Index objects of a bounded size, however many packs lost theirs.
    let written = repo.write_indexes(packs.clone())?;
    for (id, index) in &written {
        catalog.add_index(id, index)?;
    }
    Ok(Adopted {
        index: IndexFile { packs },
        objects: written.len(),
        unreadable,
    })
}

/// [`crate::Error::Interrupted`] once the cancel flag (SIGINT, SIGTERM) is
/// set: the engines call it at their safe points.
pub(crate) fn stop(cancel: &std::sync::atomic::AtomicBool) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(crate::Error::Interrupted);
    }
    Ok(())
}

/// Runs `f` under the writer lock (the protocol the capability record
/// chooses), released whatever happens; a release error never hides the
/// error of `f`.
pub(crate) fn with_writer_lock<T>(
    repo: &Repository,
    wait: std::time::Duration,
    f: impl FnOnce(&mut crate::repo::lock::RepoLock) -> Result<T>,
) -> Result<T> {
    use crate::repo::lock::{LEASE, RepoLock};
    let mut lock =
        RepoLock::for_writer(&repo.store, &repo.keys, repo.config.pack_size, LEASE, wait)?;
    let result = f(&mut lock);
    let released = lock.release(&repo.store, &repo.keys);
    let value = result?;
    released?;
    Ok(value)
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

/// How reads of one pack's blobs share requests: neighbours share a read
/// across gaps of up to the first figure (unneeded bytes worth less than a
/// request; wider on S3), and a shared read spans at most the second: 8
/// such gaps and 4 MiB (2 MiB locally, 4 MiB on S3), where its request
/// costs little beside its bytes and the buffers in flight stay small.
pub fn read_span(store: &crate::repo::store::Store) -> (u64, u64) {
    let gap = store.read_gap();
    (gap, (gap * 8).min(4 * 1024 * 1024))
}

/// Reads and opens blobs in the order of `ids`, several requests in flight.
/// Neighbours in the same pack, in order, share a read ([`read_span`]): a
/// file list written in one piece is fetched in a few requests. A shared
/// read that fails is retried blob by blob, so every intact blob is still
/// read. A blob missing from the index ends the stream with an error at
/// its place.
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
    let (gap, max) = read_span(&repo.store);
    let mut runs: Vec<(Read, u64, Vec<BlobLocation>)> = Vec::new();
    for same_pack in locs.chunk_by(|a, b| {
        a.pack == b.pack && b.entry.offset >= a.entry.offset.saturating_add(a.entry.length)
    }) {
        for run in coalesce(same_pack, |l| (l.entry.offset, l.entry.length), gap, max) {
            let read = run.read(same_pack[0].pack.key());
            runs.push((read, run.offset, same_pack[run.items].to_vec()));
        }
    }
    let reads = runs.iter().map(|r| r.0.clone()).collect();
    repo.store
        .read_ahead(reads, repo.store.read_concurrency())
        .zip(runs)
        .flat_map(move |(fetched, (_, start, locs))| {
            // A failed read of one blob is its error; of several, a retry each.
            let mut fetched = match fetched {
                Ok(bytes) => Ok(bytes),
                Err(e) if locs.len() == 1 => Err(Some(e)),
                Err(_) => Err(None),
            };
            locs.into_iter().map(move |loc| {
                let (offset, length) = (loc.entry.offset, loc.entry.length);
                let sealed = match &mut fetched {
                    Ok(bytes) => {
                        let lo = (offset - start) as usize;
                        let hi = lo.saturating_add(length as usize);
                        if hi > bytes.len() {
                            return Err(crate::repo::RepoError::Corrupt {
                                object: loc.pack.key(),
                                reason: "shorter than its index says".into(),
                            }
                            .into());
                        }
                        bytes.slice(lo..hi)
                    }
                    Err(e) => match e.take() {
                        Some(e) => return Err(e.into()),
                        None => repo.store.get_range(&loc.pack.key(), offset, length)?,
                    },
                };
                Ok(crate::repo::pack::open_blob(
                    &repo.keys, &loc.entry, &loc.pack, &sealed,
                )?)
            })
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
/// `None` after (callers memoise per piece). A snapshot whose list can not
/// be read (a blob of it lost or bad) does not stop the walk: it is
/// returned, with why, and the walk goes on with the next.
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
) -> Result<Vec<(usize, crate::Error)>> {
    // Blobs of the lists that the catalog does not hold yet are fetched
    // together, several in flight, not one request after another. One that
    // cannot be read is left to the walk below, which reports it.
    let cached = catalog.refs_blob_ids()?;
    let mut fetch: Vec<BlobId> = snaps
        .iter()
        .flat_map(|(_, s)| s.refs.iter())
        .filter(|id| !cached.contains(id) && blobs.contains_key(id))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    // In storage order, so neighbours share reads.
    fetch.sort_by_key(|id| blobs.get(id).map(|l| (l.pack.0, l.entry.offset)));
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
    let mut failed = Vec::new();
    for (n, (sid, s)) in snaps.iter().enumerate() {
        // The callback's own errors stop the walk; the list's only this snapshot.
        let mut stop: Option<crate::Error> = None;
        let mut one = || -> Result<()> {
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
                if !seen.contains(&piece) {
                    let data = load(id, sid)?;
                    if data.len() as u64 != len {
                        return Err(corrupt_refs(
                            sid,
                            "a reference blob's length differs from the index",
                        ));
                    }
                    let head = ((32 - align) % 32) as usize;
                    if let Err(e) = f(n, piece, Some(&to_ids(&data[head.min(data.len())..]))) {
                        stop = Some(e);
                        return Ok(());
                    }
                    seen.insert(piece);
                } else if let Err(e) = f(n, piece, None) {
                    stop = Some(e);
                    return Ok(());
                }
                let end_align = (offset + len) % 32;
                if end_align != 0
                    && let Some(next) = s.refs.get(i + 1)
                {
                    let piece = RefsPiece::Straddle(*id, *next, end_align);
                    let res = if !seen.contains(&piece) {
                        let (a, b) = (load(id, sid)?, load(next, sid)?);
                        let (tail, need) = (end_align as usize, 32 - end_align as usize);
                        if a.len() < tail || b.len() < need {
                            return Err(corrupt_refs(sid, "its reference list is cut short"));
                        }
                        let mut joined = a[a.len() - tail..].to_vec();
                        joined.extend_from_slice(&b[..need]);
                        seen.insert(piece);
                        f(n, piece, Some(&to_ids(&joined)))
                    } else {
                        f(n, piece, None)
                    };
                    if let Err(e) = res {
                        stop = Some(e);
                        return Ok(());
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
            Ok(())
        };
        let walked = one();
        if let Some(e) = stop {
            return Err(e);
        }
        match walked {
            Ok(()) => {}
            Err(e) if is_bad_object(&e) => failed.push((n, e)),
            Err(e) => return Err(e),
        }
    }
    Ok(failed)
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

/// Records blobs a read found bad (pack, blob, why) in the repository, so
/// backups store them again and every machine calls the snapshots that
/// need them damaged. Returns a warning when the record could not be
/// written (read-only credentials, say): the read's own report stands.
pub fn record_damage(
    repo: &Repository,
    found_by: &str,
    bad: &[(PackId, BlobId, String)],
) -> Option<String> {
    if bad.is_empty() {
        return None;
    }
    let mut record = DamageRecord::new(found_by);
    let mut by_pack: std::collections::BTreeMap<PackId, (String, Vec<BlobId>)> = Default::default();
    for (pack, blob, why) in bad {
        let e = by_pack
            .entry(*pack)
            .or_insert_with(|| (why.clone(), Vec::new()));
        e.1.push(*blob);
    }
    for (id, (reason, mut blobs)) in by_pack {
        blobs.sort();
        blobs.dedup();
        record
            .packs
            .push(crate::repo::damage::BadPack { id, reason, blobs });
    }
    repo.write_damage(&record).err().map(|e| {
        format!(
            "{} bad blob(s) could not be recorded in the repository as damaged: {e}",
            bad.len()
        )
    })
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
