//! The read pipeline: blobs and file lists read through ranged reads that
//! neighbours share ([`coalesce`]), several in flight.

use crate::Result;
use crate::catalog::{BlobLocation, BlobMap};
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::snapshot::Snapshot;
use crate::repo::store::Read;
use std::collections::HashMap;

/// Reads the blobs of a stream (tree or refs) in order, handing each to `f`.
pub fn read_stream(
    repo: &Repository,
    blobs: &BlobMap,
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
/// Neighbours in the same pack share a read ([`read_span`]), whatever
/// their order there: a file list written in one piece is fetched in a
/// few requests. A shared
/// read that fails is retried blob by blob, so every intact blob is still
/// read. A blob missing from the index ends the stream with an error at
/// its place.
pub fn read_blobs<'a>(
    repo: &'a Repository,
    blobs: &BlobMap,
    ids: &[BlobId],
) -> impl Iterator<Item = Result<Vec<u8>>> + 'a {
    let locs: Vec<BlobLocation> = ids.iter().map_while(|id| blobs.get(id)).collect();
    let missing = ids.get(locs.len()).map(|id| {
        Err(crate::repo::RepoError::Corrupt {
            object: format!("blob {}", id.short()),
            reason: "missing from the index".into(),
        }
        .into())
    });
    let (gap, max) = read_span(&repo.store);
    let mut runs: Vec<(Read, u64, Vec<BlobLocation>)> = Vec::new();
    for same_pack in locs.chunk_by(|a, b| a.pack == b.pack) {
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
    blobs: &BlobMap,
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
    blobs: &BlobMap,
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
    let index = parse_index(&index_data.unwrap_or_default()).map_err(|m| corrupt(m.to_string()))?;
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
        let (mut lo, mut hi) = (start, start.saturating_add(length));
        let mut j = i + 1;
        // Items need not come in offset order (a file list's first blob may
        // be stored after the rest): a run is any stretch of neighbours,
        // before or after, that one read of at most `max` covers.
        while let Some((offset, length)) = items.get(j).map(&span) {
            let end = offset.saturating_add(length);
            let near = offset <= hi.saturating_add(gap) && end.saturating_add(gap) >= lo;
            if !near || hi.max(end) - lo.min(offset) > max {
                break;
            }
            (lo, hi) = (lo.min(offset), hi.max(end));
            j += 1;
        }
        out.push(Run {
            items: i..j,
            offset: lo,
            length: hi - lo,
        });
        i = j;
    }
    out
}

/// The index of the last of `lists` that names each blob: a reader going
/// through a history's lists in order holds what it keeps of a blob (read,
/// parsed) until then, and no longer.
pub(super) fn last_uses<'a>(lists: impl Iterator<Item = &'a [BlobId]>) -> HashMap<BlobId, usize> {
    let mut last = HashMap::new();
    for (n, ids) in lists.enumerate() {
        for id in ids {
            last.insert(*id, n);
        }
    }
    last
}

#[cfg(test)]
mod coalesce_tests {
    use super::coalesce;

    fn runs(items: &[(u64, u64)], gap: u64, max: u64) -> Vec<(usize, usize, u64, u64)> {
        coalesce(items, |i| *i, gap, max)
            .into_iter()
            .map(|r| (r.items.start, r.items.end, r.offset, r.length))
            .collect()
    }

    #[test]
    fn a_list_whose_first_blob_is_stored_last_is_one_read() {
        // The first blob lies after the rest (written last), as a file
        // list's can: within the gap a read bridges, one read covers them
        // all, the blobs sliced in list order.
        let items = [(900, 100), (0, 300), (300, 300), (600, 300)];
        assert_eq!(runs(&items, 1000, 4096), [(0, 4, 0, 1000)]);
        // Farther than the gap: the first is read alone, the rest together.
        assert_eq!(runs(&items, 0, 4096), [(0, 1, 900, 100), (1, 4, 0, 900)]);
        // In order, as before.
        let sorted = [(0, 300), (300, 300), (600, 300), (900, 100)];
        assert_eq!(runs(&sorted, 0, 4096), [(0, 4, 0, 1000)]);
    }

    #[test]
    fn far_or_too_wide_neighbours_start_a_new_read() {
        let items = [(5000, 100), (0, 100)];
        assert_eq!(runs(&items, 1000, 10_000).len(), 2, "too far apart");
        let items = [(0, 600), (600, 600)];
        assert_eq!(runs(&items, 0, 1000).len(), 2, "wider than max");
        assert!(runs(&[], 0, 1000).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_uses_names_the_last_list_of_each_blob() {
        let (a, b, c) = (BlobId([1; 32]), BlobId([2; 32]), BlobId([3; 32]));
        let lists = [vec![a, b], vec![b], vec![c, a], vec![]];
        let last = last_uses(lists.iter().map(Vec::as_slice));
        assert_eq!(last, HashMap::from([(a, 2), (b, 1), (c, 2)]));
    }
}
