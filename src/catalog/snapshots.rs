//! The snapshots read so far.

use super::*;

/// The writes, on the catalog's connection or inside a [`Tx`].
pub(super) fn insert(conn: &Connection, id: &SnapshotId, snap: &Snapshot) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO snapshots (id, time, json) VALUES (?1, ?2, ?3)",
        params![
            &id.0[..],
            crate::time::rfc3339_offset(snap.time),
            serde_json::to_string(snap).unwrap_or_default()
        ],
    )
    .map(|_| ())
}

pub(super) fn delete(conn: &Connection, id: &SnapshotId) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
        .map(|_| ())
}

impl Catalog {
    pub fn put_snapshot(&self, id: &SnapshotId, snap: &Snapshot) -> Result<(), CatalogError> {
        insert(&self.conn, id, snap).map_err(|e| self.err(e))
    }

    pub fn snapshot_ids(&self) -> Result<HashSet<SnapshotId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM snapshots")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), CatalogError> {
        delete(&self.conn, id).map_err(|e| self.err(e))
    }

    /// Snapshots sorted by time, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>, CatalogError> {
        let mut out = Vec::new();
        self.each_row(
            "SELECT id, json FROM snapshots ORDER BY time, id",
            [],
            |r| {
                let json: String = r.get(1)?;
                if let (Some(id), Ok(s)) = (id32(r.get(0)?), serde_json::from_str(&json)) {
                    out.push((SnapshotId(id), s));
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}
