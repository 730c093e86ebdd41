//! The single-writer lock (docs/FORMAT.md, "The lock"). Two protocols, by
//! what the storage does ([`super::caps`]):
//!
//! * **create**, where the create-only write works: one `lock` object,
//!   made with it; the loser of a race is refused by the storage. Older
//!   coffer builds use this protocol alone.
//! * **list**, where it does not: every writer PUTs its own
//!   `locks/<random id>`, waits a settle time, lists `locks/` (and reads
//!   `lock`) again, and withdraws if any other live lock is there. Safe as
//!   long as a listing shows every PUT that finished before it began (the
//!   probe checks that listings keep up).
//!
//! Each protocol respects the other's objects, so writers that disagree on
//! the protocol (a record made while they ran) still exclude each other.
//! A lock holds who took it and a lease; the writer refreshes the lease
//! while it works, checks that its lock is still there before every
//! destructive step ([`RepoLock::confirm`]), and removes it when done. A lease
//! that ran out, or a holder on this host whose process is gone, is stale
//! and may be taken over.

use super::RepoError;
use super::caps::Capabilities;
use super::keys::{Audience, Keys};
use super::store::Store;
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The create-only lock object.
pub const LOCK_KEY: &str = "lock";
/// Where the list-and-check protocol's lock objects live.
pub const LOCKS_PREFIX: &str = "locks/";

/// A lock object is a few hundred bytes; anything much larger is not one.
const MAX_LOCK_BYTES: usize = 64 * 1024;

/// A writer's lease; refreshed every third of it while the writer works.
pub const LEASE: SignedDuration = SignedDuration::from_mins(30);

