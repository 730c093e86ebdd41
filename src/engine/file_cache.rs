//! The file cache as a backup reads it: beside the walk, in walk order, a
//! bounded number of rows ahead, never the whole cache in memory (a
//! million files' rows are some 200 MB).

use crate::catalog::{CachedFile, FileCacheStream};
use crate::repo::tree::walk_order;
use std::cmp::Ordering;

/// Where a backup is in the file cache.
pub(super) struct CacheCursor {
    stream: Option<FileCacheStream>,
    peeked: Option<(Vec<u8>, CachedFile)>,
    /// The run's sources: a row below one of them that the walk passed by
    /// is a file gone (or not looked up), and is noted in `unseen`.
    sources: Vec<Vec<u8>>,
    unseen: Vec<Vec<u8>>,
}

impl CacheCursor {
    /// A cursor on `stream` (None: an empty cache).
    pub(super) fn new(stream: Option<FileCacheStream>, sources: Vec<Vec<u8>>) -> CacheCursor {
        CacheCursor {
            stream,
            peeked: None,
            sources,
            unseen: Vec::new(),
        }
    }

    /// The cache's row for `path`. Looked up in walk order, each row is met
    /// once; a path out of that order (behind the cursor) is a miss: that
    /// file is read again, which costs time, never a wrong backup.
    pub(super) fn take(&mut self, path: &[u8]) -> Option<CachedFile> {
        loop {
            let row = match self.peeked.take() {
                Some(row) => row,
                None => self.stream.as_mut()?.next_row()?,
            };
            match walk_order(&row.0, path) {
                Ordering::Less => self.pass(row.0),
                Ordering::Equal => return Some(row.1),
                Ordering::Greater => {
                    self.peeked = Some(row);
                    return None;
                }
            }
        }
    }

    fn pass(&mut self, path: Vec<u8>) {
        if self
            .sources
            .iter()
            .any(|s| super::backup::is_under(&path, s))
        {
            self.unseen.push(path);
        }
    }

    /// Reads the rest of the cache. Returns the rows below the sources that
    /// no lookup took, and why the cache was read only in part, if it was.
    pub(super) fn finish(mut self) -> (Vec<Vec<u8>>, Option<String>) {
        if let Some(row) = self.peeked.take() {
            self.pass(row.0);
        }
        let mut error = None;
        if let Some(mut stream) = self.stream.take() {
            while let Some(row) = stream.next_row() {
                self.pass(row.0);
            }
            error = stream.finish().err().map(|e| e.to_string());
        }
        (self.unseen, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::catalog::sample_row as file;

    #[test]
    fn lookups_in_walk_order_find_their_rows_and_the_rest_is_unseen() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.db"), "r").unwrap();
        let rows: [(&[u8], u64); 6] = [
            (b"srv/a", 1),
            (b"srv/b", 2),
            (b"srv/gone", 3),
            (b"srv/x/y", 4),
            (b"srv-old/z", 5),
            (b"other/q", 6),
        ];
        let files: Vec<(Vec<u8>, CachedFile)> =
            rows.iter().map(|(p, n)| (p.to_vec(), file(*n))).collect();
        cat.save_files(files.iter().map(|(p, f)| (p.as_slice(), f)))
            .unwrap();
        let stream = cat.file_cache_stream().unwrap();
        let mut c = CacheCursor::new(Some(stream), vec![b"srv".to_vec(), b"srv-old".to_vec()]);
        assert_eq!(c.take(b"srv/a").map(|f| f.size), Some(1));
        assert_eq!(c.take(b"srv/aa"), None, "not cached");
        assert_eq!(c.take(b"srv/b").map(|f| f.size), Some(2));
        assert_eq!(c.take(b"srv/x/y").map(|f| f.size), Some(4));
        // Behind the cursor: a miss (the file is read again), never a wrong row.
        assert_eq!(c.take(b"srv/b"), None);
        let (unseen, error) = c.finish();
        assert_eq!(error, None);
        // Below the sources and not looked up; another profile's row stays.
        assert_eq!(unseen, vec![b"srv/gone".to_vec(), b"srv-old/z".to_vec()]);
    }

    #[test]
    fn no_cache_is_a_miss_for_every_file() {
        let mut c = CacheCursor::new(None, vec![Vec::new()]);
        assert_eq!(c.take(b"a"), None);
        assert_eq!(c.finish(), (Vec::new(), None));
    }
}
