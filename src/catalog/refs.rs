//! Decoded reference-list blobs: they never change, so they are kept.

use super::*;

/// The write of a cached reference-list blob (here or in a [`Tx`]).
pub(super) fn insert(conn: &Connection, id: &BlobId, data: &[u8]) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO refs (id, data) VALUES (?1, ?2)",
        params![&id.0[..], data],
    )
    .map(|_| ())
}

impl Catalog {
    /// A cached reference-list blob (plaintext), if this catalog has read it.
    pub fn refs_blob(&self, id: &BlobId) -> Result<Option<Vec<u8>>, CatalogError> {
        self.conn
            .query_row("SELECT data FROM refs WHERE id = ?1", [&id.0[..]], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The reference-list blobs the catalog holds.
    pub fn refs_blob_ids(&self) -> Result<HashSet<BlobId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM refs")?
            .into_iter()
            .map(BlobId)
            .collect())
    }

    /// Caches a reference-list blob: they never change, so prune reads each once.
    pub fn put_refs_blob(&self, id: &BlobId, data: &[u8]) -> Result<(), CatalogError> {
        insert(&self.conn, id, data).map_err(|e| self.err(e))
    }

    /// Drops cached reference blobs no longer in the index.
    pub fn trim_refs_cache(&self) -> Result<(), CatalogError> {
        let indexed = self.blobs()?;
        let mut st = self
            .conn
            .prepare("DELETE FROM refs WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        for id in self.refs_blob_ids()? {
            if !indexed.contains_key(&id) {
                st.execute([&id.0[..]]).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }
}
