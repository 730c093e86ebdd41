//! Storage backends: move opaque bytes under string keys. Nothing here knows the
//! repository format. Keys are `/`-separated relative names (`data/ab/ab12…`).

mod as_of;
pub mod fault;
mod local;
pub mod retention;
mod retry;
mod s3;
mod setup;

pub use as_of::AsOf;
pub use local::LocalStorage;
pub use retention::{LockMode, Retention, VersionInfo, WriteLock};
pub use retry::Retry;
pub use s3::policy::{Role, iam_policy, lifecycle_id as s3_lifecycle_id, lifecycle_rule};
pub use s3::{
    ChecksumSetting, S3Options, S3Storage, check_settings as check_s3_settings,
    parse_url as parse_s3_url,
};
pub use setup::SetupError;

use async_trait::async_trait;
use bytes::Bytes;

/// A storage failure. `is_transient` tells the retry layer whether trying
/// again can help; `is_object_fault` tells the engines whether the object
/// itself is bad (skip it, record the damage) or storage as a whole failed
/// (stop).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found in {location}")]
    NotFound { location: String, key: String },
    #[error("{location}: {}{message}", keyed(key))]
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
    /// Storage refuses every request alike, and asking again will not help:
    /// no credentials, wrong ones, no permission, no such bucket, a host
    /// that does not resolve or does not listen, an untrusted certificate,
    /// a server that takes coffer's uploads in another checksum mode.
    #[error("{location}: {}{message}", keyed(key))]
    Refused {
        location: String,
        /// The object the request was for; empty for the bucket itself.
        key: String,
        message: String,
    },
    /// The repository URL or the backend's settings are wrong; nothing was
    /// sent, and trying again will not help.
    #[error("{location}: {problem}")]
    Setup {
        location: String,
        problem: SetupError,
    },
    /// What was asked needs something this storage does not have (Object
    /// Lock, object versions: a local folder has neither).
    #[error("{location}: {what} needs S3 storage with {needs}; {location} has none")]
    Unsupported {
        location: String,
        what: &'static str,
        needs: &'static str,
    },
    /// Reading as of a time before anything was stored at the location
    /// (`--as-of`): names the oldest version there is, if any.
    #[error("{location}: nothing existed at {}; {}", crate::time::human(*at), oldest_text(*oldest))]
    NothingThen {
        location: String,
        at: jiff::Timestamp,
        oldest: Option<jiff::Timestamp>,
    },
    /// A transient failure that lasted through every attempt of the retry
    /// layer (the message is the last attempt's).
    #[error("{location}: {message} (gave up after {attempts} attempts)")]
    GaveUp {
        location: String,
        message: String,
        attempts: u32,
    },
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

/// When the oldest version at a location was stored, in words.
fn oldest_text(oldest: Option<jiff::Timestamp>) -> String {
    match oldest {
        Some(t) => format!(
            "the oldest version stored is from {}",
            crate::time::human(t)
        ),
        None => "no version is stored there at all".into(),
    }
}

/// `"KEY: "`, or nothing for a message about the whole location.
fn keyed(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}: ")
    }
}

impl StorageError {
    /// A ranged read that got fewer bytes than asked for (`got` says what).
    pub fn truncated(location: String, key: &str, offset: u64, length: u64, got: &str) -> Self {
        StorageError::Io {
            location,
            key: key.to_string(),
            message: format!(
                "object is truncated: wanted {length} bytes at offset {offset}, {got}"
            ),
            transient: false,
            kind: None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
    /// Whether a retry can help (network faults, throttling); never for
    /// missing objects, refusals, or what the retry layer gave up on.
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::Io { transient, .. } => *transient,
            StorageError::Unavailable { .. } => true,
            StorageError::NotFound { .. }
            | StorageError::TooLarge { .. }
            | StorageError::Refused { .. }
            | StorageError::Setup { .. }
            | StorageError::Unsupported { .. }
            | StorageError::NothingThen { .. }
            | StorageError::GaveUp { .. } => false,
        }
    }
    /// Whether the failure is the object's own (missing, too large,
    /// truncated, altered): the engines skip such an object and record the
    /// damage. A refusal or an outage is storage's, not the object's: the
    /// command stops instead.
    pub fn is_object_fault(&self) -> bool {
        match self {
            StorageError::Io { transient, .. } => !*transient,
            StorageError::NotFound { .. } | StorageError::TooLarge { .. } => true,
            StorageError::Unavailable { .. }
            | StorageError::Refused { .. }
            | StorageError::Setup { .. }
            | StorageError::Unsupported { .. }
            | StorageError::NothingThen { .. }
            | StorageError::GaveUp { .. } => false,
        }
    }
    /// Whether the retry layer gave up on a failure that lasted (a later
    /// run may get through where one exists: a backup, not a restore).
    pub fn gave_up(&self) -> bool {
        matches!(self, StorageError::GaveUp { .. })
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object was written, where the backend says (prune's grace period).
    pub modified: Option<jiff::Timestamp>,
}

/// One level of a listing ([`Storage::list_level`]): the objects directly
/// under a prefix and the folders (sub-prefixes, each ending in `/`) below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    pub objects: Vec<ObjectInfo>,
    pub folders: Vec<String>,
}

impl Level {
    /// The level below `prefix` of a full listing of it: what S3's delimiter
    /// listing returns, for backends that have none.
    pub fn of_listing(prefix: &str, listed: Vec<ObjectInfo>) -> Level {
        let mut level = Level::default();
        for o in listed {
            let Some(rest) = o.key.strip_prefix(prefix) else {
                continue;
            };
            match rest.find('/') {
                Some(i) => {
                    let folder = format!("{prefix}{}", &rest[..=i]);
                    if level.folders.last() != Some(&folder) {
                        level.folders.push(folder);
                    }
                }
                None => level.objects.push(o),
            }
        }
        level.folders.dedup();
        level
    }

