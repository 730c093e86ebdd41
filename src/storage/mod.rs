//! Storage backends: move opaque bytes under string keys. Nothing here knows the
//! repository format. Keys are `/`-separated relative names (`data/ab/ab12…`).

pub mod fault;
mod local;
mod retry;
mod s3;

pub use local::LocalStorage;
pub use retry::Retry;
pub use s3::{S3Options, S3Storage};

use async_trait::async_trait;
use bytes::Bytes;

/// A storage failure. `is_transient` tells the retry layer whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found in {location}")]
    NotFound { location: String, key: String },
    #[error("{location}: {key}: {message}")]
    Io {
        location: String,
        key: String,
        message: String,
        transient: bool,
        /// The OS error kind, when there is one (used to spot a full disk).
        kind: Option<std::io::ErrorKind>,
    },
    #[error("{location}: {message}")]
    Unavailable { location: String, message: String },
    /// A whole-object read refused before reading: the object is larger than
    /// anything of its kind can legitimately be (see [`Cap`]).
    #[error(
        "{location}: {key}: object is {size} bytes, larger than {what} can be (cap {max} bytes)"
    )]
    TooLarge {
        location: String,
        key: String,
        size: u64,
        what: &'static str,
        max: u64,
    },
}

/// The most a whole-object read may return, and what the object is, for the
/// message when it is larger (`"an index object"`). Storage moves opaque
/// bytes: the repository format decides the numbers (`repo::limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    pub max: u64,
    pub what: &'static str,
}

impl Cap {
    /// The refusal of an object of `size` bytes under `key`.
    pub fn refuse(&self, location: String, key: &str, size: u64) -> StorageError {
        StorageError::TooLarge {
            location,
            key: key.to_string(),
            size,
            what: self.what,
            max: self.max,
        }
    }
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
    /// Whether a retry can help (network faults, throttling); never for missing objects.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { transient, .. } => *transient,
            StorageError::Unavailable { .. } => true,
            StorageError::NotFound { .. } | StorageError::TooLarge { .. } => false,
        }
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written, where the backend says (prune's grace period).
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// The one storage interface. Implementations must make `put` atomic (a reader
/// sees the whole object or none) and `create` exclusive (fails if the key exists).
#[async_trait]
pub trait Storage: Send + Sync {
    /// Human-readable location for messages (`file:///srv/repo`, `s3://bucket/prefix`).
    fn location(&self) -> String;
    /// Stores `data` under `key`, replacing any existing object, atomically.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;
    /// Stores the file at `path` under `key`, consuming the file (moved or
    /// deleted), so large objects never need to sit in memory.
    async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), StorageError>;
    /// A folder where spool files are cheap to hand to `put_file` (the same
    /// file system for a local repository); None means the system temp folder.
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// How many pack uploads may be in flight.
    fn upload_concurrency(&self) -> usize {
        2
    }
    /// How many reads a caller with many keeps in flight (restore, prune's
    /// repack, check). Locally two hide a read behind decrypting the last.
    fn read_concurrency(&self) -> usize {
        2
    }
    /// Bytes of unneeded data worth reading to save one request: coalesced
    /// reads bridge gaps up to this size.
    fn read_gap(&self) -> u64 {
        256 * 1024
    }
    /// Files larger than this go up as a multipart upload ([`Storage::put_file`]);
    /// None where there is no such path (a local folder). The capability
    /// probe uploads through every path a repository's packs can take.
    fn multipart_threshold(&self) -> Option<u64> {
        None
    }
    /// What else decides how uploads are sent (checksum modes), in a few
    /// words: a capability record probed with other settings is probed again.
    fn upload_settings(&self) -> String {
        String::new()
    }
    /// The checksum a ranged read of `length` bytes at `offset` comes with,
    /// as `"crc32 <value>"`, or None: the probe records whether a server
    /// sends the whole object's checksum with a part of it. Reads no body.
    async fn range_checksum(
        &self,
        _key: &str,
        _offset: u64,
        _length: u64,
    ) -> Result<Option<String>, StorageError> {
        Ok(None)
    }
    /// Removes temporary files a killed writer left behind (call with the
    /// writer lock held). Returns how many were removed.
    async fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        Ok(0)
    }
    /// Stores `data` only if `key` does not exist. Returns false if it existed.
    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError>;
    /// Reads a whole object of at most `cap.max` bytes. A larger one is
    /// refused with [`StorageError::TooLarge`] before its bytes are read
    /// (local: its size from fstat; S3: the response's content-length), and a
    /// body that turns out longer than announced is cut off at the cap.
    /// There is no uncapped read: every object in a repository has a kind
    /// and the kind a largest size.
    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError>;
    /// Reads `length` bytes at `offset`; a short object is an error, never a
    /// short read. A range past the object's end is refused before anything
    /// is allocated for it.
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError>;
    /// Size of an object, or None if missing.
    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// All objects whose key starts with `prefix` (a folder such as `data/`).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Removes an object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Removes many objects (S3: batches of 1000 in one request each).
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }
    /// Whether the repository location exists at all (a directory, a bucket).
    async fn exists(&self) -> Result<bool, StorageError>;
    /// Creates the location (a directory, a bucket).
    async fn create_location(&self) -> Result<(), StorageError>;
}

/// Opens the backend named by a repository URL: `s3://bucket/prefix`,
/// `file:///abs/path`, or a plain path.
/// Every backend is wrapped in [`Retry`]; `COFFER_FAULTS` (a fault drill,
/// see [`fault::FaultPlan::parse`]) puts a fault injector beneath it.
pub async fn open(url: &str, s3: &S3Options) -> Result<Box<dyn Storage>, StorageError> {
    let mut bare = open_bare(url, s3).await?;
    if let Ok(spec) = std::env::var("COFFER_FAULTS") {
        let plan = fault::FaultPlan::parse(&spec).map_err(|message| StorageError::Unavailable {
            location: url.to_string(),
            message,
        })?;
        bare = Box::new(fault::Faulty::new(bare, plan));
    }
    Ok(Box::new(Retry::new(
        bare,
        5,
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    )))
}

/// The backend alone, without retries.
pub async fn open_bare(url: &str, s3: &S3Options) -> Result<Box<dyn Storage>, StorageError> {
    if url.starts_with("s3://") {
        return Ok(Box::new(S3Storage::connect(url, s3).await?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Box::new(LocalStorage::new(path)));
    }
    if url.contains("://") {
        return Err(StorageError::Unavailable {
            location: url.to_string(),
            message: "unsupported repository URL; use s3://bucket/prefix, file:///path or a path"
                .into(),
        });
    }
    Ok(Box::new(LocalStorage::new(url)))
}
