//! The single-writer lock: one `lock` object made with the storage's
//! create-only write, holding who took it and a lease. A writer refreshes its
//! lease while it works; a lease that ran out, or a holder on this host whose
//! process is gone, is stale and may be taken over.

use super::RepoError;
use super::keys::{Audience, Keys};
use super::store::Store;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const LOCK_KEY: &str = "lock";

/// A lock object is a few hundred bytes; anything much larger is not one.
const MAX_LOCK_BYTES: usize = 64 * 1024;

/// A writer's lease; refreshed every third of it while the writer works.
pub const LEASE: Duration = Duration::minutes(30);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockInfo {
    host: String,
    pid: u32,
    started: DateTime<Utc>,
    expires: DateTime<Utc>,
    nonce: u64,
    /// The holder's start time (clock ticks since boot), to tell a reused pid.
    #[serde(default)]
    start_ticks: Option<u64>,
}

/// A held lock. Call [`RepoLock::release`] when done; a dropped lock simply
/// expires with its lease.
pub struct RepoLock {
    info: LockInfo,
    lease: Duration,
    refreshed: DateTime<Utc>,
}

pub use crate::host::hostname;
use crate::host::{proc_stat, process_alive};

impl RepoLock {
    pub fn acquire(store: &Store, keys: &Keys, lease: Duration) -> Result<RepoLock, RepoError> {
        let now = Utc::now();
        let info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            started: now,
            expires: now + lease,
            nonce: rand::random(),
            start_ticks: proc_stat(std::process::id()).map(|(_, t)| t),
        };
        for _ in 0..3 {
            let sealed = Bytes::from(keys.seal(
                Audience::Both,
                &serde_json::to_vec(&info).unwrap_or_default(),
            ));
            if store.create(LOCK_KEY, sealed)? {
                // Read back: if a racing taker deleted ours meanwhile, we lost.
                if Self::read_settled(store, keys)?.is_some_and(|held| held.nonce == info.nonce) {
                    return Ok(RepoLock {
                        info,
                        lease,
                        refreshed: now,
                    });
                }
                continue;
            }
            let Some(held) = Self::read_settled(store, keys)? else {
                continue; // released between our attempt and the read
            };
            if held.nonce == info.nonce {
                // Our create went through but its answer was lost (retried).
                return Ok(RepoLock {
                    info,
                    lease,
                    refreshed: now,
                });
            }
            let stale = held.expires < Utc::now()
                || (held.host == info.host
                    && held.pid != info.pid
                    && !process_alive(held.pid, held.start_ticks));
            if !stale {
                return Err(RepoError::Locked {
                    host: held.host,
                    pid: held.pid,
                    since: held.started,
                });
            }
            store.delete(LOCK_KEY)?;
        }
        Err(RepoError::Locked {
            host: "another writer".into(),
            pid: 0,
            since: Utc::now(),
        })
    }

    /// Like [`RepoLock::acquire`], but waits up to `wait` for a live holder
    /// to finish (the agent's backup and prune queue behind each other).
    pub fn acquire_wait(
        store: &Store,
        keys: &Keys,
        lease: Duration,
        wait: std::time::Duration,
    ) -> Result<RepoLock, RepoError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::acquire(store, keys, lease) {
                Err(RepoError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    std::thread::sleep(left.min(std::time::Duration::from_secs(2)));
                }
                other => return other,
            }
        }
    }

    /// [`RepoLock::read`], tried again a few times when the object can
    /// not be read: a lock being written or deleted by another writer right
    /// now (or by a provider whose reads lag its writes) can read as
    /// garbage for a moment. Only an error that lasts is reported.
    fn read_settled(store: &Store, keys: &Keys) -> Result<Option<LockInfo>, RepoError> {
        let mut wait = std::time::Duration::from_millis(200);
        for _ in 0..3 {
            match Self::read(store, keys) {
                Ok(found) => return Ok(found),
                Err(RepoError::Storage(e)) if e.is_transient() => {
                    return Err(RepoError::Storage(e));
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait *= 2;
                }
            }
        }
        Self::read(store, keys)
    }

    fn read(store: &Store, keys: &Keys) -> Result<Option<LockInfo>, RepoError> {
        let bytes = match store.get_capped(LOCK_KEY, super::limits::LOCK) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // An unreadable lock may be a writer's all the same (a newer
        // coffer, a damaged object): never taken over silently.
        let unreadable = |why: String| RepoError::Corrupt {
            object: format!("{}/{LOCK_KEY}", store.location()),
            reason: format!(
                "the writer lock can not be read ({}); if no coffer writer (backup, prune, forget, erase, repair, copy) is running on any host, delete that object and run again",
                why.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        };
        if bytes.len() > MAX_LOCK_BYTES {
            return Err(unreadable(format!(
                "{} bytes, more than a lock holds",
                bytes.len()
            )));
        }
        let plain = keys
            .open(&bytes, LOCK_KEY)
            .map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Extends the lease if a third of it has passed. Cheap to call often.
    pub fn refresh_if_due(&mut self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        let now = Utc::now();
        if now - self.refreshed < self.lease / 3 {
            return Ok(());
        }
        match Self::read(store, keys)? {
            Some(held) if held.nonce == self.info.nonce => {}
            _ => {
                return Err(RepoError::Corrupt {
                    object: LOCK_KEY.into(),
                    reason: "our lock was taken over by another writer; stopping".into(),
                });
            }
        }
        self.info.expires = now + self.lease;
        let sealed = keys.seal(
            Audience::Both,
            &serde_json::to_vec(&self.info).unwrap_or_default(),
        );
        store.put(LOCK_KEY, Bytes::from(sealed))?;
        self.refreshed = now;
        Ok(())
    }

    pub fn release(self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        if Self::read(store, keys)?.is_some_and(|held| held.nonce == self.info.nonce) {
            store.delete(LOCK_KEY)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = std::process::id();
        let (state, start) = proc_stat(me).expect("procfs");
        assert_ne!(state, 'Z');
        assert!(process_alive(me, Some(start)));
        assert!(
            !process_alive(me, Some(start + 1)),
            "same pid, other start time"
        );
        assert!(!process_alive(u32::MAX - 1, None));
    }

    #[test]
    fn a_zombie_holds_no_lock() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not yet reaped: a zombie once it has exited.
        for _ in 0..200 {
            if proc_stat(pid).is_some_and(|(s, _)| s == 'Z') {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_alive(pid, None));
        child.wait().unwrap();
    }
}
