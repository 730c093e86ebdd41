//! `undelete --as-of TIME`: makes the repository as it stood at TIME the
//! current state again, from the versions storage kept (docs/DESIGN-NOTES.md,
//! "Recovery after an attack"). A plan first, a pure function of the
//! version listing; then its execution.
//!
//! - A key whose current version is not the one current at TIME gets that
//!   version back. When everything newer than it is a delete marker (what
//!   `forget`, `prune` and a plain S3 delete leave), the markers are removed:
//!   the original version becomes current again with its own write time and
//!   its own lock, and nothing is copied. When a newer real version exists
//!   (an object overwritten), the old one is copied over it inside storage.
//! - A key that did not exist at TIME (a planted snapshot, a forged object)
//!   is hidden behind a delete marker: its versions stay, so a later
//!   `undelete --as-of` can bring it back.
//! - Some keys are left alone ([`Spare`], the caller's list): the writer
//!   lock objects and the storage probes belong to whoever runs now; audit
//!   events newer than TIME are not hidden: they are the record of what
//!   happened (the operator's own are signed, and `audit` shows the
//!   agent's and forged ones apart).
//! - A key restored by a copy has a new version id, but the same size and
//!   entity tag: a later plan for the same TIME counts it as unchanged.

use crate::repo::store::Store;
use crate::storage::VersionInfo;
use crate::storage::retention::current_at;
use jiff::Timestamp;
use std::collections::BTreeMap;

/// How a key gets its version from TIME back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Revert {
    /// Delete markers only were written after it: remove them (their ids).
    RemoveMarkers { markers: Vec<String> },
    /// A newer version was written: copy the old one over it.
    Copy,
}

/// One key brought back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Restore {
    pub key: String,
    /// The version current at TIME.
    pub version: String,
    pub size: u64,
    #[serde(flatten)]
    pub revert: Revert,
}

/// Which keys the plan leaves alone, by exact name or, ending in `/`, by
/// folder.
#[derive(Clone, Debug, Default)]
pub struct Spare {
    /// Neither restored nor hidden.
    pub untouched: Vec<String>,
    /// Restored when deleted, but never hidden.
    pub never_hidden: Vec<String>,
}

impl Spare {
    fn names(list: &[String], key: &str) -> bool {
        list.iter().any(|s| match s.strip_suffix('/') {
            Some(_) => key.starts_with(s.as_str()),
            None => key == s,
        })
    }
}

/// What `undelete` does: restore these, hide those.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    pub restore: Vec<Restore>,
    /// Keys that did not exist at TIME and exist now.
    pub hide: Vec<String>,
    /// Keys already as they were at TIME.
    pub unchanged: usize,
    /// Keys left alone that differ from TIME (lock objects, probes, newer
    /// audit events).
    pub spared: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.restore.is_empty() && self.hide.is_empty()
    }
}

/// The plan that makes the state at `at` current, from a listing of every
/// version and delete marker (`versions`, any order). Sorted by key.
pub fn plan(versions: &[VersionInfo], at: Timestamp, spare: &Spare) -> Plan {
    let then: BTreeMap<&str, &VersionInfo> = current_at(versions, at)
        .into_iter()
        .map(|v| (v.key.as_str(), v))
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&VersionInfo>> = BTreeMap::new();
    for v in versions {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }
    let mut out = Plan::default();
    for (key, mut all) in by_key {
        newest_first(&mut all);
        let now = all.first().filter(|v| !v.delete_marker);
        match (then.get(key), now) {
            (Some(t), Some(n)) if same_bytes(t, n) => out.unchanged += 1,
            (None, None) => {}
            _ if Spare::names(&spare.untouched, key) => out.spared.push(key.to_string()),
            (Some(t), _) => {
                // Everything listed before it is newer (newest first).
                let newer = all.iter().take_while(|v| v.version != t.version);
                let markers: Option<Vec<String>> = newer
                    .map(|v| v.delete_marker.then(|| v.version.clone()))
                    .collect();
                out.restore.push(Restore {
                    key: key.to_string(),
                    version: t.version.clone(),
                    size: t.size,
                    revert: match markers {
                        Some(markers) => Revert::RemoveMarkers { markers },
                        None => Revert::Copy,
                    },
                });
            }
            (None, Some(_)) if Spare::names(&spare.never_hidden, key) => {
                out.spared.push(key.to_string())
            }
            (None, Some(_)) => out.hide.push(key.to_string()),
        }
    }
    out
}

