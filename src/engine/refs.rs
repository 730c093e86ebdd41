//! Reference lists: the blob ids each snapshot needs, read once per
//! distinct blob through the catalog's cache.

use super::{is_bad_object, read_blobs};
use crate::Result;
use crate::catalog::{BlobMap, Catalog};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, SnapshotId};
use crate::repo::snapshot::Snapshot;
use std::collections::{HashMap, HashSet};

/// The blob ids a snapshot references (its refs stream).
pub fn snapshot_refs(repo: &Repository, blobs: &BlobMap, snap: &Snapshot) -> Result<Vec<BlobId>> {
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
    blobs: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    mut f: impl FnMut(usize, RefsPiece, Option<&[BlobId]>) -> Result<()>,
) -> Result<Vec<(usize, crate::Error)>> {
    prefetch(repo, catalog, blobs, snaps)?;
    let mut w = RefsWalker {
        repo,
        catalog,
        blobs,
        seen: HashSet::new(),
        loaded: HashMap::new(),
    };
    let mut failed = Vec::new();
    for (n, (sid, s)) in snaps.iter().enumerate() {
        // The callback's own errors stop the walk; the list's only this snapshot.
        let mut walk = |piece, ids: Option<&[BlobId]>| f(n, piece, ids).map_err(Stop::Caller);
        match w.walk(sid, s, &mut walk) {
            Ok(()) => {}
            Err(Stop::Caller(e)) => return Err(e),
            Err(Stop::List(e)) if is_bad_object(&e) => failed.push((n, e)),
            Err(Stop::List(e)) => return Err(e),
        }
    }
    Ok(failed)
}

/// Blobs of the lists that the catalog does not hold yet are fetched
/// together, several in flight and neighbours sharing reads, not one request
/// after another. One that cannot be read is left to the walk, which
/// reports it.
fn prefetch(
    repo: &Repository,
    catalog: &Catalog,
    blobs: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
) -> Result<()> {
    let cached = catalog.refs_blob_ids()?;
    let mut fetch: Vec<BlobId> = snaps
        .iter()
        .flat_map(|(_, s)| s.refs.iter())
        .filter(|id| !cached.contains(id) && blobs.contains_key(id))
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    fetch.sort_by_key(|id| blobs.get(id).map(|l| (l.pack.0, l.entry.offset)));
    for (id, data) in fetch.iter().zip(read_blobs(repo, blobs, &fetch)) {
        if let Ok(data) = data {
            catalog.put_refs_blob(id, &data)?;
        }
    }
    Ok(())
}

/// Why a snapshot's walk stopped: the caller's callback failed (the whole
/// walk stops), or the snapshot's list could not be read (only it does).
enum Stop {
    Caller(crate::Error),
    List(crate::Error),
}

impl From<crate::Error> for Stop {
    fn from(e: crate::Error) -> Stop {
        Stop::List(e)
    }
}

impl From<crate::catalog::CatalogError> for Stop {
    fn from(e: crate::catalog::CatalogError) -> Stop {
        Stop::List(e.into())
    }
}

struct RefsWalker<'a> {
    repo: &'a Repository,
    catalog: &'a Catalog,
    blobs: &'a BlobMap,
    /// Pieces handed out with their ids already.
    seen: HashSet<RefsPiece>,
    /// The blobs of the snapshot at hand and its neighbour.
    loaded: HashMap<BlobId, std::sync::Arc<Vec<u8>>>,
}

impl RefsWalker<'_> {
    fn load(&mut self, id: &BlobId, sid: &SnapshotId) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Some(d) = self.loaded.get(id) {
            return Ok(d.clone());
        }
        let data = match self.catalog.refs_blob(id)? {
            Some(d) => d,
            None => {
                let loc = self.blobs.get(id).ok_or_else(|| missing_blob(sid))?;
                let d = self.repo.read_blob(&loc.pack, &loc.entry)?;
                self.catalog.put_refs_blob(id, &d)?;
                d
            }
        };
        // Only the blobs of the snapshot at hand and its neighbour are needed
        // again (and a hostile list's blobs can be 16 MiB each: bounded in bytes too).
        let held: usize = self.loaded.values().map(|d| d.len()).sum();
        if self.loaded.len() > 64 || held > 64 << 20 {
            self.loaded.clear();
        }
        let data = std::sync::Arc::new(data);
        self.loaded.insert(*id, data.clone());
        Ok(data)
    }

    /// Hands every piece of one snapshot's list to `f`: each blob at its
    /// alignment, and each id that straddles two blobs.
    fn walk(
        &mut self,
        sid: &SnapshotId,
        s: &Snapshot,
        f: &mut impl FnMut(RefsPiece, Option<&[BlobId]>) -> std::result::Result<(), Stop>,
    ) -> std::result::Result<(), Stop> {
        let lengths = s
            .refs
            .iter()
            .map(|id| {
                let loc = self.blobs.get(id).ok_or_else(|| missing_blob(sid))?;
                Ok(loc.entry.raw_length)
            })
            .collect::<Result<Vec<u64>>>()?;
        let mut offset = 0u64;
        for (i, (id, &len)) in s.refs.iter().zip(&lengths).enumerate() {
            let align = offset % 32;
            let piece = RefsPiece::Inner(*id, align);
            if self.seen.contains(&piece) {
                f(piece, None)?;
            } else {
                let data = self.load(id, sid)?;
                if data.len() as u64 != len {
                    let why = "a reference blob's length differs from the index";
                    return Err(corrupt_refs(sid, why).into());
                }
                let head = ((32 - align) % 32) as usize;
                f(piece, Some(&to_ids(&data[head.min(data.len())..])))?;
                // Seen once handed out whole: a piece that failed is tried again.
                self.seen.insert(piece);
            }
            let end_align = (offset + len) % 32;
            if end_align != 0
                && let Some(next) = s.refs.get(i + 1)
            {
                let piece = RefsPiece::Straddle(*id, *next, end_align);
                if self.seen.contains(&piece) {
                    f(piece, None)?;
                } else {
                    let (a, b) = (self.load(id, sid)?, self.load(next, sid)?);
                    let (tail, need) = (end_align as usize, 32 - end_align as usize);
                    if a.len() < tail || b.len() < need {
                        return Err(corrupt_refs(sid, "its reference list is cut short").into());
                    }
                    let mut joined = a[a.len() - tail..].to_vec();
                    joined.extend_from_slice(&b[..need]);
                    self.seen.insert(piece);
                    f(piece, Some(&to_ids(&joined)))?;
                }
            }
            offset += len;
        }
        if !offset.is_multiple_of(32) {
            let why = "its reference list is not a whole number of ids";
            return Err(corrupt_refs(sid, why).into());
        }
        Ok(())
    }
}

fn missing_blob(sid: &SnapshotId) -> crate::Error {
    corrupt_refs(
        sid,
        "a blob of its reference list is missing from the index; run `coffer check`",
    )
}

fn to_ids(bytes: &[u8]) -> Vec<BlobId> {
    bytes
        .chunks_exact(32)
        .map(|c| BlobId(c.try_into().unwrap_or([0; 32])))
        .collect()
}
