//! Clearing what Object Lock has let go (docs/IMMUTABILITY.md, "Forget and
//! prune on a locked bucket").
//!
//! On a versioned bucket, prune's deletions only add delete markers: the
//! versions under them stay, locked, and are what `--as-of` and `undelete`
//! read. Once a non-current version's lock has ended, nothing protects it
//! and no snapshot needs it (a needed object is current, and its lock is
//! lengthened while it is needed), so prune deletes it, and then the
//! delete markers of keys that have no version left. The bucket lifecycle
//! rule (`coffer policy --lifecycle`) does the same on providers that run
//! one; this pass is for those that don't, and for a maintainer who wants
//! the space back now.
//!
//! Cost: one version listing of the repository, and one lock read per
//! non-current version older than the shortest lock any write gets (the
//! window and margin): younger ones can not have run out, so they are not
//! asked about. What is read is what prune deleted earlier, so the reads grow
//! with what changed, not with the repository.

use crate::Result;
use crate::repo::Repository;
use crate::repo::store::VersionRef;
use crate::storage::{StorageError, VersionInfo};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What the pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Expired {
    /// Non-current versions old enough for their lock to have ended, whose
    /// lock was read.
    pub checked: usize,
    /// Versions deleted (in a dry run: that would be).
    pub deleted: usize,
    pub bytes_deleted: u64,
    /// Versions whose lock was lengthened past now: they stay.
    pub still_locked: usize,
    /// Delete markers removed, their key having no version left.
    pub markers_deleted: usize,
    /// Versions storage refused to delete although coffer read their lock
    /// as ended (credentials without the right to delete versions, or a
    /// clock that disagrees with storage's).
    pub refused: usize,
}

/// What to ask about and what may go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Non-current versions whose first lock has ended by now: their lock
    /// is read, and each is deleted if no lock holds it any more.
    pub candidates: Vec<VersionInfo>,
    /// The delete markers of each key whose every version is a candidate
    /// (or none is left): they go once those versions are gone.
    pub markers: BTreeMap<String, Vec<String>>,
}

/// Plans the pass over `versions` (a version listing of the repository):
/// `shortest_lock` is the lock every write gets, so a version recorded
/// less than that before `now` is still locked and not asked about.
pub fn plan(versions: &[VersionInfo], shortest_lock: SignedDuration, now: Timestamp) -> Plan {
    let mut plan = Plan::default();
    let mut staying: BTreeSet<&str> = BTreeSet::new();
    for v in versions {
        if v.delete_marker {
            plan.markers
                .entry(v.key.clone())
                .or_default()
                .push(v.version.clone());
            continue;
        }
        let lock_over = v
            .modified
            .checked_add(shortest_lock)
            .is_ok_and(|t| t <= now);
        if !v.latest && lock_over {
            plan.candidates.push(v.clone());
        } else {
            staying.insert(&v.key);
        }
    }
    // A key with a current version, or a version still locked, keeps its
    // markers: they are part of its history.
    plan.markers.retain(|k, _| !staying.contains(k.as_str()));
    plan
}

