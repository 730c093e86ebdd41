//! New packs from sealed blobs, for backup and for the engines that copy or
//! re-store blobs (prune's repack, erase): each pack is spooled to a file and uploaded in
//! the background while the next one fills, with at most the backend's upload
//! concurrency in flight (so spool files and requests stay bounded).

use crate::repo::Repository;
use crate::repo::index::IndexedPack;
use crate::repo::limits;
use crate::repo::lock::RepoLock;
use crate::repo::pack::{PackWriter, SealedBlob};
use crate::storage::StorageError;
use crate::{Error, Result};
use std::collections::VecDeque;

/// A spool file error (`in_repo`: the spool folder is in a local
/// repository); a full disk says so, where, and what to do.
fn spool_error(in_repo: bool, spool: &std::path::Path, e: std::io::Error) -> Error {
    if !crate::error::is_full(&e) {
        return Error::io(spool, e);
    }
    let hint = if in_repo {
        "free space on the repository's file system and run it again; the repository stays valid, and the next run reuses what was stored"
    } else {
        "packs are spooled there before upload: free space there, or set TMPDIR to a folder with room for a few packs, and run it again; the repository stays valid, and the next run reuses what was uploaded"
    };
    Error::NoSpace {
        path: spool.to_path_buf(),
        reason: crate::error::full_reason(&e),
        hint,
    }
}

/// An upload in flight: its task, the pack, and the pack's last bytes as
/// written (trailer and footer), for the read-back.
type Upload = (
    tokio::task::JoinHandle<std::result::Result<(), StorageError>>,
    IndexedPack,
    Vec<u8>,
);

/// Which uploaded packs are read back (docs/FORMAT.md, "Capabilities"):
/// the first of every run, and each above `above` bytes (a multipart upload
/// the capability probe did not read back).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReadBack {
    pub above: Option<u64>,
}

impl ReadBack {
    /// What the writer lock's capability record asks for.
    pub(crate) fn of(lock: &RepoLock) -> ReadBack {
        ReadBack {
            above: lock.capabilities().and_then(|c| c.verify_above()),
        }
    }
}

pub(crate) struct Packer<'a> {
    repo: &'a Repository,
    writer: Option<PackWriter>,
    uploading: VecDeque<Upload>,
    uploaded: Vec<IndexedPack>,
    read_back: ReadBack,
    /// Uploads finished so far.
    joined: usize,
}

impl<'a> Packer<'a> {
    pub(crate) fn new(repo: &'a Repository, read_back: ReadBack) -> Self {
        Packer {
            repo,
            writer: None,
            uploading: VecDeque::new(),
            uploaded: Vec::new(),
            read_back,
            joined: 0,
        }
    }

    /// How many packs have finished uploading since the last `take_stored`.
    pub(crate) fn stored_count(&self) -> usize {
        self.uploaded.len()
    }

    /// The packs whose uploads have finished since the last call: stored,
    /// so an index may name them now (a long backup writes one every few).
    pub(crate) fn take_stored(&mut self) -> Vec<IndexedPack> {
        std::mem::take(&mut self.uploaded)
    }

    pub(crate) fn add(&mut self, blob: SealedBlob) -> Result<()> {
        let spool = self.repo.store.spool_dir();
        let in_repo = self.repo.store.spools_in_repository();
        let w = match self.writer.as_mut() {
            Some(w) => w,
            None => self
                .writer
                .insert(PackWriter::create(&spool).map_err(|e| spool_error(in_repo, &spool, e))?),
        };
        w.add(blob).map_err(|e| spool_error(in_repo, &spool, e))?;
        if w.len() >= self.repo.config.pack_size || w.blob_count() >= limits::MAX_PACK_BLOBS {
            self.seal()?;
        }
        Ok(())
    }

    /// Finishes the pack being filled and starts its upload, first waiting
    /// for the oldest upload if the limit is reached.
    fn seal(&mut self) -> Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        while self.uploading.len() >= self.repo.store.upload_concurrency() {
            self.join_oldest()?;
        }
        let spool = self.repo.store.spool_dir();
        let in_repo = self.repo.store.spools_in_repository();
        let p = w
            .finish(&self.repo.keys)
            .map_err(|e| spool_error(in_repo, &spool, e))?;
        let handle = self.repo.store.spawn_put_file(p.id.key(), p.path);
        self.uploading.push_back((
            handle,
            IndexedPack {
                id: p.id,
                size: p.size,
                blobs: p.entries,
            },
            p.tail,
        ));
        Ok(())
    }

    fn join_oldest(&mut self) -> Result<()> {
        if let Some((h, p, tail)) = self.uploading.pop_front() {
            self.repo.store.join(h)?;
            if self.joined == 0 || self.read_back.above.is_some_and(|t| p.size > t) {
                self.repo.verify_upload(&p.id, p.size, &tail)?;
            }
            self.joined += 1;
            self.uploaded.push(p);
        }
        Ok(())
    }

    /// Uploads the last pack and waits for every upload: the packs returned
    /// are all stored, so an index may now name them.
    pub(crate) fn finish(mut self) -> Result<Vec<IndexedPack>> {
        self.seal()?;
        while !self.uploading.is_empty() {
            self.join_oldest()?;
        }
        Ok(self.take_stored())
    }
}

impl Drop for Packer<'_> {
    /// On failure: no spool file is left, and no upload outlives the caller.
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            w.discard();
        }
        for (h, _, _) in self.uploading.drain(..) {
            let _ = self.repo.store.join(h);
        }
    }
}
