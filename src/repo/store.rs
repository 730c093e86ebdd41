//! A blocking facade over the async [`Storage`]: the engines are plain threads.

use crate::storage::{
    Cap, ObjectInfo, Opened, Retention, Storage, StorageError, Tuning, VersionInfo, WriteLock,
};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;

/// One version of an object: `(key, version id)`.
pub type VersionRef = (String, String);

pub struct Store {
    storage: Arc<dyn Storage>,
    tuning: Tuning,
    runtime: tokio::runtime::Runtime,
    /// Set when the store reads the past (`--as-of`, [`Store::open_as_of`]).
    as_of: Option<jiff::Timestamp>,
}

fn runtime() -> Result<tokio::runtime::Runtime, StorageError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .thread_name("coffer-io")
        .build()
        .map_err(|e| StorageError::Unavailable {
            location: "coffer".into(),
            message: format!("cannot start the I/O runtime: {e}"),
        })
}

impl Store {
    /// Opens the storage a repository URL names (see [`crate::storage::open`]).
    pub fn open(url: &str, s3: &crate::storage::S3Options) -> Result<Store, StorageError> {
        let runtime = runtime()?;
        let opened = runtime.block_on(crate::storage::open(url, s3))?;
        Ok(Store {
            storage: Arc::from(opened.storage),
            tuning: opened.tuning,
            runtime,
            as_of: None,
        })
    }

    /// Opens the storage a repository URL names as it stood at `at`, read
    /// only (see [`crate::storage::AsOf`]): one listing of every version.
    pub fn open_as_of(
        url: &str,
        s3: &crate::storage::S3Options,
        at: jiff::Timestamp,
    ) -> Result<Store, StorageError> {
        let runtime = runtime()?;
        let opened = runtime.block_on(crate::storage::open(url, s3))?;
        let past = runtime.block_on(crate::storage::AsOf::new(opened.storage, at))?;
        Ok(Store {
            storage: Arc::new(past),
            tuning: opened.tuning,
            runtime,
            as_of: Some(at),
        })
    }

    /// The time this store reads the repository as of, if it reads the past.
    pub fn as_of(&self) -> Option<jiff::Timestamp> {
        self.as_of
    }

    /// Wraps an already built backend (tests, decorators) with the tuning
    /// of the backend at its bottom.
    pub fn new(opened: Opened) -> Result<Store, StorageError> {
        Ok(Store {
            storage: Arc::from(opened.storage),
            tuning: opened.tuning,
            runtime: runtime()?,
            as_of: None,
        })
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }

