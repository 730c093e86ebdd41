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

use super::ids::{BlobId, PackId};
use super::keys::{Audience, Keys};
use super::limits;
use super::{Malformed, RepoError};
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
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
            BlobKind::Refs => "refs",
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

impl PackEntry {
    /// Whether this entry can be real: it lies inside the first `body`
    /// bytes of its pack (the blobs, before the trailer), and its lengths are
    /// within what a blob of its kind can have (see [`super::limits`]).
    pub fn check(&self, body: u64) -> Result<(), Malformed> {
        let blob = || self.id.short();
        let kind = self.kind.name();
        if self
            .offset
            .checked_add(self.length)
            .is_none_or(|end| end > body)
        {
            return Err(Malformed::BlobOutside {
                blob: blob(),
                length: self.length,
                offset: self.offset,
                body,
            });
        }
        let (sealed, raw) = (limits::sealed_cap(self.kind), limits::raw_cap(self.kind));
        if self.length > sealed {
            return Err(Malformed::SealedTooLarge {
                blob: blob(),
                kind,
                length: self.length,
                cap: sealed,
            });
        }
        if self.raw_length > raw {
            return Err(Malformed::RawTooLarge {
                blob: blob(),
                kind,
                raw: self.raw_length,
                cap: raw,
            });
        }
        Ok(())
    }
}

/// A sealed blob ready to be packed.
pub struct SealedBlob {
    pub id: BlobId,
    pub kind: BlobKind,
    pub raw_length: u64,
    pub bytes: Vec<u8>,
}

/// zstd level for data that does not compress (random, already compressed):
/// still a standard frame, at a small fraction of the CPU cost of level 3.
const INCOMPRESSIBLE_LEVEL: i32 = -7;

/// A cheap guess whether `data` compresses: level 1 over three 4 KiB samples.
fn looks_incompressible(data: &[u8]) -> bool {
    const S: usize = 4096;
    if data.len() < 16 * S {
        return false;
    }
    let mid = data.len() / 2;
    let samples = [&data[..S], &data[mid..mid + S], &data[data.len() - S..]];
    let total: usize = samples.iter().map(|s| compress(s, 1).len()).sum();
    total * 100 >= 3 * S * 97
}

thread_local! {
    /// One compression context per sealer thread and level: creating a
    /// context per blob costs more than compressing a small one.
    static COMPRESSORS: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn compress(data: &[u8], level: i32) -> Vec<u8> {
    COMPRESSORS.with(|cell| {
        let mut cs = cell.borrow_mut();
        if !cs.iter().any(|(l, _)| *l == level)
            && let Ok(c) = zstd::bulk::Compressor::new(level)
        {
            cs.push((level, c));
        }
        let out = cs
            .iter_mut()
            .find(|(l, _)| *l == level)
            .and_then(|(_, c)| c.compress(data).ok());
        // A level the library refuses falls back to the default level.
        out.unwrap_or_else(|| zstd::bulk::compress(data, 3).unwrap_or_default())
    })
}

/// Compresses and seals one blob (runs on the sealer pool).
pub fn seal_blob(
    keys: &Keys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
    level: i32,
) -> SealedBlob {
    let level = if looks_incompressible(plaintext) {
        INCOMPRESSIBLE_LEVEL
    } else {
        level
    };
    let compressed = compress(plaintext, level);
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
    // Lengths are untrusted: refused above what the kind can have before
    // anything is decrypted, and decompression stops at raw_length.
    entry
        .check(u64::MAX)
        .and_then(|()| match sealed.len() as u64 {
            size if size > limits::sealed_cap(entry.kind) => Err(Malformed::SealedBytes { size }),
            _ => Ok(()),
        })
        .map_err(|m| RepoError::Corrupt {
            object: what.clone(),
            reason: m.to_string(),
        })?;
    let compressed = keys.open(sealed, &what)?;
    let plain =
        limits::decompress(&compressed, entry.raw_length).map_err(|reason| RepoError::Corrupt {
            object: what.clone(),
            reason,
        })?;
    if plain.len() as u64 != entry.raw_length || keys.blob_id(&plain) != entry.id {
        return Err(RepoError::Corrupt {
            object: what,
            reason: "content does not match its id".into(),
        });
    }
    Ok(plain)
}

/// Writes one pack to a spool file as blobs arrive, hashing as it goes, so a
/// pack never sits in memory whatever its size.
pub struct PackWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    hasher: blake3::Hasher,
    len: u64,
    entries: Vec<PackEntry>,
}

