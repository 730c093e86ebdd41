//! The local catalog: a SQLite cache of the repository's index and snapshots,
//! the file-metadata cache for incremental backups, job history and an audit
//! log. Losing it costs time, never data: `catalog rebuild` recreates it.
//! One connection, owned by one thread (the engine driver).

use crate::repo::damage::DamageRecord;
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use crate::repo::index::IndexFile;
use crate::repo::pack::{BlobKind, PackEntry};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::Extent;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Bump when the schema changes: an older catalog is dropped and rebuilt.
const SCHEMA_VERSION: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "catalog {path}: {source}; it is only a cache: delete it or run `coffer catalog rebuild`"
    )]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("catalog {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(
        "catalog {path}: {what} is damaged; it is only a cache: delete it or run `coffer catalog rebuild`"
    )]
    Damaged { path: PathBuf, what: String },
    #[error(
        "catalog {path} stayed busy: another coffer process is writing it (a backup, prune or rebuild of the same repository); run this again once it is done"
    )]
    Busy { path: PathBuf },
}

impl CatalogError {
    /// The error for `source`: a busy database is another process at work,
    /// not damage, so it is not worth deleting.
    fn sqlite(path: PathBuf, source: rusqlite::Error) -> CatalogError {
        if is_busy(&source) {
            CatalogError::Busy { path }
        } else {
            CatalogError::Sqlite { path, source }
        }
    }
}

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
    pub fn lay_over(
        map: &mut HashMap<BlobId, BlobLocation>,
        index: &IndexFile,
        usable: &dyn Fn(&BlobLocation) -> bool,
    ) {
        for l in Self::all_in(index) {
            l.put(map, usable);
        }
    }

    /// Puts this copy in the map, unless the map's copy is usable and this one is not.
    fn put(self, map: &mut HashMap<BlobId, BlobLocation>, usable: &dyn Fn(&BlobLocation) -> bool) {
        match map.entry(self.entry.id) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                if !usable(o.get()) || usable(&self) {
                    o.insert(self);
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self);
            }
        }
    }
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

/// One line of the job history.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub profile: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub seconds: f64,
    /// ok, partial, failed, cancelled.
    pub status: String,
    pub snapshot: Option<String>,
    pub files: u64,
    pub bytes: u64,
    pub added: u64,
    pub error: Option<String>,
}

pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