/// How a writer takes the lock on a storage (recorded in `capabilities`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "kebab-case")]
pub enum LockProtocol {
    /// The `lock` object, made with the create-only write.
    Create,
    /// `locks/<random id>`, then a wait of `settle_ms`, then a listing.
    List { settle_ms: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LockInfo {
    host: String,
    pid: u32,
    #[serde(with = "crate::time::serde_rfc3339")]
    started: Timestamp,
    #[serde(with = "crate::time::serde_rfc3339")]
    expires: Timestamp,
    nonce: u64,
    /// The holder's start time (clock ticks since boot), to tell a reused pid.
    #[serde(default)]
    start_ticks: Option<u64>,
}

impl LockInfo {
    /// Whether `self`, another writer's lock, may be taken over by `me`.
    fn stale_for(&self, me: &LockInfo) -> bool {
        self.expires < Timestamp::now()
            || (self.host == me.host
                && self.pid != me.pid
                && !process_alive(self.pid, self.start_ticks))
    }
}

/// A held lock. Call [`RepoLock::release`] when done; a dropped lock simply
/// expires with its lease. Writers hold it through [`WriterLock`].
pub struct RepoLock {
    info: LockInfo,
    lease: SignedDuration,
    refreshed: Timestamp,
    /// The object that holds it: `lock`, or `locks/<id>`.
    key: String,
    /// What the storage was found to do (writers that came in through
    /// [`RepoLock::for_writer`]).
    caps: Option<Capabilities>,
}

pub use crate::host::hostname;
use crate::host::{proc_stat, process_alive};

/// The other writers' live locks, and whether a listing showed our own.
struct Survey {
    others: Vec<(String, LockInfo)>,
    own_listed: bool,
}

fn locked(key: &str, held: LockInfo) -> RepoError {
    RepoError::Locked {
        host: held.host,
        pid: held.pid,
        since: held.started,
        object: key.to_string(),
    }
}

impl RepoLock {
    fn new_info(lease: SignedDuration) -> LockInfo {
        let now = Timestamp::now();
        LockInfo {
            host: hostname(),
            pid: std::process::id(),
            started: now,
            expires: now + lease,
            nonce: rand::random(),
            start_ticks: proc_stat(std::process::id()).map(|(_, t)| t),
        }
    }

    fn sealed(keys: &Keys, info: &LockInfo) -> Bytes {
        Bytes::from(keys.seal(
            Audience::Both,
            &serde_json::to_vec(info).unwrap_or_default(),
        ))
    }

    fn held(info: LockInfo, lease: SignedDuration, key: String) -> RepoLock {
        RepoLock {
            refreshed: Timestamp::now(),
            info,
            lease,
            key,
            caps: None,
        }
    }

    /// Every writer's way in: learns what the storage does (the
    /// `capabilities` record, or a new probe when it is missing or
    /// outdated), takes the lock by the protocol that allows (waiting up
    /// to `wait` for another writer), and records a new probe's result
    /// once it holds the lock. Refuses storage that does not store
    /// uploads as sent ([`RepoError::StorageUnfit`]).
    pub fn for_writer(
        store: &Store,
        keys: &Keys,
        pack_size: u64,
        lease: SignedDuration,
        wait: std::time::Duration,
    ) -> Result<RepoLock, RepoError> {
        let (caps, probed) = super::caps::for_writer(store, keys, pack_size)?;
        let mut lock = Self::acquire_wait_with(store, keys, lease, wait, caps.lock)?;
        if probed && let Err(e) = super::caps::write(store, keys, &caps) {
            let _ = lock.release(store, keys);
            return Err(e);
        }
        lock.caps = Some(caps);
        Ok(lock)
    }

    /// What the storage was found to do, for writers that came in through
    /// [`RepoLock::for_writer`].
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// The object that holds this lock (`lock` or `locks/<id>`).
    pub fn object(&self) -> &str {
        &self.key
    }

    /// Takes the lock with the create-only write (the protocol of older
    /// builds, and of storage whose create-only write works).
    pub fn acquire(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
    ) -> Result<RepoLock, RepoError> {
        Self::acquire_with(store, keys, lease, LockProtocol::Create)
    }

    /// Takes the lock by `protocol`, or fails with [`RepoError::Locked`].
    pub fn acquire_with(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
        protocol: LockProtocol,
    ) -> Result<RepoLock, RepoError> {
        match protocol {
            LockProtocol::Create => Self::acquire_create(store, keys, lease),
            LockProtocol::List { settle_ms } => Self::acquire_listed(
                store,
                keys,
                lease,
                std::time::Duration::from_millis(settle_ms),
            ),
        }
    }

    fn acquire_create(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
    ) -> Result<RepoLock, RepoError> {
        let info = Self::new_info(lease);
        for _ in 0..3 {
            let ours = |held: &LockInfo| held.nonce == info.nonce;
            let created = store.create(LOCK_KEY, Self::sealed(keys, &info))?;
            // Created (this protocol is used only where storage was found to
            // honour the create-only write: no read needed), or refused: then
            // whose it is decides, ours too when our create went through but
            // its answer was lost (retried).
            let held = match created {
                true => Some(info.clone()),
                false => Self::read(store, keys, LOCK_KEY)?,
            };
            if held.as_ref().is_some_and(ours) {
                // A list-and-check writer (one whose record said the
                // create-only write fails) may hold `locks/…`.
                let survey = match Self::survey(store, keys, Some(LOCK_KEY), &info) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = store.delete(LOCK_KEY);
                        return Err(e);
                    }
                };
                if let Some((key, other)) = survey.others.into_iter().next() {
                    store.delete(LOCK_KEY)?;
                    return Err(locked(&key, other));
                }
                return Ok(Self::held(info, lease, LOCK_KEY.into()));
            }
            if created {
                continue;
            }
            let Some(held) = held else {
                continue; // released between our attempt and the read
            };
            if !held.stale_for(&info) {
                return Err(locked(LOCK_KEY, held));
            }
            store.delete(LOCK_KEY)?;
        }
        Err(RepoError::Locked {
            host: "another writer".into(),
            pid: 0,
            since: Timestamp::now(),
            object: LOCK_KEY.into(),
        })
    }

    /// The list-and-check protocol: look, write our own lock, wait
    /// `settle`, look again; withdraw on any other live lock.
    fn acquire_listed(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
        settle: std::time::Duration,
    ) -> Result<RepoLock, RepoError> {
        let info = Self::new_info(lease);
        // Nothing written while another writer is known to hold it.
        if let Some((key, other)) = Self::survey(store, keys, None, &info)?
            .others
            .into_iter()
            .next()
        {
            return Err(locked(&key, other));
        }
        let key = format!("{LOCKS_PREFIX}{}", hex::encode(rand::random::<[u8; 16]>()));
        store.put(&key, Self::sealed(keys, &info))?;
        std::thread::sleep(settle);
        let survey = match Self::survey(store, keys, Some(&key), &info) {
            Ok(s) => s,
            Err(e) => {
                let _ = store.delete(&key);
                return Err(e);
            }
        };
        if let Some((other_key, other)) = survey.others.into_iter().next() {
            // Both withdraw when two see each other; the retry of
            // `acquire_wait` is jittered, so one goes first next time.
            store.delete(&key)?;
            return Err(locked(&other_key, other));
        }
        if !survey.own_listed {
            store.delete(&key)?;
            return Err(RepoError::StorageUnfit {
                location: store.location(),
                reason: format!(
                    "its listing did not show this writer's lock {} ms after it was written, so it may not show another writer's either: coffer can not keep two writers apart on it now; try again",
                    settle.as_millis()
                ),
            });
        }
        Ok(Self::held(info, lease, key))
    }

