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

mod blob_map;
mod files;
mod health;
mod index;
mod locks;
mod private;
mod refs;
mod snapshots;
mod tx;

pub use blob_map::{BlobCopies, BlobMap};
#[cfg(test)]
pub(crate) use files::sample_row;
pub use files::{CachedFile, FileCacheStream};
pub use index::BlobLocation;
pub use locks::OWN_LOCKS;
pub use snapshots::SnapshotHead;
pub use tx::Tx;

/// Bump when the schema changes: an older catalog is dropped and rebuilt,
/// except one of `MIGRATED_FROM`, which is migrated (`files::migrate_from_6`).
/// 6: snapshots keep the time storage recorded writing them (`stored`).
/// 7: the file cache is a `WITHOUT ROWID` table (each path stored once).
const SCHEMA_VERSION: i64 = 7;

/// The one older version migrated rather than dropped.
const MIGRATED_FROM: i64 = 6;

/// How long a statement waits for another process's lock on the catalog.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A commit that wrote the file cache (a backup, a rebuild) and leaves the
/// WAL at least this large checkpoints it and cuts it to nothing
/// (`truncate_wal`). Without that, the WAL stays beside the database and,
/// once a later commit checkpoints it, is kept at `journal_size_limit`
/// (4 MiB): after a first backup of 20,000 files and a dozen commands the
/// catalog was 3.9 MB of database plus 4.3 MB of WAL; with the checkpoint,
/// 3.9 MB plus the little later commands wrote. The checkpoint took 8-9 ms
/// (7 runs, debug build, this catalog's 3.96 MB WAL) of a first backup of
/// 0.7-1.0 s. Commands that only read never write the file cache, so they
/// still make no fsync; below this size the WAL is not worth the fsyncs.
const CHECKPOINT_WAL_BYTES: u64 = 1 << 20;

/// Checkpoints the WAL into the database and truncates it to zero bytes.
fn truncate_wal(conn: &Connection) {
    without_waiting(conn, "PRAGMA wal_checkpoint(TRUNCATE);");
}

/// Runs `sql`, housekeeping that can wait (a checkpoint, a compaction),
/// only if no other process holds a lock it needs: else it is left for
/// later (later commits fold the WAL in, free pages are reused). Errors are
/// ignored for the same reason: skipping it costs only disk space.
fn without_waiting(conn: &Connection, sql: &str) {
    let _ = conn.busy_timeout(std::time::Duration::ZERO);
    let _ = conn.execute_batch(sql);
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
}

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