    /// The object named `name` directly in this level's prefix.
    pub fn object(&self, prefix: &str, name: &str) -> Option<&ObjectInfo> {
        self.objects
            .iter()
            .find(|o| o.key.strip_prefix(prefix) == Some(name))
    }
}

/// How the layers above use a backend: spool folder, requests in flight,
/// read coalescing, upload paths. Only a backend itself says (its
/// `tuning()`); [`open`] takes it from the backend before any decorator
/// wraps it, so a decorator has nothing to forward and nothing to forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// A folder where spool files are cheap to hand to `put_file` (the same
    /// file system for a local repository); None means the system temp folder.
    pub spool_dir: Option<std::path::PathBuf>,
    /// How many pack uploads may be in flight.
    pub upload_concurrency: usize,
    /// How many reads a caller with many keeps in flight (restore, prune's
    /// repack, check). Locally two hide a read behind decrypting the last.
    pub read_concurrency: usize,
    /// Bytes of unneeded data worth reading to save one request: coalesced
    /// reads bridge gaps up to this size.
    pub read_gap: u64,
    /// Files larger than this go up as a multipart upload ([`Storage::put_file`]);
    /// None where there is no such path (a local folder). The capability
    /// probe uploads through every path a repository's packs can take.
    pub multipart_threshold: Option<u64>,
    /// What else decides how uploads are sent (checksum modes), in a few
    /// words: a capability record probed with other settings is probed again.
    pub upload_settings: String,
    /// What to change when an upload does not read back as sent (how
    /// uploads are sent, and the setting that decides it), as a clause
    /// for a message; None where nothing can be changed.
    pub upload_hint: Option<String>,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            spool_dir: None,
            upload_concurrency: 2,
            read_concurrency: 2,
            read_gap: 256 * 1024,
            multipart_threshold: None,
            upload_settings: String::new(),
            upload_hint: None,
        }
    }
}

