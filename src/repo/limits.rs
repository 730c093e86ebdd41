//! Every cap on what is read from storage, in one place (docs/FORMAT.md,
//! "Limits"). A repository is untrusted input: a provider can plant any
//! object, and a stolen agent key can seal any index, trailer or snapshot.
//! So every length, offset, count and size read from storage is checked
//! against one of these before anything is allocated for it, and every
//! whole-object read is capped by its kind ([`crate::storage::Cap`]).
//!
//! Each cap sits above anything coffer's writers make, with room to spare,
//! and the writers keep under it: packs close at [`MAX_PACK_BLOBS`] blobs,
//! index objects are split at [`MAX_INDEX_BLOBS`] blobs and
//! [`MAX_INDEX_PACKS`] packs, a tree index that would exceed [`TREE_BLOB`]
//! is left out (readers then scan the list), a file whose file list entry
//! would exceed [`MAX_ENTRY_LINE`] is skipped by the backup, and a snapshot
//! or index object over its cap is refused at writing.

use super::pack::{BlobKind, FOOTER_LEN};
use crate::storage::Cap;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The most the stored form of `plain` bytes can take: zstd's worst case
/// (`compressBound`: n + n/256 + a little) plus age's (16 bytes per 64 KiB
/// chunk, a nonce, and a header of about 100 bytes per recipient; 64 KiB of
/// header is room for 600 recipients).
pub const fn sealed_bound(plain: u64) -> u64 {
    plain + plain / 128 + 64 * KIB
}

/// `config` (plaintext JSON of a few hundred bytes), `keyring` (the sealed
/// agent key file, a few KiB), `lock` and `locks/…` (sealed JSON, about
/// 1 KiB) and `capabilities` (sealed JSON, under 1 KiB).
pub const SMALL_OBJECT: u64 = MIB;

/// Plaintext JSON of one snapshot object: its `tree` and `refs` blob ids at
/// 67 bytes each. 32 MiB holds 500,000 ids: about 30 GiB of file list and
/// reference list at 64 KiB a blob, some 100 million files.
pub const SNAPSHOT_JSON: u64 = 32 * MIB;

/// Plaintext JSON of one index object. An entry takes at most 148 bytes
/// and a pack about 100 more, so [`MAX_INDEX_BLOBS`] blobs in
/// [`MAX_INDEX_PACKS`] packs take under 21 MB.
pub const INDEX_JSON: u64 = 32 * MIB;

/// Plaintext JSON of one audit event: a time, an actor, an action and a
/// sentence of detail (it names globs and a target).
pub const AUDIT_JSON: u64 = MIB;

/// Plaintext JSON of one damage record: at most
/// [`super::damage::MAX_FINDINGS`] findings of a 67-byte id each, plus a
/// reason of at most 1 KiB a pack.
pub const DAMAGE_JSON: u64 = 16 * MIB;

/// Blobs in one pack. A sealed blob takes at least ~210 bytes (age header,
/// nonce, tag, a zstd frame), so a 16 MiB pack can not hold more than about
/// 80,000; the packer closes a pack at this count whatever `pack_size` says.
pub const MAX_PACK_BLOBS: usize = 128 * 1024;

/// Plaintext JSON of a pack trailer: [`MAX_PACK_BLOBS`] entries of at most
/// 148 bytes is 19.4 MB.
pub const TRAILER_JSON: u64 = 24 * MIB;

/// The sealed trailer, as the footer's length field gives it.
pub const MAX_TRAILER: u64 = sealed_bound(TRAILER_JSON);

/// Blobs in one index object (a writer splits larger ones): one maximal
/// pack fits.
pub const MAX_INDEX_BLOBS: usize = MAX_PACK_BLOBS;

/// Packs in one index object (a writer splits larger ones).
pub const MAX_INDEX_PACKS: usize = 16 * 1024;

/// A `data` blob's plaintext: a chunk (the config's `data_chunks.max`, which
/// the config may set up to 16 MiB) or a bundle of small files (closed at
/// 1 MiB, plus one file under 256 KiB).
pub const DATA_BLOB: u64 = 16 * MIB;

