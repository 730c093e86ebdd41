//! `coffer repair`: bring a damaged repository back to a state where every
//! snapshot restores what it can (docs/FORMAT.md, "Repair").
//!
//! * `index` (agent key): index objects rebuilt from the packs' trailers,
//!   for packs no readable index lists; unreadable index objects go.
//! * `snapshots` (operator): for each damaged snapshot, a new snapshot whose
//!   lost files come from the newest older snapshot that holds them intact,
//!   or are left out and listed; the originals go only with `forget`.
//! * `keyring` (agent key): the keyring and its copy written again.
//!
//! Each holds the writer lock and plans before it writes: a dry run reports
//! the plan. Write order as everywhere: packs, index, snapshots, deletions.

use super::health::Health;
use super::rewrite::{BlobWriter, ListWriter};
use super::{Progress, SnapshotState, adopt_orphan_packs, snapshot_states, stop, sync, sync_index};
use crate::Result;
use crate::catalog::{BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{PackId, SnapshotId};
use crate::repo::index::IndexFile;
use crate::repo::keys::AgentKey;
use crate::repo::lock::WriterLock;
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Entry, EntryKind, TreeParser, parse_index, walk_order};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;

#[derive(Debug, Default, Serialize)]
pub struct IndexRepair {
    pub dry_run: bool,
    /// Packs no readable index listed, now indexed from their trailers.
    pub packs_indexed: usize,
    pub indexes_written: usize,
    /// Unreadable index objects deleted (replaced by the new ones).
    pub indexes_removed: usize,
    /// Packs whose trailer can not be read either: what they hold is lost
    /// unless stored elsewhere (key, why).
    pub packs_unreadable: Vec<(String, String)>,
    /// Index objects that could not be read (key, why).
    pub indexes_unreadable: Vec<(String, String)>,
    /// Packs an index lists that storage does not hold.
    pub packs_missing: usize,
}

/// Rebuilds index objects from pack trailers for every pack no readable
/// index lists, then deletes the index objects that can not be read.
pub fn repair_index(
    repo: &Repository,
    catalog: &mut Catalog,
    dry_run: bool,
    lock_wait: std::time::Duration,
    cancel: &AtomicBool,
) -> Result<IndexRepair> {
    let mut lock = WriterLock::of(repo, lock_wait)?;
    let done = repair_index_locked(repo, catalog, dry_run, &mut lock, cancel);
    lock.release_after(done)
}

fn repair_index_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    dry_run: bool,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<IndexRepair> {
    let synced = sync_index(repo, catalog)?;
    stop(cancel)?;
    let mut report = IndexRepair {
        dry_run,
        indexes_unreadable: synced
            .bad_objects
            .iter()
            .filter(|(k, _)| k.starts_with("index/"))
            .cloned()
            .collect(),
        ..Default::default()
    };
    let indexed = catalog.packs()?;
    report.packs_missing = indexed
        .keys()
        .filter(|p| !synced.health.stored.contains_key(p))
        .count();
    if dry_run {
        let orphans: Vec<(PackId, u64)> = synced
            .health
            .stored
            .iter()
            .filter(|(p, _)| !indexed.contains_key(p))
            .map(|(p, i)| (*p, i.size))
            .collect();
        let mut packs = Vec::new();
        for (id, size) in orphans {
            match repo.read_pack_trailer(&id, size) {
                Ok(blobs) => packs.push(crate::repo::index::IndexedPack { id, size, blobs }),
                Err(e) => report
                    .packs_unreadable
                    .push((id.key(), super::one_line(&e.to_string()))),
            }
        }
        report.packs_indexed = packs.len();
        report.indexes_written = IndexFile::split(packs).len();
        report.indexes_removed = report.indexes_unreadable.len();
        return Ok(report);
    }
    let super::Adopted {
        index: adopted,
        objects,
        unreadable,
    } = adopt_orphan_packs(repo, catalog, &synced.health.stored)?;
    // The new index is written: a stop here leaves only the old objects.
    stop(cancel)?;
    report.packs_indexed = adopted.packs.len();
    report.indexes_written = objects;
    report.packs_unreadable = unreadable
        .into_iter()
        .map(|(p, why)| (p.key(), super::one_line(&why)))
        .collect();
    // The new index is stored: the unreadable ones can go.
    let gone: Vec<String> = report
        .indexes_unreadable
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    if !gone.is_empty() {
        lock.confirm()?;
    }
    repo.store.delete_many(&gone)?;
    report.indexes_removed = gone.len();
    Ok(report)
}

