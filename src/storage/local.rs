//! The embedded default: a repository in a local directory.
//!
//! `put` writes to a temporary file in the same directory, fsyncs it and renames
//! it into place, so a crash never leaves a half-written object under its name.
//! `create` uses `O_EXCL` on the final name after writing a temporary file and
//! `link(2)`, which fails if the name exists: exclusive and atomic.

use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    /// Spool files go into the repository's own `data/` folder, so an
    /// upload is a rename on the same file system.
    pub fn tuning(&self) -> super::Tuning {
        super::Tuning {
            spool_dir: Some(self.root.join("data")),
            ..Default::default()
        }
    }

    /// This backend with its tuning, for a [`crate::repo::store::Store`].
    pub fn opened(self) -> super::Opened {
        let tuning = self.tuning();
        super::Opened {
            storage: Box::new(self),
            tuning,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn err(&self, key: &str, e: std::io::Error) -> StorageError {
        if e.kind() == ErrorKind::NotFound {
            return StorageError::NotFound {
                location: self.location(),
                key: key.to_string(),
            };
        }
        let message = if crate::error::is_full(&e) {
            format!(
                "no space left on device ({}); free space on the repository's file system and run it again (what is stored stays valid)",
                crate::error::full_reason(&e)
            )
        } else {
            e.to_string()
        };
        StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message,
            transient: matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::TimedOut),
            kind: Some(e.kind()),
        }
    }

    /// Writes `data` to a fresh temporary file beside `final_path`, synced.
    fn write_temp(&self, final_path: &Path, data: &[u8]) -> std::io::Result<PathBuf> {
        let dir = final_path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let mut f = std::fs::File::create(&tmp)?;
        let res = f.write_all(data).and_then(|_| f.sync_data());
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    fn put_sync(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        let path = self.path(key);
        let tmp = self.write_temp(&path, data)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    fn create_sync(&self, key: &str, data: &[u8]) -> std::io::Result<bool> {
        let path = self.path(key);
        let tmp = self.write_temp(&path, data)?;
        let res = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The files and folders of the one folder `prefix` names (it ends in
    /// `/`, or is empty for the root); a missing folder is an empty level.
    fn list_level_sync(&self, prefix: &str) -> std::io::Result<super::Level> {
        let mut level = super::Level::default();
        let rd = match std::fs::read_dir(self.root.join(prefix)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(level),
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                level.folders.push(format!("{prefix}{name}/"));
            } else if ft.is_file() {
                let meta = entry.metadata()?;
                level.objects.push(ObjectInfo {
                    key: format!("{prefix}{name}"),
                    size: meta.len(),
                    modified: meta
                        .modified()
                        .ok()
                        .and_then(|t| jiff::Timestamp::try_from(t).ok()),
                });
            }
        }
        level.objects.sort_by(|a, b| a.key.cmp(&b.key));
        level.folders.sort();
        Ok(level)
    }

    fn list_sync(&self, prefix: &str) -> std::io::Result<Vec<ObjectInfo>> {
        // Prefixes are folders in this format (`data/`, `index/`); walk below the
        // deepest folder the prefix names and filter by the full prefix.
        let folder = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![folder.to_string()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel)
            };
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in rd {
                let entry = entry?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(".tmp-") {
                    continue;
                }
                let key = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    stack.push(key);
                } else if ft.is_file() && key.starts_with(prefix) {
                    let meta = entry.metadata()?;
                    out.push(ObjectInfo {
                        key,
                        size: meta.len(),
                        modified: meta
                            .modified()
                            .ok()
                            .and_then(|t| jiff::Timestamp::try_from(t).ok()),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// A temp file (`.tmp-PID-RANDOM`, or `.tmp-pack-PID-STARTTICKS-RANDOM` for
/// a spooled pack) whose writer is gone. A pack spool belongs to the lock holder, so
/// once its process is gone it goes at once. A small temp may be the lock
/// file of a writer waiting for the lock, maybe on another host sharing the
/// mount, where the pid says nothing: it is left a minute. Any temp a day
/// old is taken as abandoned.
fn abandoned_temp(entry: &std::fs::DirEntry) -> bool {
    let name = entry.file_name();
    let Some(rest) = name.as_encoded_bytes().strip_prefix(b".tmp-") else {
        return false;
    };
    let (rest, min_age) = match rest.strip_prefix(b"pack-") {
        Some(r) => (r, 0),
        None => (rest, 60),
    };
    let age = entry
        .metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    // The name carries the writer's pid, and for a pack spool its start time.
    let writer_gone = crate::host::temp_writer_gone(rest);
    (writer_gone && age >= std::time::Duration::from_secs(min_age))
        || age >= std::time::Duration::from_secs(24 * 3600)
}

/// Runs blocking file I/O off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Unavailable {
            location: "local".into(),
            message: format!("I/O task failed: {e}"),
        })
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let me = self.clone_handle();
        let k = key.to_string();
        blocking(move || me.put_sync(&k, &data))
            .await?
            .map_err(|e| self.err(key, e))
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let me = self.clone_handle();
        let (k, src) = (key.to_string(), path.to_path_buf());
        blocking(move || -> std::io::Result<()> {
            let dest = me.path(&k);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // Same file system: an atomic rename. Otherwise copy, then remove.
            match std::fs::rename(&src, &dest) {
                Ok(()) => Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    let data = std::fs::read(&src)?;
                    me.put_sync(&k, &data)?;
                    std::fs::remove_file(&src)
                }
                Err(e) => Err(e),
            }
        })
        .await?
        .map_err(|e| self.err(key, e))
    }

    async fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in rd.flatten() {
                    let path = entry.path();
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(path);
                    } else if abandoned_temp(&entry) && std::fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
            }
            removed
        })
        .await
    }

    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let me = self.clone_handle();
        let k = key.to_string();
        blocking(move || me.create_sync(&k, &data))
            .await?
            .map_err(|e| self.err(key, e))
    }

    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        let read = blocking(move || -> std::io::Result<Result<Vec<u8>, u64>> {
            let f = std::fs::File::open(path)?;
            let size = f.metadata()?.len();
            if size > cap.max {
                return Ok(Err(size));
            }
            // The file may grow after the fstat: never read past the cap.
            let mut buf = Vec::with_capacity(size as usize);
            f.take(cap.max.saturating_add(1)).read_to_end(&mut buf)?;
            Ok(match buf.len() as u64 {
                n if n > cap.max => Err(n),
                _ => Ok(buf),
            })
        })
        .await?
        .map_err(|e| self.err(key, e))?;
        read.map(Bytes::from)
            .map_err(|size| cap.refuse(self.location(), key, size))
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        let path = self.path(key);
        // The range is checked against the file's real size before a buffer
        // is allocated: an index entry may claim any offset and length.
        let res = blocking(move || -> std::io::Result<Result<Vec<u8>, u64>> {
            let mut f = std::fs::File::open(path)?;
            let size = f.metadata()?.len();
            if offset.checked_add(length).is_none_or(|end| end > size) {
                return Ok(Err(size));
            }
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(length as usize);
            f.take(length).read_to_end(&mut buf)?;
            Ok(Ok(buf))
        })
        .await?
        .map_err(|e| self.err(key, e))?;
        let short =
            |got: String| StorageError::truncated(self.location(), key, offset, length, &got);
        match res {
            Err(size) => Err(short(format!("but it has {size} bytes"))),
            Ok(buf) if (buf.len() as u64) < length => Err(short(format!("got {}", buf.len()))),
            Ok(buf) => Ok(Bytes::from(buf)),
        }
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key);
        match blocking(move || std::fs::metadata(path)).await? {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let me = self.clone_handle();
        let p = prefix.to_string();
        blocking(move || me.list_sync(&p))
            .await?
            .map_err(|e| self.err(prefix, e))
    }

    async fn list_level(&self, prefix: &str) -> Result<super::Level, StorageError> {
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Ok(super::Level::of_listing(prefix, self.list(prefix).await?));
        }
        let me = self.clone_handle();
        let p = prefix.to_string();
        blocking(move || me.list_level_sync(&p))
            .await?
            .map_err(|e| self.err(prefix, e))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key);
        match blocking(move || std::fs::remove_file(path)).await? {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    async fn create_location(&self) -> Result<(), StorageError> {
        let root = self.root.clone();
        blocking(move || std::fs::create_dir_all(root))
            .await?
            .map_err(|e| self.err("", e))
    }

    async fn exists(&self) -> Result<bool, StorageError> {
        let root = self.root.clone();
        Ok(blocking(move || root.is_dir()).await?)
    }
}