    pub fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.run(self.storage.put(key, data))
    }
    /// Uploads a spool file (consumed: stored, or removed on failure).
    pub fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), StorageError> {
        let _spool = SpoolFile(path.to_path_buf());
        self.run(self.storage.put_file(key, path))
    }
    /// See [`Tuning::multipart_threshold`].
    pub fn multipart_threshold(&self) -> Option<u64> {
        self.tuning.multipart_threshold
    }
    /// See [`Tuning::upload_settings`].
    pub fn upload_settings(&self) -> String {
        self.tuning.upload_settings.clone()
    }
    /// See [`Tuning::upload_hint`].
    pub fn upload_hint(&self) -> Option<String> {
        self.tuning.upload_hint.clone()
    }
    /// See [`Storage::object_lock`].
    pub fn object_lock(&self) -> Result<Option<String>, StorageError> {
        self.run(self.storage.object_lock())
    }
    /// See [`Storage::clock`].
    pub fn clock(&self) -> Option<jiff::Timestamp> {
        self.storage.clock()
    }
    /// See [`Storage::set_write_lock`].
    pub fn set_write_lock(&self, lock: Option<WriteLock>) -> Result<(), StorageError> {
        self.storage.set_write_lock(lock)
    }
    /// See [`Storage::retention`].
    pub fn retention(&self, key: &str) -> Result<Option<Retention>, StorageError> {
        self.run(self.storage.retention(key, None))
    }
    /// See [`Storage::extend_retention`].
    pub fn extend_retention(&self, key: &str, r: Retention) -> Result<(), StorageError> {
        self.run(self.storage.extend_retention(key, r))
    }
    /// Several [`Store::retention`] reads at once (`read_concurrency` in flight).
    pub fn retentions(
        &self,
        keys: &[String],
    ) -> Vec<(String, Result<Option<Retention>, StorageError>)> {
        self.each(keys, |s, k| async move { s.retention(&k, None).await })
    }
    /// The locks of several versions, each a `(key, version)`, at once.
    pub fn version_retentions(
        &self,
        versions: &[VersionRef],
    ) -> Vec<(VersionRef, Result<Option<Retention>, StorageError>)> {
        self.each(versions, |s, (k, v)| async move {
            s.retention(&k, Some(&v)).await
        })
    }
    /// Deletes several versions or delete markers, each a `(key, version)`,
    /// at once; storage refuses a locked one.
    pub fn delete_versions(
        &self,
        versions: &[VersionRef],
    ) -> Vec<(VersionRef, Result<(), StorageError>)> {
        self.each(versions, |s, (k, v)| async move {
            s.delete_version(&k, &v).await
        })
    }
    /// Several [`Store::extend_retention`] at once.
    pub fn extend_retentions(
        &self,
        keys: &[String],
        r: Retention,
    ) -> Vec<(String, Result<(), StorageError>)> {
        self.each(
            keys,
            move |s, k| async move { s.extend_retention(&k, r).await },
        )
    }
    /// `op` on every key, `read_concurrency` in flight; answers in key order.
    fn each<K, T, F, Fut>(&self, keys: &[K], op: F) -> Vec<(K, T)>
    where
        K: Clone,
        T: Send + 'static,
        F: Fn(Arc<dyn Storage>, K) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut out = Vec::with_capacity(keys.len());
        for batch in keys.chunks(self.read_concurrency()) {
            let tasks: Vec<_> = batch
                .iter()
                .map(|k| self.runtime.spawn(op(self.storage.clone(), k.clone())))
                .collect();
            for (k, t) in batch.iter().zip(tasks) {
                // A task only fails by panicking: a bug, passed on as one.
                let v = self
                    .run(t)
                    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
                out.push((k.clone(), v));
            }
        }
        out
    }
    /// See [`Storage::apply_lifecycle`].
    pub fn apply_lifecycle(&self) -> Result<(), StorageError> {
        self.run(self.storage.apply_lifecycle())
    }
    /// See [`Storage::list_versions`].
    pub fn list_versions(&self, prefix: &str) -> Result<Vec<VersionInfo>, StorageError> {
        self.run(self.storage.list_versions(prefix))
    }
    /// See [`Storage::delete_version`].
    pub fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.run(self.storage.delete_version(key, version))
    }
    /// See [`Storage::restore_version`].
    pub fn restore_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.run(self.storage.restore_version(key, version))
    }
    /// See [`Storage::range_checksum`].
    pub fn range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, StorageError> {
        self.run(self.storage.range_checksum(key, offset, length))
    }
    pub fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        self.run(self.storage.create(key, data))
    }
    /// Reads a whole object of at most `cap.max` bytes (see
    /// [`Storage::get_capped`]); `repo::limits` has the cap of every kind.
    pub fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        self.run(self.storage.get_capped(key, cap))
    }
    /// Reads two objects at once (one round trip, not two).
    pub fn get_pair(
        &self,
        a: (&str, Cap),
        b: (&str, Cap),
    ) -> (Result<Bytes, StorageError>, Result<Bytes, StorageError>) {
        self.run(async {
            tokio::join!(
                self.storage.get_capped(a.0, a.1),
                self.storage.get_capped(b.0, b.1)
            )
        })
    }
    pub fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        self.run(self.storage.get_range(key, offset, length))
    }
    pub fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.run(self.storage.stat(key))
    }
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.run(self.storage.list(prefix))
    }
    /// See [`Storage::list_level`].
    pub fn list_level(&self, prefix: &str) -> Result<crate::storage::Level, StorageError> {
        self.run(self.storage.list_level(prefix))
    }
    pub fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.run(self.storage.delete(key))
    }
    /// Removes what killed writers left: temporary objects in the storage
    /// (call with the writer lock held) and, where packs are spooled outside
    /// it (S3: the system temp folder), the spool files of dead processes.
    pub fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        let mut removed = self.run(self.storage.remove_stale_temp())?;
        if !self.spools_in_repository() {
            removed += crate::repo::pack::remove_stale_spool(&self.spool_dir());
        }
        Ok(removed)
    }
    pub fn create_location(&self) -> Result<(), StorageError> {
        self.run(self.storage.create_location())
    }
    pub fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.run(self.storage.delete_many(keys))
    }
    pub fn exists(&self) -> Result<bool, StorageError> {
        self.run(self.storage.exists())
    }

    /// Starts an upload in the background; the caller bounds how many are in flight.
    pub fn spawn_put(
        &self,
        key: String,
        data: Bytes,
    ) -> tokio::task::JoinHandle<Result<(), StorageError>> {
        let storage = self.storage.clone();
        self.runtime
            .spawn(async move { storage.put(&key, data).await })
    }

    /// Starts uploading a spool file in the background; the file is
    /// consumed: stored, or removed when the upload fails or is aborted.
    pub fn spawn_put_file(
        &self,
        key: String,
        path: std::path::PathBuf,
    ) -> tokio::task::JoinHandle<Result<(), StorageError>> {
        let storage = self.storage.clone();
        self.runtime.spawn(async move {
            // Dropped when the task ends or is aborted; after a stored
            // upload the file is gone already (moved or deleted).
            let _spool = SpoolFile(path.clone());
            storage.put_file(&key, &path).await
        })
    }

    /// How many pack uploads the backend wants in flight.
    pub fn upload_concurrency(&self) -> usize {
        self.tuning.upload_concurrency.clamp(1, 64)
    }

    /// How many reads the backend wants in flight when a caller has many
    /// (restore, prune's repack, check).
    pub fn read_concurrency(&self) -> usize {
        self.tuning.read_concurrency.clamp(1, 64)
    }

    /// Unneeded bytes worth reading to save one request (see [`Storage::read_gap`]).
    pub fn read_gap(&self) -> u64 {
        self.tuning.read_gap
    }

    /// Reads `reads` in order with up to `ahead` requests in flight: they run
    /// as tasks, so they progress while the caller works on earlier results.
    /// Ranged reads in flight or waiting stay under [`READ_AHEAD_BYTES`]
    /// (one read at a time may exceed it), which bounds memory.
    pub fn read_ahead(&self, reads: Vec<Read>, ahead: usize) -> ReadAhead<'_> {
        ReadAhead {
            store: self,
            todo: reads.into_iter(),
            in_flight: std::collections::VecDeque::new(),
            bytes: 0,
            ahead: ahead.max(1),
        }
    }

    /// Where pack spool files go for this storage.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.tuning
            .spool_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Whether packs are spooled inside the repository (a local one) rather
    /// than in the system temp folder.
    pub fn spools_in_repository(&self) -> bool {
        self.tuning.spool_dir.is_some()
    }

    /// Waits for a background storage task (an upload, a read ahead).
    pub fn join<T>(
        &self,
        handle: tokio::task::JoinHandle<Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        self.run(handle).unwrap_or_else(|e| {
            Err(StorageError::Unavailable {
                location: self.location(),
                message: format!("storage task failed: {e}"),
            })
        })
    }
}