/// Writes the keyring and its copy again from the agent key file.
pub fn repair_keyring(
    repo: &Repository,
    agent: &AgentKey,
    dry_run: bool,
    lock_wait: std::time::Duration,
) -> Result<Vec<String>> {
    let keys = vec![
        crate::repo::KEYRING_KEY.to_string(),
        crate::repo::KEYRING_COPY_KEY.to_string(),
    ];
    if dry_run {
        return Ok(keys);
    }
    let lock = WriterLock::of(repo, lock_wait)?;
    let written = Repository::write_keyring(&repo.store, &repo.keys, agent);
    Ok(lock.release_after(written.map(|()| keys))?)
}

/// What repair did (or would do) to one damaged snapshot.
#[derive(Debug, Serialize)]
pub struct SnapshotRepair {
    pub id: String,
    /// The repaired snapshot (the same in a dry run: its id is known first).
    pub new_id: Option<String>,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: jiff::Timestamp,
    pub host: String,
    pub profile: String,
    /// Why it was damaged.
    pub damage: String,
    /// Files taken from an older snapshot: (path, that snapshot's short id).
    pub replaced: Vec<(String, String)>,
    /// Entries no snapshot holds intact: left out.
    pub lost: Vec<String>,
    /// Ranges of the file list that could not be read (their entries are
    /// unknown; entries an older snapshot holds in that range are taken).
    pub unreadable_ranges: Vec<String>,
    /// Deleted after the repaired one was stored (`--forget`).
    pub forgotten: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct SnapshotsRepair {
    pub dry_run: bool,
    pub snapshots: Vec<SnapshotRepair>,
    pub packs_written: usize,
    pub warnings: Vec<String>,
}

/// The paths around a gap in a file list (None: its start or its end).
type PathRange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One piece of a damaged file list, as read.
enum Item {
    Entry(Entry),
    /// Tree blobs that could not be read lie between the entries around it.
    Gap,
}

/// Reads a snapshot's file list, going on past tree blobs that can not be
/// read: after a gap, reading starts again where the next readable blob's
/// first entry starts (its tree index says; without one, after its first
/// line end).
fn read_list_with_gaps(
    repo: &Repository,
    blobs: &BlobMap,
    health: &Health,
    snap: &Snapshot,
) -> Result<Vec<Item>> {
    let what = "snapshot file list";
    // Where each tree blob's first entry starts, if the index is readable.
    let mut starts: HashMap<usize, usize> = HashMap::new();
    if let Some(ix) = snap.tree_index
        && let Some(loc) = blobs.get(&ix).filter(|l| health.usable(l))
        && let Ok(data) = repo.read_blob(&loc.pack, &loc.entry)
        && let Ok(lines) = parse_index(&data)
    {
        for l in lines {
            starts.insert(l.blob as usize, l.offset as usize);
        }
    }
    let mut out = Vec::new();
    let mut parser = TreeParser::default();
    let mut after_gap = false;
    for (k, id) in snap.tree.iter().enumerate() {
        let data = match blobs.get(id).filter(|l| health.usable(l)) {
            Some(loc) => repo.read_blob(&loc.pack, &loc.entry).ok(),
            None => None,
        };
        let Some(data) = data else {
            if !after_gap {
                out.push(Item::Gap);
            }
            after_gap = true;
            parser = TreeParser::default();
            continue;
        };
        let mut from = 0;
        if after_gap {
            from = match starts.get(&k) {
                Some(&o) => o,
                None => match data.iter().position(|&b| b == b'\n') {
                    Some(nl) => nl + 1,
                    None => continue, // no line starts here: still in the gap
                },
            };
            after_gap = false;
        }
        let Some(rest) = data.get(from..) else {
            continue;
        };
        for e in parser.feed(rest, what)? {
            out.push(Item::Entry(e));
        }
    }
    if after_gap {
        // Nothing after the gap: its end is the list's end.
    } else {
        parser.finish(what)?;
    }
    Ok(out)
}

/// A file's entry whose every piece can be read.
fn intact(e: &Entry, blobs: &BlobMap, health: &Health) -> bool {
    e.content
        .iter()
        .all(|x| blobs.get(&x.blob).is_some_and(|l| health.usable(&l)))
}

/// What is lost from a file list as read: files with a piece that can not
/// be read, and the ranges of the list between the entries around each gap.
fn lost_and_gaps(
    items: &[Item],
    blobs: &BlobMap,
    health: &Health,
) -> (HashSet<Vec<u8>>, Vec<PathRange>) {
    let mut lost: HashSet<Vec<u8>> = HashSet::new();
    let mut gaps: Vec<PathRange> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let mut open_gap = false;
    for item in items {
        match item {
            Item::Gap => {
                gaps.push((last.clone(), None));
                open_gap = true;
            }
            Item::Entry(e) => {
                if open_gap {
                    if let Some(g) = gaps.last_mut() {
                        g.1 = Some(e.path.clone());
                    }
                    open_gap = false;
                }
                if e.kind == EntryKind::File && !intact(e, blobs, health) {
                    lost.insert(e.path.clone());
                }
                last = Some(e.path.clone());
            }
        }
    }
    (lost, gaps)
}

/// What one damaged snapshot's repaired file list holds, in walk order:
/// its intact entries, lost files from the newest older snapshot that holds
/// them intact, and the entries older snapshots hold in the path ranges of
/// unreadable file-list blobs; and what was done, for the report.
fn plan_repair(
    repo: &Repository,
    blobs: &BlobMap,
    health: &Health,
    snaps: &[(SnapshotId, Snapshot)],
    n: usize,
    damage: String,
) -> Result<(Vec<Entry>, SnapshotRepair)> {
    let (sid, snap) = &snaps[n];
    let items = read_list_with_gaps(repo, blobs, health, snap)?;
    let mut rep = SnapshotRepair {
        id: sid.to_hex(),
        new_id: None,
        time: snap.time,
        host: snap.host.clone(),
        profile: snap.profile.clone(),
        damage,
        replaced: Vec::new(),
        lost: Vec::new(),
        unreadable_ranges: Vec::new(),
        forgotten: false,
    };
    let (lost, gaps) = lost_and_gaps(&items, blobs, health);
    let in_gap = |p: &[u8]| {
        gaps.iter().any(|(a, b)| {
            a.as_deref().is_none_or(|a| walk_order(a, p).is_lt())
                && b.as_deref().is_none_or(|b| walk_order(p, b).is_lt())
        })
    };
    for (a, b) in &gaps {
        let show = |p: &Option<Vec<u8>>, end: &str| {
            p.as_ref()
                .map(|p| format!("/{}", String::from_utf8_lossy(p)))
                .unwrap_or_else(|| end.to_string())
        };
        rep.unreadable_ranges.push(format!(
            "after {} and before {}",
            show(a, "the start"),
            show(b, "the end")
        ));
    }
    // Older snapshots, newest first: the first that holds a lost
    // file (or an entry in a gap) intact gives it.
    let mut found: BTreeMap<Vec<u8>, (Entry, SnapshotId)> = BTreeMap::new();
    let mut wanted = lost.clone();
    for j in (0..n).rev() {
        if wanted.is_empty() && gaps.is_empty() {
            break;
        }
        let (oid, old) = &snaps[j];
        let _ = super::for_each_entry(repo, blobs, old, |e| {
            let want =
                wanted.contains(&e.path) || (in_gap(&e.path) && !found.contains_key(&e.path));
            if want
                && !found.contains_key(&e.path)
                && (e.kind != EntryKind::File || intact(&e, blobs, health))
                && e.kind != EntryKind::Hardlink
            {
                wanted.remove(&e.path);
                found.insert(e.path.clone(), (e, *oid));
            }
            Ok(())
        });
    }
    // The new list, in walk order: kept entries, replacements, and
    // what older snapshots give for the gaps.
    let mut entries: Vec<Entry> = Vec::new();
    let mut dropped: HashSet<Vec<u8>> = HashSet::new();
    for item in items {
        let Item::Entry(e) = item else { continue };
        if lost.contains(&e.path) {
            match found.remove(&e.path) {
                Some((old, from)) => {
                    rep.replaced
                        .push((format!("/{}", old.path_display()), from.short()));
                    entries.push(old);
                }
                None => {
                    rep.lost.push(format!("/{}", e.path_display()));
                    dropped.insert(e.path.clone());
                }
            }
        } else if e.kind == EntryKind::Hardlink
            && e.target.as_ref().is_some_and(|t| dropped.contains(t))
        {
            rep.lost.push(format!("/{}", e.path_display()));
            dropped.insert(e.path.clone());
        } else {
            found.remove(&e.path);
            entries.push(e);
        }
    }
    for (path, (e, from)) in found {
        if in_gap(&path) {
            rep.replaced
                .push((format!("/{}", e.path_display()), from.short()));
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| walk_order(&a.path, &b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    rep.lost.sort();
    rep.replaced.sort();
    Ok((entries, rep))
}

/// For each damaged snapshot, writes one that restores: lost files from the
/// newest older snapshot that holds them intact, the rest left out.
pub fn repair_snapshots(
    repo: &Repository,
    catalog: &mut Catalog,
    forget: bool,
    dry_run: bool,
    lock_wait: std::time::Duration,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<SnapshotsRepair> {
    if !repo.keys.is_operator() {
        return Err(crate::repo::RepoError::NeedIdentity {
            what: "repairing snapshots (their file lists)".into(),
        }
        .into());
    }
    let mut lock = WriterLock::of(repo, lock_wait)?;
    let done = repair_snapshots_locked(repo, catalog, forget, dry_run, progress, &mut lock, cancel);
    lock.release_after(done)
}

fn repair_snapshots_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    forget: bool,
    dry_run: bool,
    progress: &dyn Progress,
    lock: &mut WriterLock,
    cancel: &AtomicBool,
) -> Result<SnapshotsRepair> {
    let synced = sync(repo, catalog)?;
    let mut report = SnapshotsRepair {
        dry_run,
        warnings: synced.warnings(),
        ..Default::default()
    };
    let (blobs, health, snaps) = (&synced.blobs, &synced.health, &synced.snaps);
    let states = snapshot_states(repo, catalog, blobs, health, snaps)?;
    let damaged: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| s.0 == SnapshotState::Damaged)
        .map(|(i, _)| i)
        .collect();
    progress.phase("repair", Some(damaged.len() as u64));
    let mut w = BlobWriter::new(repo, blobs, super::packer::ReadBack::of(lock));
    let mut new_snaps: Vec<(usize, Snapshot, SnapshotRepair)> = Vec::new();
    for &n in &damaged {
        stop(cancel)?;
        lock.refresh_if_due()?;
        let snap = &snaps[n].1;
        let damage = states[n].1.clone().unwrap_or_default();
        let (entries, rep) = plan_repair(repo, blobs, health, snaps, n, damage)?;
        let mut summary = Summary {
            files: 0,
            dirs: 0,
            bytes: 0,
            ..snap.summary.clone()
        };
        let mut list = ListWriter::new(repo);
        for e in &entries {
            match e.kind {
                EntryKind::File => {
                    summary.files += 1;
                    summary.bytes += e.size;
                }
                EntryKind::Dir => summary.dirs += 1,
                _ => {}
            }
            if !dry_run {
                list.push(&mut w, e)?;
            }
        }
        if !dry_run {
            let new = list.finish(&mut w)?.snapshot_like(snap, summary);
            new_snaps.push((n, new, rep));
        } else {
            report.snapshots.push(rep);
        }
        progress.advance(1);
    }
    if dry_run {
        return Ok(report);
    }
    // Commit: the new packs' index, the new snapshots, then the originals.
    let written = w.finish()?;
    // The last safe point: the new packs are orphans a backup adopts.
    stop(cancel)?;
    report.packs_written = written.len();
    if !written.is_empty() {
        let index = IndexFile { packs: written };
        let id = repo.write_index(&index)?;
        catalog.add_index(&id, &index)?;
    }
    lock.refresh_if_due()?;
    for (n, snap, mut rep) in new_snaps {
        let id = repo.write_snapshot(&snap)?;
        catalog.put_snapshot(&id, &snap)?;
        rep.new_id = Some(id.to_hex());
        let old = snaps[n].0;
        if forget && old != id {
            lock.confirm()?;
            repo.store.delete(&old.key())?;
            catalog.remove_snapshot(&old)?;
            rep.forgotten = true;
        }
        report.snapshots.push(rep);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BlobLocation;
    use crate::repo::ids::BlobId;
    use crate::repo::pack::{BlobKind, PackEntry};
    use crate::repo::tree::Extent;

    fn file(path: &str, blob: u8) -> Item {
        Item::Entry(Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            ctime: 0,
            ino: 0,
            size: 10,
            content: vec![Extent {
                blob: BlobId([blob; 32]),
                offset: 0,
                length: 10,
            }],
            target: None,
            rdev: 0,
        })
    }

    #[test]
    fn files_with_an_unreadable_piece_are_lost_and_gaps_span_their_neighbours() {
        // Blob 1 is in a stored pack, blob 2 is not.
        let pack = PackId([1; 32]);
        let entry = PackEntry {
            id: BlobId([1; 32]),
            kind: BlobKind::Data,
            offset: 0,
            length: 10,
            raw_length: 10,
        };
        let blobs = BlobMap::from_iter([BlobLocation { pack, entry }]);
        let stored = HashMap::from([(
            pack,
            crate::engine::health::PackInfo {
                size: 10,
                modified: None,
            },
        )]);
        let health = Health::new(stored, &HashMap::from([(pack, 10)]), vec![]);
        let items = vec![
            Item::Gap,
            file("a", 1),
            file("b", 2),
            Item::Gap,
            file("c", 1),
            Item::Gap,
        ];
        let (lost, gaps) = lost_and_gaps(&items, &blobs, &health);
        assert_eq!(lost, HashSet::from([b"b".to_vec()]));
        assert_eq!(
            gaps,
            vec![
                (None, Some(b"a".to_vec())),
                (Some(b"b".to_vec()), Some(b"c".to_vec())),
                (Some(b"c".to_vec()), None),
            ]
        );
    }
}
