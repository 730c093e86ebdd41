//! Damage records: what a read found bad, kept in the repository so every
//! writer and every fresh catalog learns it (docs/FORMAT.md, "Damage").
//!
//! One `damage/<id>` object per finding: the packs, or the blobs inside a
//! pack, whose bytes failed verification, and snapshots whose file list a
//! restore would refuse. Sealed to the operator and the agent, because a
//! backup must read them to stop deduplicating against bad blobs. Written
//! with the create-only write; prune deletes a record once every pack it
//! names has left storage. A record only ever makes coffer store data again
//! or call a snapshot damaged, never delete anything, so a forged one
//! (it needs the recipients and the id-key) costs storage, not data.

use super::ids::{BlobId, PackId, SnapshotId};
use super::keys::Audience;
use super::{RepoError, Repository};
use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The storage prefix of damage records.
pub const PREFIX: &str = "damage/";

/// Findings in one record at most (a record stays a small object).
pub const MAX_FINDINGS: usize = 10_000;

/// The longest reason, host or finder name a record holds; a writer cuts longer ones.
pub const MAX_REASON: usize = 1024;

/// `s`, cut to [`MAX_REASON`] bytes at a character boundary.
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// One damage record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamageRecord {
    /// When the damage was found (UTC).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    /// What found it: `check`, `restore`, `backup`, `prune`, `copy`, ...
    pub found_by: String,
    /// The host that found it.
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<BadPack>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<BadSnapshot>,
}

/// A pack whose bytes failed verification: the blobs named, or all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadPack {
    pub id: PackId,
    pub reason: String,
    /// The bad blobs; empty means the whole pack is bad.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobId>,
}

/// A snapshot that is damaged beyond its blobs (its file list is invalid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadSnapshot {
    pub id: SnapshotId,
    pub reason: String,
}

impl DamageRecord {
    pub fn new(found_by: &str) -> DamageRecord {
        DamageRecord {
            time: Timestamp::now(),
            found_by: found_by.to_string(),
            host: super::lock::hostname(),
            packs: Vec::new(),
            snapshots: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.packs.is_empty() && self.snapshots.is_empty()
    }

    fn findings(&self) -> usize {
        self.snapshots.len()
            + self
                .packs
                .iter()
                .map(|p| p.blobs.len().max(1))
                .sum::<usize>()
    }

    /// The record's findings are few enough and each one is well formed.
    pub fn validate(&self, key: &str) -> Result<(), RepoError> {
        let corrupt = |reason: &str| RepoError::Corrupt {
            object: key.to_string(),
            reason: reason.into(),
        };
        if self.findings() > MAX_FINDINGS {
            return Err(corrupt("more findings than a damage record holds"));
        }
        let long = |s: &String| s.len() > MAX_REASON;
        if long(&self.found_by)
            || long(&self.host)
            || self.packs.iter().any(|p| long(&p.reason))
            || self.snapshots.iter().any(|s| long(&s.reason))
        {
            return Err(corrupt("a text field is longer than 1 KiB"));
        }
        Ok(())
    }
}

/// A damage record in storage, before it is read.
#[derive(Clone, Debug)]
pub struct DamageObject {
    pub key: String,
    pub id: [u8; 32],
}

fn id_from_key(key: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(key.strip_prefix(PREFIX)?, &mut out).ok()?;
    Some(out)
}

impl Repository {
    /// Stores a record, split into several when it has more findings than
    /// one holds. Create-only: an identical record is left as it is. Needs
    /// only the recipients, so the agent writes them too.
    pub fn write_damage(&self, record: &DamageRecord) -> Result<Vec<String>, RepoError> {
        if self.store.as_of().is_some() {
            // Damage found in the past (`--as-of`) is reported, not recorded:
            // nothing is written while reading it.
            return Ok(Vec::new());
        }
        let empty = || DamageRecord {
            packs: Vec::new(),
            snapshots: Vec::new(),
            found_by: cut(&record.found_by),
            host: cut(&record.host),
            time: record.time,
        };
        // Each finding alone: a pack's blobs in pieces no larger than a record.
        let pieces = record.packs.iter().flat_map(|p| {
            let chunks: Vec<Vec<BlobId>> = if p.blobs.is_empty() {
                vec![Vec::new()]
            } else {
                p.blobs
                    .chunks(MAX_FINDINGS)
                    .map(<[BlobId]>::to_vec)
                    .collect()
            };
            chunks.into_iter().map(|blobs| BadPack {
                id: p.id,
                reason: cut(&p.reason),
                blobs,
            })
        });
        let mut records = vec![empty()];
        for piece in pieces {
            let last = records.len() - 1;
            if records[last].findings() + piece.blobs.len().max(1) > MAX_FINDINGS {
                records.push(empty());
            }
            if let Some(r) = records.last_mut() {
                r.packs.push(piece);
            }
        }
        for s in &record.snapshots {
            let last = records.len() - 1;
            if records[last].findings() >= MAX_FINDINGS {
                records.push(empty());
            }
            if let Some(r) = records.last_mut() {
                r.snapshots.push(BadSnapshot {
                    id: s.id,
                    reason: cut(&s.reason),
                });
            }
        }
        let mut keys = Vec::new();
        for r in records.iter().filter(|r| !r.is_empty()) {
            let json = serde_json::to_vec(r).unwrap_or_default();
            let id = self.keys.object_hash(&json);
            let compressed = zstd::bulk::compress(&json, 3).unwrap_or_default();
            let sealed = self.keys.seal(Audience::Both, &compressed);
            let key = format!("{PREFIX}{}", hex::encode(id));
            self.store.create(&key, Bytes::from(sealed))?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// The damage records in storage (one listing; nothing is decrypted).
    pub fn list_damage(&self) -> Result<Vec<DamageObject>, RepoError> {
        Ok(self
            .store
            .list(PREFIX)?
            .into_iter()
            .filter_map(|o| {
                Some(DamageObject {
                    id: id_from_key(&o.key)?,
                    key: o.key,
                })
            })
            .collect())
    }

    /// Reads and verifies one record (the agent key is enough).
    pub fn read_damage(&self, object: &DamageObject) -> Result<DamageRecord, RepoError> {
        let record: DamageRecord = self.get_object(&object.key, &object.id)?;
        record.validate(&object.key)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_ids() {
        let id = [0x5a; 32];
        let key = format!("{PREFIX}{}", hex::encode(id));
        assert_eq!(id_from_key(&key), Some(id));
        assert_eq!(id_from_key("damage/zz"), None);
        assert_eq!(id_from_key("index/00"), None);
    }

    #[test]
    fn a_record_with_too_many_findings_is_refused() {
        let mut r = DamageRecord::new("check");
        r.packs.push(BadPack {
            id: PackId([1; 32]),
            reason: "x".into(),
            blobs: vec![BlobId([2; 32]); MAX_FINDINGS + 1],
        });
        assert!(r.validate("damage/x").is_err());
        r.packs[0].blobs.truncate(3);
        assert!(r.validate("damage/x").is_ok());
    }
}