impl LocalStorage {
    fn clone_handle(&self) -> LocalStorage {
        LocalStorage {
            root: self.root.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::abandoned_temp;
    use std::time::{Duration, SystemTime};

    /// A temp file judged by name and age: a live writer's is kept (it may
    /// be a lock half-way created), a gone writer's pack spool goes at once,
    /// its other temps once a minute old, and any temp once a day old.
    #[test]
    fn only_temps_of_gone_writers_are_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let age = |name: &str, secs: u64| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").unwrap();
            let t = SystemTime::now() - Duration::from_secs(secs);
            filetime::set_file_mtime(&p, filetime::FileTime::from_system_time(t)).unwrap();
        };
        let me = std::process::id();
        let gone = u32::MAX - 1;
        age(&format!(".tmp-{me}-a"), 3600);
        age(&format!(".tmp-{gone}-b"), 10);
        age(&format!(".tmp-{gone}-c"), 120);
        age(&format!(".tmp-{me}-d"), 2 * 86400);
        age(&format!(".tmp-pack-{gone}-e"), 0);
        age(&format!(".tmp-pack-{me}-f"), 3600);
        age("packfile", 2 * 86400);
        let mut judged: Vec<(String, bool)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    abandoned_temp(&e),
                )
            })
            .collect();
        judged.sort();
        let want = [
            (format!(".tmp-{gone}-b"), false),
            (format!(".tmp-{gone}-c"), true),
            (format!(".tmp-{me}-a"), false),
            (format!(".tmp-{me}-d"), true),
            (format!(".tmp-pack-{gone}-e"), true),
            (format!(".tmp-pack-{me}-f"), false),
            ("packfile".to_string(), false),
        ];
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(judged, want);
    }
}
