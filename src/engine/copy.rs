//! `copy`: replicate a repository to a second storage (another bucket,
//! region or provider) at the ciphertext level. No key can read anything
//! here; only what the target lacks is sent; every pack is verified against
//! its name before it is sent; the target's `config` is written last, so an
//! interrupted first copy is not yet a repository and the next run resumes.

use super::Progress;
use crate::Result;
use crate::repo::ids::PackId;
use crate::repo::limits;
use crate::repo::lock::RepoLock;
use crate::repo::store::Store;
use crate::repo::{CONFIG_KEY, KEYRING_KEY, RepoError, Repository};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct CopyReport {
    pub objects_copied: u64,
    pub bytes_copied: u64,
    /// Objects the target already had.
    pub objects_present: u64,
}

/// Copies every object `target` lacks from `repo`'s storage.
pub fn copy(repo: &Repository, target: &Store, progress: &dyn Progress) -> Result<CopyReport> {
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
    let lock = RepoLock::acquire(target, &repo.keys, chrono::Duration::minutes(30))?;
    let result = copy_objects(repo, target, progress);
    let released = lock.release(target, &repo.keys);
    let report = result?;
    released?;
    Ok(report)
}

fn copy_objects(repo: &Repository, target: &Store, progress: &dyn Progress) -> Result<CopyReport> {
    let mut report = CopyReport::default();
    // Data, then index, then snapshots, then the config: each layer only
    // refers to what is already there.
    for prefix in ["data/", "index/", "snapshots/", "audit/"] {
        let have: HashSet<String> = target.list(prefix)?.into_iter().map(|o| o.key).collect();
        let todo: Vec<_> = repo
            .store
            .list(prefix)?
            .into_iter()
            .filter(|o| !have.contains(&o.key))
            .collect();
        report.objects_present += have.len() as u64;
        progress.phase(
            prefix.trim_end_matches('/'),
            Some(todo.iter().map(|o| o.size).sum()),
        );
        // After a failure nothing more is started (storage that is down
        // would fail every object after its retries); what was sent stays
        // sent for the next run.
        let failed = AtomicBool::new(false);
        let results = super::par_map(todo, 4, |obj| {
            if failed.load(Ordering::Relaxed) {
                return None;
            }
            let res = copy_one(repo, target, &obj.key);
            match &res {
                Ok(n) => progress.advance(*n),
                Err(_) => failed.store(true, Ordering::Relaxed),
            }
            Some(res)
        });
        for res in results.into_iter().flatten() {
            let n = res?;
            report.objects_copied += 1;
            report.bytes_copied += n;
        }
    }
    for key in [KEYRING_KEY, CONFIG_KEY] {
        if target.stat(key)?.is_none() {
            report.bytes_copied += copy_one(repo, target, key)?;
            report.objects_copied += 1;
        }
    }
    Ok(report)
}

/// Copies one object; a pack must hash to its name before it is sent on.
fn copy_one(repo: &Repository, target: &Store, key: &str) -> Result<u64> {
    let bytes = repo
        .store
        .get_capped(key, limits::any_object_cap(key, repo.config.pack_size))?;
    if let Some(pack) = PackId::from_key(key)
        && blake3::hash(&bytes).as_bytes() != &pack.0
    {
        return Err(RepoError::Corrupt {
            object: key.to_string(),
            reason: "content does not match its name in the source; not copied (run `coffer check --read-data`)".into(),
        }
        .into());
    }
    let n = bytes.len() as u64;
    target.put(key, bytes)?;
    Ok(n)
}
