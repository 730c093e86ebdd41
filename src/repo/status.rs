//! The `status` object: a small summary of the repository that every backup
//! and prune writes again, so a fleet view (`coffer fleet`) reads one object
//! per repository instead of every snapshot (docs/FLEET.md).
//!
//! Plaintext JSON, except the host names, which are sealed to the operator
//! and the agent: times, counts and sizes are what storage listings already
//! show the provider; host names are not. It is the writer's claim: a
//! reader checks what it can against what storage itself recorded.

use super::RepoError;
use super::keys::{Audience, Keys};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Where the status object is, beside `config`.
pub const STATUS_KEY: &str = "status";
/// The `format` member of a status object.
pub const FORMAT: &str = "coffer-status";
/// The newest status version this build writes and reads.
pub const VERSION: u32 = 1;
/// The days of snapshot times a status carries (the fleet picture's strip).
pub const RECENT_DAYS: i64 = 90;
/// Most `recent` entries a status holds: six a day for 90 days is 540; a
/// writer keeps the newest this many, a reader refuses more.
pub const MAX_RECENT: usize = 2_000;
/// Most host names in a status; a writer keeps the first this many.
pub const MAX_HOSTS: usize = 64;
/// The largest status object a reader takes (2,000 entries of ~50 bytes).
pub const MAX_STATUS: u64 = 256 * 1024;

/// One snapshot of the last [`RECENT_DAYS`] days.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    /// A damage record names it (its file list is bad).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub damaged: bool,
}

/// The status object (docs/FORMAT.md, "Status"). Unknown members are
/// ignored, so a newer writer may add some within the same version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub format: String,
    pub version: u32,
    /// The repository id, as in `config`.
    pub repository: String,
    /// When the writer wrote it (its clock).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub written: Timestamp,
    /// Snapshots in the repository.
    pub snapshots: u64,
    #[serde(default, with = "crate::time::serde_rfc3339::option")]
    pub oldest: Option<Timestamp>,
    #[serde(default, with = "crate::time::serde_rfc3339::option")]
    pub last_snapshot: Option<Timestamp>,
    /// The newest snapshot that is neither damaged nor suspect.
    #[serde(default, with = "crate::time::serde_rfc3339::option")]
    pub last_complete: Option<Timestamp>,
    /// Snapshots a damage record names.
    pub damaged_snapshots: u64,
    /// Damage records in the repository (a bad pack harms the snapshots
    /// that use it: `coffer snapshots` says which).
    pub damage_records: u64,
    /// Bytes of the packs the index knows.
    pub stored_bytes: u64,
    /// The snapshots of the last [`RECENT_DAYS`] days, oldest first.
    pub recent: Vec<Recent>,
    /// Hex of age(operator + agent) of the JSON list of host names.
    pub hosts: String,
}

impl Status {
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and times always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a status object; `what` names it in errors. Refuses another
    /// format, a newer version and more entries than a writer writes.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Status, RepoError> {
        let corrupt = |reason: String| RepoError::Corrupt {
            object: what.to_string(),
            reason,
        };
        let s: Status = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if s.format != FORMAT {
            return Err(corrupt(format!("format {:?} is not {FORMAT:?}", s.format)));
        }
        if s.version > VERSION {
            return Err(corrupt(format!(
                "status version {} is newer than this coffer reads ({VERSION}): upgrade coffer",
                s.version
            )));
        }
        if s.recent.len() > MAX_RECENT {
            return Err(corrupt(format!(
                "{} recent snapshots, more than {MAX_RECENT}",
                s.recent.len()
            )));
        }
        Ok(s)
    }

    /// The host names, opened with `ids` (see [`super::keys::open_with`]).
    pub fn open_hosts(
        &self,
        ids: Vec<&dyn age::Identity>,
        operator: bool,
        what: &str,
    ) -> Result<Vec<String>, RepoError> {
        let corrupt = |reason: String| RepoError::Corrupt {
            object: what.to_string(),
            reason,
        };
        let sealed = hex::decode(&self.hosts).map_err(|e| corrupt(format!("hosts: {e}")))?;
        let plain = super::keys::open_with(ids, operator, &sealed, what)?;
        let hosts: Vec<String> =
            serde_json::from_slice(&plain).map_err(|e| corrupt(format!("hosts: {e}")))?;
        if hosts.len() > MAX_HOSTS {
            return Err(corrupt(format!(
                "{} hosts, more than {MAX_HOSTS}",
                hosts.len()
            )));
        }
        Ok(hosts)
    }
}