/// A backend opened from a repository URL, with its tuning.
pub struct Opened {
    pub storage: Box<dyn Storage>,
    pub tuning: Tuning,
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
    /// Whether the location keeps objects under Object Lock, and its
    /// default retention, in a few words ("on: GOVERNANCE, 30 days by
    /// default"); "off" when the bucket has none; None where the backend
    /// has no such thing (a local folder). Recorded by the capability probe.
    async fn object_lock(&self) -> Result<Option<String>, StorageError> {
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
    /// One level below `prefix` (empty, or ending in `/`): the objects
    /// directly in it and its folders, without what is inside them. S3: a
    /// delimiter listing, one request per 1,000 entries of the level, however
    /// many objects the folders hold. This default lists everything below.
    async fn list_level(&self, prefix: &str) -> Result<Level, StorageError> {
        Ok(Level::of_listing(prefix, self.list(prefix).await?))
    }
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

    // Object Lock and versions (docs/IMMUTABILITY.md). A backend without
    // them keeps these defaults: asking for a lock or a version is refused
    // with `Unsupported`, never silently ignored.

    /// Storage's own time at its last answer, where answers carry one (an
    /// S3 server's `Date`): right after a write, when storage recorded it,
    /// learnt without another request. None where it is not known.
    fn clock(&self) -> Option<jiff::Timestamp> {
        None
    }
    /// Locks every object written from now on (`put`, `put_file`,
    /// `create`) with `lock`; None writes without a lock.
    fn set_write_lock(&self, lock: Option<WriteLock>) -> Result<(), StorageError> {
        match lock {
            None => Ok(()),
            Some(_) => Err(self.unsupported("Object Lock", "Object Lock")),
        }
    }
    /// The lock of an object's current version, or of `version`; None if
    /// it has none.
    async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<Retention>, StorageError> {
        let _ = (key, version);
        Err(self.unsupported("reading a lock", "Object Lock"))
    }
    /// Sets the lock of an object's current version to `r`. Storage
    /// refuses a shorter one; callers only ever lengthen.
    async fn extend_retention(&self, key: &str, r: Retention) -> Result<(), StorageError> {
        let _ = (key, r);
        Err(self.unsupported("extending a lock", "Object Lock"))
    }
    /// Every version and delete marker of the objects under `prefix`.
    async fn list_versions(&self, prefix: &str) -> Result<Vec<VersionInfo>, StorageError> {
        let _ = prefix;
        Err(self.unsupported("reading earlier versions", "versioning"))
    }
    /// Reads a whole version of at most `cap.max` bytes (as `get_capped`).
    async fn get_version_capped(
        &self,
        key: &str,
        version: &str,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        let _ = (key, version, cap);
        Err(self.unsupported("reading earlier versions", "versioning"))
    }
    /// Reads `length` bytes at `offset` of a version (as `get_range`).
    async fn get_version_range(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        let _ = (key, version, offset, length);
        Err(self.unsupported("reading earlier versions", "versioning"))
    }
    /// Removes one version or delete marker for good (a locked version is
    /// refused by storage).
    async fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        let _ = (key, version);
        Err(self.unsupported("deleting versions", "versioning"))
    }
    /// Makes an earlier version current again, by a copy inside storage.
    async fn restore_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        let _ = (key, version);
        Err(self.unsupported("restoring versions", "versioning"))
    }
    /// Adds (or replaces, by its id) the bucket lifecycle rule that clears
    /// what retention let go under `prefix` (see [`lifecycle_rule`]);
    /// the bucket's other rules stay.
    async fn apply_lifecycle(&self) -> Result<(), StorageError> {
        Err(self.unsupported("a lifecycle rule", "lifecycle rules"))
    }
    /// The refusal of something this backend does not have.
    fn unsupported(&self, what: &'static str, needs: &'static str) -> StorageError {
        StorageError::Unsupported {
            location: self.location(),
            what,
            needs,
        }
    }
}

/// Attempts per request when the profile does not say (`[s3] max_attempts`).
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// Opens the backend named by a repository URL: `s3://bucket/prefix`,
/// `file:///abs/path`, or a plain path.
/// Every backend is wrapped in [`Retry`], the one retry layer (the S3
/// client's own retries are off); `COFFER_FAULTS` (a fault drill, see
/// [`fault::FaultPlan::parse`]) puts a fault injector beneath it.
pub async fn open(url: &str, s3: &S3Options) -> Result<Opened, StorageError> {
    let Opened {
        storage: mut bare,
        tuning,
    } = open_bare(url, s3).await?;
    if let Ok(spec) = std::env::var("COFFER_FAULTS") {
        let plan = fault::FaultPlan::parse(&spec).map_err(|e| StorageError::Setup {
            location: url.to_string(),
            problem: e.into(),
        })?;
        bare = Box::new(fault::Faulty::new(bare, plan));
    }
    let attempts = match s3.max_attempts {
        0 => DEFAULT_ATTEMPTS,
        n => n,
    };
    let storage = Box::new(Retry::new(
        bare,
        attempts,
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    ));
    Ok(Opened { storage, tuning })
}

