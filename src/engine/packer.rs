//! New packs from sealed blobs, for backup and for the engines that copy or
//! re-store blobs (prune's repack, erase): each pack is spooled to a file and uploaded in
//! the background while the next one fills, with at most the backend's upload
//! concurrency in flight (so spool files and requests stay bounded).
//!
//! File contents and metadata (file lists, reference lists) fill packs of
//! their own, so a snapshot's file list lies in a few contiguous runs that
//! a reader fetches in a few requests, not one per blob between file
//! contents. The last pack of a run takes both when they fit in one: the
//! split costs no extra upload.

use crate::repo::Repository;
use crate::repo::index::IndexedPack;
use crate::repo::limits;
use crate::repo::lock::RepoLock;
use crate::repo::pack::{BlobKind, PackWriter, SealedBlob};
use crate::storage::StorageError;
use crate::{Error, Result};
use std::collections::VecDeque;

/// A spool file error; a full disk says so, where, and what to do (the
/// spool folder of a local repository is inside it).
fn spool_failure(repo: &Repository, e: std::io::Error) -> Error {
    let spool = repo.store.spool_dir();
    let in_repo = repo.store.spools_in_repository();
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
    /// The pack of file contents being filled, and the one of metadata.
    data: Option<PackWriter>,
    meta: Option<PackWriter>,
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
            data: None,
            meta: None,
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
        let repo = self.repo;
        let slot = match blob.kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Tree | BlobKind::Refs => &mut self.meta,
        };
        let w = match slot {
            Some(w) => w,
            None => slot.insert(
                PackWriter::create(&repo.store.spool_dir()).map_err(|e| spool_failure(repo, e))?,
            ),
        };
        w.add(blob).map_err(|e| spool_failure(repo, e))?;
        if w.len() >= self.repo.config.pack_size || w.blob_count() >= limits::MAX_PACK_BLOBS {
            let w = slot.take();
            self.seal(w)?;
        }
        Ok(())
    }

    /// Finishes a pack and starts its upload, first waiting for the oldest
    /// upload if the limit is reached.
    fn seal(&mut self, w: Option<PackWriter>) -> Result<()> {
        let Some(w) = w else {
            return Ok(());
        };
        while self.uploading.len() >= self.repo.store.upload_concurrency() {
            self.join_oldest()?;
        }
        let p = w
            .finish(&self.repo.keys)
            .map_err(|e| spool_failure(self.repo, e))?;
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
        let (data, meta) = (self.data.take(), self.meta.take());
        match (data, meta) {
            // Both tails in one pack when they fit: metadata after contents.
            (Some(mut d), Some(m))
                if d.len() + m.len() <= self.repo.config.pack_size
                    && d.blob_count() + m.blob_count() <= limits::MAX_PACK_BLOBS =>
            {
                if let Err(e) = d.absorb(m) {
                    d.discard();
                    return Err(spool_failure(self.repo, e));
                }
                self.seal(Some(d))?;
            }
            (d, m) => {
                self.seal(d)?;
                self.seal(m)?;
            }
        }
        while !self.uploading.is_empty() {
            self.join_oldest()?;
        }
        Ok(self.take_stored())
    }
}

impl Drop for Packer<'_> {
    /// On failure: no spool file is left, and no upload outlives the caller.
    fn drop(&mut self) {
        for w in [self.data.take(), self.meta.take()].into_iter().flatten() {
            w.discard();
        }
        for (h, _, _) in self.uploading.drain(..) {
            let _ = self.repo.store.join(h);
        }
    }
}
