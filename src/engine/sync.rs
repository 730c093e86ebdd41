//! Reading what storage holds into the catalog: new index objects, snapshots
//! and damage records (a bad object is named and skipped, never a stop), and
//! adopting packs that no readable index lists.

use super::health::{self, Health};
use super::par_map;
use crate::Result;
use crate::catalog::{BlobLocation, BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::damage::{DamageObject, DamageRecord};
use crate::repo::ids::{IndexId, PackId, SnapshotId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::snapshot::Snapshot;
use std::collections::{HashMap, HashSet};

/// What the repository holds, read into the catalog: every blob and where it
/// is, every snapshot (oldest first), and every pack in storage.
pub struct Synced {
    pub blobs: BlobMap,
    pub snaps: Vec<(SnapshotId, Snapshot)>,
    /// Some snapshot in storage was left unread ([`Wanted`]): `snaps` is
    /// not the whole history.
    pub partial: bool,
    /// The packs in storage and what is known bad (see [`health`]).
    pub health: Health,
    /// When storage wrote each index object (for [`Health::suspects`]).
    pub index_times: HashMap<IndexId, jiff::Timestamp>,
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
    sync_parts(repo, catalog, Some(&Wanted::All))
}

/// [`sync`] without the snapshots (a backup needs only the index).
pub fn sync_index(repo: &Repository, catalog: &mut Catalog) -> Result<Synced> {
    sync_parts(repo, catalog, None)
}

/// Which of the snapshots the catalog lacks a sync reads.
pub enum Wanted<'a> {
    /// Every one: listings, retention, find.
    All,
    /// Those whose id starts with this (lowercase hex) prefix: one named by id.
    Prefix(&'a str),
    /// Enough to know the newest that `keeps` lets through and is not
    /// suspect (`latest`): newest first by storage time, stopping where
    /// no snapshot left could claim a later time without being suspect.
    Newest(&'a dyn Fn(&Snapshot) -> bool),
}

/// [`sync`] reading only the snapshots `wanted` needs; `partial` in the
/// answer says whether some listed snapshot was left unread (a later
/// sync reads it: the catalog records what was read and nothing else).
pub fn sync_wanting(repo: &Repository, catalog: &mut Catalog, wanted: &Wanted) -> Result<Synced> {
    sync_parts(repo, catalog, Some(wanted))
}

fn sync_parts(repo: &Repository, catalog: &mut Catalog, wanted: Option<&Wanted>) -> Result<Synced> {
    let known_indexes = catalog.known_indexes()?;
    let known_snaps = catalog.snapshot_ids()?;
    let known_damage = catalog.damage_records()?;
    let known_damage_ids: HashSet<[u8; 32]> = known_damage.iter().map(|(id, _)| *id).collect();
    let (indexes, snaps, packs, damage) = std::thread::scope(|s| {
        let indexes = s.spawn(|| fetch_indexes(repo, &known_indexes));
        let packs = s.spawn(|| repo.store.list("data/"));
        let damage = s.spawn(|| fetch_damage(repo, &known_damage_ids));
        let snaps = wanted.map(|w| fetch_snapshots(repo, &known_snaps, w));
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
    // The damage records: the catalog's, less those gone, plus the new ones;
    // with the index objects gone, in one transaction.
    let mut records: Vec<([u8; 32], DamageRecord)> = Vec::new();
    let tx = catalog.begin()?;
    for (id, rec) in known_damage {
        if damage.in_repo.contains(&id) {
            records.push((id, rec));
        } else {
            tx.remove_damage(&id)?;
        }
    }
    for (id, rec) in damage.new {
        tx.put_damage(&id, &rec)?;
        records.push((id, rec));
    }
    for gone in known_indexes.difference(&indexes.in_repo) {
        tx.remove_index(gone)?;
    }
    tx.commit()?;
    // The packs' sizes as indexed: the catalog's, with the new objects laid over.
    let mut indexed = catalog.packs()?;
    for (_, index) in &indexes.new {
        indexed.extend(index.packs.iter().map(|p| (p.id, p.size)));
    }
    let health = Health::new(stored, &indexed, records);
    let blobs = apply_indexes(catalog, indexes.new, &health)?;
    let mut partial = false;
    let snaps = match snaps {
        Some(fetched) => {
            let fetched = fetched?;
            partial = fetched.unread > 0;
            bad_objects.extend(fetched.bad.iter().cloned());
            apply_snapshots(catalog, &known_snaps, fetched)?
        }
        None => Vec::new(),
    };
    Ok(Synced {
        blobs,
        snaps,
        partial,
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
    let fetched = fetch_snapshots(repo, &known, &Wanted::All)?;
    let bad = fetched.bad.clone();
    Ok((apply_snapshots(catalog, &known, fetched)?, bad))
}

/// The ids of objects of one kind in the repository, those of them the
/// catalog lacks, read, and those that could not be read (named, with why).
struct Fetched<I, T> {
    in_repo: HashSet<I>,
    new: Vec<(I, T)>,
    bad: Vec<BadObject>,
    /// When storage recorded writing each, where its listing says.
    times: HashMap<I, jiff::Timestamp>,
    /// How many the catalog lacks were left unread ([`Wanted`]).
    unread: usize,
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
    times: HashMap<IndexId, jiff::Timestamp>,
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

/// Lists the snapshots with the time storage recorded for each (what a
/// snapshot's own claim is judged by: [`super::is_suspect`]) and reads
/// the new ones.
fn fetch_snapshots(
    repo: &Repository,
    known: &HashSet<SnapshotId>,
    wanted: &Wanted,
) -> Result<Fetched<SnapshotId, Snapshot>> {
    let mut in_repo = HashSet::new();
    let mut times = HashMap::new();
    for o in repo.store.list("snapshots/")? {
        if let Some(id) = SnapshotId::from_key(&o.key) {
            in_repo.insert(id);
            if let Some(t) = o.modified {
                times.insert(id, t);
            }
        }
    }
    let lacking: Vec<SnapshotId> = in_repo.difference(known).copied().collect();
    let threads = repo.store.read_concurrency().max(1);
    let read = |ids: Vec<SnapshotId>| -> Result<Sorted<SnapshotId, Snapshot>> {
        let (mut new, bad) = read_new(ids, threads, SnapshotId::key, |id| {
            Ok(repo.read_snapshot(id)?)
        })?;
        for (id, snap) in &mut new {
            snap.stored = times.get(id).copied();
        }
        Ok((new, bad))
    };
    let timed: Option<Vec<(jiff::Timestamp, SnapshotId)>> = lacking
        .iter()
        .map(|id| times.get(id).map(|t| (*t, *id)))
        .collect();
    let (new, bad, unread) = match (wanted, timed) {
        (Wanted::Prefix(p), _) => {
            let (hit, miss): (Vec<_>, Vec<_>) = lacking
                .into_iter()
                .partition(|id| id.to_hex().starts_with(p));
            let (new, bad) = read(hit)?;
            (new, bad, miss.len())
        }
        (Wanted::Newest(keeps), Some(mut timed)) => {
            timed.sort();
            newest_first(timed, threads, read, *keeps)?
        }
        // `All`, or `Newest` without a storage time for each: nothing
        // bounds the search.
        _ => {
            let (new, bad) = read(lacking)?;
            (new, bad, 0)
        }
    };
    Ok(Fetched {
        in_repo,
        new,
        bad,
        times,
        unread,
    })
}

/// Reads `timed` (oldest first by storage time) newest first, `batch` at a
/// time, until none left can hold the newest claim `keeps` lets through:
/// an unread snapshot stored before that claim less [`super::CLOCK_SKEW`]
/// either claims an earlier time or is suspect. Returns what was read, the
/// bad objects, and how many were left unread.
fn newest_first(
    mut timed: Vec<(jiff::Timestamp, SnapshotId)>,
    batch: usize,
    read: impl Fn(Vec<SnapshotId>) -> Result<Sorted<SnapshotId, Snapshot>>,
    keeps: &dyn Fn(&Snapshot) -> bool,
) -> Result<(Snapshots, Vec<BadObject>, usize)> {
    let (mut new, mut bad) = (Vec::new(), Vec::new());
    let mut newest: Option<jiff::Timestamp> = None;
    while let Some((stored, _)) = timed.last() {
        if newest.is_some_and(|t| *stored + super::CLOCK_SKEW < t) {
            break;
        }
        let ids = timed
            .split_off(timed.len().saturating_sub(batch))
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        let (got, skipped) = read(ids)?;
        for (_, s) in got
            .iter()
            .filter(|(_, s)| keeps(s) && !super::is_suspect(s))
        {
            newest = newest.max(Some(s.time));
        }
        new.extend(got);
        bad.extend(skipped);
    }
    bad.sort();
    Ok((new, bad, timed.len()))
}

/// When storage recorded writing snapshot `id`, if it says: a listing of
/// its one key (a backup checks its own clock against storage's with it).
pub fn snapshot_stored(repo: &Repository, id: &SnapshotId) -> Result<Option<jiff::Timestamp>> {
    let key = id.key();
    Ok(repo
        .store
        .list(&key)?
        .into_iter()
        .find(|o| o.key == key)
        .and_then(|o| o.modified))
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
            None => Err(crate::Error::Stopped("damage record vanished")),
        },
    )?;
    Ok(Fetched {
        in_repo,
        new,
        bad,
        times: HashMap::new(),
        unread: 0,
    })
}

/// Records the fetched index objects in the catalog; returns the whole blob
/// map. The new objects' blobs are laid over what the catalog had in the
/// order the catalog records them (a later one wins, unless only the earlier
/// copy is usable), so the map is not read back from SQLite.
fn apply_indexes(
    catalog: &mut Catalog,
    new: Vec<(IndexId, IndexFile)>,
    health: &Health,
) -> Result<BlobMap> {
    let usable = |l: &BlobLocation| health.usable(l);
    let mut blobs = catalog.blobs_preferring(&usable)?;
    let tx = catalog.begin()?;
    for (id, index) in &new {
        tx.add_index(id, index)?;
        BlobLocation::lay_over(&mut blobs, index, &usable);
    }
    tx.commit()?;
    Ok(blobs)
}

/// Records the fetched snapshots in the catalog, forgets those gone, and
/// stamps those recorded before a listing gave their storage time (a
/// backup's own) with it.
fn apply_snapshots(
    catalog: &mut Catalog,
    known: &HashSet<SnapshotId>,
    fetched: Fetched<SnapshotId, Snapshot>,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let unstamped = catalog.snapshots_unstamped()?;
    let tx = catalog.begin()?;
    for gone in known.difference(&fetched.in_repo) {
        tx.remove_snapshot(gone)?;
    }
    for (id, snap) in &fetched.new {
        tx.put_snapshot(id, snap)?;
    }
    for id in unstamped.intersection(&fetched.in_repo) {
        if let Some(t) = fetched.times.get(id) {
            tx.set_snapshot_stored(id, *t)?;
        }
    }
    tx.commit()?;
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
    let tx = catalog.begin()?;
    for (id, index) in &written {
        tx.add_index(id, index)?;
    }
    tx.commit()?;
    Ok(Adopted {
        index: IndexFile { packs },
        objects: written.len(),
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::{SignedDuration, Timestamp};

    /// Snapshot `n` stored at `t0 + n` hours, claiming `claim(n)`, of `host(n)`.
    fn history(
        count: u8,
        claim: impl Fn(u8, Timestamp) -> Timestamp,
        host: impl Fn(u8) -> &'static str,
    ) -> (Vec<(Timestamp, SnapshotId)>, HashMap<SnapshotId, Snapshot>) {
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let (mut timed, mut objects) = (Vec::new(), HashMap::new());
        for n in 0..count {
            let stored = t0 + SignedDuration::from_hours(n as i64);
            let id = SnapshotId([n; 32]);
            timed.push((stored, id));
            let snap = Snapshot {
                stored: Some(stored),
                ..Snapshot::bare(claim(n, stored), host(n))
            };
            objects.insert(id, snap);
        }
        (timed, objects)
    }

    /// Which snapshots `newest_first` reads, newest first, and how many it leaves.
    fn reads(
        timed: Vec<(Timestamp, SnapshotId)>,
        objects: &HashMap<SnapshotId, Snapshot>,
        keeps: &dyn Fn(&Snapshot) -> bool,
    ) -> (Vec<u8>, usize) {
        let read = |ids: Vec<SnapshotId>| -> Result<Sorted<SnapshotId, Snapshot>> {
            Ok((
                ids.iter().map(|id| (*id, objects[id].clone())).collect(),
                Vec::new(),
            ))
        };
        let (got, _, unread) = newest_first(timed, 2, read, keeps).unwrap();
        let mut ids: Vec<u8> = got.iter().map(|(id, _)| id.0[0]).collect();
        ids.sort_by(|a, b| b.cmp(a));
        (ids, unread)
    }

    #[test]
    fn newest_first_stops_when_no_unread_snapshot_can_claim_a_later_time() {
        let minute = SignedDuration::from_mins(1);
        let all = |_: &Snapshot| true;
        // Hourly, each claiming a minute before storage: one batch of two.
        let (timed, objects) = history(10, |_, s| s - minute, |_| "a");
        assert_eq!(reads(timed, &objects, &all), (vec![9, 8], 8));
        // The newest is suspect (it claims a day ahead): it decides nothing.
        let (timed, objects) = history(
            10,
            |n, s| {
                if n == 9 {
                    s + SignedDuration::from_hours(24)
                } else {
                    s - minute
                }
            },
            |_| "a",
        );
        assert_eq!(reads(timed, &objects, &all), (vec![9, 8], 8));
        // Backdated claims (an import): nothing bounds them, all are read.
        let (timed, objects) = history(
            6,
            |n, _| {
                "2020-01-01T00:00:00Z".parse::<Timestamp>().unwrap()
                    + SignedDuration::from_hours(n as i64)
            },
            |_| "a",
        );
        assert_eq!(reads(timed, &objects, &all).1, 0);
        // Only host b's count: read until one of b's decides.
        let (timed, objects) = history(10, |_, s| s - minute, |n| if n == 3 { "b" } else { "a" });
        let b = |s: &Snapshot| s.host == "b";
        assert_eq!(
            reads(timed, &objects, &b),
            (vec![9, 8, 7, 6, 5, 4, 3, 2], 2)
        );
    }
}
