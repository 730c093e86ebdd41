//! Retries transient storage errors with exponential backoff and full
//! jitter: coffer's one retry layer (the S3 client's own retries are off,
//! so attempts never multiply). Only this layer reads
//! `StorageError::is_transient`. A refusal (credentials, permissions, DNS,
//! a closed port, TLS) is not transient and fails at the first attempt.
//! The time spent waiting between attempts is bounded: with `n` attempts
//! at most `base * (2^(n-1) - 1)`, each wait capped at `cap` (3 s for the
//! default 5 attempts from 200 ms).

use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

pub struct Retry {
    inner: Box<dyn Storage>,
    attempts: u32,
    base: Duration,
    cap: Duration,
}

impl Retry {
    /// `attempts` tries in all; waits grow from `base` and never exceed `cap`.
    pub fn new(inner: Box<dyn Storage>, attempts: u32, base: Duration, cap: Duration) -> Retry {
        Retry {
            inner,
            attempts: attempts.max(1),
            base,
            cap,
        }
    }

    async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    let exp = self.base.saturating_mul(1 << (attempt - 1).min(16));
                    let wait = exp.min(self.cap).mul_f64(rand::random::<f64>());
                    tokio::time::sleep(wait).await;
                }
                Err(e) if e.is_transient() && attempt > 1 => {
                    // The error names the location already; say it once.
                    let location = self.inner.location();
                    let text = e.to_string();
                    let what = text.strip_prefix(&format!("{location}: ")).unwrap_or(&text);
                    return Err(StorageError::GaveUp {
                        message: what.to_string(),
                        location,
                        attempts: attempt,
                    });
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Storage for Retry {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn object_lock(&self) -> Result<Option<String>, StorageError> {
        self.run(|| self.inner.object_lock()).await
    }
    async fn range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, StorageError> {
        self.run(|| self.inner.range_checksum(key, offset, length))
            .await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.run(|| self.inner.put(key, data.clone())).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        // Backends keep the file when an upload fails, so a retry can send it again.
        self.run(|| self.inner.put_file(key, path)).await
    }
    async fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        self.run(|| self.inner.remove_stale_temp()).await
    }
    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        // A create whose answer was lost may have succeeded: the lock reads
        // its object back to tell (repo::lock), so retrying here is safe.
        self.run(|| self.inner.create(key, data.clone())).await
    }
    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        self.run(|| self.inner.get_capped(key, cap)).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        self.run(|| self.inner.get_range(key, offset, length)).await
    }
    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.run(|| self.inner.stat(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.run(|| self.inner.list(prefix)).await
    }
    async fn list_level(&self, prefix: &str) -> Result<super::Level, StorageError> {
        self.run(|| self.inner.list_level(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.run(|| self.inner.delete(key)).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.run(|| self.inner.delete_many(keys)).await
    }
    async fn exists(&self) -> Result<bool, StorageError> {
        self.run(|| self.inner.exists()).await
    }
    async fn create_location(&self) -> Result<(), StorageError> {
        self.run(|| self.inner.create_location()).await
    }
    fn set_write_lock(&self, lock: Option<super::WriteLock>) -> Result<(), StorageError> {
        self.inner.set_write_lock(lock)
    }
    fn clock(&self) -> Option<jiff::Timestamp> {
        self.inner.clock()
    }
    async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<super::Retention>, StorageError> {
        self.run(|| self.inner.retention(key, version)).await
    }
    async fn extend_retention(&self, key: &str, r: super::Retention) -> Result<(), StorageError> {
        self.run(|| self.inner.extend_retention(key, r)).await
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<super::VersionInfo>, StorageError> {
        self.run(|| self.inner.list_versions(prefix)).await
    }
    async fn get_version_capped(
        &self,
        key: &str,
        version: &str,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        self.run(|| self.inner.get_version_capped(key, version, cap))
            .await
    }
    async fn get_version_range(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        self.run(|| self.inner.get_version_range(key, version, offset, length))
            .await
    }
    async fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.run(|| self.inner.delete_version(key, version)).await
    }
    async fn restore_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.run(|| self.inner.restore_version(key, version)).await
    }
    async fn apply_lifecycle(&self) -> Result<(), StorageError> {
        self.run(|| self.inner.apply_lifecycle()).await
    }
}