/// A finished pack in its spool file.
pub struct SpooledPack {
    pub id: PackId,
    pub path: std::path::PathBuf,
    pub size: u64,
    pub entries: Vec<PackEntry>,
    /// The pack's last bytes, trailer and footer, as written: what a
    /// read-back of the upload compares ([`crate::repo::caps`]).
    pub tail: Vec<u8>,
}

impl PackWriter {
    /// Starts a pack in a new hidden spool file in `dir` ([`spool_file`]).
    pub fn create(dir: &std::path::Path) -> std::io::Result<PackWriter> {
        let (file, path) = spool_file(dir)?;
        Ok(PackWriter {
            file: std::io::BufWriter::with_capacity(256 * 1024, file),
            path,
            hasher: blake3::Hasher::new(),
            len: 0,
            entries: Vec::new(),
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    pub fn add(&mut self, blob: SealedBlob) -> std::io::Result<()> {
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            offset: self.len,
            length: blob.bytes.len() as u64,
            raw_length: blob.raw_length,
        });
        self.write(&blob.bytes)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Blobs added so far (a pack is closed at [`limits::MAX_PACK_BLOBS`]).
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Appends every blob of `other` (an unfinished pack) after this pack's
    /// own, in their order, streaming from its spool file; `other`'s file is
    /// removed either way.
    pub fn absorb(&mut self, mut other: PackWriter) -> std::io::Result<()> {
        use std::io::Read;
        let copied = (|| {
            std::io::Write::flush(&mut other.file)?;
            let mut from = std::fs::File::open(&other.path)?.take(other.len);
            let mut buf = vec![0u8; 256 * 1024];
            let base = self.len;
            let mut copied = 0u64;
            loop {
                let n = from.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                self.write(&buf[..n])?;
                copied += n as u64;
            }
            if copied != other.len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "spool file {} is shorter than written",
                        other.path.display()
                    ),
                ));
            }
            self.entries.extend(other.entries.iter().map(|e| PackEntry {
                offset: e.offset + base,
                ..*e
            }));
            Ok(())
        })();
        other.discard();
        copied
    }

    /// Appends trailer and footer, syncs the file, and names the pack. On
    /// failure (a full disk) the spool file is removed.
    pub fn finish(mut self, keys: &Keys) -> std::io::Result<SpooledPack> {
        let json = serde_json::to_vec(&self.entries).unwrap_or_default();
        let trailer = keys.seal(
            Audience::Both,
            &zstd::bulk::compress(&json, 3).unwrap_or_default(),
        );
        let written = (|| {
            use std::io::Write;
            self.write(&trailer)?;
            self.write(&(trailer.len() as u32).to_le_bytes())?;
            self.write(FOOTER_MAGIC)?;
            self.file.flush()?;
            self.file.get_ref().sync_data()
        })();
        if let Err(e) = written {
            self.discard();
            return Err(e);
        }
        let mut tail = trailer;
        tail.extend_from_slice(&(tail.len() as u32).to_le_bytes());
        tail.extend_from_slice(FOOTER_MAGIC);
        Ok(SpooledPack {
            id: PackId(*self.hasher.finalize().as_bytes()),
            path: self.path,
            size: self.len,
            entries: self.entries,
            tail,
        })
    }

    /// Gives up on this pack and removes its spool file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A new spool file in `dir`, named `.tmp-pack-PID-STARTTICKS-RANDOM` so