    /// The other writers' live locks (`locks/…` and `lock`), skipping
    /// `own`; stale ones are deleted (taken over). Whether `own` was listed.
    fn survey(
        store: &Store,
        keys: &Keys,
        own: Option<&str>,
        me: &LockInfo,
    ) -> Result<Survey, RepoError> {
        let listed = store.list(LOCKS_PREFIX)?;
        let own_listed = own.is_some_and(|own| listed.iter().any(|o| o.key == own));
        let mut candidates: Vec<String> = listed
            .into_iter()
            .map(|o| o.key)
            .filter(|k| Some(k.as_str()) != own)
            .collect();
        if own != Some(LOCK_KEY) {
            candidates.push(LOCK_KEY.into());
        }
        let mut others = Vec::new();
        for key in candidates {
            // Released between the listing and the read: no conflict.
            let Some(held) = Self::read(store, keys, &key)? else {
                continue;
            };
            if held.nonce == me.nonce {
                continue;
            }
            if held.stale_for(me) {
                store.delete(&key)?;
                continue;
            }
            others.push((key, held));
        }
        Ok(Survey { others, own_listed })
    }

    /// Like [`RepoLock::acquire`], but waits up to `wait` for a live holder
    /// to finish (the agent's backup and prune queue behind each other).
    pub fn acquire_wait(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
        wait: std::time::Duration,
    ) -> Result<RepoLock, RepoError> {
        Self::acquire_wait_with(store, keys, lease, wait, LockProtocol::Create)
    }

    /// [`RepoLock::acquire_with`], trying again for up to `wait` after
    /// jittered pauses (two list-and-check writers that saw each other
    /// both withdrew; the jitter lets one go first).
    pub fn acquire_wait_with(
        store: &Store,
        keys: &Keys,
        lease: SignedDuration,
        wait: std::time::Duration,
        protocol: LockProtocol,
    ) -> Result<RepoLock, RepoError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match Self::acquire_with(store, keys, lease, protocol) {
                Err(RepoError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    let pause =
                        std::time::Duration::from_millis(rand::random::<u64>() % 2000 + 500);
                    std::thread::sleep(left.min(pause));
                }
                other => return other,
            }
        }
    }

    /// [`RepoLock::read_once`], tried again a few times when the object
    /// can not be read: a lock being written or deleted by another writer
    /// right now (or by a provider whose reads lag its writes) can read as
    /// garbage for a moment. Only an error that lasts is reported.
    fn read(store: &Store, keys: &Keys, key: &str) -> Result<Option<LockInfo>, RepoError> {
        let mut wait = std::time::Duration::from_millis(200);
        for _ in 0..3 {
            match Self::read_once(store, keys, key) {
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
        Self::read_once(store, keys, key)
    }

    fn read_once(store: &Store, keys: &Keys, key: &str) -> Result<Option<LockInfo>, RepoError> {
        let bytes = match store.get_capped(key, super::limits::LOCK) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // An unreadable lock may be a writer's all the same (a newer
        // coffer, a damaged object): never taken over silently.
        let unreadable = |why: String| RepoError::Corrupt {
            object: format!("{}/{key}", store.location()),
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
            .open(&bytes, key)
            .map_err(|e| unreadable(e.to_string()))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| unreadable(e.to_string()))
    }

    /// Fails unless our lock object still holds our lock (another writer
    /// took it over after our lease ran out, or someone deleted it).
    fn check_held(&self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        match Self::read(store, keys, &self.key)? {
            Some(held) if held.nonce == self.info.nonce => Ok(()),
            Some(_) => Err(RepoError::LockLost {
                object: self.key.clone(),
                why: "was taken over by another writer".into(),
            }),
            None => Err(RepoError::LockLost {
                object: self.key.clone(),
                why: "is gone (deleted, or taken over after its lease ran out)".into(),
            }),
        }
    }

    /// Extends the lease if a third of it has passed. Cheap to call often.
    pub fn refresh_if_due(&mut self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        let now = Timestamp::now();
        if now.duration_since(self.refreshed) < self.lease / 3 {
            return Ok(());
        }
        self.check_held(store, keys)?;
        self.info.expires = now + self.lease;
        store.put(&self.key, Self::sealed(keys, &self.info))?;
        self.refreshed = now;
        Ok(())
    }

    /// Before a destructive step (deleting packs, index or snapshot
    /// objects): fails unless our lock is still there (one read), and
    /// refreshes it if due. A writer whose lock was taken over stops
    /// before it deletes what the new holder may rely on.
    pub fn confirm(&mut self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        self.check_held(store, keys)?;
        self.refresh_if_due(store, keys)
    }

    pub fn release(self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        self.remove(store, keys)
    }

    /// Deletes our lock object if it still holds our lock.
    fn remove(&self, store: &Store, keys: &Keys) -> Result<(), RepoError> {
        if Self::read(store, keys, &self.key)?.is_some_and(|held| held.nonce == self.info.nonce) {
            store.delete(&self.key)?;
        }
        Ok(())
    }
}

/// The writer lock, held: every writer takes it through
/// [`WriterLock::take`] and gives it back through [`WriterLock::release`]
/// (or [`WriterLock::release_after`]), the one place where that happens. A
/// guard dropped without that (an early return, a panic) still tries to
/// release, best effort: its error has nowhere to go, and the lease ends
/// the lock anyway.
pub struct WriterLock<'a> {
    lock: RepoLock,
    store: &'a Store,
    keys: &'a Keys,
    released: bool,
}