/// `hosts` sealed for a status: the operator and the agent may read them.
pub fn seal_hosts(keys: &Keys, hosts: &[String]) -> String {
    let kept = &hosts[..hosts.len().min(MAX_HOSTS)];
    // A list of strings always serializes.
    let json = serde_json::to_vec(kept).unwrap_or_default();
    hex::encode(keys.seal(Audience::Both, &json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::keys::AgentKey;
    use age::x25519::Identity;

    fn status(keys: &Keys) -> Status {
        Status {
            format: FORMAT.into(),
            version: VERSION,
            repository: "ab".repeat(16),
            written: "2026-12-01T10:00:00Z".parse().unwrap(),
            snapshots: 2,
            oldest: Some("2026-11-30T10:00:00Z".parse().unwrap()),
            last_snapshot: Some("2026-12-01T09:59:00Z".parse().unwrap()),
            last_complete: Some("2026-11-30T10:00:00Z".parse().unwrap()),
            damaged_snapshots: 1,
            damage_records: 1,
            stored_bytes: 1234,
            recent: vec![
                Recent {
                    time: "2026-11-30T10:00:00Z".parse().unwrap(),
                    damaged: false,
                },
                Recent {
                    time: "2026-12-01T09:59:00Z".parse().unwrap(),
                    damaged: true,
                },
            ],
            hosts: seal_hosts(keys, &["web-1".into(), "web-2".into()]),
        }
    }

    #[test]
    fn a_status_round_trips_and_its_hosts_open_for_operator_and_own_agent_only() {
        let operator = Identity::generate();
        let recipient = operator.to_public();
        let agent = AgentKey::generate("ab".repeat(16), vec![recipient.clone()]);
        let keys = Keys::from_agent_key(&agent);
        let s = status(&keys);
        let back = Status::parse(&s.to_bytes(), "status").unwrap();
        assert_eq!(back, s);
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert!(!text.contains("web-1"), "host names are sealed: {text}");
        let hosts = back.open_hosts(vec![&operator], true, "status").unwrap();
        assert_eq!(hosts, vec!["web-1", "web-2"]);
        let own = back
            .open_hosts(vec![&agent.agent_identity], false, "status")
            .unwrap();
        assert_eq!(own, hosts);
        let other = AgentKey::generate("cd".repeat(16), vec![recipient]);
        let e = back
            .open_hosts(vec![&other.agent_identity], false, "status")
            .unwrap_err();
        assert!(matches!(e, RepoError::NeedIdentity { .. }), "{e}");
    }

    #[test]
    fn other_formats_newer_versions_and_oversized_lists_are_refused() {
        let recipient = Identity::generate().to_public();
        let keys = Keys::from_agent_key(&AgentKey::generate("ab".repeat(16), vec![recipient]));
        let mut s = status(&keys);
        s.format = "other".into();
        assert!(Status::parse(&s.to_bytes(), "status").is_err());
        let mut s = status(&keys);
        s.version = VERSION + 1;
        let e = Status::parse(&s.to_bytes(), "status").unwrap_err();
        assert!(e.to_string().contains("upgrade coffer"), "{e}");
        let mut s = status(&keys);
        s.recent = vec![s.recent[0].clone(); MAX_RECENT + 1];
        assert!(Status::parse(&s.to_bytes(), "status").is_err());
        assert!(Status::parse(b"{not json", "status").is_err());
        // Members a newer writer adds are ignored.
        let mut v: serde_json::Value = serde_json::from_slice(&status(&keys).to_bytes()).unwrap();
        v["later"] = 1.into();
        assert!(Status::parse(&serde_json::to_vec(&v).unwrap(), "status").is_ok());
    }
}