/// that a later run can tell a dead writer's spool from a live one's
/// ([`remove_stale_spool`]).
pub fn spool_file(dir: &std::path::Path) -> std::io::Result<(std::fs::File, std::path::PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(
        "{SPOOL_PREFIX}{}-{:016x}",
        crate::host::temp_mark(),
        rand::random::<u64>()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((file, path))
}

/// The name prefix of pack spool files.
pub const SPOOL_PREFIX: &str = ".tmp-pack-";

/// Removes the pack spool files in `dir` (the system temp folder, for S3)
/// whose writer is gone: a process killed before it could clean up. Files of
/// other users and of live processes are left. Returns how many went.
pub fn remove_stale_spool(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = 0;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(mark) = name
            .as_encoded_bytes()
            .strip_prefix(SPOOL_PREFIX.as_bytes())
        else {
            continue;
        };
        let mine = entry.metadata().is_ok_and(|m| m.is_file() && m.uid() == me);
        if mine && crate::host::temp_writer_gone(mark) && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Parses the footer (the last 12 bytes): returns the trailer length, at
/// most [`limits::MAX_TRAILER`].
pub fn parse_footer(pack: &PackId, footer: &[u8]) -> Result<u64, RepoError> {
    if footer.len() != FOOTER_LEN as usize || &footer[4..] != FOOTER_MAGIC {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: "bad pack footer".into(),
        });
    }
    let tlen = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as u64;
    if tlen > limits::MAX_TRAILER {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: format!(
                "its footer says the trailer is {tlen} bytes, more than a trailer can be ({})",
                limits::MAX_TRAILER
            ),
        });
    }
    Ok(tlen)
}

