//! The file cache: what each file was at the last backup, so an unchanged
//! file is not read again.

use super::*;

/// The file cache's table, named `name`. `WITHOUT ROWID`: the B-tree is keyed
/// by the path itself, so each path is stored once (a rowid table keeps a
/// second copy of every path in the index of its primary key: 2.1 of 5.7 MB
/// at 20,000 files). A row is the path, about 30 bytes of header and
/// numbers, and 48 bytes a piece of content: well within a page for
/// ordinary files; a file of thousands of pieces spills into overflow
/// pages, as it did before.
pub(super) fn table_sql(name: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (path BLOB PRIMARY KEY NOT NULL, size INTEGER NOT NULL,
             mtime INTEGER NOT NULL, ctime INTEGER NOT NULL, ino INTEGER NOT NULL,
             content BLOB NOT NULL) WITHOUT ROWID;"
    )
}

/// Version 6 to 7: the file cache moves into a `WITHOUT ROWID` table, rows
/// unchanged (the content encoding is the same), so the next backup still
/// skips unchanged files. One transaction: a catalog is either still version
/// 6 or wholly version 7. Copied in path order, the order of the new B-tree,
/// so its pages fill up. Returns false when another process migrated it
/// first (the version is read again under the write lock).
pub(super) fn migrate_from_6(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != 6 {
        return Ok(false);
    }
    tx.execute_batch(&format!(
        "{}
         INSERT INTO files_v7 (path, size, mtime, ctime, ino, content)
             SELECT path, size, mtime, ctime, ino, content FROM files
             WHERE path IS NOT NULL ORDER BY path;
         DROP TABLE files;
         ALTER TABLE files_v7 RENAME TO files;
         PRAGMA user_version = 7;",
        table_sql("files_v7")
    ))?;
    tx.commit()?;
    Ok(true)
}

/// What the file cache remembers of a file from an earlier backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedFile {
    pub size: u64,
    pub mtime: i64,
    pub ctime: i64,
    pub ino: u64,
    pub content: Vec<Extent>,
}

pub(super) fn encode_extents(ext: &[Extent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ext.len() * 48);
    for e in ext {
        out.extend_from_slice(&e.blob.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
    }
    out
}

pub(super) fn decode_extents(b: &[u8]) -> Option<Vec<Extent>> {
    if !b.len().is_multiple_of(48) {
        return None;
    }
    Some(
        b.chunks_exact(48)
            .map(|c| Extent {
                blob: BlobId(c[..32].try_into().unwrap_or([0; 32])),
                offset: u64::from_le_bytes(c[32..40].try_into().unwrap_or([0; 8])),
                length: u64::from_le_bytes(c[40..48].try_into().unwrap_or([0; 8])),
            })
            .collect(),
    )
}

/// A file-cache row (path, size, mtime, ctime, ino, content), or None.
fn decode_row(r: &rusqlite::Row) -> Option<(Vec<u8>, CachedFile)> {
    let file = CachedFile {
        size: r.get::<_, i64>(1).ok()? as u64,
        mtime: r.get(2).ok()?,
        ctime: r.get(3).ok()?,
        ino: r.get::<_, i64>(4).ok()? as u64,
        content: decode_extents(r.get_ref(5).ok()?.as_blob().ok()?)?,
    };
    Some((r.get(0).ok()?, file))
}

/// The write of file-cache rows, inside a [`Tx`].
pub(super) fn upsert<'a>(
    conn: &Connection,
    files: impl IntoIterator<Item = (&'a [u8], &'a CachedFile)>,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(
        "INSERT OR REPLACE INTO files (path, size, mtime, ctime, ino, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (p, f) in files {
        st.execute(params![
            p,
            f.size as i64,
            f.mtime,
            f.ctime,
            f.ino as i64,
            encode_extents(&f.content)
        ])?;
    }
    Ok(())
}

/// The deletion of file-cache rows, inside a [`Tx`].
pub(super) fn delete<'a>(
    conn: &Connection,
    paths: impl IntoIterator<Item = &'a [u8]>,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare("DELETE FROM files WHERE path = ?1")?;
    for p in paths {
        st.execute(params![p])?;
    }
    Ok(())
}

impl Catalog {
    /// The whole file cache. A row that does not decode (a column of the
    /// wrong type, content not whole pieces) is left out: a cache miss,
    /// that file is read again.
    pub fn files(&self) -> Result<HashMap<Vec<u8>, CachedFile>, CatalogError> {
        let mut out = HashMap::new();
        let sql = "SELECT path, size, mtime, ctime, ino, content FROM files";
        self.each_row(sql, [], |r| {
            out.extend(decode_row(r));
            Ok(())
        })?;
        Ok(out)
    }

    /// Upserts file-cache rows, in one transaction.
    pub fn save_files<'a>(
        &mut self,
        files: impl IntoIterator<Item = (&'a [u8], &'a CachedFile)>,
    ) -> Result<(), CatalogError> {
        let tx = self.begin()?;
        tx.save_files(files)?;
        tx.commit()
    }

    pub fn clear_files(&self) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM files", [])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}
