//! Why a value read from storage can not be true: the format's checks on
//! index entries, pack trailers, chunker sizes, file list lines and tree
//! index lines. The
//! caller knows the object and wraps this into [`super::RepoError::Corrupt`].

use super::chunker::ChunkerParams;
use super::limits::{MAX_ENTRY_LINE, MAX_PACK_BLOBS, MAX_PATH};
use super::pack::FOOTER_LEN;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// An index gives a pack a size no pack can have.
    #[error("pack {pack} is said to be {size} bytes; a pack is {FOOTER_LEN} to {max}")]
    PackSize { pack: String, size: u64, max: u64 },
    #[error("pack {pack} is said to hold {blobs} blobs, more than a pack can ({MAX_PACK_BLOBS})")]
    PackBlobs { pack: String, blobs: usize },
    /// One of the pack's blobs is impossible (an index names the pack).
    #[error("pack {pack}: {blob}")]
    InPack { pack: String, blob: Box<Malformed> },
    #[error(
        "blob {blob} lies outside the pack ({length} bytes at offset {offset}, the blobs end at {body})"
    )]
    BlobOutside {
        blob: String,
        length: u64,
        offset: u64,
        body: u64,
    },
    #[error("blob {blob} is {length} bytes sealed, more than a {kind} blob can be ({cap})")]
    SealedTooLarge {
        blob: String,
        kind: &'static str,
        length: u64,
        cap: u64,
    },
    #[error(
        "blob {blob} declares {raw} bytes of plaintext, more than a {kind} blob can hold ({cap})"
    )]
    RawTooLarge {
        blob: String,
        kind: &'static str,
        raw: u64,
        cap: u64,
    },
    /// The bytes read for a blob are more than a sealed blob can be.
    #[error("{size} bytes, more than a sealed blob can be")]
    SealedBytes { size: u64 },
    #[error("invalid chunker sizes {0:?}")]
    ChunkerSizes(ChunkerParams),
    /// A file list or tree index line that is not JSON of its kind (serde's message).
    #[error("{0}")]
    EntryJson(String),
    #[error("{field}_hex is not hex")]
    NotHex { field: &'static str },
    #[error("both {field} and {field}_hex")]
    BothForms { field: &'static str },
    #[error("entry without a path")]
    NoPath,
    /// `start` is the path's first 200 bytes.
    #[error("a path of {len} bytes, longer than a path can be ({MAX_PATH}): {start:?}…")]
    PathTooLong { len: usize, start: String },
    #[error("{path}: a link target longer than a path can be ({MAX_PATH} bytes)")]
    TargetTooLong { path: String },
    #[error("unsafe path {path:?}")]
    UnsafePath { path: String },
    #[error("{path}: content covers {covered} of {size} bytes")]
    ContentShort {
        path: String,
        covered: u64,
        size: u64,
    },
    #[error("{path}: content lengths add up to more than 2^64 bytes")]
    ContentOverflow { path: String },
    #[error("{path}: link without target")]
    NoTarget { path: String },
    #[error("{path}: unsafe hard link target")]
    UnsafeHardLink { path: String },
    #[error("index line without a path")]
    IndexLineNoPath,
    #[error("tree index out of order")]
    IndexOrder,
    #[error("an entry of more than {MAX_ENTRY_LINE} bytes, longer than a file list entry can be")]
    LineTooLong,
}
