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

/// Version 6 to 7: the file cache moves into a `WITHOUT ROWID` table keyed
/// by [`key_of`] (the content encoding is the same), so the next backup
/// still skips unchanged files. One transaction: a catalog is either still
/// version 6 or wholly version 7. Returns false when another process
/// migrated it first (the version is read again under the write lock).
pub(super) fn migrate_from_6(conn: &mut Connection) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != 6 {
        return Ok(false);
    }
    tx.execute_batch(&table_sql("files_v7"))?;
    {
        let mut read = tx.prepare("SELECT path, size, mtime, ctime, ino, content FROM files")?;
        let mut write = tx.prepare(
            "INSERT OR REPLACE INTO files_v7 (path, size, mtime, ctime, ino, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            // A row without a usable path is a miss either way: left behind.
            let Ok(path) = r.get_ref(0)?.as_bytes() else {
                continue;
            };
            let key = key_of(path);
            let col = |i| r.get::<_, rusqlite::types::Value>(i);
            write.execute(params![key, col(1)?, col(2)?, col(3)?, col(4)?, col(5)?])?;
        }
    }
    tx.execute_batch(
        "DROP TABLE files;
         ALTER TABLE files_v7 RENAME TO files;
         PRAGMA user_version = 7;",
    )?;
    tx.commit()?;
    Ok(true)
}

/// The file cache's key for a path: each `/` a NUL byte (never in a name),
/// so the table's byte order is walk order (`a/b` before `a-b`, as the
/// walk takes `a` and its files before `a-b`), and a backup reads the
/// cache in the order it walks ([`FileCacheStream`]).
fn key_of(path: &[u8]) -> Vec<u8> {
    path.iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

/// The path of a file-cache key ([`key_of`]).
fn path_of(key: &[u8]) -> Vec<u8> {
    key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect()
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
    Some((path_of(r.get_ref(0).ok()?.as_blob().ok()?), file))
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
            key_of(p),
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
        st.execute(params![key_of(p)])?;
    }
    Ok(())
}

impl Catalog {
    /// The file cache in walk order, read by a thread of its own on a
    /// second connection, at most [`STREAM_AHEAD`] rows ahead of the
    /// reader: a backup of a million files holds no more of it than that.
    /// It is the cache as it stood when this returns (the read starts
    /// here), whatever this connection writes meanwhile.
    pub fn file_cache_stream(&self) -> Result<FileCacheStream, CatalogError> {
        let err = |e| self.err(e);
        let conn =
            Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.execute_batch("BEGIN").map_err(err)?;
        conn.query_row("SELECT count(*) FROM files WHERE 0", [], |_| Ok(()))
            .map_err(err)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(STREAM_AHEAD);
        let thread = std::thread::Builder::new()
            .name("file-cache".into())
            .spawn(move || -> rusqlite::Result<()> {
                let sql = "SELECT path, size, mtime, ctime, ino, content FROM files ORDER BY path";
                let mut st = conn.prepare(sql)?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    // A row that does not decode is a miss: that file is read again.
                    if let Some(row) = decode_row(r)
                        && tx.send(row).is_err()
                    {
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|e| CatalogError::Io {
                path: self.path.clone(),
                message: format!("cannot start a thread to read the file cache: {e}"),
            })?;
        Ok(FileCacheStream {
            rx,
            thread: Some(thread),
            path: self.path.clone(),
        })
    }

    /// The whole file cache, for tests: a backup reads it through
    /// [`Catalog::file_cache_stream`], never whole (a million files' rows
    /// are some 200 MB). A row that does not decode (a column of the wrong
    /// type, content not whole pieces) is left out: a cache miss.
    #[cfg(test)]
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

/// Rows a [`FileCacheStream`] reads ahead of its reader.
pub const STREAM_AHEAD: usize = 1024;

/// The file cache in walk order ([`Catalog::file_cache_stream`]).
pub struct FileCacheStream {
    rx: std::sync::mpsc::Receiver<(Vec<u8>, CachedFile)>,
    thread: Option<std::thread::JoinHandle<rusqlite::Result<()>>>,
    path: PathBuf,
}

impl FileCacheStream {
    /// The next row (path, what it was), in walk order; None at the end.
    pub fn next_row(&mut self) -> Option<(Vec<u8>, CachedFile)> {
        self.rx.recv().ok()
    }

    /// Ends the stream; says why it ended early, if it did (the rows it
    /// did not give are files read again: a cost, never a wrong backup).
    pub fn finish(mut self) -> Result<(), CatalogError> {
        let thread = self.thread.take();
        drop(self.rx);
        match thread.map(|t| t.join()) {
            Some(Ok(Err(source))) => Err(CatalogError::sqlite(self.path, source)),
            Some(Err(_)) => Err(CatalogError::Io {
                path: self.path,
                message: "the thread reading the file cache panicked".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// A file-cache row of `size` bytes and no content, for tests here and in
/// the engine.
#[cfg(test)]
pub(crate) fn sample_row(size: u64) -> CachedFile {
    CachedFile {
        size,
        mtime: 1,
        ctime: 2,
        ino: 3,
        content: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> CachedFile {
        sample_row(size)
    }

    /// The stream gives the rows in walk order (a folder's files before a
    /// sibling whose name continues the folder's with `-` or `.`), and the
    /// cache as it stood when it started, whatever is written meanwhile.
    #[test]
    fn the_stream_is_in_walk_order_and_a_snapshot_of_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.db"), "r").unwrap();
        let paths: [&[u8]; 6] = [b"b", b"a.txt", b"a-b/x", b"a/c", b"a/b", b"a/b c"];
        let f = file(1);
        cat.save_files(paths.iter().map(|p| (*p, &f))).unwrap();
        let mut stream = cat.file_cache_stream().unwrap();
        let first = stream.next_row().unwrap();
        // A write after the start is not in the stream.
        cat.save_files([(&b"a/a"[..], &f)]).unwrap();
        let mut got = vec![first.0];
        while let Some((p, row)) = stream.next_row() {
            assert_eq!(row, f);
            got.push(p);
        }
        stream.finish().unwrap();
        let want: Vec<&[u8]> = vec![b"a/b", b"a/b c", b"a/c", b"a-b/x", b"a.txt", b"b"];
        assert_eq!(got, want);
        let mut sorted = got.clone();
        sorted.sort_by(|a, b| crate::repo::tree::walk_order(a, b));
        assert_eq!(got, sorted, "the walk's order");
        // The paths come back as they went in: lookups and deletes by path.
        assert_eq!(cat.files().unwrap().len(), 7);
        let tx = cat.begin().unwrap();
        tx.forget_files([&b"a/b c"[..]]).unwrap();
        tx.commit().unwrap();
        assert!(!cat.files().unwrap().contains_key(&b"a/b c"[..]));
    }
}