/// Runs the pass on a repository under Object Lock (`dry_run`: reads the
/// locks and counts, deletes nothing). Warnings say what was left and why.
pub fn run(
    repo: &Repository,
    now: Timestamp,
    dry_run: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Expired>> {
    let Some(lock) = &repo.config.object_lock else {
        return Ok(None);
    };
    pass(repo, lock.write_lock().period, now, dry_run, warnings).map(Some)
}

/// [`run`] with the shortest lock given: for a repository whose objects
/// were written with another lock than its configuration's.
pub fn pass(
    repo: &Repository,
    shortest_lock: SignedDuration,
    now: Timestamp,
    dry_run: bool,
    warnings: &mut Vec<String>,
) -> Result<Expired> {
    let versions = repo.store.list_versions("")?;
    let plan = plan(&versions, shortest_lock, now);
    Ok(execute(repo, &plan, now, dry_run, warnings))
}

/// Reads each candidate's lock, deletes those no lock holds, then the
/// markers of keys left with no version. One bad version never stops the
/// rest; its key keeps its markers.
fn execute(
    repo: &Repository,
    plan: &Plan,
    now: Timestamp,
    dry_run: bool,
    warnings: &mut Vec<String>,
) -> Expired {
    let mut done = Expired::default();
    let ids: Vec<VersionRef> = plan
        .candidates
        .iter()
        .map(|v| (v.key.clone(), v.version.clone()))
        .collect();
    let sizes: BTreeMap<(&str, &str), u64> = plan
        .candidates
        .iter()
        .map(|v| ((v.key.as_str(), v.version.as_str()), v.size))
        .collect();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut free = Vec::new();
    for ((key, version), read) in repo.store.version_retentions(&ids) {
        done.checked += 1;
        match read {
            Ok(Some(r)) if r.until > now => {
                done.still_locked += 1;
                kept.insert(key);
            }
            Ok(_) => free.push((key, version)),
            Err(e) => {
                warnings.push(format!(
                    "the lock of {key} (version {version}) could not be read, so it was kept: {e}"
                ));
                kept.insert(key);
            }
        }
    }
    let deleted: Vec<(VersionRef, std::result::Result<(), StorageError>)> = if dry_run {
        free.into_iter().map(|id| (id, Ok(()))).collect()
    } else {
        repo.store.delete_versions(&free)
    };
    let mut refused_example = None;
    for ((key, version), res) in deleted {
        match res {
            Ok(()) => {
                done.deleted += 1;
                done.bytes_deleted += sizes
                    .get(&(key.as_str(), version.as_str()))
                    .copied()
                    .unwrap_or(0);
            }
            Err(e) => {
                done.refused += 1;
                refused_example.get_or_insert_with(|| format!("{key}: {e}"));
                kept.insert(key);
            }
        }
    }
    if let Some(example) = refused_example {
        warnings.push(format!(
            "storage refused to delete {} version(s) whose lock had ended; they stay (first: {example}); deleting versions needs the maintainer's credentials (`coffer policy --role maintainer`), or let the bucket's lifecycle rule clear them (`coffer policy --lifecycle --apply`)",
            done.refused
        ));
    }
    let markers: Vec<VersionRef> = plan
        .markers
        .iter()
        .filter(|(k, _)| !kept.contains(*k))
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect();
    if dry_run {
        done.markers_deleted = markers.len();
    } else {
        for ((key, _), res) in repo.store.delete_versions(&markers) {
            match res {
                Ok(()) => done.markers_deleted += 1,
                // A marker left is harmless: the key reads as deleted.
                Err(e) => warnings.push(format!("a delete marker of {key} stays: {e}")),
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn v(key: &str, version: &str, secs: i64, marker: bool, latest: bool) -> VersionInfo {
        VersionInfo {
            key: key.into(),
            version: version.into(),
            modified: at(secs),
            size: if marker { 0 } else { 10 },
            delete_marker: marker,
            latest,
            etag: None,
        }
    }

    const LOCK: SignedDuration = SignedDuration::from_secs(100);

    #[test]
    fn only_old_non_current_versions_are_asked_about() {
        let versions = [
            // Deleted by prune long ago: the marker is current.
            v("data/a", "m1", 150, true, true),
            v("data/a", "a1", 10, false, false),
            // Current: needed, never a candidate however old.
            v("data/b", "b1", 10, false, true),
            // Non-current but younger than the shortest lock.
            v("data/c", "m2", 190, true, true),
            v("data/c", "c1", 150, false, false),
        ];
        let p = plan(&versions, LOCK, at(200));
        let keys: Vec<(&str, &str)> = p
            .candidates
            .iter()
            .map(|v| (v.key.as_str(), v.version.as_str()))
            .collect();
        assert_eq!(keys, [("data/a", "a1")]);
        // Only a's marker may go: c still has a locked version.
        assert_eq!(p.markers.keys().collect::<Vec<_>>(), ["data/a"]);
        assert_eq!(p.markers["data/a"], ["m1"]);
    }

    #[test]
    fn a_key_with_a_current_version_keeps_its_markers() {
        // Deleted by an attacker, made current again by undelete: the old
        // marker is history between two versions.
        let versions = [
            v("snapshots/s", "s2", 300, false, true),
            v("snapshots/s", "m1", 200, true, false),
            v("snapshots/s", "s1", 10, false, false),
        ];
        let p = plan(&versions, LOCK, at(400));
        assert_eq!(p.candidates.len(), 1);
        assert!(p.markers.is_empty(), "{:?}", p.markers);
    }

    #[test]
    fn a_key_of_markers_only_loses_them() {
        let versions = [
            v("locks/w", "m2", 10, true, true),
            v("locks/w", "m1", 5, true, false),
        ];
        let p = plan(&versions, LOCK, at(20));
        assert!(p.candidates.is_empty());
        assert_eq!(p.markers["locks/w"], ["m2", "m1"]);
    }

    #[test]
    fn a_lock_that_overflows_the_calendar_is_never_over() {
        let versions = [v("data/x", "x1", 10, false, false)];
        let p = plan(&versions, SignedDuration::MAX, at(i64::from(i32::MAX)));
        assert!(p.candidates.is_empty());
    }
}
