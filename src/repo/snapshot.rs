//! Snapshot objects: the commit record of one backup, written last. Sealed to
//! the operator and the agent: it holds no file names, only counts, the
//! source paths, and the ids of the tree (file list) and refs blobs.

use super::ids::BlobId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    pub host: String,
    pub profile: String,
    /// Source paths as given (absolute).
    pub paths: Vec<String>,
    /// The file list, in order (operator only).
    pub tree: Vec<BlobId>,
    /// The sorted list of every blob this snapshot needs, in order (agent-readable).
    pub refs: Vec<BlobId>,
    /// Format 2: a tree blob saying where each `tree` blob's first entry starts,
    /// so one path is found without reading the whole file list (operator only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_index: Option<BlobId>,
    pub summary: Summary,
    /// When storage recorded writing this snapshot's object (its listing's
    /// time), where the backend gives one: not part of the object, which
    /// the writer could claim anything in. See `engine::suspect`.
    #[serde(skip)]
    pub stored: Option<Timestamp>,
}

impl Snapshot {
    /// A snapshot of nothing, for tests to set what they look at.
    #[cfg(test)]
    pub fn bare(time: Timestamp, host: &str) -> Snapshot {
        Snapshot {
            time,
            host: host.into(),
            profile: "p".into(),
            paths: Vec::new(),
            tree: Vec::new(),
            refs: Vec::new(),
            tree_index: None,
            summary: Summary::default(),
            stored: None,
        }
    }

    /// The tree index, if lookups may go through it. Before sources were
    /// sorted in walk order, a snapshot of `/x/www-old` and `/x/www/app`
    /// listed them out of order, with an index; a lookup through it would
    /// stop too early. Such snapshots are scanned whole.
    pub fn usable_tree_index(&self) -> Option<BlobId> {
        let mut as_written: Vec<&[u8]> = self.paths.iter().map(|p| p.as_bytes()).collect();
        as_written.sort();
        let sources_ordered = as_written.is_sorted_by(|a, b| super::tree::walk_order(a, b).is_le());
        self.tree_index.filter(|_| sources_ordered)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub data_added: u64,
    pub stored_added: u64,
    pub skipped: u64,
    pub seconds: f64,
}
