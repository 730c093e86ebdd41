//! The file cache: what each file was at the last backup, so an unchanged
//! file is not read again.

use super::*;

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
    pub fn files(&self) -> Result<HashMap<Vec<u8>, CachedFile>, CatalogError> {
        let mut out = HashMap::new();
        let sql = "SELECT path, size, mtime, ctime, ino, content FROM files";
        self.each_row(sql, [], |r| {
            if let Some(content) = decode_extents(&r.get::<_, Vec<u8>>(5)?) {
                let file = CachedFile {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime: r.get(2)?,
                    ctime: r.get(3)?,
                    ino: r.get::<_, i64>(4)? as u64,
                    content,
                };
                out.insert(r.get(0)?, file);
            }
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
