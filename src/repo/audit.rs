//! Audit events: one `audit/<id>` object per operator action (restore,
//! export, erase, key export), so the record travels with the repository and
//! survives the loss of any catalog. Sealed to the operator only: the detail
//! can name paths and targets, which the agent must not learn. Written with
//! the storage's create-only write and never rewritten or deleted by coffer
//! (prune and forget touch only `data/`, `index/` and `snapshots/`).
//!
//! Stored form: `age(operator, zstd(JSON))`, named by the keyed BLAKE3 of the
//! JSON like the other bookkeeping objects.

use super::keys::Audience;
use super::{RepoError, Repository};
use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The storage prefix of audit events.
pub const PREFIX: &str = "audit/";

/// One recorded action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened (UTC).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    /// Who: `user@host`.
    pub actor: String,
    /// What: `restore`, `export`, `erase`, `key-export`, ...
    pub action: String,
    /// Which snapshot, target, globs, and counts, in words.
    pub detail: String,
}

/// An audit object in storage, before it is read.
#[derive(Clone, Debug)]
pub struct AuditObject {
    pub key: String,
    pub id: [u8; 32],
    /// When storage says it was written (an event is never newer than this).
    pub modified: Option<Timestamp>,
}

fn id_from_key(key: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(key.strip_prefix(PREFIX)?, &mut out).ok()?;
    Some(out)
}

impl Repository {
    /// Records an event (create-only: an identical event already stored is
    /// left as it is). Needs only the operator recipients, not the identity.
    pub fn write_audit(&self, event: &AuditEvent) -> Result<String, RepoError> {
        let json = serde_json::to_vec(event).unwrap_or_default();
        if json.len() as u64 > super::limits::AUDIT_JSON {
            return Err(RepoError::TooLarge {
                what: super::limits::AUDIT.what.into(),
                size: json.len() as u64,
                max: super::limits::AUDIT_JSON,
            });
        }
        let id = self.keys.object_hash(&json);
        let compressed = zstd::bulk::compress(&json, 3).unwrap_or_default();
        let sealed = self.keys.seal(Audience::Operator, &compressed);
        let key = format!("{PREFIX}{}", hex::encode(id));
        self.store.create(&key, Bytes::from(sealed))?;
        Ok(key)
    }

    /// The audit objects in storage (one listing; nothing is decrypted).
    pub fn list_audit(&self) -> Result<Vec<AuditObject>, RepoError> {
        Ok(self
            .store
            .list(PREFIX)?
            .into_iter()
            .filter_map(|o| {
                Some(AuditObject {
                    id: id_from_key(&o.key)?,
                    key: o.key,
                    modified: o.modified,
                })
            })
            .collect())
    }

    /// Reads and verifies one event (operator only).
    pub fn read_audit(&self, object: &AuditObject) -> Result<AuditEvent, RepoError> {
        self.get_object(&object.key, &object.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_ids() {
        let id = [0xab; 32];
        let key = format!("{PREFIX}{}", hex::encode(id));
        assert_eq!(id_from_key(&key), Some(id));
        assert_eq!(id_from_key("audit/xyz"), None);
        assert_eq!(id_from_key("snapshots/00"), None);
    }
}
