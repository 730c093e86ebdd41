//! Packs: many sealed blobs in one storage object, then a sealed trailer that
//! lists them, then a fixed 12-byte footer:
//!
//! ```text
//! blob_0 … blob_n   each a standard age file of a zstd frame
//! trailer           age file (operator + agent) of zstd(JSON [PackEntry…])
//! footer            u32 LE trailer length ‖ b"cofferP1"
//! ```
//!
//! The trailer makes a pack self-describing: a lost index can be rebuilt
//! from the packs alone, by the agent as well as by the operator.

use super::RepoError;
use super::ids::{BlobId, PackId};
use super::keys::{Audience, Keys};
use serde::{Deserialize, Serialize};

pub const FOOTER_MAGIC: &[u8; 8] = b"cofferP1";
pub const FOOTER_LEN: u64 = 12;

/// What a blob holds; decides who may read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// File contents (a chunk of a file, or a bundle of small files). Operator only.
    Data,
    /// A piece of a snapshot's file list. Operator only.
    Tree,
    /// A piece of a snapshot's reference list (blob ids). Operator and agent.
    Refs,
}

impl BlobKind {
    pub fn audience(self) -> Audience {
        match self {
            BlobKind::Data | BlobKind::Tree => Audience::Operator,
            BlobKind::Refs => Audience::Both,
        }
    }
    pub fn code(self) -> i64 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
            BlobKind::Refs => 2,
        }
    }
    pub fn from_code(c: i64) -> Option<BlobKind> {
        match c {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            2 => Some(BlobKind::Refs),
            _ => None,
        }
    }
}

/// Where one blob lives inside its pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: BlobId,
    pub kind: BlobKind,
    /// Byte offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob (the age file).
    pub length: u64,
    /// Length of the plaintext (after decompression).
    pub raw_length: u64,
}

/// A sealed blob ready to be packed.
pub struct SealedBlob {
    pub id: BlobId,
    pub kind: BlobKind,
    pub raw_length: u64,
    pub bytes: Vec<u8>,
}

/// Compresses and seals one blob (runs on the sealer pool).
pub fn seal_blob(
    keys: &Keys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
    level: i32,
) -> SealedBlob {
    // zstd into a Vec cannot fail for valid levels; fall back to level 3 otherwise.
    let compressed = zstd::bulk::compress(plaintext, level)
        .or_else(|_| zstd::bulk::compress(plaintext, 3))
        .unwrap_or_default();
    SealedBlob {
        id,
        kind,
        raw_length: plaintext.len() as u64,
        bytes: keys.seal(kind.audience(), &compressed),
    }
}

/// Opens one sealed blob and checks that its plaintext hashes to its id.
pub fn open_blob(
    keys: &Keys,
    entry: &PackEntry,
    pack: &PackId,
    sealed: &[u8],
) -> Result<Vec<u8>, RepoError> {
    let what = format!("blob {} in {}", entry.id.short(), pack.key());
    let compressed = keys.open(sealed, &what)?;
    // raw_length is untrusted: cap the allocation at the largest blob we write.
    let cap = (entry.raw_length as usize).min(64 * 1024 * 1024);
    let plain = zstd::bulk::decompress(&compressed, cap).map_err(|e| RepoError::Corrupt {
        object: what.clone(),
        reason: format!("zstd: {e}"),
    })?;
    if plain.len() as u64 != entry.raw_length || keys.blob_id(&plain) != entry.id {
        return Err(RepoError::Corrupt {
            object: what,
            reason: "content does not match its id".into(),
        });
    }
    Ok(plain)
}

/// Accumulates sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn add(&mut self, blob: SealedBlob) {
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            offset: self.buf.len() as u64,
            length: blob.bytes.len() as u64,
            raw_length: blob.raw_length,
        });
        self.buf.extend_from_slice(&blob.bytes);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends trailer and footer; returns the pack id, bytes and entries.
    pub fn finish(mut self, keys: &Keys) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let json = serde_json::to_vec(&self.entries).unwrap_or_default();
        let trailer = keys.seal(
            Audience::Both,
            &zstd::bulk::compress(&json, 3).unwrap_or_default(),
        );
        self.buf.extend_from_slice(&trailer);
        self.buf
            .extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(FOOTER_MAGIC);
        let id = PackId(*blake3::hash(&self.buf).as_bytes());
        (id, self.buf, self.entries)
    }
}

/// Parses the footer (the last 12 bytes): returns the trailer length.
pub fn parse_footer(pack: &PackId, footer: &[u8]) -> Result<u64, RepoError> {
    if footer.len() != FOOTER_LEN as usize || &footer[4..] != FOOTER_MAGIC {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: "bad pack footer".into(),
        });
    }
    Ok(u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as u64)
}

/// Opens a trailer and checks that its entries fit inside the pack.
pub fn parse_trailer(
    keys: &Keys,
    pack: &PackId,
    trailer: &[u8],
    pack_len: u64,
) -> Result<Vec<PackEntry>, RepoError> {
    let what = format!("trailer of {}", pack.key());
    let compressed = keys.open(trailer, &what)?;
    let json =
        zstd::bulk::decompress(&compressed, 256 * 1024 * 1024).map_err(|e| RepoError::Corrupt {
            object: what.clone(),
            reason: format!("zstd: {e}"),
        })?;
    let entries: Vec<PackEntry> =
        serde_json::from_slice(&json).map_err(|e| RepoError::Corrupt {
            object: what.clone(),
            reason: format!("bad trailer: {e}"),
        })?;
    let body = pack_len.saturating_sub(FOOTER_LEN + trailer.len() as u64);
    for e in &entries {
        if e.offset.checked_add(e.length).is_none_or(|end| end > body) {
            return Err(RepoError::Corrupt {
                object: what,
                reason: format!("blob {} lies outside the pack", e.id.short()),
            });
        }
    }
    Ok(entries)
}

/// Parses a whole pack in memory (check --read-data, fuzzing).
pub fn parse_pack(keys: &Keys, pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>, RepoError> {
    let len = bytes.len() as u64;
    if len < FOOTER_LEN {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: "pack shorter than its footer".into(),
        });
    }
    let tlen = parse_footer(pack, &bytes[(len - FOOTER_LEN) as usize..])?;
    if tlen + FOOTER_LEN > len {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: "trailer length exceeds pack".into(),
        });
    }
    let start = (len - FOOTER_LEN - tlen) as usize;
    parse_trailer(keys, pack, &bytes[start..(len - FOOTER_LEN) as usize], len)
}