/// A spool file that an upload task owns: removed when the task ends.
struct SpoolFile(std::path::PathBuf);

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bytes of ranged reads [`Store::read_ahead`] keeps in flight at most.
pub const READ_AHEAD_BYTES: u64 = 32 * 1024 * 1024;

/// One read of [`Store::read_ahead`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// A whole object, refused above its cap.
    Object(String, Cap),
    Range {
        key: String,
        offset: u64,
        length: u64,
    },
}

/// The results of [`Store::read_ahead`], in request order. Dropping it
/// cancels the reads still in flight.
pub struct ReadAhead<'a> {
    store: &'a Store,
    todo: std::vec::IntoIter<Read>,
    /// Each read in flight with its length (0 for a whole object).
    in_flight:
        std::collections::VecDeque<(tokio::task::JoinHandle<Result<Bytes, StorageError>>, u64)>,
    bytes: u64,
    ahead: usize,
}

impl Iterator for ReadAhead<'_> {
    type Item = Result<Bytes, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.in_flight.len() < self.ahead
            && let Some(next) = self.todo.as_slice().first()
        {
            let length = match next {
                Read::Object(..) => 0,
                Read::Range { length, .. } => *length,
            };
            if !self.in_flight.is_empty() && self.bytes + length > READ_AHEAD_BYTES {
                break;
            }
            let Some(read) = self.todo.next() else {
                break;
            };
            self.bytes += length;
            let storage = self.store.storage.clone();
            let handle = self.store.runtime.spawn(async move {
                match read {
                    Read::Object(key, cap) => storage.get_capped(&key, cap).await,
                    Read::Range {
                        key,
                        offset,
                        length,
                    } => storage.get_range(&key, offset, length).await,
                }
            });
            self.in_flight.push_back((handle, length));
        }
        let (handle, length) = self.in_flight.pop_front()?;
        self.bytes -= length;
        Some(self.store.join(handle))
    }
}

impl Drop for ReadAhead<'_> {
    fn drop(&mut self) {
        for (h, _) in &self.in_flight {
            h.abort();
        }
    }
}
