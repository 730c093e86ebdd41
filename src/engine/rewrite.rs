//! Writing new snapshots from old ones (erase, repair): new blobs sealed
//! into packs, and a file list written entry by entry into tree blobs, its
//! tree index and its reference list, as a backup writes them.

use super::packer::{Packer, ReadBack};
use crate::Result;
use crate::catalog::BlobMap;
use crate::repo::Repository;
use crate::repo::chunker::{Chunker, Splitter};
use crate::repo::ids::BlobId;
use crate::repo::index::IndexedPack;
use crate::repo::pack::{BlobKind, seal_blob};
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::{Entry, TreeIndexBuilder};
use std::collections::HashSet;

/// Seals new blobs into packs; a blob the repository holds (usable) or
/// this writer already took is not stored twice.
pub(crate) struct BlobWriter<'a> {
    pub repo: &'a Repository,
    pub known: &'a BlobMap,
    queued: HashSet<BlobId>,
    packer: Packer<'a>,
    pub blobs_written: usize,
}

impl<'a> BlobWriter<'a> {
    pub fn new(repo: &'a Repository, known: &'a BlobMap, read_back: ReadBack) -> Self {
        BlobWriter {
            repo,
            known,
            queued: HashSet::new(),
            packer: Packer::new(repo, read_back),
            blobs_written: 0,
        }
    }

    pub fn store(&mut self, kind: BlobKind, data: &[u8]) -> Result<BlobId> {
        let id = self.repo.keys.blob_id(data);
        if self.known.contains_key(&id) || !self.queued.insert(id) {
            return Ok(id);
        }
        let sealed = seal_blob(
            &self.repo.keys,
            kind,
            id,
            data,
            crate::config::DEFAULT_COMPRESSION,
        );
        self.packer.add(sealed)?;
        self.blobs_written += 1;
        Ok(id)
    }

    /// Uploads the last pack; returns every pack written, for one index.
    pub fn finish(self) -> Result<Vec<IndexedPack>> {
        self.packer.finish()
    }
}

/// One snapshot's new file list, tree index and reference list.
pub(crate) struct ListWriter {
    meta: Chunker,
    splitter: Splitter,
    tree_index: Option<TreeIndexBuilder>,
    tree: Vec<BlobId>,
    refs: HashSet<BlobId>,
    line: Vec<u8>,
}

/// What a finished list is: its tree blobs, tree index and refs blobs.
pub(crate) struct WrittenList {
    pub tree: Vec<BlobId>,
    pub tree_index: Option<BlobId>,
    pub refs: Vec<BlobId>,
}

impl WrittenList {
    /// The snapshot of this list in place of `old`: the same time, host,
    /// profile and paths, with `summary`.
    pub fn snapshot_like(self, old: &Snapshot, summary: Summary) -> Snapshot {
        Snapshot {
            time: old.time,
            host: old.host.clone(),
            profile: old.profile.clone(),
            paths: old.paths.clone(),
            tree: self.tree,
            refs: self.refs,
            tree_index: self.tree_index,
            summary,
            stored: None,
        }
    }
}

impl ListWriter {
    pub fn new(repo: &Repository) -> ListWriter {
        let meta = Chunker::new(repo.config.meta_chunks, repo.keys.chunker_seed());
        ListWriter {
            splitter: Splitter::new(meta.clone()),
            meta,
            tree_index: (repo.config.version >= 2).then(TreeIndexBuilder::default),
            tree: Vec::new(),
            refs: HashSet::new(),
            line: Vec::new(),
        }
    }

    /// Appends one entry (entries come in walk order).
    pub fn push(&mut self, w: &mut BlobWriter, e: &Entry) -> Result<()> {
        self.refs.extend(e.content.iter().map(|x| x.blob));
        self.line.clear();
        e.write_line(&mut self.line);
        if let Some(ix) = &mut self.tree_index {
            ix.line(&e.path, self.line.len());
        }
        for chunk in self.splitter.push(&self.line) {
            self.store_tree(w, &chunk)?;
        }
        Ok(())
    }

    fn store_tree(&mut self, w: &mut BlobWriter, chunk: &[u8]) -> Result<()> {
        if let Some(ix) = &mut self.tree_index {
            ix.chunk(chunk.len());
        }
        let id = w.store(BlobKind::Tree, chunk)?;
        self.tree.push(id);
        Ok(())
    }

    pub fn finish(mut self, w: &mut BlobWriter) -> Result<WrittenList> {
        let splitter = std::mem::replace(&mut self.splitter, Splitter::new(self.meta.clone()));
        for chunk in splitter.finish() {
            self.store_tree(w, &chunk)?;
        }
        let tree_index = match self.tree_index.take().and_then(TreeIndexBuilder::finish) {
            Some(ix) => Some(w.store(BlobKind::Tree, &ix)?),
            None => None,
        };
        let mut all: Vec<BlobId> = self
            .refs
            .into_iter()
            .chain(self.tree.iter().copied())
            .chain(tree_index)
            .collect();
        all.sort_unstable();
        all.dedup();
        let bytes: Vec<u8> = all.iter().flat_map(|r| r.0).collect();
        let mut ref_splitter = Splitter::new(self.meta);
        let mut chunks = ref_splitter.push(&bytes);
        chunks.extend(ref_splitter.finish());
        let mut refs = Vec::new();
        for chunk in chunks {
            refs.push(w.store(BlobKind::Refs, &chunk)?);
        }
        Ok(WrittenList {
            tree: self.tree,
            tree_index,
            refs,
        })
    }
}
