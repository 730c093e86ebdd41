//! The storage as it stood at a time, read from object versions
//! (`--as-of`): for each key the version that was current then
//! ([`current_at`]); keys that appeared later, or were deleted before, do
//! not exist. Built from one listing of every version, so a read costs
//! what a read of the current version costs. Read only: every write is
//! refused, since a reading command must change neither the past nor the
//! present it is looking away from.

use super::retention::{VersionInfo, current_at};
use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::path::Path;

pub struct AsOf {
    inner: Box<dyn Storage>,
    at: Timestamp,
    /// Key → the version current at `at` (never a delete marker).
    then: BTreeMap<String, VersionInfo>,
}

impl AsOf {
    /// Lists every version under the location once and keeps those current
    /// at `at`. Storage without versions is refused (`Unsupported`); a
    /// location where nothing existed yet at `at` is refused with
    /// [`StorageError::NothingThen`], which names the oldest version there is.
    pub async fn new(inner: Box<dyn Storage>, at: Timestamp) -> Result<AsOf, StorageError> {
        let all = inner.list_versions("").await?;
        if unversioned(&all) {
            return Err(inner.unsupported("reading earlier versions", "versioning"));
        }
        let then = state_at(&all, at);
        if then.is_empty() {
            return Err(StorageError::NothingThen {
                location: inner.location(),
                at,
                oldest: all.iter().map(|v| v.modified).min(),
            });
        }
        Ok(AsOf { inner, at, then })
    }

    fn version(&self, key: &str) -> Result<&VersionInfo, StorageError> {
        self.then.get(key).ok_or_else(|| StorageError::NotFound {
            location: self.location(),
            key: key.to_string(),
        })
    }

    fn refuse(&self, key: &str) -> StorageError {
        StorageError::Refused {
            location: self.inner.location(),
            key: key.to_string(),
            message: format!(
                "the repository is read as of {} (--as-of): nothing is written",
                crate::time::human(self.at)
            ),
        }
    }
}

/// Whether a listing is that of a bucket without versioning: S3 lists
/// each object there once, as version `null`, and keeps nothing earlier.
fn unversioned(all: &[VersionInfo]) -> bool {
    !all.is_empty() && all.iter().all(|v| v.version == "null")
}

/// Key → the version current at `at`, from a listing of every version.
fn state_at(all: &[VersionInfo], at: Timestamp) -> BTreeMap<String, VersionInfo> {
    current_at(all, at)
        .into_iter()
        .map(|v| (v.key.clone(), v.clone()))
        .collect()
}

/// The objects of `then` under `prefix`, as a listing shows them.
fn list_then(then: &BTreeMap<String, VersionInfo>, prefix: &str) -> Vec<ObjectInfo> {
    then.range(prefix.to_string()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| ObjectInfo {
            key: k.clone(),
            size: v.size,
            modified: Some(v.modified),
        })
        .collect()
}

#[async_trait]
impl Storage for AsOf {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, _data: Bytes) -> Result<(), StorageError> {
        Err(self.refuse(key))
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        // The file is consumed either way (the trait's promise).
        let _ = std::fs::remove_file(path);
        Err(self.refuse(key))
    }
    async fn object_lock(&self) -> Result<Option<String>, StorageError> {
        self.inner.object_lock().await
    }
    async fn create(&self, key: &str, _data: Bytes) -> Result<bool, StorageError> {
        Err(self.refuse(key))
    }
    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        let v = self.version(key)?;
        if v.size > cap.max {
            return Err(cap.refuse(self.location(), key, v.size));
        }
        self.inner.get_version_capped(key, &v.version, cap).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        let v = self.version(key)?;
        if offset.saturating_add(length) > v.size {
            return Err(StorageError::truncated(
                self.location(),
                key,
                offset,
                length,
                &format!("the version as of then is {} bytes", v.size),
            ));
        }
        self.inner
            .get_version_range(key, &v.version, offset, length)
            .await
    }
    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        Ok(self.then.get(key).map(|v| v.size))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(list_then(&self.then, prefix))
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        Err(self.refuse(key))
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        Err(self.refuse(keys.first().map_or("", String::as_str)))
    }
    async fn exists(&self) -> Result<bool, StorageError> {
        Ok(true)
    }
    async fn create_location(&self) -> Result<(), StorageError> {
        Err(self.refuse(""))
    }
    fn set_write_lock(&self, _lock: Option<super::WriteLock>) -> Result<(), StorageError> {
        // Nothing is written, so there is nothing to lock.
        Ok(())
    }
    async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<super::Retention>, StorageError> {
        if let Some(v) = version {
            return self.inner.retention(key, Some(v)).await;
        }
        // The current version's lock is not the lock of the version read
        // here: answering with it would be about another object.
        Err(StorageError::Refused {
            location: self.inner.location(),
            key: key.to_string(),
            message: "locks are read from current versions, not with --as-of".into(),
        })
    }
    async fn extend_retention(&self, key: &str, _r: super::Retention) -> Result<(), StorageError> {
        Err(self.refuse(key))
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<VersionInfo>, StorageError> {
        self.inner.list_versions(prefix).await
    }
    async fn get_version_capped(
        &self,
        key: &str,
        version: &str,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        self.inner.get_version_capped(key, version, cap).await
    }
    async fn get_version_range(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        self.inner
            .get_version_range(key, version, offset, length)
            .await
    }
    async fn delete_version(&self, key: &str, _version: &str) -> Result<(), StorageError> {
        Err(self.refuse(key))
    }
    async fn restore_version(&self, key: &str, _version: &str) -> Result<(), StorageError> {
        Err(self.refuse(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, version: &str, secs: i64, size: u64, marker: bool) -> VersionInfo {
        VersionInfo {
            key: key.into(),
            version: version.into(),
            modified: Timestamp::from_second(secs).unwrap(),
            size,
            delete_marker: marker,
            latest: false,
            etag: None,
        }
    }

    #[test]
    fn a_listing_as_of_a_time_shows_what_was_current_then_under_the_prefix() {
        let all = [
            v("data/a", "a1", 100, 10, false),
            v("data/a", "a2", 300, 0, true),   // deleted after
            v("data/b", "b1", 400, 20, false), // written after
            v("index/i", "i1", 50, 5, false),
            v("index/i", "i2", 150, 6, false), // rewritten before
            v("datb", "x1", 10, 1, false),     // shares the prefix's letters only
        ];
        let then = state_at(&all, Timestamp::from_second(200).unwrap());
        let listed = |p| {
            list_then(&then, p)
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(listed("data/"), [("data/a".to_string(), 10)]);
        assert_eq!(listed("index/"), [("index/i".to_string(), 6)]);
        assert_eq!(listed("").len(), 3);
        assert!(listed("snapshots/").is_empty());
    }

    #[test]
    fn a_bucket_without_versioning_is_told_apart() {
        let plain = [
            v("config", "null", 1, 1, false),
            v("keyring", "null", 2, 1, false),
        ];
        assert!(unversioned(&plain));
        let later = [
            v("config", "null", 1, 1, false),
            v("keyring", "k2", 2, 1, false),
        ];
        assert!(
            !unversioned(&later),
            "versioning turned on later keeps what follows"
        );
        assert!(!unversioned(&[]));
    }

    #[test]
    fn before_anything_existed_the_state_is_empty() {
        let all = [v("config", "c1", 100, 1, false)];
        assert!(state_at(&all, Timestamp::from_second(99).unwrap()).is_empty());
        assert_eq!(
            state_at(&all, Timestamp::from_second(100).unwrap()).len(),
            1
        );
    }
}