/// A `tree` blob's plaintext: a piece of a file list (`meta_chunks.max`, up
/// to 16 MiB) or a tree index, which a writer leaves out above this size
/// (one line per file list blob: 32 MiB indexes some 200,000 blobs).
pub const TREE_BLOB: u64 = 32 * MIB;

/// A `refs` blob's plaintext: a piece of a reference list (`meta_chunks.max`).
pub const REFS_BLOB: u64 = 16 * MIB;

/// One entry (line) of a file list. What makes a line long is a file's
/// pieces, 78 bytes each: 64 MiB holds 860,000 pieces, a file of at least
/// 52 GiB at the default chunking (64 KiB smallest chunk), 210 GiB at the
/// average chunk (256 KiB). The backup skips a file whose entry would be longer.
pub const MAX_ENTRY_LINE: usize = 64 * MIB as usize;

/// A path or a link target in a file list, in bytes. Linux refuses longer
/// paths (PATH_MAX, 4096 with its NUL), so a backup can not read one and a
/// restore could not create one.
pub const MAX_PATH: usize = 4096;

// The caps hold together, checked when coffer is built: a trailer holds a
// full pack's entries (at most 148 bytes each, the longest below), an index
// object a full pack, the footer's 32-bit length field the largest trailer.
const _: () = {
    let entry = r#"{"id":"0000000000000000000000000000000000000000000000000000000000000000","kind":"data","offset":1234567890,"length":34000000,"raw_length":33554432},"#;
    assert!(entry.len() <= 148);
    assert!(148 * MAX_PACK_BLOBS as u64 <= TRAILER_JSON);
    assert!(148 * MAX_INDEX_BLOBS as u64 + 100 * MAX_INDEX_PACKS as u64 <= INDEX_JSON);
    assert!(MAX_INDEX_BLOBS >= MAX_PACK_BLOBS);
    assert!(MAX_TRAILER < u32::MAX as u64);
};

/// The largest plaintext a blob of `kind` can have.
pub const fn raw_cap(kind: BlobKind) -> u64 {
    match kind {
        BlobKind::Data => DATA_BLOB,
        BlobKind::Tree => TREE_BLOB,
        BlobKind::Refs => REFS_BLOB,
    }
}

/// The largest sealed form a blob of `kind` can have.
pub const fn sealed_cap(kind: BlobKind) -> u64 {
    sealed_bound(raw_cap(kind))
}

/// The largest sealed blob of any kind.
pub const MAX_SEALED_BLOB: u64 = sealed_bound(TREE_BLOB);
const _: () = {
    assert!(sealed_cap(BlobKind::Data) <= MAX_SEALED_BLOB);
    assert!(sealed_cap(BlobKind::Refs) <= MAX_SEALED_BLOB);
};

/// The largest pack of a repository whose config says `pack_size`: a pack is
/// closed once it reaches `pack_size`, so it holds less than that plus one
/// blob, then its trailer and footer.
pub const fn max_pack_size(pack_size: u64) -> u64 {
    pack_size + MAX_SEALED_BLOB + MAX_TRAILER + FOOTER_LEN
}

pub const CONFIG: Cap = Cap {
    max: SMALL_OBJECT,
    what: "the config",
};
pub const KEYRING: Cap = Cap {
    max: SMALL_OBJECT,
    what: "the keyring",
};
pub const LOCK: Cap = Cap {
    max: SMALL_OBJECT,
    what: "the lock",
};
pub const CAPABILITIES: Cap = Cap {
    max: SMALL_OBJECT,
    what: "the capabilities record",
};
pub const SNAPSHOT: Cap = Cap {
    max: sealed_bound(SNAPSHOT_JSON),
    what: "a snapshot object",
};
pub const INDEX: Cap = Cap {
    max: sealed_bound(INDEX_JSON),
    what: "an index object",
};
pub const AUDIT: Cap = Cap {
    max: sealed_bound(AUDIT_JSON),
    what: "an audit object",
};
pub const DAMAGE: Cap = Cap {
    max: sealed_bound(DAMAGE_JSON),
    what: "a damage record",
};