fn encode_extents(ext: &[Extent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ext.len() * 48);
    for e in ext {
        out.extend_from_slice(&e.blob.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
    }
    out
}

fn decode_extents(b: &[u8]) -> Option<Vec<Extent>> {
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

/// Bytes of one blob in an index row: id, kind, offset, length, raw length.
const ROW_BLOB: usize = 32 + 1 + 8 + 8 + 8;

/// An index object as the catalog stores it, one row per object: for each
/// pack its id and blob count, then its blobs at [`ROW_BLOB`] bytes each.
/// One row, not one per blob, because a new machine's catalog takes in the
/// whole index at once, and SQLite spends more on a row than on its bytes.
fn encode_index(index: &IndexFile) -> Vec<u8> {
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
fn decode_index(
    mut b: &[u8],
    map: &mut HashMap<BlobId, BlobLocation>,
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

/// Maps SQLite errors inside a transaction, where `self` is borrowed.
fn sql_error(path: PathBuf) -> impl Fn(rusqlite::Error) -> CatalogError {
    move |source| CatalogError::sqlite(path.clone(), source)
}

/// SQLite said another connection holds the lock.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn id32(v: Vec<u8>) -> Option<[u8; 32]> {
    v.try_into().ok()
}

impl Catalog {
    /// Where a repository's catalog lives unless a profile or flag says:
    /// `$COFFER_CACHE_DIR`, else `$XDG_CACHE_HOME/coffer`, else `~/.cache/coffer`.
    pub fn default_path(repo_id: &str) -> PathBuf {
        let dir = std::env::var_os("COFFER_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("coffer")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/coffer")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/coffer"));
        dir.join(format!("{repo_id}.sqlite"))
    }

    /// Opens (or creates) the catalog for repository `repo_id`. A catalog from
    /// another repository or schema version is discarded and started afresh.
    pub fn open(path: &Path, repo_id: &str) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| CatalogError::Io {
                path: path.to_path_buf(),
                message: format!("cannot create its folder: {e}"),
            })?;
        }
        let mut cat = Self::connect(path)?;
        let (version, repo): (i64, Option<String>) = (
            cat.conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| cat.err(e))?,
            cat.conn
                .query_row("SELECT value FROM meta WHERE key = 'repository'", [], |r| {
                    r.get(0)
                })
                .optional()
                .unwrap_or(None),
        );
        // Version 0 is a catalog another process is creating right now (two
        // profiles of one repository starting together): not to be deleted.
        let stale = version != 0 && version != SCHEMA_VERSION;
        if stale || repo.as_deref().is_some_and(|r| r != repo_id) {
            drop(cat);
            Self::remove_files(path);
            cat = Self::connect(path)?;
        }
        cat.create_schema(repo_id)?;
        Ok(cat)
    }

    fn connect(path: &Path) -> Result<Catalog, CatalogError> {
        let conn = Connection::open(path).map_err(|source| CatalogError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        let cat = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        // The busy timeout first, so that it covers switching to WAL too;
        // that switch can still fail busy at once while another process
        // creates the file, so it is retried for as long.
        cat.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| cat.err(e))?;
        let mut tries = 0;
        loop {
            match cat
                .conn
                .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA journal_mode = WAL;")
            {
                Ok(()) => break,
                Err(e) if is_busy(&e) && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(cat.err(e)),
            }
        }
        // No checkpoint (and its two fsyncs) when a command closes the
        // catalog: the WAL stays and later commits fold it in. A read-only
        // command then costs no fsync, which under write load elsewhere on
        // the disk took up to 0.4 s of a 0.1 s one-file restore.
        cat.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(|e| cat.err(e))?;
        // A file that is not SQLite shows up here, not at open.
        let probe: Result<i64, _> =
            cat.conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        match probe {
            Ok(_) => Ok(cat),
            Err(e) => Err(cat.err(e)),
        }
    }

    /// Deletes the catalog files (database, WAL, shared memory).
    pub fn remove_files(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::sqlite(self.path.clone(), source)
    }

    fn create_schema(&self, repo_id: &str) -> Result<(), CatalogError> {
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS indexes (id BLOB PRIMARY KEY, blobs BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS packs (id BLOB NOT NULL, size INTEGER NOT NULL, idx BLOB NOT NULL, PRIMARY KEY (id, idx));
                 CREATE INDEX IF NOT EXISTS packs_by_index ON packs (idx);
                 CREATE TABLE IF NOT EXISTS refs (id BLOB PRIMARY KEY, data BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS verified (snapshot BLOB PRIMARY KEY, time TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS damage (id BLOB PRIMARY KEY, json TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS sound_packs (id BLOB PRIMARY KEY, size INTEGER NOT NULL, modified TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, time TEXT NOT NULL, json TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
                     ctime INTEGER NOT NULL, ino INTEGER NOT NULL, content BLOB NOT NULL);
                 CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, profile TEXT NOT NULL, started TEXT NOT NULL,
                     seconds REAL NOT NULL, status TEXT NOT NULL, snapshot TEXT, files INTEGER, bytes INTEGER,
                     added INTEGER, error TEXT);
                 CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL,
                     action TEXT NOT NULL, detail TEXT NOT NULL);
                 INSERT OR REPLACE INTO meta (key, value) VALUES ('repository', '{repo_id}');
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;"
            ))
            .map_err(|e| self.err(e))
    }

    /// The 32-byte ids in the first column of `sql`'s rows.
    fn ids(&self, sql: &str) -> Result<Vec<[u8; 32]>, CatalogError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(id32(r.map_err(|e| self.err(e))?));
        }
        Ok(out)
    }

    pub fn known_indexes(&self) -> Result<HashSet<IndexId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM indexes")?
            .into_iter()
            .map(IndexId)
            .collect())
    }

    /// Records an index object and the packs it lists, in one transaction.
    pub fn add_index(&mut self, id: &IndexId, index: &IndexFile) -> Result<(), CatalogError> {
        let err = sql_error(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute(
            "INSERT OR IGNORE INTO indexes (id, blobs) VALUES (?1, ?2)",
            params![&id.0[..], encode_index(index)],
        )
        .map_err(&err)?;
        {
            let mut pk = tx
                .prepare("INSERT OR REPLACE INTO packs (id, size, idx) VALUES (?1, ?2, ?3)")
                .map_err(&err)?;
            for p in &index.packs {
                pk.execute(params![&p.id.0[..], p.size as i64, &id.0[..]])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    /// Forgets an index object (it was removed from the repository).
    pub fn remove_index(&mut self, id: &IndexId) -> Result<(), CatalogError> {
        let err = sql_error(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute("DELETE FROM packs WHERE idx = ?1", [&id.0[..]])
            .map_err(&err)?;
        tx.execute("DELETE FROM indexes WHERE id = ?1", [&id.0[..]])
            .map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// Every blob the index objects list and where it is. A blob two objects
    /// list (in two packs) is where the one recorded later says.
    pub fn blobs(&self) -> Result<HashMap<BlobId, BlobLocation>, CatalogError> {
        self.blobs_preferring(&|_| true)
    }

    /// [`Catalog::blobs`], where a usable copy wins over one that is not.
    pub fn blobs_preferring(
        &self,
        usable: &dyn Fn(&BlobLocation) -> bool,
    ) -> Result<HashMap<BlobId, BlobLocation>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT blobs FROM indexes ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
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
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT id, size FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for r in rows {
            let (id, size) = r.map_err(|e| self.err(e))?;
            if let Some(id) = id32(id) {
                out.insert(PackId(id), size as u64);
            }
        }
        Ok(out)
    }

    /// Every index object that lists each pack (usually one).
    pub fn pack_indexes(&self) -> Result<HashMap<PackId, Vec<IndexId>>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, idx FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out: HashMap<PackId, Vec<IndexId>> = HashMap::new();
        for r in rows {
            let (pack, idx) = r.map_err(|e| self.err(e))?;
            if let (Some(p), Some(i)) = (id32(pack), id32(idx)) {
                out.entry(PackId(p)).or_default().push(IndexId(i));
            }
        }
        Ok(out)
    }

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
        self.conn
            .execute(
                "INSERT OR IGNORE INTO refs (id, data) VALUES (?1, ?2)",
                params![&id.0[..], data],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

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
        let err = sql_error(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute("DELETE FROM verified", []).map_err(&err)?;
        {
            let mut st = tx
                .prepare("INSERT OR REPLACE INTO verified (snapshot, time) VALUES (?1, ?2)")
                .map_err(&err)?;
            let now = chrono::Utc::now().to_rfc3339();
            for id in ids {
                st.execute(params![&id.0[..], now]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    /// The damage records this catalog has read, by object id.
    pub fn damage_records(&self) -> Result<Vec<([u8; 32], DamageRecord)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, json FROM damage")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, json) = r.map_err(|e| self.err(e))?;
            if let (Some(id), Ok(rec)) = (id32(id), serde_json::from_str(&json)) {
                out.push((id, rec));
            }
        }
        Ok(out)
    }

    pub fn put_damage(&self, id: &[u8; 32], record: &DamageRecord) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO damage (id, json) VALUES (?1, ?2)",
                params![&id[..], serde_json::to_string(record).unwrap_or_default()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn remove_damage(&self, id: &[u8; 32]) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM damage WHERE id = ?1", [&id[..]])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Packs this machine read whole and found to hash to their names, with
    /// the size and upload time storage listed for them then.
    pub fn sound_packs(&self) -> Result<HashMap<PackId, (u64, String)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, size, modified FROM sound_packs")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for r in rows {
            let (id, size, modified) = r.map_err(|e| self.err(e))?;
            if let Some(id) = id32(id) {
                out.insert(PackId(id), (size as u64, modified));
            }
        }
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

    pub fn files(&self) -> Result<HashMap<Vec<u8>, CachedFile>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT path, size, mtime, ctime, ino, content FROM files")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = HashMap::new();
        for r in rows {
            let (path, size, mtime, ctime, ino, content) = r.map_err(|e| self.err(e))?;
            if let Some(content) = decode_extents(&content) {
                out.insert(
                    path,
                    CachedFile {
                        size: size as u64,
                        mtime,
                        ctime,
                        ino: ino as u64,
                        content,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Upserts file-cache rows, in one transaction.
    pub fn save_files<'a>(
        &mut self,
        files: impl IntoIterator<Item = (&'a [u8], &'a CachedFile)>,
    ) -> Result<(), CatalogError> {
        let err = sql_error(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut st = tx
                .prepare(
                    "INSERT OR REPLACE INTO files (path, size, mtime, ctime, ino, content)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&err)?;
            for (p, f) in files {
                st.execute(params![
                    p,
                    f.size as i64,
                    f.mtime,
                    f.ctime,
                    f.ino as i64,
                    encode_extents(&f.content)
                ])
                .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)
    }

    pub fn clear_files(&self) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM files", [])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn put_snapshot(&self, id: &SnapshotId, snap: &Snapshot) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO snapshots (id, time, json) VALUES (?1, ?2, ?3)",
                params![
                    &id.0[..],
                    snap.time.to_rfc3339(),
                    serde_json::to_string(snap).unwrap_or_default()
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn snapshot_ids(&self) -> Result<HashSet<SnapshotId>, CatalogError> {
        Ok(self
            .ids("SELECT id FROM snapshots")?
            .into_iter()
            .map(SnapshotId)
            .collect())
    }

    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<(), CatalogError> {
        self.conn
            .execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Snapshots sorted by time, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT id, json FROM snapshots ORDER BY time, id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (id, json) = r.map_err(|e| self.err(e))?;
            if let (Some(id), Ok(s)) = (id32(id), serde_json::from_str(&json)) {
                out.push((SnapshotId(id), s));
            }
        }
        Ok(out)
    }

    /// Appends to the job history.
    pub fn record_run(&self, run: &RunRecord) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO runs (profile, started, seconds, status, snapshot, files, bytes, added, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.profile,
                    run.started.to_rfc3339(),
                    run.seconds,
                    run.status,
                    run.snapshot,
                    run.files as i64,
                    run.bytes as i64,
                    run.added as i64,
                    run.error
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` runs of a profile, newest first.
    pub fn runs(&self, profile: &str, limit: usize) -> Result<Vec<RunRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT profile, started, seconds, status, snapshot, files, bytes, added, error
                 FROM runs WHERE profile = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![profile, limit as i64], |r| {
                Ok(RunRecord {
                    profile: r.get(0)?,
                    started: r
                        .get::<_, String>(1)?
                        .parse()
                        .unwrap_or(chrono::DateTime::UNIX_EPOCH),
                    seconds: r.get(2)?,
                    status: r.get(3)?,
                    snapshot: r.get(4)?,
                    files: r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64,
                    bytes: r.get::<_, Option<i64>>(6)?.unwrap_or(0) as u64,
                    added: r.get::<_, Option<i64>>(7)?.unwrap_or(0) as u64,
                    error: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Appends to the audit log of operator actions.
    pub fn audit(&self, actor: &str, action: &str, detail: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO audit (time, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![chrono::Utc::now().to_rfc3339(), actor, action, detail],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The audit log of operator actions, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT time, actor, action, detail FROM audit ORDER BY time, id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(AuditRow {
                    time: r
                        .get::<_, String>(0)?
                        .parse()
                        .unwrap_or(chrono::DateTime::UNIX_EPOCH),
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// One row of the catalog's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub time: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog another process keeps locked past the busy timeout (10 s)
    /// is reported as busy, with what to do, not as damage to delete.
    #[test]
    fn a_catalog_locked_by_another_writer_is_reported_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let cat = Catalog::open(&path, "repo").unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE;").unwrap();
        let err = cat.audit("me", "restore", "x").unwrap_err();
        assert!(matches!(err, CatalogError::Busy { .. }), "{err:?}");
        assert!(err.to_string().contains("run this again"), "{err}");
        other.execute_batch("COMMIT;").unwrap();
        cat.audit("me", "restore", "x").unwrap();
    }

    #[test]
    fn extents_round_trip_and_reject_garbage() {
        let ext = vec![
            Extent {
                blob: BlobId([7; 32]),
                offset: 5,
                length: 9,
            },
            Extent {
                blob: BlobId([1; 32]),
                offset: 0,
                length: u64::MAX,
            },
        ];
        assert_eq!(decode_extents(&encode_extents(&ext)).unwrap(), ext);
        assert!(decode_extents(&[0; 47]).is_none());
    }

    fn index(pack: u8, blobs: &[(u8, u64)]) -> IndexFile {
        use crate::repo::index::IndexedPack;
        IndexFile {
            packs: vec![IndexedPack {
                id: PackId([pack; 32]),
                size: 1000,
                blobs: blobs
                    .iter()
                    .map(|&(id, offset)| PackEntry {
                        id: BlobId([id; 32]),
                        kind: BlobKind::Tree,
                        offset,
                        length: 7,
                        raw_length: u64::MAX,
                    })
                    .collect(),
            }],
        }
    }

    /// The blob map is the index objects laid over one another in the order
    /// they were recorded; forgetting one brings back what an earlier one
    /// says of a blob both list.
    #[test]
    fn blobs_follow_the_index_objects_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite"), "r").unwrap();
        let (a, b) = (IndexId([1; 32]), IndexId([2; 32]));
        c.add_index(&a, &index(10, &[(1, 0), (2, 7)])).unwrap();
        c.add_index(&b, &index(20, &[(2, 100)])).unwrap();
        let m = c.blobs().unwrap();
        assert_eq!(m.len(), 2);
        let two = m[&BlobId([2; 32])];
        assert_eq!((two.pack, two.entry.offset), (PackId([20; 32]), 100));
        assert_eq!(two.entry.raw_length, u64::MAX);
        assert_eq!(two.entry.kind, BlobKind::Tree);
        c.remove_index(&b).unwrap();
        let m = c.blobs().unwrap();
        let two = m[&BlobId([2; 32])];
        assert_eq!((two.pack, two.entry.offset), (PackId([10; 32]), 7));
        assert_eq!(c.packs().unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_index_record_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite"), "r").unwrap();
        c.add_index(&IndexId([1; 32]), &index(10, &[(1, 0), (2, 7)]))
            .unwrap();
        c.conn
            .execute("UPDATE indexes SET blobs = substr(blobs, 1, 60)", [])
            .unwrap();
        let e = c.blobs().unwrap_err();
        assert!(e.to_string().contains("catalog rebuild"), "{e}");
    }

    #[test]
    fn a_catalog_of_another_repository_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sqlite");
        let mut c = Catalog::open(&p, "aaa").unwrap();
        let f = CachedFile {
            size: 1,
            mtime: 2,
            ctime: 3,
            ino: 4,
            content: vec![],
        };
        c.save_files([(&b"x"[..], &f)]).unwrap();
        drop(c);
        assert_eq!(Catalog::open(&p, "aaa").unwrap().files().unwrap().len(), 1);
        assert_eq!(Catalog::open(&p, "bbb").unwrap().files().unwrap().len(), 0);
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.sqlite");
        std::fs::write(&p, vec![0x55u8; 8192]).unwrap();
        let e = Catalog::open(&p, "aaa")
            .err()
            .expect("garbage must not open");
        assert!(e.to_string().contains("catalog rebuild"), "{e}");
    }
}
