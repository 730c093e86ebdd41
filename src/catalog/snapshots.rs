//! The snapshots read so far.

use super::*;

/// A row whose JSON and host are what a backup writes: any other is skipped
/// by the heads and their count, as [`Catalog::snapshots`] skips it.
const WHOLE_HEAD: &str = "json_valid(json) AND json_type(json, '$.host') = 'text'";

/// A snapshot as [`Catalog::snapshot_heads`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotHead {
    pub id: SnapshotId,
    pub time: jiff::Timestamp,
    pub host: String,
    /// When storage recorded writing it, as in [`Snapshot::stored`].
    pub stored: Option<jiff::Timestamp>,
}

/// The writes, on the catalog's connection or inside a [`Tx`].
pub(super) fn insert(conn: &Connection, id: &SnapshotId, snap: &Snapshot) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO snapshots (id, time, json, stored) VALUES (?1, ?2, ?3, ?4)",
        params![
            &id.0[..],
            crate::time::rfc3339_offset(snap.time),
            serde_json::to_string(snap).unwrap_or_default(),
            snap.stored.map(crate::time::rfc3339_offset)
        ],
    )
    .map(|_| ())
}

/// Records when storage wrote a snapshot the catalog already holds.
pub(super) fn set_stored(
    conn: &Connection,
    id: &SnapshotId,
    stored: jiff::Timestamp,
) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE snapshots SET stored = ?2 WHERE id = ?1",
        params![&id.0[..], crate::time::rfc3339_offset(stored)],
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

    /// The snapshots whose storage time is not recorded yet (a backup
    /// records its snapshot before any listing showed it).
    pub fn snapshots_unstamped(&self) -> Result<HashSet<SnapshotId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM snapshots WHERE stored IS NULL")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    /// The snapshots [`Catalog::snapshot_heads`] reads, counted.
    pub fn snapshot_count(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row(
                &format!("SELECT COUNT(*) FROM snapshots WHERE {WHOLE_HEAD}"),
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Every snapshot's time, host and storage time, sorted as
    /// [`Catalog::snapshots`]: what a survey of the whole history needs,
    /// read without the file-list ids each snapshot carries (those grow
    /// with the server: a thousand or more ids each at a million files).
    pub fn snapshot_heads(&self) -> Result<Vec<SnapshotHead>, CatalogError> {
        let mut out = Vec::new();
        self.each_row(
            &format!(
                "SELECT id, time, CASE WHEN {WHOLE_HEAD} THEN json_extract(json, '$.host') END,
                 stored FROM snapshots ORDER BY time, id"
            ),
            [],
            |r| {
                let id = id32(r.get(0)?);
                let time = crate::time::parse(&r.get::<_, String>(1)?).ok();
                let host: Option<String> = r.get(2)?;
                let stored: Option<String> = r.get(3)?;
                if let (Some(id), Some(time), Some(host)) = (id, time, host) {
                    out.push(SnapshotHead {
                        id: SnapshotId(id),
                        time,
                        host,
                        stored: stored.and_then(|t| crate::time::parse(&t).ok()),
                    });
                }
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Snapshots sorted by time, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>, CatalogError> {
        let mut out = Vec::new();
        self.each_row(
            "SELECT id, json, stored FROM snapshots ORDER BY time, id",
            [],
            |r| {
                let json: String = r.get(1)?;
                let stored: Option<String> = r.get(2)?;
                if let (Some(id), Ok(mut s)) =
                    (id32(r.get(0)?), serde_json::from_str::<Snapshot>(&json))
                {
                    s.stored = stored.and_then(|t| crate::time::parse(&t).ok());
                    out.push((SnapshotId(id), s));
                }
                Ok(())
            },
        )?;
        Ok(out)
    }
}
