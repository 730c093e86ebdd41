//! What reads found: snapshots verified whole, damage records, packs
//! checked sound after their index was written.

use super::*;

/// The writes, on the catalog's connection or inside a [`Tx`].
pub(super) fn insert_damage(
    conn: &Connection,
    id: &[u8; 32],
    record: &DamageRecord,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO damage (id, json) VALUES (?1, ?2)",
        params![&id[..], serde_json::to_string(record).unwrap_or_default()],
    )
    .map(|_| ())
}

pub(super) fn delete_damage(conn: &Connection, id: &[u8; 32]) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM damage WHERE id = ?1", [&id[..]])
        .map(|_| ())
}

/// Replaces the verified set with `ids`, verified now.
pub(super) fn replace_verified(conn: &Connection, ids: &[SnapshotId]) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM verified", [])?;
    let mut st =
        conn.prepare("INSERT OR REPLACE INTO verified (snapshot, time) VALUES (?1, ?2)")?;
    let now = crate::time::rfc3339_offset(jiff::Timestamp::now());
    for id in ids {
        st.execute(params![&id.0[..], now])?;
    }
    Ok(())
}

impl Catalog {
    /// Snapshots whose every blob `check --read-data` decrypted and verified.
    pub fn verified_snapshots(&self) -> Result<HashSet<SnapshotId>, CatalogError> {
        Ok(self
            .ids("SELECT snapshot FROM verified")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    /// Records that `check --read-data` verified these snapshots now; forgets
    /// earlier verdicts on the others (they were not verified this time).
    pub fn set_verified(&mut self, ids: &[SnapshotId]) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.set_verified(ids)?;
        tx.commit()
    }

    /// The damage records this catalog has read, by object id.
    pub fn damage_records(&self) -> Result<Vec<([u8; 32], DamageRecord)>, CatalogError> {
        let mut out = Vec::new();
        self.each_row("SELECT id, json FROM damage", [], |r| {
            let json: String = r.get(1)?;
            if let (Some(id), Ok(rec)) = (id32(r.get(0)?), serde_json::from_str(&json)) {
                out.push((id, rec));
            }
            Ok(())
        })?;
        Ok(out)
    }

    pub fn put_damage(&self, id: &[u8; 32], record: &DamageRecord) -> Result<(), CatalogError> {
        insert_damage(&self.conn, id, record).map_err(|e| self.err(e))
    }

    pub fn remove_damage(&self, id: &[u8; 32]) -> Result<(), CatalogError> {
        delete_damage(&self.conn, id).map_err(|e| self.err(e))
    }

    /// Packs this machine read whole and found to hash to their names, with
    /// the size and upload time storage listed for them then.
    pub fn sound_packs(&self) -> Result<HashMap<PackId, (u64, String)>, CatalogError> {
        let mut out = HashMap::new();
        self.each_row("SELECT id, size, modified FROM sound_packs", [], |r| {
            if let Some(id) = id32(r.get(0)?) {
                out.insert(PackId(id), (r.get::<_, i64>(1)? as u64, r.get(2)?));
            }
            Ok(())
        })?;
        Ok(out)
    }

    pub fn put_sound_pack(
        &self,
        id: &PackId,
        size: u64,
        modified: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO sound_packs (id, size, modified) VALUES (?1, ?2, ?3)",
                params![&id.0[..], size as i64, modified],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
