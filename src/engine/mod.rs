//! Use cases: the only layer that combines the repository format, storage and
//! the catalog. Front ends (CLI, agent) call these and render the results.

mod audit;
pub mod backup;
pub mod check;
pub mod copy;
pub mod erase;
pub mod expire;
pub mod export;
mod file_cache;
pub mod fleet;
pub mod forget;
pub mod glob;
pub mod health;
pub mod history;
pub mod job;
pub mod locks;
mod packer;
pub mod prune;
mod read;
pub mod rebuild;
mod refs;
pub mod repair;
pub mod restore;
mod rewrite;
pub mod select;
mod states;
mod sync;
pub mod undelete;
mod walk;

use crate::Result;

pub use audit::{AuditEntry, AuditLog, AuditSource, audit_actor, audit_log, record_audit};
pub use health::record_damage;
pub use read::{
    Run, coalesce, for_each_entry, for_each_entry_under, read_blobs, read_span, read_stream,
};
pub use refs::{RefsPiece, decode_refs, snapshot_refs, walk_refs};
pub use states::{
    CLOCK_SKEW, Newest, SnapshotState, claims_past_storage, is_suspect, newest_whole,
    retention_time, snapshot_states, suspicion,
};
pub use sync::{
    Adopted, BadObject, Skipped, Snapshots, Synced, adopt_orphan_packs, is_bad_object, one_line,
    snapshot_stored, sync, sync_index, sync_snapshots,
};
pub use walk::ExcludeError;

/// Progress reports from the engines, as data; the CLI draws bars, tests
/// ignore them.
pub trait Progress: Sync {
    /// A new phase; `total` in the phase's unit if known.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// Units done in the current phase (bytes, or objects). A backup counts
    /// the bytes of files it finds unchanged as done too, so that what is
    /// done meets its pre-scan's total.
    fn advance(&self, _n: u64) {}
    /// Whether to count a backup's files and bytes ahead of it for a total
    /// (a pre-scan that only stats: worth it only where a total is shown).
    fn wants_total(&self) -> bool {
        false
    }
    /// The pre-scan's count so far; the last report has `done` set (none
    /// has if the backup finished first).
    fn counted(&self, _count: Counted) {}
    /// A backup finished with one more file: read, found unchanged, or
    /// skipped.
    fn file_done(&self) {}
}

/// What a backup's pre-scan counted: regular files (every name of a hard
/// link) and their sizes, below the sources, excludes left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub files: u64,
    pub bytes: u64,
    /// The whole walk is counted: these are the totals.
    pub done: bool,
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Takes one work item; the lock is released before the caller works on it.
fn pop<T>(work: &std::sync::Mutex<Vec<T>>) -> Option<T> {
    work.lock().ok()?.pop()
}

/// Runs `f` on every item with up to `threads` threads; results in item order.
pub(crate) fn par_map<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    let work = std::sync::Mutex::new(items.into_iter().enumerate().rev().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| {
                while let Some((i, item)) = pop(&work) {
                    let r = f(item);
                    if let Ok(mut d) = done.lock() {
                        d.push((i, r));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// [`crate::Error::Interrupted`] once the cancel flag (SIGINT, SIGTERM) is
/// set: the engines call it at their safe points.
pub(crate) fn stop(cancel: &std::sync::atomic::AtomicBool) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(crate::Error::Interrupted);
    }
    Ok(())
}
