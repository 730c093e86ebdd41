//! Writes that change several rows or tables together: all of them or none.

use super::*;

/// A write transaction (SQLite `BEGIN IMMEDIATE`): what is written through
/// it is seen by others only after [`Tx::commit`]; dropped uncommitted (an
/// error, a panic, an early return), it is rolled back and leaves nothing.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
}

impl Catalog {
    /// Starts a write transaction; the catalog is borrowed until it ends.
    pub fn begin(&mut self) -> Result<Tx<'_>, CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| CatalogError::sqlite(self.path.clone(), e))?;
        Ok(Tx {
            tx,
            path: &self.path,
        })
    }
}

impl Tx<'_> {
    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::sqlite(self.path.to_path_buf(), source)
    }

    /// Makes everything written through this transaction visible, at once.
    pub fn commit(self) -> Result<(), CatalogError> {
        let path = self.path.to_path_buf();
        self.tx.commit().map_err(|e| CatalogError::sqlite(path, e))
    }

    /// Records an index object and the packs it lists.
    pub fn add_index(&self, id: &IndexId, index: &IndexFile) -> Result<(), CatalogError> {
        index::insert(&self.tx, id, index).map_err(|e| self.err(e))
    }

    /// Forgets an index object (it was removed from the repository).
    pub fn remove_index(&self, id: &IndexId) -> Result<(), CatalogError> {
        index::delete(&self.tx, id).map_err(|e| self.err(e))
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
        files::upsert(&self.tx, files).map_err(|e| self.err(e))
    }

    /// Deletes file-cache rows (files gone from the sources): one prepared
    /// statement, run once per row, so a backup without deletions runs none.
    pub fn forget_files<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), CatalogError> {
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
}