/// Opens a trailer and checks that its entries fit inside the pack.
pub fn parse_trailer(
    keys: &Keys,
    pack: &PackId,
    trailer: &[u8],
    pack_len: u64,
) -> Result<Vec<PackEntry>, RepoError> {
    let what = format!("trailer of {}", pack.key());
    let corrupt = |reason: String| RepoError::Corrupt {
        object: what.clone(),
        reason,
    };
    if trailer.len() as u64 > limits::MAX_TRAILER {
        return Err(corrupt(format!(
            "{} bytes, more than a trailer can be",
            trailer.len()
        )));
    }
    let compressed = keys.open(trailer, &what)?;
    let json = limits::decompress(&compressed, limits::TRAILER_JSON).map_err(corrupt)?;
    let entries: Vec<PackEntry> =
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("bad trailer: {e}")))?;
    if entries.len() > limits::MAX_PACK_BLOBS {
        return Err(corrupt(format!(
            "it lists {} blobs, more than a pack can hold ({})",
            entries.len(),
            limits::MAX_PACK_BLOBS
        )));
    }
    let body = pack_len.saturating_sub(FOOTER_LEN + trailer.len() as u64);
    for e in &entries {
        e.check(body).map_err(|m| corrupt(m.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::keys::AgentKey;
    use proptest::prelude::*;

    fn keys() -> Keys {
        let op = age::x25519::Identity::generate();
        let mut k = Keys::from_agent_key(&AgentKey::generate("t".into(), vec![op.to_public()]));
        k.operator = Some(crate::repo::keys::OperatorIdentity {
            identities: vec![op],
        });
        k
    }

    #[test]
    fn a_pack_round_trips_and_names_itself() {
        let k = keys();
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path()).unwrap();
        let blobs: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![7u8; 100_000], vec![]];
        for (i, b) in blobs.iter().enumerate() {
            let kind = if i == 1 {
                BlobKind::Refs
            } else {
                BlobKind::Data
            };
            w.add(seal_blob(&k, kind, k.blob_id(b), b, 2)).unwrap();
        }
        let p = w.finish(&k).unwrap();
        let bytes = std::fs::read(&p.path).unwrap();
        assert_eq!(p.id.0, *blake3::hash(&bytes).as_bytes());
        let entries = parse_pack(&k, &p.id, &bytes).unwrap();
        assert_eq!(entries, p.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&open_blob(&k, e, &p.id, sealed).unwrap(), b);
        }
        // A flipped byte inside a blob is caught by authentication.
        let e = entries[1];
        let mut bad = bytes[e.offset as usize..(e.offset + e.length) as usize].to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        assert!(open_blob(&k, &e, &p.id, &bad).is_err());
    }

    #[test]
    fn an_absorbed_pack_follows_the_first_and_every_blob_still_opens() {
        let k = keys();
        let dir = tempfile::tempdir().unwrap();
        let mut data = PackWriter::create(dir.path()).unwrap();
        let mut meta = PackWriter::create(dir.path()).unwrap();
        let blobs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 40_000 + i as usize]).collect();
        for (i, b) in blobs.iter().enumerate() {
            let (w, kind) = if i % 2 == 0 {
                (&mut data, BlobKind::Data)
            } else {
                (&mut meta, BlobKind::Tree)
            };
            w.add(seal_blob(&k, kind, k.blob_id(b), b, 2)).unwrap();
        }
        let meta_file = meta.path.clone();
        data.absorb(meta).unwrap();
        assert!(
            !meta_file.exists(),
            "the absorbed pack's spool file is gone"
        );
        let p = data.finish(&k).unwrap();
        let bytes = std::fs::read(&p.path).unwrap();
        assert_eq!(p.id.0, *blake3::hash(&bytes).as_bytes());
        let entries = parse_pack(&k, &p.id, &bytes).unwrap();
        let kinds: Vec<BlobKind> = entries.iter().map(|e| e.kind).collect();
        use BlobKind::{Data, Tree};
        assert_eq!(kinds, [Data, Data, Data, Tree, Tree, Tree]);
        let order = [0, 2, 4, 1, 3, 5];
        for (e, i) in entries.iter().zip(order) {
            let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(open_blob(&k, e, &p.id, sealed).unwrap(), blobs[i]);
        }
    }

    #[test]
    fn the_agent_cannot_open_content_but_can_open_bookkeeping() {
        let k = keys();
        let agent_only = Keys {
            operator: None,
            ..Keys::from_agent_key(&AgentKey {
                repository_id: "t".into(),
                id_key: k.id_key,
                agent_identity: k.agent_identity.clone().unwrap(),
                recipients: k.recipients.clone(),
            })
        };
        let data = seal_blob(&k, BlobKind::Data, k.blob_id(b"x"), b"x", 2);
        let refs = seal_blob(&k, BlobKind::Refs, k.blob_id(b"y"), b"y", 2);
        let e = |b: &SealedBlob| PackEntry {
            id: b.id,
            kind: b.kind,
            offset: 0,
            length: b.bytes.len() as u64,
            raw_length: b.raw_length,
        };
        let pack = PackId([0; 32]);
        let err = open_blob(&agent_only, &e(&data), &pack, &data.bytes).unwrap_err();
        assert!(matches!(err, RepoError::NeedIdentity { .. }), "{err}");
        assert_eq!(
            open_blob(&agent_only, &e(&refs), &pack, &refs.bytes).unwrap(),
            b"y"
        );
    }

    #[test]
    fn stale_spool_files_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let live = PackWriter::create(dir.path()).unwrap();
        let me = std::process::id();
        let (_, ticks) = crate::host::proc_stat(me).unwrap();
        let names = [
            format!(".tmp-pack-{}-1-00ff", u32::MAX - 1),
            format!(".tmp-pack-{me}-{}-00ff", ticks + 1),
            format!(".tmp-pack-{}-00ff", u32::MAX - 1),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        std::fs::write(dir.path().join("unrelated"), b"x").unwrap();
        assert_eq!(remove_stale_spool(dir.path()), 3);
        assert!(live.path.exists(), "this process's own spool stays");
        assert!(dir.path().join("unrelated").exists());
        live.discard();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Stored bytes are untrusted: parsing garbage must fail cleanly, never panic.
        #[test]
        fn garbage_packs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), tail in 0u32..5000) {
            let k = keys();
            let mut b = bytes.clone();
            b.extend_from_slice(&tail.to_le_bytes());
            b.extend_from_slice(FOOTER_MAGIC);
            let _ = parse_pack(&k, &PackId([1; 32]), &bytes);
            let _ = parse_pack(&k, &PackId([1; 32]), &b);
            let _ = parse_trailer(&k, &PackId([1; 32]), &bytes, 1 << 20);
            let e = PackEntry { id: BlobId([2; 32]), kind: BlobKind::Data, offset: 0, length: bytes.len() as u64, raw_length: u64::MAX };
            let _ = open_blob(&k, &e, &PackId([1; 32]), &bytes);
        }
    }
}