impl<'a> WriterLock<'a> {
    /// Takes the lock on `store` by [`RepoLock::for_writer`], waiting up
    /// to `wait` for another writer.
    pub fn take(
        store: &'a Store,
        keys: &'a Keys,
        pack_size: u64,
        wait: std::time::Duration,
    ) -> Result<WriterLock<'a>, RepoError> {
        let lock = RepoLock::for_writer(store, keys, pack_size, LEASE, wait)?;
        Ok(WriterLock {
            lock,
            store,
            keys,
            released: false,
        })
    }

    /// [`WriterLock::take`] on a repository's own storage.
    pub fn of(
        repo: &'a super::Repository,
        wait: std::time::Duration,
    ) -> Result<WriterLock<'a>, RepoError> {
        Self::take(&repo.store, &repo.keys, repo.config.pack_size, wait)
    }

    /// [`RepoLock::confirm`]: before a destructive step.
    pub fn confirm(&mut self) -> Result<(), RepoError> {
        self.lock.confirm(self.store, self.keys)
    }

    /// [`RepoLock::refresh_if_due`]: cheap to call often.
    pub fn refresh_if_due(&mut self) -> Result<(), RepoError> {
        self.lock.refresh_if_due(self.store, self.keys)
    }

    /// Gives the lock back, reporting whether that worked.
    pub fn release(mut self) -> Result<(), RepoError> {
        self.released = true;
        self.lock.remove(self.store, self.keys)
    }

    /// Gives the lock back after `work`; the outcome of `work` wins: a
    /// release error is reported only when `work` succeeded, never in
    /// place of its error.
    pub fn release_after<T, E: From<RepoError>>(self, work: Result<T, E>) -> Result<T, E> {
        let released = self.release();
        let value = work?;
        released?;
        Ok(value)
    }
}

impl Drop for WriterLock<'_> {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.lock.remove(self.store, self.keys);
        }
    }
}

/// The held lock's own calls (its object, the capability record) and the
/// code that takes a `&mut RepoLock` work through the guard.
impl std::ops::Deref for WriterLock<'_> {
    type Target = RepoLock;
    fn deref(&self) -> &RepoLock {
        &self.lock
    }
}

impl std::ops::DerefMut for WriterLock<'_> {
    fn deref_mut(&mut self) -> &mut RepoLock {
        &mut self.lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock object as the chrono-based writer stored it reads, and is
    /// written again byte for byte (both binaries may meet on one storage).
    #[test]
    fn lock_object_json_keeps_its_time_form() {
        let old = r#"{"host":"h","pid":7,"started":"2026-05-01T10:00:00.123456789Z","expires":"2026-05-01T10:30:00.123456789Z","nonce":1,"start_ticks":null}"#;
        let info: LockInfo = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&info).unwrap(), old);
        let whole = old.replace(".123456789", "");
        let info: LockInfo = serde_json::from_str(&whole).unwrap();
        assert_eq!(serde_json::to_string(&info).unwrap(), whole);
    }

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

    #[test]
    fn the_protocol_is_recorded_by_name() {
        let json = serde_json::to_string(&LockProtocol::List { settle_ms: 1000 }).unwrap();
        assert_eq!(json, r#"{"protocol":"list","settle_ms":1000}"#);
        let json = serde_json::to_string(&LockProtocol::Create).unwrap();
        assert_eq!(json, r#"{"protocol":"create"}"#);
    }
}