/// Whether the current version `now` holds what `then` held: the same
/// version, or a copy of it (same size and entity tag; a copy back by an
/// earlier undelete is a new version with the same bytes).
fn same_bytes(then: &VersionInfo, now: &VersionInfo) -> bool {
    then.version == now.version
        || (then.size == now.size && then.etag.is_some() && then.etag == now.etag)
}

/// A key's versions newest first: by the time storage recorded, and in the
/// same second the one storage calls current first (a listing gives
/// versions and delete markers apart, so its order can not break ties).
fn newest_first(all: &mut [&VersionInfo]) {
    all.sort_by(|a, b| {
        b.modified
            .cmp(&a.modified)
            .then_with(|| b.latest.cmp(&a.latest))
    });
}

/// What the execution did; `failed` names each key that could not be
/// brought back or hidden, with the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Done {
    pub restored: usize,
    pub hidden: usize,
    pub failed: Vec<(String, String)>,
}

/// Carries out `plan` on the current storage (call with the writer lock
/// held): restores first, so that the repository is never missing more
/// than before, then hides. Carries on past a key that fails.
pub fn execute(store: &Store, plan: &Plan) -> Done {
    let mut done = Done::default();
    for r in &plan.restore {
        let res = match &r.revert {
            Revert::RemoveMarkers { markers } => markers
                .iter()
                .try_for_each(|m| store.delete_version(&r.key, m)),
            Revert::Copy => store.restore_version(&r.key, &r.version),
        };
        match res {
            Ok(()) => done.restored += 1,
            Err(e) => done
                .failed
                .push((r.key.clone(), super::one_line(&e.to_string()))),
        }
    }
    // One request per thousand keys; on failure, one at a time to name it.
    for batch in plan.hide.chunks(1000) {
        if store.delete_many(batch).is_ok() {
            done.hidden += batch.len();
            continue;
        }
        for key in batch {
            match store.delete(key) {
                Ok(()) => done.hidden += 1,
                Err(e) => done
                    .failed
                    .push((key.clone(), super::one_line(&e.to_string()))),
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(key: &str, version: &str, secs: i64, marker: bool, latest: bool) -> VersionInfo {
        VersionInfo {
            key: key.into(),
            version: version.into(),
            modified: Timestamp::from_second(secs).unwrap(),
            size: if marker { 0 } else { 7 },
            delete_marker: marker,
            latest,
            etag: None,
        }
    }

    fn spare() -> Spare {
        Spare {
            untouched: vec!["lock".into(), "locks/".into(), "probe/".into()],
            never_hidden: vec!["audit/".into()],
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn an_attack_is_undone_by_removing_markers_copying_and_hiding() {
        // Listed as S3 lists them: versions first, then delete markers.
        let all = [
            v("config", "c1", 10, false, true),
            v("data/p1", "p1", 20, false, false),
            v("index/i1", "i1", 20, false, false),
            v("keyring", "k1", 10, false, false),
            v("keyring", "k2", 500, false, true), // overwritten by the attacker
            v("snapshots/s1", "s1", 30, false, false),
            v("snapshots/s9", "s9", 400, false, true), // planted
            v("audit/e9", "e9", 450, false, true),     // newer event
            v("lock", "l1", 410, false, false),
            v("data/p1", "m1", 420, true, false), // prune
            v("data/p1", "m2", 600, true, true),  // the S3 delete
            v("index/i1", "m3", 600, true, true),
            v("snapshots/s1", "m4", 410, true, true), // forget
            v("lock", "m5", 411, true, true),
        ];
        let p = plan(&all, at(100), &spare());
        let restored: Vec<(&str, &Revert)> = p
            .restore
            .iter()
            .map(|r| (r.key.as_str(), &r.revert))
            .collect();
        let markers = |m: &[&str]| Revert::RemoveMarkers {
            markers: m.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            restored,
            [
                ("data/p1", &markers(&["m2", "m1"])),
                ("index/i1", &markers(&["m3"])),
                ("keyring", &Revert::Copy),
                ("snapshots/s1", &markers(&["m4"])),
            ]
        );
        assert_eq!(p.restore[2].version, "k1");
        assert_eq!(p.hide, ["snapshots/s9"]);
        assert_eq!(p.unchanged, 1, "config");
        assert_eq!(p.spared, ["audit/e9"], "the lock was deleted anyway");
    }

    #[test]
    fn the_present_needs_nothing_and_spared_keys_are_left_alone() {
        let all = [
            v("config", "c1", 10, false, true),
            v("lock", "l1", 300, false, true),
            v("locks/x", "x1", 300, false, true),
            v("probe/a", "a1", 300, false, true),
            v("snapshots/s1", "s1", 30, false, true),
        ];
        assert_eq!(
            plan(&all, at(1000), &spare()),
            Plan {
                unchanged: 5,
                ..Plan::default()
            }
        );
        let p = plan(&all, at(100), &spare());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.spared, ["lock", "locks/x", "probe/a"]);
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn a_key_deleted_before_the_time_stays_deleted_and_a_key_written_after_is_hidden() {
        let all = [
            v("data/old", "o1", 10, false, false),
            v("data/old", "om", 50, true, false),
            v("data/old", "o2", 200, false, true), // came back after
            v("data/gone", "g1", 10, false, false),
            v("data/gone", "gm", 50, true, true),
            v("lockfile", "f1", 200, false, true), // not the lock: a name alike
        ];
        let p = plan(&all, at(100), &spare());
        assert!(p.restore.is_empty(), "{p:?}");
        assert_eq!(p.hide, ["data/old", "lockfile"]);
        assert_eq!(p.unchanged, 0);
    }

    #[test]
    fn a_copy_back_counts_as_the_old_version_and_a_forgery_does_not() {
        let tagged = |version: &str, secs, size, tag: &str, latest| VersionInfo {
            size,
            etag: Some(tag.into()),
            ..v("keyring", version, secs, false, latest)
        };
        let then = tagged("k1", 10, 7, "aa", false);
        let forged = tagged("k2", 200, 7, "bb", false);
        let copied = tagged("k3", 300, 7, "aa", true);
        let p = plan(&[then.clone(), forged.clone(), copied], at(100), &spare());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.unchanged, 1);
        let p = plan(
            &[
                then.clone(),
                VersionInfo {
                    latest: true,
                    ..forged
                },
            ],
            at(100),
            &spare(),
        );
        assert_eq!(p.restore[0].revert, Revert::Copy);
        // Without tags (a backend that gives none) only the version id counts.
        let untagged = |v: VersionInfo| VersionInfo { etag: None, ..v };
        let p = plan(
            &[untagged(then), untagged(tagged("k3", 300, 7, "aa", true))],
            at(100),
            &spare(),
        );
        assert_eq!(p.restore.len(), 1);
    }

    #[test]
    fn in_the_same_second_the_current_version_counts_as_the_newer() {
        // A marker and a version in one second, the marker current: the
        // version came first, so only the marker is newer than it.
        let all = [
            v("snapshots/s", "s1", 10, false, false),
            v("snapshots/s", "s2", 100, false, false),
            v("snapshots/s", "m", 100, true, true),
        ];
        let mut keyed: Vec<&VersionInfo> = all.iter().collect();
        newest_first(&mut keyed);
        assert_eq!(keyed[0].version, "m");
        let p = plan(&all, at(50), &spare());
        assert_eq!(p.restore[0].version, "s1");
        assert_eq!(p.restore[0].revert, Revert::Copy, "s2 is a real version");
    }
}