/// How a run ended. Serialized as the lowercase word (`ok`, `partial`,
/// `failed`, `cancelled`) in `coffer run --json`, the state files, the job
/// history, the metrics and the notifications.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Everything done.
    Ok,
    /// Done, but some files could not be read.
    Partial,
    #[default]
    Failed,
    /// Stopped by SIGTERM or SIGINT.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Ok or partial: a snapshot was saved and every step after it ran.
    pub fn succeeded(self) -> bool {
        matches!(self, RunStatus::Ok | RunStatus::Partial)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<RunStatus, String> {
        [
            RunStatus::Ok,
            RunStatus::Partial,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a run status"))
    }
}

/// One line of the job history.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub profile: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub started: jiff::Timestamp,
    pub seconds: f64,
    pub status: RunStatus,
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
        Self::default_dir().join(format!("{repo_id}.sqlite"))
    }

    /// The cache folder: `$COFFER_CACHE_DIR`, else `$XDG_CACHE_HOME/coffer`,
    /// else `~/.cache/coffer`.
    fn default_dir() -> PathBuf {
        std::env::var_os("COFFER_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("coffer")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/coffer")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/coffer"))
    }

    /// Opens (or creates) the catalog for repository `repo_id`. A catalog from
    /// another repository or schema version is discarded and started afresh,
    /// but one of version 6 is migrated in place, keeping its file cache.
    /// It holds decrypted file names and the audit log: the folders made for
    /// it are 0700, its files 0600, and looser modes an older coffer left on
    /// them (and on the cache folder) are tightened here (docs/DESIGN-NOTES.md,
    /// "Local files").
    pub fn open(path: &Path, repo_id: &str) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| CatalogError::Io {
                    path: path.to_path_buf(),
                    message: format!("cannot create its folder: {e}"),
                })?;
            if dir == Self::default_dir() {
                private::tighten_own_folder(dir);
            }
        }
        for file in Self::files_of(path) {
            private::tighten(&file, 0o600);
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
        let stale = version != 0 && version != SCHEMA_VERSION && version != MIGRATED_FROM;
        let mut discard = stale || repo.as_deref().is_some_and(|r| r != repo_id);
        if !discard && version == MIGRATED_FROM {
            // A migration that fails but for another process's lock leaves
            // a catalog not worth keeping: started afresh, as a stale one.
            match cat.migrate() {
                Ok(()) => {}
                Err(e @ CatalogError::Busy { .. }) => return Err(e),
                Err(_) => discard = true,
            }
        }
        if discard {
            drop(cat);
            Self::remove_files(path);
            cat = Self::connect(path)?;
        }
        cat.create_schema(repo_id)?;
        Ok(cat)
    }

    /// Migrates a version-6 catalog (see [`files::migrate_from_6`]), then
    /// gives back the space the old table held: its pages would otherwise
    /// stay free inside the file, as large as before (0.08 s for the whole
    /// command that migrated a 20,000-file catalog, debug build, 5.8 MB and
    /// a 4 MiB WAL to 3.6 MB). If another process keeps the compaction from
    /// running now, the free pages are reused as the catalog grows.
    fn migrate(&mut self) -> Result<(), CatalogError> {
        let migrated = files::migrate_from_6(&mut self.conn).map_err(|e| self.err(e))?;
        if migrated {
            without_waiting(&self.conn, "VACUUM;");
            truncate_wal(&self.conn);
        }
        Ok(())
    }

    fn connect(path: &Path) -> Result<Catalog, CatalogError> {
        // Made 0600 before SQLite opens it (SQLite would make it 0644); the
        // WAL and shm files SQLite makes take the database's mode.
        private::create_file(path).map_err(|e| CatalogError::Io {
            path: path.to_path_buf(),
            message: format!("cannot create it: {e}"),
        })?;
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
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| cat.err(e))?;
        let mut tries = 0;
        loop {
            match cat
                .conn
                // The WAL grows to the largest transaction (a first backup
                // of a million files writes hundreds of MB) and keeps that
                // size; the limit truncates it back after each checkpoint.
                .execute_batch(
                    "PRAGMA synchronous = NORMAL; PRAGMA journal_mode = WAL;
                     PRAGMA journal_size_limit = 4194304;",
                ) {
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
        for p in Self::files_of(path) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The catalog's files: the database, its WAL and shared memory.
    fn files_of(path: &Path) -> [PathBuf; 3] {
        ["", "-wal", "-shm"].map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            PathBuf::from(p)
        })
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
                 CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, time TEXT NOT NULL, json TEXT NOT NULL, stored TEXT);
                 {files}
                 CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, profile TEXT NOT NULL, started TEXT NOT NULL,
                     seconds REAL NOT NULL, status TEXT NOT NULL, snapshot TEXT, files INTEGER, bytes INTEGER,
                     added INTEGER, error TEXT);
                 CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL,
                     action TEXT NOT NULL, detail TEXT NOT NULL);
                 INSERT OR REPLACE INTO meta (key, value) VALUES ('repository', '{repo_id}');
                 PRAGMA user_version = {SCHEMA_VERSION};
                 COMMIT;",
                files = files::table_sql("files")
            ))
            .map_err(|e| self.err(e))
    }

    /// The 32-byte ids in the first column of `sql`'s rows.
    fn ids(&self, sql: &str) -> Result<Vec<[u8; 32]>, CatalogError> {
        let mut out = Vec::new();
        self.each_row(sql, [], |r| {
            out.extend(id32(r.get(0)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs `sql` and hands each row to `f`, one at a time (the file cache
    /// of a million files is never held twice).
    fn each_row(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        mut f: impl FnMut(&rusqlite::Row) -> rusqlite::Result<()>,
    ) -> Result<(), CatalogError> {
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = st.query(params).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            f(row).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Appends to the job history.
    pub fn record_run(&self, run: &RunRecord) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO runs (profile, started, seconds, status, snapshot, files, bytes, added, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.profile,
                    crate::time::rfc3339_offset(run.started),
                    run.seconds,
                    run.status.as_str(),
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
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    seconds: r.get(2)?,
                    // Written by record_run: a word of RunStatus.
                    status: r.get::<_, String>(3)?.parse().unwrap_or(RunStatus::Failed),
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
                params![
                    crate::time::rfc3339_offset(jiff::Timestamp::now()),
                    actor,
                    action,
                    detail
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The audit log of operator actions, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, CatalogError> {
        let mut out = Vec::new();
        let sql = "SELECT time, actor, action, detail FROM audit ORDER BY time, id";
        self.each_row(sql, [], |r| {
            out.push(AuditRow {
                time: r
                    .get::<_, String>(0)?
                    .parse()
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                actor: r.get(1)?,
                action: r.get(2)?,
                detail: r.get(3)?,
            });
            Ok(())
        })?;
        Ok(out)
    }
}

/// One row of the catalog's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub time: jiff::Timestamp,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::files::{decode_extents, encode_extents};
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

    fn snapshot(stored: Option<&str>) -> Snapshot {
        Snapshot {
            paths: vec!["/srv".into()],
            stored: stored.map(|t| t.parse().unwrap()),
            ..Snapshot::bare("2099-01-01T00:00:00Z".parse().unwrap(), "h")
        }
    }

    #[test]
    fn snapshots_keep_the_time_storage_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut cat = Catalog::open(&path, "repo").unwrap();
        let (a, b) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
        cat.put_snapshot(&a, &snapshot(Some("2026-12-07T03:00:00.5Z")))
            .unwrap();
        // A backup records its own before a listing gave the time.
        cat.put_snapshot(&b, &snapshot(None)).unwrap();
        assert_eq!(cat.snapshots_unstamped().unwrap(), HashSet::from([b]));
        let tx = cat.begin().unwrap();
        tx.set_snapshot_stored(&b, "2026-12-07T04:00:00Z".parse().unwrap())
            .unwrap();
        tx.commit().unwrap();
        assert!(cat.snapshots_unstamped().unwrap().is_empty());
        let stored: Vec<String> = cat
            .snapshots()
            .unwrap()
            .iter()
            .map(|(_, s)| crate::time::rfc3339(s.stored.unwrap()))
            .collect();
        assert_eq!(stored, ["2026-12-07T03:00:00.500Z", "2026-12-07T04:00:00Z"]);
    }

    /// The heads a survey reads agree with the whole snapshots, in the same
    /// order, and a host name with quotes and escapes comes through as written.
    #[test]
    fn snapshot_heads_are_the_snapshots_without_their_lists() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("c.sqlite"), "repo").unwrap();
        let mut late = snapshot(None);
        late.time = "2026-12-08T00:00:00.25Z".parse().unwrap();
        late.host = "web \"01\"\n\u{e9}".into();
        late.tree = vec![BlobId([7; 32]); 3];
        cat.put_snapshot(&SnapshotId([9; 32]), &late).unwrap();
        cat.put_snapshot(
            &SnapshotId([4; 32]),
            &snapshot(Some("2026-12-07T03:00:00Z")),
        )
        .unwrap();
        let heads = cat.snapshot_heads().unwrap();
        let whole = cat.snapshots().unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(cat.snapshot_count().unwrap(), 2);
        for (h, (id, s)) in heads.iter().zip(&whole) {
            assert_eq!(
                (h.id, h.time, &h.host, h.stored),
                (*id, s.time, &s.host, s.stored)
            );
        }
        assert_eq!(heads[0].host, "web \"01\"\n\u{e9}");
        // A damaged row costs only itself.
        for (id, json) in [(1u8, "{not json"), (2, r#"{"host":7}"#)] {
            cat.conn
                .execute(
                    "INSERT INTO snapshots (id, time, json) VALUES (?1, '2026-01-01T00:00:00+00:00', ?2)",
                    params![&[id; 32][..], json],
                )
                .unwrap();
        }
        assert_eq!(cat.snapshot_heads().unwrap(), heads);
        assert_eq!(cat.snapshots().unwrap().len(), 2);
        assert_eq!(cat.snapshot_count().unwrap(), 2);
    }

    /// A catalog of the schema before storage times were kept is dropped and
    /// rebuilt, so no snapshot in it lacks its storage time for good.
    #[test]
    fn a_catalog_of_the_previous_schema_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE snapshots (id BLOB PRIMARY KEY, time TEXT NOT NULL, json TEXT NOT NULL);
                 INSERT INTO snapshots VALUES (x'01', '2026-01-01T00:00:00+00:00', '{}');
                 PRAGMA user_version = 5;",
            )
            .unwrap();
        }
        let cat = Catalog::open(&path, "repo").unwrap();
        assert!(cat.snapshot_ids().unwrap().is_empty());
        cat.put_snapshot(
            &SnapshotId([3; 32]),
            &snapshot(Some("2026-12-07T03:00:00Z")),
        )
        .unwrap();
        assert_eq!(cat.snapshots().unwrap().len(), 1);
    }

    /// The schema of version 6, as that coffer made it: the file cache in a
    /// rowid table, its paths copied again in the primary key's index.
    const SCHEMA_6: &str = "
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE indexes (id BLOB PRIMARY KEY, blobs BLOB NOT NULL);
        CREATE TABLE packs (id BLOB NOT NULL, size INTEGER NOT NULL, idx BLOB NOT NULL, PRIMARY KEY (id, idx));
        CREATE INDEX packs_by_index ON packs (idx);
        CREATE TABLE refs (id BLOB PRIMARY KEY, data BLOB NOT NULL);
        CREATE TABLE verified (snapshot BLOB PRIMARY KEY, time TEXT NOT NULL);
        CREATE TABLE damage (id BLOB PRIMARY KEY, json TEXT NOT NULL);
        CREATE TABLE sound_packs (id BLOB PRIMARY KEY, size INTEGER NOT NULL, modified TEXT NOT NULL);
        CREATE TABLE snapshots (id BLOB PRIMARY KEY, time TEXT NOT NULL, json TEXT NOT NULL, stored TEXT);
        CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL,
            ctime INTEGER NOT NULL, ino INTEGER NOT NULL, content BLOB NOT NULL);
        CREATE TABLE runs (id INTEGER PRIMARY KEY, profile TEXT NOT NULL, started TEXT NOT NULL,
            seconds REAL NOT NULL, status TEXT NOT NULL, snapshot TEXT, files INTEGER, bytes INTEGER,
            added INTEGER, error TEXT);
        CREATE TABLE audit (id INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL,
            action TEXT NOT NULL, detail TEXT NOT NULL);
        INSERT INTO meta (key, value) VALUES ('repository', 'repo');
        PRAGMA user_version = 6;";

    /// A version-6 catalog at `path` of repository `repo`, holding `rows`
    /// in its file cache and one snapshot, written by SQL as that version did.
    fn catalog_6(path: &Path, rows: &[(Vec<u8>, CachedFile)]) {
        let old = Connection::open(path).unwrap();
        old.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
        old.execute_batch(SCHEMA_6).unwrap();
        for (p, f) in rows {
            old.execute(
                "INSERT INTO files (path, size, mtime, ctime, ino, content) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p, f.size as i64, f.mtime, f.ctime, f.ino as i64, encode_extents(&f.content)],
            )
            .unwrap();
        }
        old.execute(
            "INSERT INTO snapshots (id, time, json, stored) VALUES (?1, ?2, ?3, ?4)",
            params![
                &[5u8; 32][..],
                "2099-01-01T00:00:00+00:00",
                serde_json::to_string(&snapshot(Some("2026-12-07T03:00:00Z"))).unwrap(),
                "2026-12-07T03:00:00+00:00"
            ],
        )
        .unwrap();
    }

    fn cached(n: u64) -> CachedFile {
        CachedFile {
            size: n,
            mtime: -(n as i64),
            ctime: 1_700_000_000_000_000_000 + n as i64,
            ino: u64::MAX - n,
            content: (0..n % 3)
                .map(|i| Extent {
                    blob: BlobId([n as u8 ^ i as u8; 32]),
                    offset: i,
                    length: n * 1000,
                })
                .collect(),
        }
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A version-6 catalog is migrated in place: every file-cache row and
    /// the rest of the catalog survive, the table is keyed by path alone
    /// (no second copy of the paths) and the file shrinks.
    #[test]
    fn a_version_6_catalog_keeps_its_file_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let rows: Vec<(Vec<u8>, CachedFile)> = (0..3000u64)
            .map(|n| {
                (
                    format!("/srv/data/{:05}/file-{n}.txt", n % 97).into_bytes(),
                    cached(n),
                )
            })
            .collect();
        catalog_6(&path, &rows);
        let size_6 = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(Catalog::files_of(&path)[1].clone())
                .map(|m| m.len())
                .unwrap_or(0);

        let cat = Catalog::open(&path, "repo").unwrap();
        assert_eq!(cat.files().unwrap(), rows.iter().cloned().collect());
        assert_eq!(
            cat.snapshot_ids().unwrap(),
            HashSet::from([SnapshotId([5; 32])])
        );
        let (sql, indexes): (String, i64) = (
            cat.conn
                .query_row("SELECT sql FROM sqlite_master WHERE name = 'files'", [], |r| r.get(0))
                .unwrap(),
            cat.conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE tbl_name = 'files' AND type = 'index'", [], |r| r.get(0))
                .unwrap(),
        );
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
        assert_eq!(indexes, 0);
        drop(cat);
        assert_eq!(user_version(&path), 7);
        let size_7 = std::fs::metadata(&path).unwrap().len();
        assert!(size_7 < size_6, "{size_7} >= {size_6}");
        // Opened again, nothing more happens to it.
        let cat = Catalog::open(&path, "repo").unwrap();
        assert_eq!(cat.files().unwrap().len(), rows.len());
    }

    /// Only version 6 is migrated: one of another repository is discarded
    /// as before, whatever its version.
    #[test]
    fn a_version_6_catalog_of_another_repository_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        catalog_6(&path, &[(b"/a".to_vec(), cached(1))]);
        let cat = Catalog::open(&path, "other").unwrap();
        assert!(cat.files().unwrap().is_empty());
        assert!(cat.snapshot_ids().unwrap().is_empty());
        drop(cat);
        assert_eq!(user_version(&path), SCHEMA_VERSION);
    }

    /// A row that does not decode is a cache miss for that file, not an
    /// error for the backup.
    #[test]
    fn a_malformed_file_cache_row_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.sqlite"), "repo").unwrap();
        let good = cached(2);
        cat.save_files([(&b"/good"[..], &good)]).unwrap();
        cat.conn
            .execute_batch(
                "INSERT INTO files VALUES (x'2f61', 1, 2, 3, 4, zeroblob(47));
                 INSERT INTO files VALUES (x'2f62', 'big', 2, 3, 4, x'');
                 INSERT INTO files VALUES (x'2f63', 1, 2, 3, 4, 'text');",
            )
            .unwrap();
        assert_eq!(
            cat.files().unwrap(),
            HashMap::from([(b"/good".to_vec(), good)])
        );
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
        let two = m.get(&BlobId([2; 32])).unwrap();
        assert_eq!((two.pack, two.entry.offset), (PackId([20; 32]), 100));
        assert_eq!(two.entry.raw_length, u64::MAX);
        assert_eq!(two.entry.kind, BlobKind::Tree);
        c.remove_index(&b).unwrap();
        let m = c.blobs().unwrap();
        let two = m.get(&BlobId([2; 32])).unwrap();
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
