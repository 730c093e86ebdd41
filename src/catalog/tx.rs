//! Writes that change several rows or tables together: all of them or none.

use super::*;

/// A write transaction (SQLite `BEGIN IMMEDIATE`): what is written through
/// it is seen by others only after [`Tx::commit`]; dropped uncommitted (an
/// error, a panic, an early return), it is rolled back and leaves nothing.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    conn: &'a Connection,
    path: &'a Path,
    /// File-cache rows were written: a backup or a rebuild, not a command
    /// that only reads (which must make no fsync, see `Catalog::connect`).
    wrote_files: std::cell::Cell<bool>,
}

impl Catalog {
    /// Starts a write transaction; the catalog is borrowed until it ends.
    pub fn begin(&mut self) -> Result<Tx<'_>, CatalogError> {
        // Unchecked only in that it takes a shared borrow, kept for the
        // checkpoint after the commit; `&mut self` still makes it the only one.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| CatalogError::sqlite(self.path.clone(), e))?;
        Ok(Tx {
            tx,
            conn: &self.conn,
            path: &self.path,
            wrote_files: std::cell::Cell::new(false),
        })
    }
}

impl Tx<'_> {
    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::sqlite(self.path.to_path_buf(), source)
    }

    /// Makes everything written through this transaction visible, at once.
    /// A commit that wrote the file cache and leaves the WAL large (a
    /// backup of many new or changed files) folds the WAL into the database
    /// and cuts it to nothing (see `CHECKPOINT_WAL_BYTES`).
    pub fn commit(self) -> Result<(), CatalogError> {
        let (conn, path, wrote_files) = (self.conn, self.path, self.wrote_files.get());
        self.tx
            .commit()
            .map_err(|e| CatalogError::sqlite(path.to_path_buf(), e))?;
        let wal = std::fs::metadata(&Catalog::files_of(path)[1]);
        if wrote_files && wal.is_ok_and(|m| m.len() >= CHECKPOINT_WAL_BYTES) {
            truncate_wal(conn);
        }
        Ok(())
    }

    /// Records an index object and the packs it lists.
    pub fn add_index(&self, id: &IndexId, index: &IndexFile) -> Result<(), CatalogError> {
        index::insert(&self.tx, id, index).map_err(|e| self.err(e))
    }

    /// Forgets an index object (it was removed from the repository).
    pub fn remove_index(&self, id: &IndexId) -> Result<(), CatalogError> {
        index::delete(&self.tx, id).map_err(|e| self.err(e))
    }

    /// Caches a reference-list blob ([`Catalog::put_refs_blob`]).
    pub fn put_refs_blob(&self, id: &BlobId, data: &[u8]) -> Result<(), CatalogError> {
        refs::insert(&self.tx, id, data).map_err(|e| self.err(e))
    }

    pub fn put_snapshot(&self, id: &SnapshotId, snap: &Snapshot) -> Result<(), CatalogError> {
        snapshots::insert(&self.tx, id, snap).map_err(|e| self.err(e))
    }

    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), CatalogError> {
        snapshots::delete(&self.tx, id).map_err(|e| self.err(e))
    }

    /// Records when storage wrote a snapshot the catalog holds.
    pub fn set_snapshot_stored(
        &self,
        id: &SnapshotId,
        stored: jiff::Timestamp,
    ) -> Result<(), CatalogError> {
        snapshots::set_stored(&self.tx, id, stored).map_err(|e| self.err(e))
    }

    pub fn put_damage(&self, id: &[u8; 32], record: &DamageRecord) -> Result<(), CatalogError> {
        health::insert_damage(&self.tx, id, record).map_err(|e| self.err(e))
    }

    pub fn remove_damage(&self, id: &[u8; 32]) -> Result<(), CatalogError> {
        health::delete_damage(&self.tx, id).map_err(|e| self.err(e))
    }

    /// Records that these snapshots were verified now; forgets earlier
    /// verdicts on the others.
    pub fn set_verified(&self, ids: &[SnapshotId]) -> Result<(), CatalogError> {
        health::replace_verified(&self.tx, ids).map_err(|e| self.err(e))
    }

    /// Upserts file-cache rows.
    pub fn save_files<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a [u8], &'a CachedFile)>,
    ) -> Result<(), CatalogError> {
        self.wrote_files.set(true);
        files::upsert(&self.tx, files).map_err(|e| self.err(e))
    }

    /// Deletes file-cache rows (files gone from the sources): one prepared
    /// statement, run once per row, so a backup without deletions runs none.
    pub fn forget_files<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), CatalogError> {
        self.wrote_files.set(true);
        files::delete(&self.tx, paths).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::index::IndexedPack;

    fn index(pack: u8) -> IndexFile {
        IndexFile {
            packs: vec![IndexedPack {
                id: PackId([pack; 32]),
                size: 100,
                blobs: Vec::new(),
            }],
        }
    }

    fn file() -> CachedFile {
        CachedFile {
            size: 3,
            mtime: 1,
            ctime: 2,
            ino: 4,
            content: Vec::new(),
        }
    }

    /// Writes to three tables through one transaction: none is seen before
    /// the commit; a dropped transaction leaves none of them.
    #[test]
    fn a_dropped_transaction_leaves_nothing_and_a_committed_one_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut cat = Catalog::open(&path, "repo").unwrap();
        // A second connection, as another process (opened first: opening
        // writes the schema, which waits for a writer).
        let other = Catalog::open(&path, "repo").unwrap();
        let (ix, damage, f) = (IndexId([7; 32]), [9u8; 32], file());
        {
            let tx = cat.begin().unwrap();
            tx.add_index(&ix, &index(1)).unwrap();
            tx.put_damage(&damage, &DamageRecord::new("test")).unwrap();
            tx.save_files([(&b"a"[..], &f)]).unwrap();
            // Dropped here, uncommitted.
        }
        assert!(cat.known_indexes().unwrap().is_empty());
        assert!(cat.packs().unwrap().is_empty());
        assert!(cat.damage_records().unwrap().is_empty());
        assert!(cat.files().unwrap().is_empty());

        let tx = cat.begin().unwrap();
        tx.add_index(&ix, &index(1)).unwrap();
        tx.put_damage(&damage, &DamageRecord::new("test")).unwrap();
        tx.save_files([(&b"a"[..], &f)]).unwrap();
        // The other connection does not see it before the commit.
        assert!(other.known_indexes().unwrap().is_empty());
        tx.commit().unwrap();
        for c in [&cat, &other] {
            assert_eq!(c.known_indexes().unwrap(), HashSet::from([ix]));
            assert_eq!(c.packs().unwrap(), HashMap::from([(PackId([1; 32]), 100)]));
            assert_eq!(c.damage_records().unwrap().len(), 1);
            assert_eq!(c.files().unwrap().get(&b"a"[..]), Some(&f));
        }

        // A removal rolled back leaves the rows; committed, removes both tables'.
        {
            let tx = cat.begin().unwrap();
            tx.remove_index(&ix).unwrap();
            tx.remove_damage(&damage).unwrap();
        }
        assert_eq!(cat.known_indexes().unwrap().len(), 1);
        assert_eq!(cat.damage_records().unwrap().len(), 1);
        let tx = cat.begin().unwrap();
        tx.remove_index(&ix).unwrap();
        tx.remove_damage(&damage).unwrap();
        tx.commit().unwrap();
        assert!(cat.known_indexes().unwrap().is_empty() && cat.packs().unwrap().is_empty());
        assert!(cat.damage_records().unwrap().is_empty());
    }

    fn wal_len(path: &Path) -> u64 {
        std::fs::metadata(&Catalog::files_of(path)[1])
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// A file cache large enough that its commit leaves a WAL over
    /// `CHECKPOINT_WAL_BYTES`: 4,000 files of ten pieces each.
    fn many_files() -> Vec<(Vec<u8>, CachedFile)> {
        (0..4000u32)
            .map(|n| {
                let mut f = file();
                f.content = (0..10u8)
                    .map(|i| crate::repo::tree::Extent {
                        blob: crate::repo::ids::BlobId([i ^ n as u8; 32]),
                        offset: u64::from(n),
                        length: 10,
                    })
                    .collect();
                (format!("/srv/{n:06}").into_bytes(), f)
            })
            .collect()
    }

    /// A commit that writes much of the file cache leaves no WAL behind; one
    /// as large that does not write the file cache (as a command that only
    /// reads may sync many index objects) leaves the WAL alone.
    #[test]
    fn a_large_file_cache_commit_truncates_the_wal_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut cat = Catalog::open(&path, "repo").unwrap();
        let rows = many_files();
        let tx = cat.begin().unwrap();
        tx.save_files(rows.iter().map(|(p, f)| (p.as_slice(), f)))
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(wal_len(&path), 0);
        assert_eq!(cat.files().unwrap().len(), rows.len());

        let big = IndexFile {
            packs: vec![IndexedPack {
                id: PackId([1; 32]),
                size: 100,
                blobs: (0..40_000u32)
                    .map(|n| crate::repo::pack::PackEntry {
                        id: crate::repo::ids::BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes()),
                        kind: crate::repo::pack::BlobKind::Data,
                        offset: u64::from(n),
                        length: 1,
                        raw_length: 1,
                    })
                    .collect(),
            }],
        };
        let tx = cat.begin().unwrap();
        tx.add_index(&IndexId([3; 32]), &big).unwrap();
        tx.commit().unwrap();
        assert!(wal_len(&path) >= CHECKPOINT_WAL_BYTES, "{}", wal_len(&path));
    }

    /// The checkpoint does not wait for another process reading the
    /// catalog: the commit returns, the WAL stays until a later commit.
    #[test]
    fn the_checkpoint_does_not_wait_for_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut cat = Catalog::open(&path, "repo").unwrap();
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN;").unwrap();
        let _: i64 = reader
            .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
            .unwrap();
        let rows = many_files();
        let started = std::time::Instant::now();
        let tx = cat.begin().unwrap();
        tx.save_files(rows.iter().map(|(p, f)| (p.as_slice(), f)))
            .unwrap();
        tx.commit().unwrap();
        assert!(
            started.elapsed() < BUSY_TIMEOUT / 2,
            "{:?}",
            started.elapsed()
        );
        assert!(wal_len(&path) > 0);
        reader.execute_batch("COMMIT;").unwrap();
        // The next commit that writes the file cache folds it in.
        let tx = cat.begin().unwrap();
        tx.forget_files([rows[0].0.as_slice()]).unwrap();
        tx.commit().unwrap();
        assert_eq!(wal_len(&path), 0);
        assert_eq!(cat.files().unwrap().len(), rows.len() - 1);
    }
}