/// The backend alone, without retries.
pub async fn open_bare(url: &str, s3: &S3Options) -> Result<Opened, StorageError> {
    check_url(url).map_err(|problem| StorageError::Setup {
        location: url.to_string(),
        problem,
    })?;
    if url.starts_with("s3://") {
        let s3 = S3Storage::connect(url, s3).await?;
        let tuning = s3.tuning();
        return Ok(Opened {
            storage: Box::new(s3),
            tuning,
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        // `file://localhost/srv/x` is `/srv/x` (RFC 8089); check_url
        // refused any other host.
        let path = path.strip_prefix("localhost").unwrap_or(path);
        return Ok(LocalStorage::new(path).opened());
    }
    if url.contains("://") {
        return Err(StorageError::Unavailable {
            location: url.to_string(),
            message: "unsupported repository URL; use s3://bucket/prefix, file:///path or a path"
                .into(),
        });
    }
    Ok(LocalStorage::new(url).opened())
}

/// Refuses a repository URL that looks like a mistyped one (`s3:/acme`,
/// `s3:acme`, `s3//acme`, `file://srv/backup`, `file:/srv`), which would
/// otherwise name a local folder relative to the working directory, and
/// says what was probably meant. Plain paths and well-formed URLs pass.
pub fn check_url(url: &str) -> Result<(), SetupError> {
    let refuse = |meant: String| {
        Err(SetupError::MistypedUrl {
            url: url.to_string(),
            meant,
        })
    };
    if let Some(rest) = url.strip_prefix("file://") {
        if rest.starts_with('/') || rest.starts_with("localhost/") {
            return Ok(());
        }
        // `file://srv/backup`: "srv" is a host part, not a folder.
        return refuse(format!("file:///{rest}"));
    }
    if let Some(rest) = url.strip_prefix("s3:///") {
        return refuse(format!("s3://{}", rest.trim_start_matches('/')));
    }
    if url.contains("://") {
        return Ok(()); // s3:// is parsed by its backend; others are refused by name
    }
    // A scheme without its `//`: `s3:acme`, `s3:/acme`, `file:/srv`.
    if let Some((scheme, rest)) = url.split_once(':') {
        let schemelike = !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic());
        if schemelike {
            let rest = rest.trim_start_matches('/');
            return match scheme.to_ascii_lowercase().as_str() {
                "s3" => refuse(format!("s3://{rest}")),
                "file" => refuse(format!("file:///{rest}")),
                _ => Err(SetupError::UnknownScheme {
                    url: url.to_string(),
                    scheme: scheme.to_string(),
                }),
            };
        }
    }
    // `s3//acme/web-1`, `s3:\\acme`: the colon forgotten.
    for scheme in ["s3", "file"] {
        if let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("//")) {
            let rest = rest.trim_start_matches('/');
            return refuse(match scheme {
                "s3" => format!("s3://{rest}"),
                _ => format!("file:///{rest}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Level, ObjectInfo, SetupError, check_url};

    #[test]
    fn a_level_of_a_full_listing_has_its_objects_and_each_folder_once() {
        let o = |key: &str| ObjectInfo {
            key: key.into(),
            size: 1,
            modified: None,
        };
        let listed = vec![
            o("fleet/a/config"),
            o("fleet/a/data/00/x"),
            o("fleet/b/status"),
            o("fleet/config"),
            o("fleet/status"),
        ];
        let level = Level::of_listing("fleet/", listed);
        assert_eq!(level.folders, vec!["fleet/a/", "fleet/b/"]);
        let keys: Vec<&str> = level.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["fleet/config", "fleet/status"]);
        assert!(level.object("fleet/", "config").is_some());
        assert!(level.object("fleet/", "keyring").is_none());
        let root = Level::of_listing("", vec![o("config"), o("x/config")]);
        assert_eq!(root.folders, vec!["x/"]);
        assert!(root.object("", "config").is_some());
    }

    #[test]
    fn mistyped_repository_urls_are_refused_with_what_was_meant() {
        for (url, meant) in [
            ("s3:/acme/web-1", "s3://acme/web-1"),
            ("s3:acme", "s3://acme"),
            ("s3:acme/web-1", "s3://acme/web-1"),
            ("S3:/acme", "s3://acme"),
            ("s3//acme/web-1", "s3://acme/web-1"),
            ("s3:///acme", "s3://acme"),
            ("file://srv/backup", "file:///srv/backup"),
            ("file:/srv/backup", "file:///srv/backup"),
            ("file:srv/backup", "file:///srv/backup"),
            ("file//srv/backup", "file:///srv/backup"),
        ] {
            let e = check_url(url).expect_err(url);
            assert!(
                matches!(&e, SetupError::MistypedUrl { meant: m, .. } if m == meant),
                "{url}: {e:?}"
            );
            assert!(
                e.to_string().contains(&format!("did you mean {meant:?}")),
                "{url}: {e}"
            );
        }
        let e = check_url("backup:2024").unwrap_err();
        assert!(matches!(&e, SetupError::UnknownScheme { scheme, .. } if scheme == "backup"));
        assert!(e.to_string().contains("./backup:2024"), "{e}");
    }

    #[test]
    fn good_urls_and_plain_paths_pass() {
        for url in [
            "s3://acme/web-1",
            "s3://acme",
            "file:///srv/backup",
            "file://localhost/srv/backup",
            "/srv/backup",
            "repo",
            "./s3:thing",
            "backups/s3/web-1",
            "s3/web-1",
        ] {
            check_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}
