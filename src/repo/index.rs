//! Index objects: which blob is in which pack at which offset. Sealed to the
//! operator and the agent (the agent needs it to deduplicate and prune).
//! Written after the packs they describe, before the snapshot that uses them.

use super::ids::PackId;
use super::pack::PackEntry;
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
