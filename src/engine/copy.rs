//! `copy`: replicate a repository to a second storage (another bucket,
//! region or provider) at the ciphertext level. No key can read anything
//! here; only what the target lacks is sent; every pack is verified against
//! its name before it is sent; the target's `config` is written last, so an
//! interrupted first copy is not yet a repository and the next run resumes.

use super::Progress;
use crate::catalog::Catalog;
use crate::repo::ids::PackId;
use crate::repo::limits;
use crate::repo::lock::WriterLock;
use crate::repo::store::Store;
use crate::repo::{CONFIG_KEY, KEYRING_COPY_KEY, KEYRING_KEY, RepoError, Repository};
use crate::{Error, Result};
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct CopyReport {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Objects the target already had.
    pub objects_present: u64,
    /// Packs not copied because they do not hash to their names in the
    /// source (recorded there as damaged): (pack, why).
    pub damaged: Vec<(PackId, String)>,
    /// Objects of the copy whose Object Lock was lengthened.
    pub locks_extended: usize,
    pub warnings: Vec<String>,
}

/// Copies every object `target` lacks from `repo`'s storage. `cancel`
/// stops it between objects with [`Error::Interrupted`] (what was sent
/// stays; the next copy goes on from there); the target's lock is released.
/// A locked copy then has its locks lengthened as backups lengthen the
/// repository's, with its own rows in `catalog`'s ledger.
pub fn copy(
    repo: &Repository,
    target: &Store,
    catalog: &mut Catalog,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<CopyReport> {
    // The target is this repository or nothing yet: never mix two repositories.
    if let Ok(raw) = target.get_capped(CONFIG_KEY, limits::CONFIG) {
        let id = serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        if id.as_deref() != Some(repo.config.id.as_str()) {
            return Err(RepoError::KeyMismatch {
                location: target.location(),
                key_repo: repo.config.id.clone(),
                repo: id.unwrap_or_else(|| "unknown".into()),
            }
            .into());
        }
    } else if !target.exists()? {
        target.create_location()?;
    }
    // A copy of a repository under Object Lock is locked the same way where
    // the target can hold a lock (a copy without locks is what a
    // compromised server could wipe); a folder can not, and is told so.
    let unlocked = match target.set_write_lock(repo.config.object_lock.map(|l| l.write_lock())) {
        Err(crate::storage::StorageError::Unsupported { .. }) => Some(format!(
            "{}: the copy's objects are not locked: it has no Object Lock (the repository's objects are)",
            target.location()
        )),
        other => other.map(|_| None)?,
    };
    let lock = WriterLock::take(
        target,
        &repo.keys,
        repo.config.pack_size,
        std::time::Duration::ZERO,
    )?;
    let started = Timestamp::now();
    let copied = copy_objects(repo, target, progress, cancel).map(|(mut report, held)| {
        if unlocked.is_none() {
            lengthen_locks(repo, target, catalog, &held, started, &mut report);
        }
        report
    });
    let mut report = lock.release_after(copied)?;
    report.warnings.extend(unlocked);
    // Everything else is copied; damaged packs must not pass for a whole copy.
    if let Some((pack, why)) = report.damaged.first() {
        return Err(RepoError::Corrupt {
            object: pack.key(),
            reason: format!(
                "{why}; {} damaged pack(s) in all, recorded as damaged in the source (every other object was copied; the next backup stores their data again, and `coffer check --read-data` names the snapshots that lost data){}",
                report.damaged.len(),
                report
                    .warnings
                    .first()
                    .map(|w| format!("; {w}"))
                    .unwrap_or_default()
            ),
        }
        .into());
    }
    Ok(report)
}

/// The copy's objects history depends on (its packs and index objects, the
/// config and keyrings), with the time the target stored each where known:
/// what its locks must cover, as [`super::locks::needed`] is for the
/// repository.
type Held = HashMap<String, Option<Timestamp>>;

/// The lock pass on a locked copy, at the end of the copy (the target's
/// writer lock held). What the copy holds is copied and stays copied if
/// this fails: a failure is a warning, and the next copy tries again.
fn lengthen_locks(
    repo: &Repository,
    target: &Store,
    catalog: &mut Catalog,
    held: &Held,
    now: Timestamp,
    report: &mut CopyReport,
) {
    let Some(lock) = repo.config.object_lock else {
        return;
    };
    let place = target.location();
    match super::locks::extend_at(target, &place, lock, catalog, held, now) {
        Ok(pass) => {
            report.locks_extended = pass.extended;
            report.warnings.extend(pass.failed.iter().map(|(key, why)| {
                format!("{place}: {key}: its Object Lock could not be lengthened ({why}); the next copy tries again")
            }));
        }
        Err(e) => report.warnings.push(format!(
            "{place}: the copy's Object Locks were not lengthened ({}); the next copy tries again",
            super::one_line(&e.to_string())
        )),
    }
}

fn copy_objects(
    repo: &Repository,
    target: &Store,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<(CopyReport, Held)> {
    let mut report = CopyReport::default();
    let mut held = Held::new();
    let started = Timestamp::now();
    // Data, then index, then snapshots, then the config: each layer only
    // refers to what is already there.
    for prefix in ["data/", "index/", "snapshots/", "audit/"] {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let have: HashMap<String, Option<Timestamp>> = target
            .list(prefix)?
            .into_iter()
            .map(|o| (o.key, o.modified))
            .collect();
        let (present, todo): (Vec<_>, Vec<_>) = repo
            .store
            .list(prefix)?
            .into_iter()
            .partition(|o| have.contains_key(&o.key));
        // What the source holds, the copy must keep locked: not what only
        // the copy still has (the source pruned it).
        if matches!(prefix, "data/" | "index/") {
            held.extend(present.iter().map(|o| (o.key.clone(), have[&o.key])));
        }
        report.objects_present += have.len() as u64;
        progress.phase(
            prefix.trim_end_matches('/'),
            Some(todo.iter().map(|o| o.size).sum()),
        );
        // After a failure nothing more is started (storage that is down
        // would fail every object after its retries); what was sent stays
        // sent for the next run.
        let failed = AtomicBool::new(false);
        // The first pack sent is read back (its last 4 KiB): a target that
        // does not store what it is sent fails the copy at once.
        let unverified = AtomicBool::new(true);
        let results = super::par_map(todo, 4, |obj| {
            if failed.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                return None;
            }
            let verify =
                PackId::from_key(&obj.key).is_some() && unverified.swap(false, Ordering::Relaxed);
            let res = copy_one(repo, target, &obj.key, verify);
            match &res {
                Ok(Copied::Sent(_, n)) => progress.advance(*n),
                Ok(Copied::Damaged(..)) => {}
                Err(_) => failed.store(true, Ordering::Relaxed),
            }
            Some(res)
        });
        for res in results.into_iter().flatten() {
            match res {
                Ok(Copied::Sent(key, n)) => {
                    report.objects_copied += 1;
                    report.bytes_copied += n;
                    if matches!(prefix, "data/" | "index/") {
                        held.insert(key, Some(started));
                    }
                }
                // One bad pack does not stop the rest; it is recorded.
                Ok(Copied::Damaged(pack, why)) => report.damaged.push((pack, why)),
                Err(e) => return Err(e),
            }
        }
    }
    if !report.damaged.is_empty() {
        let bad: Vec<_> = report
            .damaged
            .iter()
            .map(|(p, why)| crate::repo::damage::BadPack {
                id: *p,
                reason: why.clone(),
                blobs: Vec::new(),
            })
            .collect();
        let mut record = crate::repo::damage::DamageRecord::new("copy");
        record.packs = bad;
        if let Err(e) = repo.write_damage(&record) {
            report.warnings.push(format!(
                "the damaged pack(s) could not be recorded in the source repository: {e}"
            ));
        }
    }
    // The config goes last: an interrupted first copy is not yet a repository.
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for key in [KEYRING_KEY, KEYRING_COPY_KEY, CONFIG_KEY] {
        if target.stat(key)?.is_none() {
            // A repository made before the keyring had a copy has none.
            if key == KEYRING_COPY_KEY && repo.store.stat(key)?.is_none() {
                continue;
            }
            if let Copied::Sent(_, n) = copy_one(repo, target, key, false)? {
                report.bytes_copied += n;
                report.objects_copied += 1;
            }
        }
        held.insert(key.to_string(), None);
    }
    Ok((report, held))
}

/// What became of one object.
enum Copied {
    /// Sent: the key and its size.
    Sent(String, u64),
    /// A pack that does not hash to its name: not sent (pack, why).
    Damaged(PackId, String),
}

/// Copies one object; a pack must hash to its name before it is sent on.
/// With `verify`, its end is read back from the target and compared.
fn copy_one(repo: &Repository, target: &Store, key: &str, verify: bool) -> Result<Copied> {
    let bytes = repo
        .store
        .get_capped(key, limits::any_object_cap(key, repo.config.pack_size))?;
    if let Some(pack) = PackId::from_key(key)
        && blake3::hash(&bytes).as_bytes() != &pack.0
    {
        return Ok(Copied::Damaged(
            pack,
            "content does not match its name in the source; not copied".into(),
        ));
    }
    let n = bytes.len() as u64;
    let tail = bytes.slice(bytes.len().saturating_sub(4096)..);
    target.put(key, bytes)?;
    if verify {
        crate::repo::caps::verify_upload(target, key, n, &tail)?;
    }
    Ok(Copied::Sent(key.to_string(), n))
}
