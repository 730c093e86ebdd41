//! Index objects: which blob is in which pack at which offset. Sealed to the
//! operator and the agent (the agent needs it to deduplicate and prune).
//! Written after the packs they describe, before the snapshot that uses them.

use super::ids::PackId;
use super::limits;
use super::malformed::Malformed;
use super::pack::{FOOTER_LEN, PackEntry};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexedPack {
    pub id: PackId,
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

impl IndexFile {
    /// Whether everything this index says can be true of a repository whose
    /// packs are at most `max_pack` bytes: every pack within that size and
    /// [`limits::MAX_PACK_BLOBS`], every blob inside its pack (before the
    /// footer) and within what its kind can have. An index read from storage
    /// is refused whole otherwise: its numbers would be used as lengths and
    /// offsets of reads.
    pub fn validate(&self, max_pack: u64) -> Result<(), Malformed> {
        for p in &self.packs {
            let pack = || p.id.short();
            if !(FOOTER_LEN..=max_pack).contains(&p.size) {
                return Err(Malformed::PackSize {
                    pack: pack(),
                    size: p.size,
                    max: max_pack,
                });
            }
            if p.blobs.len() > limits::MAX_PACK_BLOBS {
                return Err(Malformed::PackBlobs {
                    pack: pack(),
                    blobs: p.blobs.len(),
                });
            }
            for b in &p.blobs {
                b.check(p.size - FOOTER_LEN)
                    .map_err(|e| Malformed::InPack {
                        pack: pack(),
                        blob: Box::new(e),
                    })?;
            }
        }
        Ok(())
    }

    /// Cuts a list of packs into index objects of at most
    /// [`limits::MAX_INDEX_BLOBS`] blobs and [`limits::MAX_INDEX_PACKS`]
    /// packs each (a pack is never split), so each stays within what a
    /// reader accepts ([`limits::INDEX_JSON`]). Empty for no packs.
    pub fn split(packs: Vec<IndexedPack>) -> Vec<IndexFile> {
        let mut out: Vec<IndexFile> = Vec::new();
        let mut blobs = 0;
        for p in packs {
            let full = out.last().is_none_or(|ix| {
                ix.packs.len() >= limits::MAX_INDEX_PACKS
                    || blobs + p.blobs.len() > limits::MAX_INDEX_BLOBS
            });
            if full {
                out.push(IndexFile { packs: Vec::new() });
                blobs = 0;
            }
            blobs += p.blobs.len();
            if let Some(ix) = out.last_mut() {
                ix.packs.push(p);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ids::BlobId;
    use crate::repo::pack::BlobKind;

    fn pack(n: u8, blobs: usize) -> IndexedPack {
        IndexedPack {
            id: PackId([n; 32]),
            size: 1 << 20,
            blobs: (0..blobs)
                .map(|i| PackEntry {
                    id: BlobId([i as u8; 32]),
                    kind: BlobKind::Data,
                    offset: i as u64,
                    length: 1,
                    raw_length: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn large_indexes_are_split_by_blobs_and_packs() {
        let half = limits::MAX_INDEX_BLOBS / 2;
        let parts = IndexFile::split(vec![pack(1, half), pack(2, half), pack(3, 1)]);
        let sizes: Vec<usize> = parts.iter().map(|p| p.packs.len()).collect();
        assert_eq!(sizes, [2, 1]);
        let many: Vec<IndexedPack> = (0..limits::MAX_INDEX_PACKS + 1)
            .map(|_| pack(0, 1))
            .collect();
        let parts = IndexFile::split(many);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].packs.len(), limits::MAX_INDEX_PACKS);
        assert!(IndexFile::split(Vec::new()).is_empty());
    }

    #[test]
    fn impossible_entries_are_refused() {
        let max_pack = 64 << 20;
        let ok = IndexFile {
            packs: vec![pack(1, 3)],
        };
        assert_eq!(ok.validate(max_pack), Ok(()));
        let with = |f: &dyn Fn(&mut IndexedPack)| {
            let mut ix = ok.clone();
            f(&mut ix.packs[0]);
            ix.validate(max_pack).unwrap_err().to_string()
        };
        let mut ix = ok.clone();
        ix.packs[0].blobs[0].length = 1 << 62;
        let e = ix.validate(max_pack).unwrap_err();
        assert!(
            matches!(&e, Malformed::InPack { blob, .. } if matches!(**blob, Malformed::BlobOutside { .. })),
            "{e:?}"
        );
        let e = with(&|p| p.blobs[0].length = 1 << 62);
        assert!(e.contains("outside the pack"), "{e}");
        let e = with(&|p| p.blobs[1].offset = u64::MAX);
        assert!(e.contains("outside the pack"), "{e}");
        let e = with(&|p| p.size = 3 << 30);
        assert!(e.contains("is said to be"), "{e}");
        let e = with(&|p| p.blobs[2].raw_length = 60 << 20);
        assert!(e.contains("more than a data blob can hold"), "{e}");
        let e = with(&|p| {
            p.blobs[2].kind = BlobKind::Tree;
            p.blobs[2].raw_length = 60 << 20;
        });
        assert!(e.contains("tree blob"), "{e}");
    }
}
