//! Where every blob is: the index objects read so far, by pack and blob.

use super::*;

/// Where a blob lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub entry: PackEntry,
}

impl BlobLocation {
    /// Every blob an index object lists, where it is.
    pub fn all_in(index: &IndexFile) -> impl Iterator<Item = BlobLocation> + '_ {
        index.packs.iter().flat_map(|p| {
            p.blobs
                .iter()
                .map(|&entry| BlobLocation { pack: p.id, entry })
        })
    }

    /// Lays an index object's blobs over a blob map: of two objects that
    /// list a blob, the later one says where it is, as in [`Catalog::blobs`],
    /// unless only the earlier copy is `usable` (a backup stored a blob
    /// again because its first copy was lost: the new one must win, in
    /// whatever order the objects are read).
    pub fn lay_over(map: &mut BlobMap, index: &IndexFile, usable: &dyn Fn(&BlobLocation) -> bool) {
        for l in Self::all_in(index) {
            l.put(map, usable);
        }
    }

    /// Puts this copy in the map, unless the map's copy is usable and this one is not.
    fn put(self, map: &mut BlobMap, usable: &dyn Fn(&BlobLocation) -> bool) {
        map.insert_unless(self, usable);
    }
}

/// Bytes of one blob in an index row: id, kind, offset, length, raw length.
pub(super) const ROW_BLOB: usize = 32 + 1 + 8 + 8 + 8;

/// An index object as the catalog stores it, one row per object: for each
/// pack its id and blob count, then its blobs at [`ROW_BLOB`] bytes each.
/// One row, not one per blob, because a new machine's catalog takes in the
/// whole index at once, and SQLite spends more on a row than on its bytes.
pub(super) fn encode_index(index: &IndexFile) -> Vec<u8> {
    let n: usize = index
        .packs
        .iter()
        .map(|p| 36 + p.blobs.len() * ROW_BLOB)
        .sum();
    let mut out = Vec::with_capacity(n);
    for p in &index.packs {
        out.extend_from_slice(&p.id.0);
        out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
        for b in &p.blobs {
            out.extend_from_slice(&b.id.0);
            out.push(b.kind.code() as u8);
            for v in [b.offset, b.length, b.raw_length] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// Lays the blobs of an encoded index row over `map` (a later row wins).
pub(super) fn decode_index(
    mut b: &[u8],
    map: &mut BlobMap,
    usable: &dyn Fn(&BlobLocation) -> bool,
) -> Option<()> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = b.split_at_checked(n)?;
        *b = rest;
        Some(head)
    }
    let u64_at =
        |c: &[u8], at: usize| u64::from_le_bytes(c[at..at + 8].try_into().unwrap_or([0; 8]));
    while !b.is_empty() {
        let pack = PackId(take(&mut b, 32)?.try_into().ok()?);
        let count = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        let blobs = take(&mut b, count.checked_mul(ROW_BLOB)?)?;
        for c in blobs.chunks_exact(ROW_BLOB) {
            let id = BlobId(c[..32].try_into().ok()?);
            let entry = PackEntry {
                id,
                kind: BlobKind::from_code(i64::from(c[32]))?,
                offset: u64_at(c, 33),
                length: u64_at(c, 41),
                raw_length: u64_at(c, 49),
            };
            BlobLocation { pack, entry }.put(map, usable);
        }
    }
    Some(())
}

/// The writes of an index object's rows (two tables): inside a [`Tx`] only.
pub(super) fn insert(conn: &Connection, id: &IndexId, index: &IndexFile) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO indexes (id, blobs) VALUES (?1, ?2)",
        params![&id.0[..], encode_index(index)],
    )?;
    let mut pk =
        conn.prepare("INSERT OR REPLACE INTO packs (id, size, idx) VALUES (?1, ?2, ?3)")?;
    for p in &index.packs {
        pk.execute(params![&p.id.0[..], p.size as i64, &id.0[..]])?;
    }
    Ok(())
}

pub(super) fn delete(conn: &Connection, id: &IndexId) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM packs WHERE idx = ?1", [&id.0[..]])?;
    conn.execute("DELETE FROM indexes WHERE id = ?1", [&id.0[..]])?;
    Ok(())
}

impl Catalog {
    pub fn known_indexes(&self) -> Result<HashSet<IndexId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM indexes")?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Records an index object and the packs it lists, in one transaction.
    pub fn add_index(&mut self, id: &IndexId, index: &IndexFile) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.add_index(id, index)?;
        tx.commit()
    }

    /// Forgets an index object (it was removed from the repository).
    pub fn remove_index(&mut self, id: &IndexId) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.remove_index(id)?;
        tx.commit()
    }

    /// Every blob the index objects list and where it is. A blob two objects
    /// list (in two packs) is where the one recorded later says.
    pub fn blobs(&self) -> Result<BlobMap, CatalogError> {
        self.blobs_preferring(&|_| true)
    }

    /// [`Catalog::blobs`], where a usable copy wins over one that is not.
    pub fn blobs_preferring(
        &self,
        usable: &dyn Fn(&BlobLocation) -> bool,
    ) -> Result<BlobMap, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT blobs FROM indexes ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        // Sized once (at most one entry per stored row's bytes): growing a
        // map of every blob in the history rehashes it again and again.
        let bytes: i64 = self
            .conn
            .query_row(
                "SELECT COALESCE(SUM(length(blobs)), 0) FROM indexes",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut out = BlobMap::with_capacity(usize::try_from(bytes).unwrap_or(0) / ROW_BLOB);
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let data = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(|e| self.err(e))?;
            decode_index(data, &mut out, usable).ok_or_else(|| CatalogError::Damaged {
                path: self.path.clone(),
                what: "an index record".into(),
            })?;
        }
        Ok(out)
    }

    /// Every pack the index knows, with its size.
    pub fn packs(&self) -> Result<HashMap<PackId, u64>, CatalogError> {
        let mut out = HashMap::new();
        self.each_row("SELECT DISTINCT id, size FROM packs", [], |r| {
            if let Some(id) = id32(r.get(0)?) {
                out.insert(PackId(id), r.get::<_, i64>(1)? as u64);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every index object that lists each pack (usually one).
    pub fn pack_indexes(&self) -> Result<HashMap<PackId, Vec<IndexId>>, CatalogError> {
        let mut out: HashMap<PackId, Vec<IndexId>> = HashMap::new();
        self.each_row("SELECT id, idx FROM packs", [], |r| {
            if let (Some(p), Some(i)) = (id32(r.get(0)?), id32(r.get(1)?)) {
                out.entry(PackId(p)).or_default().push(IndexId(i));
            }
            Ok(())
        })?;
        Ok(out)
    }
}