/// A pack read whole (check --read-data, copy).
pub const fn pack(pack_size: u64) -> Cap {
    Cap {
        max: max_pack_size(pack_size),
        what: "a pack",
    }
}

/// The cap of a sealed bookkeeping object by its key (`snapshots/…`,
/// `index/…`, `audit/…`), and the most its JSON may take; None for other keys.
pub fn object_cap(key: &str) -> Option<(Cap, u64)> {
    let (folder, _) = key.split_once('/')?;
    match folder {
        "snapshots" => Some((SNAPSHOT, SNAPSHOT_JSON)),
        "index" => Some((INDEX, INDEX_JSON)),
        "audit" => Some((AUDIT, AUDIT_JSON)),
        "damage" => Some((DAMAGE, DAMAGE_JSON)),
        _ => None,
    }
}

/// The cap of any object a repository holds, by its key (copy reads every
/// kind whole).
pub fn any_object_cap(key: &str, pack_size: u64) -> Cap {
    match key {
        super::CONFIG_KEY => CONFIG,
        super::KEYRING_KEY => KEYRING,
        super::lock::LOCK_KEY => LOCK,
        super::caps::CAPS_KEY => CAPABILITIES,
        _ if key.starts_with(super::lock::LOCKS_PREFIX) => LOCK,
        _ if key.starts_with("data/") => pack(pack_size),
        _ => object_cap(key).map_or(
            Cap {
                max: SMALL_OBJECT,
                what: "an object of no known kind",
            },
            |(cap, _)| cap,
        ),
    }
}

/// Decompresses one zstd frame of at most `cap` bytes. A frame that
/// declares a larger size is refused before anything is decompressed; one
/// that declares none (or lies) stops at the cap: a bomb costs `cap` bytes
/// of memory, never more.
pub fn decompress(compressed: &[u8], cap: u64) -> Result<Vec<u8>, String> {
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(compressed)
        && declared > cap
    {
        return Err(format!(
            "zstd: it declares {declared} bytes, more than the {cap} it can hold"
        ));
    }
    zstd::bulk::decompress(compressed, cap as usize)
        .map_err(|e| format!("zstd: {e} (a frame must decompress to at most {cap} bytes)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd bomb (1 GiB of zeros in a few KiB) is refused: by its declared
    /// size when the frame has one, at the cap when it does not.
    #[test]
    fn bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 64 * MIB as usize];
        let declared = zstd::bulk::compress(&zeros, 3).unwrap();
        let err = decompress(&declared, MIB).unwrap_err();
        assert!(err.contains("declares 67108864 bytes"), "{err}");
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut e, &zeros).unwrap();
        let undeclared = e.finish().unwrap();
        assert!(decompress(&undeclared, MIB).is_err());
        assert_eq!(
            decompress(&undeclared, 64 * MIB).unwrap().len(),
            zeros.len()
        );
    }

    #[test]
    fn caps_by_key() {
        assert_eq!(object_cap("index/ab").map(|c| c.0), Some(INDEX));
        assert_eq!(object_cap("snapshots/ab").map(|c| c.0), Some(SNAPSHOT));
        assert_eq!(object_cap("data/ab/abc"), None);
        assert_eq!(any_object_cap("data/ab/abc", 16 * MIB).what, "a pack");
        assert_eq!(any_object_cap("keyring", 16 * MIB), KEYRING);
        let sixteen = crate::repo::chunker::ChunkerParams {
            min: 4 * MIB as usize,
            avg: 4 * MIB as usize,
            max: 16 * MIB as usize,
        };
        assert!(sixteen.validate().is_ok(), "the config's largest chunks");
        assert!(sixteen.max as u64 <= DATA_BLOB && sixteen.max as u64 <= REFS_BLOB);
    }
}
