//! Object Lock and object versions, as the storage layer sees them: what a
//! write is retained for, and the versions a versioned bucket keeps. The
//! repository decides the periods (docs/IMMUTABILITY.md); storage only
//! applies them.

use jiff::{SignedDuration, Timestamp};

/// S3 Object Lock retention mode. Governance: nobody without
/// `s3:BypassGovernanceRetention` can delete a version or shorten its
/// lock before the date. Compliance: nobody at all, the root account
/// included, until the date.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn name(self) -> &'static str {
        match self {
            LockMode::Governance => "governance",
            LockMode::Compliance => "compliance",
        }
    }
}

/// A version's lock: its mode and the date before which it can not be
/// deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until: Timestamp,
}

/// The lock every new object gets: retained in `mode` for `period` from
/// the moment it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteLock {
    pub mode: LockMode,
    pub period: SignedDuration,
}

impl WriteLock {
    /// The retention of an object written now.
    pub fn retention_from(&self, now: Timestamp) -> Retention {
        Retention {
            mode: self.mode,
            until: now.saturating_add(self.period).unwrap_or(Timestamp::MAX),
        }
    }
}

/// One version of an object in a versioned bucket, or a delete marker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub key: String,
    pub version: String,
    /// When storage recorded it (not the writer's claim).
    pub modified: Timestamp,
    pub size: u64,
    /// A delete marker: the key looked deleted from this time on.
    pub delete_marker: bool,
    /// The current version (or marker) of its key.
    pub latest: bool,
    /// The version's entity tag, where storage gives one (not for a
    /// marker): the same bytes stored by a copy have the same tag.
    pub etag: Option<String>,
}

/// For each key, the version that was current at `at`: the newest version
/// or marker recorded at or before `at`, unless that is a delete marker
/// (the key did not exist then). Keys whose every version is later are
/// left out: they did not exist yet. Sorted by key.
pub fn current_at(versions: &[VersionInfo], at: Timestamp) -> Vec<&VersionInfo> {
    let mut best: std::collections::BTreeMap<&str, &VersionInfo> = Default::default();
    for v in versions.iter().filter(|v| v.modified <= at) {
        match best.get(v.key.as_str()) {
            // Two versions in the same second: the listing's order (newest
            // first, as S3 lists them) breaks the tie, so the first seen wins.
            Some(b) if b.modified >= v.modified => {}
            _ => {
                best.insert(&v.key, v);
            }
        }
    }
    best.into_values().filter(|v| !v.delete_marker).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, version: &str, secs: i64, marker: bool) -> VersionInfo {
        VersionInfo {
            key: key.into(),
            version: version.into(),
            modified: Timestamp::from_second(secs).unwrap(),
            size: 1,
            delete_marker: marker,
            latest: false,
            etag: None,
        }
    }

    #[test]
    fn the_state_at_a_time_ignores_later_versions_and_markers() {
        let all = [
            v("snapshots/a", "a2", 300, true), // deleted by the attack
            v("snapshots/a", "a1", 100, false),
            v("snapshots/b", "b1", 350, false), // planted after
            v("data/p", "p2", 200, true),       // deleted before
            v("data/p", "p1", 50, false),
            v("index/i", "i2", 150, false), // rewritten
            v("index/i", "i1", 20, false),
        ];
        let at = |s| {
            current_at(&all, Timestamp::from_second(s).unwrap())
                .iter()
                .map(|v| v.version.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(at(250), ["i2", "a1"]);
        assert_eq!(at(120), ["p1", "i1", "a1"]);
        assert_eq!(at(10), Vec::<&str>::new());
        assert_eq!(at(400), ["i2", "b1"]);
    }

    #[test]
    fn a_lock_runs_its_period_from_the_write() {
        let l = WriteLock {
            mode: LockMode::Governance,
            period: SignedDuration::from_hours(24 * 120),
        };
        let now = Timestamp::from_second(1_000_000).unwrap();
        let r = l.retention_from(now);
        assert_eq!(r.mode, LockMode::Governance);
        assert_eq!(r.until.as_second() - now.as_second(), 120 * 86_400);
        assert_eq!(l.retention_from(Timestamp::MAX).until, Timestamp::MAX);
    }
}
