//! Use cases: the only layer that combines the repository format, storage and
//! the catalog. Front ends (CLI, agent) call these and render the results.

pub mod backup;
pub mod check;
pub mod copy;
pub mod forget;
pub mod prune;
pub mod rebuild;
pub mod restore;
mod walk;

use crate::Result;
use crate::catalog::{BlobLocation, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::snapshot::Snapshot;
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

/// Brings the catalog's copy of the index up to date with the repository:
/// reads index objects it has not seen, forgets ones that are gone.
pub fn sync_index(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<HashMap<BlobId, BlobLocation>> {
    let in_repo: HashSet<_> = repo.list_indexes()?.into_iter().collect();
    let known = catalog.known_indexes()?;
    for gone in known.difference(&in_repo) {
        catalog.remove_index(gone)?;
    }
    for new in in_repo.difference(&known) {
        let index = repo.read_index(new)?;
        catalog.add_index(new, &index)?;
    }
    Ok(catalog.blobs()?)
}

/// Finds packs that no index lists (a backup cut off after uploading them)
/// and writes an index for them from their trailers, so their blobs are reused.
/// Returns how many packs were adopted. Needs the writer lock.
pub fn adopt_orphan_packs(repo: &Repository, catalog: &mut Catalog) -> Result<usize> {
    let indexed = catalog.packs()?;
    let mut adopted = Vec::new();
    for (pack, size) in repo.list_packs()? {
        if indexed.contains_key(&pack) {
            continue;
        }
        // A pack whose trailer cannot be read is left for `check` to report.
        if let Ok(blobs) = repo.read_pack_trailer(&pack, size) {
            adopted.push(IndexedPack {
                id: pack,
                size,
                blobs,
            });
        }
    }
    let n = adopted.len();
    if n > 0 {
        let index = IndexFile { packs: adopted };
        let id = repo.write_index(&index)?;
        catalog.add_index(&id, &index)?;
    }
    Ok(n)
}

/// Brings the catalog's snapshot list up to date; returns all, oldest first.
pub fn sync_snapshots(
    repo: &Repository,
    catalog: &mut Catalog,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let in_repo: HashSet<_> = repo.list_snapshot_ids()?.into_iter().collect();
    let known = catalog.snapshot_ids()?;
    for gone in known.difference(&in_repo) {
        catalog.remove_snapshot(gone)?;
    }
    for new in in_repo.difference(&known) {
        let snap = repo.read_snapshot(new)?;
        catalog.put_snapshot(new, &snap)?;
    }
    Ok(catalog.snapshots()?)
}

/// Reads the blobs of a stream (tree or refs) in order, handing each to `f`.
pub fn read_stream(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    ids: &[BlobId],
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    for id in ids {
        let loc = blobs
            .get(id)
            .ok_or_else(|| crate::repo::RepoError::Corrupt {
                object: format!("blob {}", id.short()),
                reason: "missing from the index".into(),
            })?;
        let data = repo.read_blob(&loc.pack, &loc.entry)?;
        f(&data)?;
    }
    Ok(())
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

/// The blob ids a snapshot references (its refs stream).
pub fn snapshot_refs(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
) -> Result<Vec<BlobId>> {
    let mut out = Vec::new();
    let mut rest: Vec<u8> = Vec::new();
    read_stream(repo, blobs, &snap.refs, |data| {
        rest.extend_from_slice(data);
        let whole = rest.len() / 32 * 32;
        out.extend(
            rest[..whole]
                .chunks_exact(32)
                .map(|c| BlobId(c.try_into().unwrap_or([0; 32]))),
        );
        rest.drain(..whole);
        Ok(())
    })?;
    if !rest.is_empty() {
        return Err(crate::repo::RepoError::Corrupt {
            object: "snapshot reference list".into(),
            reason: "length is not a multiple of 32".into(),
        }
        .into());
    }
    Ok(out)
}
