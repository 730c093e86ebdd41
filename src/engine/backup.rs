//! Backup: walk → read/chunk/hash → dedup → compress/seal → pack → upload,
//! then index, then the snapshot that commits it (docs/FORMAT.md, "Write order").

use super::file_cache::CacheCursor;
use super::health::{stamp, unusable_ids, usable_blobs};
use super::packer::{Packer, ReadBack};
use super::walk::{self, Excludes, Node, WalkItem};
use super::{Progress, adopt_orphan_packs};
use crate::catalog::{BlobLocation, BlobMap, CachedFile, Catalog};
use crate::repo::Repository;
use crate::repo::chunker::{Chunker, Splitter};
use crate::repo::damage::{BadPack, DamageRecord};
use crate::repo::ids::PackId;
use crate::repo::ids::{BlobId, IndexId, SnapshotId};
use crate::repo::index::{IndexFile, IndexedPack};
use crate::repo::lock::{RepoLock, WriterLock, hostname};
use crate::repo::pack::{BlobKind, SealedBlob, seal_blob};
use crate::repo::snapshot::{Snapshot, Summary};
use crate::repo::tree::TreeIndexBuilder;
use crate::repo::tree::{Entry, EntryKind, Extent};
use crate::{Error, Result};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct BackupOptions {
    pub sources: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub host: Option<String>,
    pub profile: String,
    pub compression: i32,
    /// The snapshot's time; `None` is now. (Tests of retention simulate months.)
    pub time: Option<jiff::Timestamp>,
    /// How long to wait for another writer's lock before giving up.
    pub lock_wait: std::time::Duration,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            sources: Vec::new(),
            exclude: Vec::new(),
            host: None,
            profile: "cli".into(),
            compression: crate::config::DEFAULT_COMPRESSION,
            time: None,
            lock_wait: std::time::Duration::ZERO,
        }
    }
}

/// The file list's blobs, its index, and the reference list's blobs.
struct Finished {
    tree: Vec<BlobId>,
    refs: Vec<BlobId>,
    tree_index: Option<BlobId>,
    /// The plaintext of each new `refs` blob: for the catalog's cache, so
    /// that `snapshots` and prune here never fetch what this run wrote.
    refs_plain: Vec<(BlobId, Vec<u8>)>,
}

#[derive(Debug)]
pub struct BackupReport {
    pub snapshot: SnapshotId,
    pub summary: Summary,
    pub packs_added: u64,
    /// Files or folders that could not be read: (path, reason).
    pub skipped: Vec<(String, String)>,
    /// Files that changed while they were read (stored as read).
    pub changed: Vec<String>,
    pub orphans_adopted: usize,
    /// Objects whose Object Lock this backup lengthened (engine/locks.rs).
    pub locks_extended: usize,
    /// What the operator should know: objects skipped, data stored again.
    pub warnings: Vec<String>,
    /// What the walk met besides files and folders (not stored in the
    /// snapshot's summary): with it the counts add up to what was seen.
    pub seen: Seen,
}

/// Counts of a backup beyond [`Summary`]: files, dirs, symlinks, other,
/// sockets and skipped items add up to every item the walk met.
/// `hardlinks` is part of `files` (second names of a file stored once):
/// new, changed, unchanged and hard-linked files add up to `files`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub hardlinks: u64,
    pub symlinks: u64,
    /// Fifos and device nodes.
    pub other: u64,
    /// Sockets: left out (their servers make them again).
    pub sockets: u64,
}

/// Which of [`Summary`]'s file counts a file went to, so a file that is
/// skipped after all is taken out of it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    /// Not a file.
    Not,
    /// A second name of a file ([`Seen::hardlinks`]).
    Hardlink,
    New,
    Changed,
    Unchanged,
}

impl Counted {
    /// Counts one file in `summary` (and `seen`): +1, or -1 with `undo`.
    fn apply(self, summary: &mut Summary, seen: &mut Seen, undo: bool) {
        let slot = match self {
            Counted::Not => return,
            Counted::Hardlink => &mut seen.hardlinks,
            Counted::New => &mut summary.files_new,
            Counted::Changed => &mut summary.files_changed,
            Counted::Unchanged => &mut summary.files_unchanged,
        };
        if undo {
            *slot = slot.saturating_sub(1);
            summary.files = summary.files.saturating_sub(1);
        } else {
            *slot += 1;
            summary.files += 1;
        }
    }
}

/// Files below this size are bundled with their neighbours into one blob, so
/// tens of thousands of small files do not each pay a blob's fixed cost.
const SMALL_FILE: u64 = 256 * 1024;
/// A bundle may close after this many bytes (where a keyed hash of the
/// current path says so, so cut points survive neighbouring changes)…
const BUNDLE_MIN: usize = 256 * 1024;
/// …and always closes at this size.
const BUNDLE_MAX: usize = 1024 * 1024;

/// In-flight files the driver lets run ahead of the one it waits for.
const WINDOW: usize = 64;
/// Packs per intermediate index object, so a cut-off backup loses little.
const PACKS_PER_INDEX: usize = 32;

/// Blobs known to exist (repository) or already queued in this run.
struct Dedup {
    known: BlobMap,
    queued: Mutex<HashSet<BlobId>>,
}

impl Dedup {
    /// True if the caller should store this blob (first to ask, not in the repository).
    fn claim(&self, id: &BlobId) -> bool {
        !self.known.contains_key(id)
            && self
                .queued
                .lock()
                .map(|mut q| q.insert(*id))
                .unwrap_or(false)
    }
}

struct PlainBlob {
    id: BlobId,
    kind: BlobKind,
    data: Vec<u8>,
}

struct FileJob {
    seq: u64,
    abs: PathBuf,
    meta: std::fs::Metadata,
}

#[derive(Debug)]
enum FileContent {
    Chunked(Vec<Extent>, u64),
    Inline(Vec<u8>),
}

/// Why a file was skipped rather than read; its text goes into the report.
#[derive(Debug, thiserror::Error)]
enum ReadFailure {
    /// Removed between the walk and the read.
    #[error("{0}")]
    Vanished(std::io::Error),
    /// Opening, reading or looking at it failed (permissions, I/O errors).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The backup was stopped before this file was read.
    #[error("stopped")]
    Stopped,
    /// The sealers hung up while it was read: the backup is stopping.
    #[error("backup is stopping")]
    Stopping,
}

struct FileDone {
    seq: u64,
    /// The content, and whether the file changed while it was read.
    result: std::result::Result<(FileContent, bool), ReadFailure>,
}

/// One entry waiting to be written to the file list, in walk order.
struct Slot {
    entry: Entry,
    /// The file-cache row to save once the entry is final (read files only).
    cache: bool,
    state: SlotState,
    /// Where the file was counted.
    counted: Counted,
}

enum SlotState {
    Ready,
    Reading,
    Failed,
    /// Inline data arrived; waits for its place in a bundle.
    Inline(Vec<u8>),
    /// In bundle number n at this offset; waits for the bundle to close.
    Bundled(u64),
}

fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The entry of a node; `Ok(None)` for a socket (left out), an error for a
/// symlink whose target can not be read.
fn entry_of(node: &Node) -> std::result::Result<Option<Entry>, String> {
    let m = &node.meta;
    let ft = m.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::Chardev
    } else if ft.is_block_device() {
        EntryKind::Blockdev
    } else {
        return Ok(None); // sockets: recreated by their servers, not backed up
    };
    let target = if kind == EntryKind::Symlink {
        use std::os::unix::ffi::OsStrExt;
        let t = std::fs::read_link(&node.abs).map_err(|e| e.to_string())?;
        Some(t.as_os_str().as_bytes().to_vec())
    } else {
        None
    };
    Ok(Some(Entry {
        path: node.rel.clone(),
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: nanos(m.mtime(), m.mtime_nsec()),
        ctime: nanos(m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        size: if kind == EntryKind::File { m.len() } else { 0 },
        content: Vec::new(),
        target,
        rdev: if matches!(kind, EntryKind::Chardev | EntryKind::Blockdev) {
            m.rdev()
        } else {
            0
        },
    }))
}

/// Reads, chunks and hashes one file; new chunks go to the sealers.
#[allow(clippy::too_many_arguments)]
fn read_file(
    job: &FileJob,
    chunker: &Chunker,
    small: u64,
    dedup: &Dedup,
    keys: &crate::repo::keys::Keys,
    seal_tx: &Sender<PlainBlob>,
    progress: &dyn Progress,
    read_bytes: &AtomicU64,
) -> std::result::Result<(FileContent, bool), ReadFailure> {
    let f = std::fs::File::open(&job.abs).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadFailure::Vanished(e),
        _ => ReadFailure::Io(e),
    })?;
    let before = &job.meta;
    let content = if before.len() < small {
        let mut data = Vec::with_capacity(before.len() as usize);
        (&f).take(small).read_to_end(&mut data)?;
        progress.advance(data.len() as u64);
        read_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        FileContent::Inline(data)
    } else {
        let mut extents = Vec::new();
        let total = chunker.split_reader::<_, ReadFailure>(&f, |chunk| {
            let id = keys.blob_id(&chunk);
            let len = chunk.len() as u64;
            extents.push(Extent {
                blob: id,
                offset: 0,
                length: len,
            });
            progress.advance(len);
            read_bytes.fetch_add(len, Ordering::Relaxed);
            if dedup.claim(&id) {
                seal_tx
                    .send(PlainBlob {
                        id,
                        kind: BlobKind::Data,
                        data: chunk,
                    })
                    .map_err(|_| ReadFailure::Stopping)?;
            }
            Ok(())
        })?;
        FileContent::Chunked(extents, total)
    };
    let read_len = match &content {
        FileContent::Inline(d) => d.len() as u64,
        FileContent::Chunked(_, n) => *n,
    };
    let after = f.metadata()?;
    let changed = read_len != before.len()
        || after.len() != before.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || after.ctime() != before.ctime()
        || after.ctime_nsec() != before.ctime_nsec();
    Ok((content, changed))
}

/// When storage wrote each pack and index object, as the sync listed them
/// (what [`super::locks::extend`] takes for objects not in its ledger).
type Listed = HashMap<String, jiff::Timestamp>;

/// What a backup starts from: the blobs it may reference, the packs it
/// adopted, warnings, and when each pack and index object was stored.
struct Vouched {
    blobs: BlobMap,
    adopted: usize,
    warnings: Vec<String>,
    listed: Listed,
}

fn listed_times(synced: &super::Synced) -> Listed {
    let packs = synced
        .health
        .stored
        .iter()
        .filter_map(|(id, p)| Some((id.key(), p.modified?)));
    let indexes = synced.index_times.iter().map(|(id, t)| (id.key(), *t));
    packs.chain(indexes).collect()
}

/// The blobs this backup may build on: those whose copy storage holds
/// (one listing of `data/`), at its indexed size, that no read found bad
/// (damage records) and whose pack was not replaced after it was indexed
/// (read whole to tell). Everything else the source still has is stored
/// again, so a new snapshot never references lost data. Packs no index
/// lists are adopted first. Returns the blobs, the packs adopted, and
/// warnings for the operator.
fn vouched_blobs(repo: &Repository, catalog: &mut Catalog) -> Result<Vouched> {
    let synced = super::sync_index(repo, catalog)?;
    let listed = listed_times(&synced);
    let mut warnings = synced.warnings();
    let mut health = synced.health;
    let mut known = synced.blobs;
    let super::Adopted {
        index: adopted,
        unreadable,
        ..
    } = adopt_orphan_packs(repo, catalog, &health.stored)?;
    for (pack, why) in unreadable {
        warnings.push(format!(
            "{}: no index lists it and its trailer can not be read ({why}); its blobs are not used",
            pack.key()
        ));
    }
    BlobLocation::lay_over(&mut known, &adopted, &|l| health.usable(l));
    let suspects = health.suspects(
        &catalog.pack_indexes()?,
        &synced.index_times,
        &catalog.sound_packs()?,
    );
    let mut record = DamageRecord::new("backup");
    for pack in suspects {
        let info = health.stored.get(&pack).copied();
        let read = repo.store.get_capped(
            &pack.key(),
            crate::repo::limits::pack(repo.config.pack_size),
        );
        match read {
            Ok(bytes) if blake3::hash(&bytes).as_bytes() == &pack.0 => {
                let size = info.map_or(0, |i| i.size);
                catalog.put_sound_pack(&pack, size, &stamp(info.and_then(|i| i.modified)))?;
            }
            Ok(_) => {
                let why = "it was replaced after it was indexed and no longer matches its name"
                    .to_string();
                record.packs.push(BadPack {
                    id: pack,
                    reason: why.clone(),
                    blobs: Vec::new(),
                });
                health.mark_bad(pack, why);
            }
            Err(e) => {
                // Not known bad, only unread: not used now, not recorded.
                warnings.push(format!(
                    "{}: it was replaced after it was indexed and could not be read to verify it ({e}); its blobs are stored again",
                    pack.key()
                ));
                health.mark_bad(pack, "could not be verified".into());
            }
        }
    }
    if !record.is_empty() {
        repo.write_damage(&record)?;
    }
    let lost = unusable_ids(&known, &health);
    if !lost.is_empty() {
        let packs: HashSet<PackId> = known
            .iter()
            .filter(|(id, _)| lost.contains(id))
            .map(|(_, l)| l.pack)
            .collect();
        warnings.push(format!(
            "{} blob(s) in {} pack(s) are lost or damaged in storage; what the sources still hold is stored again (`coffer check` names the snapshots that lost data)",
            lost.len(),
            packs.len()
        ));
    }
    Ok(Vouched {
        blobs: usable_blobs(known, &health),
        adopted: adopted.packs.len(),
        warnings,
        listed,
    })
}

/// Assembles sealed blobs into packs (spooled to disk, never held in
/// memory, uploaded in the background: see [`Packer`]) and writes an index
/// object after every PACKS_PER_INDEX stored packs.
/// Returns the index objects written, which list every stored pack once.
fn packer(
    repo: &Repository,
    rx: Receiver<SealedBlob>,
    read_back: ReadBack,
) -> Result<Vec<(IndexId, IndexFile)>> {
    let mut indexes = Vec::new();
    let mut flush_index = |packs: Vec<IndexedPack>| -> Result<()> {
        if packs.is_empty() {
            return Ok(());
        }
        indexes.extend(repo.write_indexes(packs)?);
        Ok(())
    };
    let mut packer = Packer::new(repo, read_back);
    for blob in rx.iter() {
        packer.add(blob)?;
        if packer.stored_count() >= PACKS_PER_INDEX {
            flush_index(packer.take_stored())?;
        }
    }
    flush_index(packer.finish()?)?;
    Ok(indexes)
}

pub fn backup(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &BackupOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<BackupReport> {
    let started = std::time::Instant::now();
    let mut sources = Vec::new();
    for s in &opts.sources {
        let abs = std::path::absolute(s).map_err(|e| Error::io(s, e))?;
        let abs: PathBuf = abs.components().collect(); // drops `.` and trailing `/`
        std::fs::symlink_metadata(&abs).map_err(|e| Error::Source {
            path: abs.clone(),
            reason: e.to_string(),
        })?;
        sources.push(abs);
    }
    if sources.is_empty() {
        return Err(Error::NoSources);
    }
    let excludes = Excludes::new(&opts.exclude, "exclude")?;
    let job = Job {
        repo,
        opts,
        sources: &sources,
        excludes: &excludes,
        progress,
        cancel,
    };
    let mut lock = WriterLock::of(repo, opts.lock_wait)?;
    let ran = run(&job, catalog, &mut lock).map(|mut r| {
        r.warnings
            .extend(super::fleet::refresh_status(repo, catalog));
        r
    });
    let mut report = lock.release_after(ran)?;
    report.summary.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Everything a backup reads and makes: the repository and catalog, what to
/// back up and how, and the lock it holds.
struct Job<'a> {
    repo: &'a Repository,
    opts: &'a BackupOptions,
    sources: &'a [PathBuf],
    excludes: &'a Excludes,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
}

/// What the pipeline made: the index objects written (every stored pack
/// once), the file and reference lists, and the driver's account.
struct Piped {
    indexes: Vec<(IndexId, IndexFile)>,
    finished: Finished,
    summary: Summary,
    seen: Seen,
    skipped: Vec<(String, String)>,
    changed: Vec<String>,
    new_cache: Vec<(Vec<u8>, CachedFile)>,
    /// File-cache rows of files gone from the sources (see [`gone_from_sources`]).
    gone: Vec<Vec<u8>>,
    /// Why the file cache was read only in part, if it was.
    cache_warning: Option<String>,
}

/// Whether `path` is `dir` or below it (relative paths as the file list
/// stores them; the empty path is `/`).
pub(super) fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

/// Of the file-cache rows this run did not look up, those it may forget:
/// below one of the run's `sources` (rows of other sources, say another
/// profile's, stay) and not below a folder it could not list (`spared`:
/// their files may be back next time, unchanged).
fn gone_from_sources(
    unseen: impl IntoIterator<Item = Vec<u8>>,
    sources: &[Vec<u8>],
    spared: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    unseen
        .into_iter()
        .filter(|p| {
            sources.iter().any(|s| is_under(p, s)) && !spared.iter().any(|s| is_under(p, s))
        })
        .collect()
}

/// The run's sources as the file list and the file cache name them.
fn source_paths(job: &Job) -> Vec<Vec<u8>> {
    job.sources.iter().map(|s| walk::rel_of(s)).collect()
}

/// [`gone_from_sources`] of the file cache's rows the run did not look
/// up, and why the cache was read only in part, if it was.
fn forgotten(
    job: &Job,
    cache: CacheCursor,
    skipped: &[(String, String)],
) -> (Vec<Vec<u8>>, Option<String>) {
    let (unseen, error) = cache.finish();
    let spared: Vec<Vec<u8>> = skipped
        .iter()
        .map(|(p, _)| walk::rel_of(Path::new(p)))
        .collect();
    let gone = gone_from_sources(unseen, &source_paths(job), &spared);
    let warning = error.map(|e| {
        format!("the file cache could not be read to its end ({e}); the files after that point were read again")
    });
    (gone, warning)
}

fn run(job: &Job, catalog: &mut Catalog, lock: &mut RepoLock) -> Result<BackupReport> {
    let (repo, progress) = (job.repo, job.progress);
    let started = jiff::Timestamp::now();
    progress.phase("index", None);
    // We hold the lock: temporary files in the repository are a killed writer's.
    repo.store.remove_stale_temp()?;
    let Vouched {
        blobs: known,
        adopted: orphans_adopted,
        mut warnings,
        listed,
    } = vouched_blobs(repo, catalog)?;
    let file_cache = CacheCursor::new(Some(catalog.file_cache_stream()?), source_paths(job));
    let dedup = Dedup {
        known,
        queued: Mutex::new(HashSet::new()),
    };
    progress.phase("backup", None);
    let piped = pipeline(job, &dedup, file_cache, lock, catalog)?;
    // Stopping stages may have dropped blobs the file list names: once
    // the flag is set, no commit (the packs stored are indexed).
    if job.cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    // What this run wrote was written after it started: locked at least
    // until then + the lock period, which the pass needs not ask storage.
    let mut listed = listed;
    for (id, index) in &piped.indexes {
        listed.insert(id.key(), started);
        listed.extend(index.packs.iter().map(|p| (p.id.key(), started)));
    }
    let mut report = commit(job, catalog, piped)?;
    // The new snapshot needs what it references for its whole window. The
    // snapshot is saved by now: a pass that fails is a warning, not a
    // failed backup, and the next backup's pass tries again.
    match super::locks::extend(repo, catalog, &listed, jiff::Timestamp::now()) {
        Ok(pass) => {
            warnings.extend(pass.failed.iter().map(|(key, why)| {
                format!("{key}: its Object Lock could not be lengthened ({why}); the next backup tries again, `coffer check` shows the gap")
            }));
            report.locks_extended = pass.extended;
        }
        Err(e) => warnings.push(format!(
            "Object Locks were not lengthened ({}); the next backup tries again, `coffer check` shows any gap",
            super::one_line(&e.to_string())
        )),
    }
    report.orphans_adopted = orphans_adopted;
    report.warnings = [warnings, std::mem::take(&mut report.warnings)].concat();
    Ok(report)
}

/// Sets the flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);
impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Starts the pre-scan: a second walk of the same sources with the same
/// excludes, stat only, whose counts (not lists: memory stays flat) give the
/// front end a total ([`walk::count`]); only if it shows one. It stops once
/// `stop` is set.
fn pre_scan<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    job: &'s Job,
    stop: &'s AtomicBool,
) -> Result<()> {
    if !job.progress.wants_total() {
        return Ok(());
    }
    let (tx, rx) = bounded::<WalkItem>(1024);
    let (sources, excludes, progress) = (job.sources, job.excludes, job.progress);
    std::thread::Builder::new()
        .name("pre-scan walker".into())
        .stack_size(64 << 20)
        .spawn_scoped(s, move || {
            walk::walk(sources, excludes, &tx);
        })
        .map_err(|e| Error::Thread("pre-scan walker", e))?;
    std::thread::Builder::new()
        .name("pre-scan".into())
        .spawn_scoped(s, move || walk::count(rx, stop, progress))
        .map_err(|e| Error::Thread("pre-scan", e))?;
    Ok(())
}

/// Walks, reads, chunks, seals and packs, each stage on its own threads
/// with bounded channels between them (memory stays flat), while the
/// driver keeps the file list in walk order.
fn pipeline(
    job: &Job,
    dedup: &Dedup,
    mut file_cache: CacheCursor,
    lock: &mut RepoLock,
    catalog: &mut Catalog,
) -> Result<Piped> {
    let (repo, cancel) = (job.repo, job.cancel);
    let seed = repo.keys.chunker_seed();
    let data_chunker = Chunker::new(repo.config.data_chunks, seed);
    let meta_chunker = Chunker::new(repo.config.meta_chunks, seed);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let read_bytes = AtomicU64::new(0);
    let (walk_tx, walk_rx) = bounded::<WalkItem>(4096);
    let (job_tx, job_rx) = unbounded::<FileJob>();
    let (done_tx, done_rx) = unbounded::<FileDone>();
    let (seal_tx, seal_rx) = bounded::<PlainBlob>(workers);
    let (pack_tx, pack_rx) = bounded::<SealedBlob>(workers);
    let scan_stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Piped> {
        let (sources, excludes) = (job.sources, job.excludes);
        std::thread::Builder::new()
            .name("walker".into())
            .stack_size(64 << 20)
            .spawn_scoped(s, move || {
                walk::walk(sources, excludes, &walk_tx);
            })
            .map_err(|e| Error::Thread("walker", e))?;
        for _ in 0..workers {
            let (job_rx, done_tx, seal_tx) = (job_rx.clone(), done_tx.clone(), seal_tx.clone());
            let (chunker, read_bytes, progress) = (&data_chunker, &read_bytes, job.progress);
            s.spawn(move || {
                for file in job_rx.iter() {
                    // Every job taken is answered, a stopped one too: the
                    // driver waits for each, and a reader that left one
                    // unanswered while another waited for work hung the
                    // backup after SIGINT.
                    let result = if cancel.load(Ordering::Relaxed) {
                        Err(ReadFailure::Stopped)
                    } else {
                        read_file(
                            &file, chunker, SMALL_FILE, dedup, &repo.keys, &seal_tx, progress,
                            read_bytes,
                        )
                    };
                    let done = FileDone {
                        seq: file.seq,
                        result,
                    };
                    if done_tx.send(done).is_err() {
                        break;
                    }
                }
            });
        }
        for _ in 0..workers {
            let (seal_rx, pack_tx) = (seal_rx.clone(), pack_tx.clone());
            let level = job.opts.compression;
            s.spawn(move || {
                for b in seal_rx.iter() {
                    if cancel.load(Ordering::Relaxed) {
                        break; // the readers' sends fail: they stop too
                    }
                    let sealed = seal_blob(&repo.keys, b.kind, b.id, &b.data, level);
                    if pack_tx.send(sealed).is_err() {
                        break;
                    }
                }
            });
        }
        drop((job_rx, done_tx, seal_rx, pack_tx));
        let read_back = ReadBack::of(lock);
        let packer_handle = s.spawn(move || packer(repo, pack_rx, read_back));

        pre_scan(s, job, &scan_stop)?;
        // Set however this closure ends: the pre-scan stops with the backup.
        let _stop_scan = SetOnDrop(&scan_stop);
        let mut d = Driver::new(repo, dedup, job.progress, seal_tx, &meta_chunker, catalog);
        let driven = d.drive(walk_rx, &job_tx, &done_rx, &mut file_cache, cancel, lock);
        drop(job_tx);
        // On failure, hang up so every stage stops, then report the first cause.
        // After a cancel, the stages that stopped are no failure of their own.
        let finished = driven.and_then(|()| d.finish(&meta_chunker)).map_err(|e| {
            if cancel.load(Ordering::Relaxed) {
                Error::Interrupted
            } else {
                e
            }
        });
        let Driver {
            seal_tx,
            summary,
            seen,
            skipped,
            changed,
            new_cache,
            ..
        } = d;
        drop(seal_tx);
        let packed = packer_handle
            .join()
            .map_err(|_| Error::Stopped("packer thread panicked"))?;
        // The packer's error first: a full spool disk stops the driver too,
        // which then only knows that the pipeline stopped.
        let indexes = packed?;
        let (gone, cache_warning) = forgotten(job, file_cache, &skipped);
        Ok(Piped {
            indexes,
            finished: finished?,
            gone,
            cache_warning,
            summary,
            seen,
            skipped,
            changed,
            new_cache,
        })
    })
}

/// Commits the backup: its index objects are written; now the snapshot,
/// last. The catalog follows the repository; failures there cost only time.
fn commit(job: &Job, catalog: &mut Catalog, piped: Piped) -> Result<BackupReport> {
    let Piped {
        indexes,
        finished,
        mut summary,
        seen,
        skipped,
        changed,
        new_cache,
        gone,
        cache_warning,
    } = piped;
    let new_packs = || indexes.iter().flat_map(|(_, i)| i.packs.iter());
    summary.stored_added = new_packs().map(|p| p.size).sum();
    summary.data_added = new_packs()
        .flat_map(|p| p.blobs.iter())
        .filter(|b| b.kind == BlobKind::Data)
        .map(|b| b.raw_length)
        .sum();
    summary.skipped = skipped.len() as u64;
    let mut snap = Snapshot {
        time: job.opts.time.unwrap_or_else(jiff::Timestamp::now),
        host: job.opts.host.clone().unwrap_or_else(hostname),
        profile: job.opts.profile.clone(),
        paths: job
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        tree: finished.tree,
        refs: finished.refs,
        tree_index: finished.tree_index,
        summary: summary.clone(),
        stored: None,
    };
    let snapshot = job.repo.write_snapshot(&snap)?;
    // Storage's record of the write judges this machine's clock, as every
    // reader will judge the snapshot: the server's time in its answer to
    // the write, else a listing of the key (one that fails costs only that).
    snap.stored = job
        .repo
        .store
        .clock()
        .or_else(|| super::snapshot_stored(job.repo, &snapshot).ok().flatten());
    let warnings = super::suspicion(&snap)
        .map(|why| {
            format!(
                "snapshot {} is suspect: {why}; this machine's clock (or --time) is more than {} ahead of storage's, so `latest` and retention pass its snapshots over: set the clock right (NTP)",
                snapshot.short(),
                super::forget::format_duration(super::CLOCK_SKEW)
            )
        })
        .into_iter()
        .chain(cache_warning)
        .collect();
    // The index objects, the snapshot, the last file-cache rows (the
    // others were saved as the run went, see CACHE_ROWS) and the rows of
    // files gone: in the catalog together or not at all.
    let tx = catalog.begin()?;
    for (id, index) in &indexes {
        tx.add_index(id, index)?;
    }
    tx.put_snapshot(&snapshot, &snap)?;
    for (id, data) in &finished.refs_plain {
        tx.put_refs_blob(id, data)?;
    }
    // Forgotten first: a file looked up out of walk order was read again
    // and is saved, though the cursor had passed its old row.
    tx.forget_files(gone.iter().map(Vec::as_slice))?;
    tx.save_files(new_cache.iter().map(|(p, f)| (p.as_slice(), f)))?;
    tx.commit()?;
    Ok(BackupReport {
        snapshot,
        summary,
        packs_added: new_packs().count() as u64,
        skipped,
        changed,
        orphans_adopted: 0,
        locks_extended: 0,
        warnings,
        seen,
    })
}

/// The driver: consumes the walk in order, keeps the file list in order while
/// files are read out of order, bundles small files, and writes the file list.
struct Driver<'a> {
    repo: &'a Repository,
    dedup: &'a Dedup,
    progress: &'a dyn Progress,
    seal_tx: Sender<PlainBlob>,
    splitter: Splitter,
    /// Where each tree blob's first entry starts (format 2 repositories).
    tree_index: Option<TreeIndexBuilder>,
    tree: Vec<BlobId>,
    refs: HashSet<BlobId>,
    pending: VecDeque<Slot>,
    /// Sequence number of pending[0].
    base: u64,
    /// Index in `pending` of the first slot not yet placed in a bundle.
    cursor: usize,
    bundle: Vec<u8>,
    bundle_no: u64,
    bundles: HashMap<u64, BlobId>,
    summary: Summary,
    seen: Seen,
    skipped: Vec<(String, String)>,
    changed: Vec<String>,
    /// File-cache rows of the files read, saved [`CACHE_ROWS`] at a time.
    new_cache: Vec<(Vec<u8>, CachedFile)>,
    catalog: &'a mut Catalog,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    line: Vec<u8>,
}

/// File-cache rows a backup holds before it saves them: a first backup of
/// a million files would otherwise hold them all (some 250 MB) to the end.
/// Saving before the snapshot is safe: a row is used only when the index
/// lists every blob it names, so the rows of a run that fails cost nothing.
const CACHE_ROWS: usize = 16 * 1024;

impl<'a> Driver<'a> {
    fn new(
        repo: &'a Repository,
        dedup: &'a Dedup,
        progress: &'a dyn Progress,
        seal_tx: Sender<PlainBlob>,
        meta_chunker: &Chunker,
        catalog: &'a mut Catalog,
    ) -> Driver<'a> {
        Driver {
            catalog,
            repo,
            dedup,
            progress,
            seal_tx,
            splitter: Splitter::new(meta_chunker.clone()),
            tree_index: (repo.config.version >= 2).then(TreeIndexBuilder::default),
            tree: Vec::new(),
            refs: HashSet::new(),
            pending: VecDeque::new(),
            base: 0,
            cursor: 0,
            bundle: Vec::new(),
            bundle_no: 0,
            bundles: HashMap::new(),
            summary: Summary::default(),
            seen: Seen::default(),
            skipped: Vec::new(),
            changed: Vec::new(),
            new_cache: Vec::new(),
            hardlinks: HashMap::new(),
            line: Vec::new(),
        }
    }

    // Long: one loop owns the window of in-flight reads and each kind's counts.
    fn drive(
        &mut self,
        walk_rx: Receiver<WalkItem>,
        job_tx: &Sender<FileJob>,
        done_rx: &Receiver<FileDone>,
        cache: &mut CacheCursor,
        cancel: &AtomicBool,
        lock: &mut RepoLock,
    ) -> Result<()> {
        let mut reading = 0usize;
        for item in walk_rx.iter() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            lock.refresh_if_due(&self.repo.store, &self.repo.keys)?;
            let node = match item {
                WalkItem::Node(n) => n,
                WalkItem::Skipped { path, error } => {
                    self.skipped.push((path, error));
                    continue;
                }
            };
            let mut entry = match entry_of(&node) {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    self.seen.sockets += 1;
                    continue;
                }
                Err(error) => {
                    self.skipped.push((node.abs.display().to_string(), error));
                    continue;
                }
            };
            let seq = self.base + self.pending.len() as u64;
            let mut state = SlotState::Ready;
            let mut cache_row = false;
            let mut counted = Counted::Not;
            match entry.kind {
                EntryKind::Dir => self.summary.dirs += 1,
                EntryKind::Symlink => self.seen.symlinks += 1,
                EntryKind::File => {
                    let m = &node.meta;
                    if m.nlink() > 1 {
                        let key = (m.dev(), m.ino());
                        if let Some(first) = self.hardlinks.get(&key) {
                            entry.kind = EntryKind::Hardlink;
                            entry.target = Some(first.clone());
                            entry.size = 0;
                            Counted::Hardlink.apply(&mut self.summary, &mut self.seen, false);
                            // Done, as far as the pre-scan's count of names goes.
                            self.progress.advance(m.len());
                            self.progress.file_done();
                            self.pending.push_back(Slot {
                                entry,
                                cache: false,
                                state,
                                counted: Counted::Hardlink,
                            });
                            self.advance()?;
                            continue;
                        }
                        self.hardlinks.insert(key, entry.path.clone());
                    }
                    self.summary.bytes += entry.size;
                    counted = self.classify(cache, &mut entry);
                    counted.apply(&mut self.summary, &mut self.seen, false);
                    if counted == Counted::Unchanged {
                        self.progress.advance(entry.size);
                        self.progress.file_done();
                    } else if entry.size == 0 {
                        // Nothing to read; cached so the next run counts it unchanged.
                        cache_row = true;
                        self.progress.file_done();
                    } else {
                        cache_row = true;
                        state = SlotState::Reading;
                        job_tx
                            .send(FileJob {
                                seq,
                                abs: node.abs,
                                meta: node.meta,
                            })
                            .map_err(|_| Error::Stopped("file readers stopped"))?;
                        reading += 1;
                    }
                }
                _ => self.seen.other += 1,
            }
            self.pending.push_back(Slot {
                entry,
                cache: cache_row,
                state,
                counted,
            });
            // Collect what is done; wait when too far ahead.
            while let Ok(done) = done_rx.try_recv() {
                reading -= 1;
                self.complete(done);
            }
            while reading >= WINDOW || self.pending.len() > 4 * WINDOW && reading > 0 {
                self.wait_one(done_rx, &mut reading)?;
            }
            self.advance()?;
        }
        while reading > 0 {
            self.wait_one(done_rx, &mut reading)?;
            self.advance()?;
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        self.close_bundle()?;
        self.advance()
    }

    /// Whether the file cache vouches for `entry` (same size, times and
    /// inode, every blob still stored: then its content is filled in), or
    /// it is new or changed. Its row leaves `cache` either way: what is
    /// left at the end are files this run did not see.
    fn classify(&mut self, cache: &mut CacheCursor, entry: &mut Entry) -> Counted {
        let Some(c) = cache.take(&entry.path) else {
            return Counted::New;
        };
        let hit = c.size == entry.size
            && c.mtime == entry.mtime
            && c.ctime == entry.ctime
            && c.ino == entry.ino
            && c.content
                .iter()
                .all(|x| self.dedup.known.contains_key(&x.blob));
        if hit {
            entry.content = c.content;
            Counted::Unchanged
        } else {
            Counted::Changed
        }
    }

    /// Takes a file that is skipped after all out of the counts.
    fn uncount(&mut self, slot: &Slot) {
        slot.counted.apply(&mut self.summary, &mut self.seen, true);
        self.summary.bytes = self.summary.bytes.saturating_sub(slot.entry.size);
    }

    /// Blocks for the next finished file.
    fn wait_one(&mut self, done_rx: &Receiver<FileDone>, reading: &mut usize) -> Result<()> {
        let done = done_rx
            .recv()
            .map_err(|_| Error::Stopped("file readers stopped"))?;
        *reading -= 1;
        self.complete(done);
        Ok(())
    }

    fn complete(&mut self, done: FileDone) {
        let Some(slot) = self.pending.get_mut((done.seq - self.base) as usize) else {
            return;
        };
        self.progress.file_done();
        match done.result {
            Ok((content, changed)) => {
                if changed {
                    self.changed.push(slot.entry.path_display());
                    slot.cache = false; // read it again next time
                }
                match content {
                    FileContent::Chunked(extents, total) => {
                        slot.entry.size = total;
                        slot.entry.content = extents;
                        slot.state = SlotState::Ready;
                    }
                    FileContent::Inline(data) => {
                        slot.entry.size = data.len() as u64;
                        slot.state = SlotState::Inline(data);
                    }
                }
            }
            Err(e) => {
                self.skipped
                    .push((format!("/{}", slot.entry.path_display()), e.to_string()));
                slot.state = SlotState::Failed;
            }
        }
    }

    /// Places inline files into bundles in walk order, then writes every
    /// finished entry at the front of the queue to the file list.
    fn advance(&mut self) -> Result<()> {
        while self.cursor < self.pending.len() {
            let slot = &mut self.pending[self.cursor];
            match std::mem::replace(&mut slot.state, SlotState::Ready) {
                SlotState::Inline(data) => {
                    slot.entry.content = vec![Extent {
                        blob: BlobId([0; 32]),
                        offset: self.bundle.len() as u64,
                        length: data.len() as u64,
                    }];
                    slot.state = SlotState::Bundled(self.bundle_no);
                    self.bundle.extend_from_slice(&data);
                    let cut_here = self.bundle.len() >= BUNDLE_MAX
                        || (self.bundle.len() >= BUNDLE_MIN
                            && self.repo.keys.blob_id(&slot.entry.path).0[0] < 32);
                    self.cursor += 1;
                    if cut_here {
                        self.close_bundle()?;
                    }
                }
                SlotState::Reading => {
                    slot.state = SlotState::Reading;
                    break;
                }
                other => {
                    slot.state = other;
                    self.cursor += 1;
                }
            }
        }
        while let Some(front) = self.pending.front() {
            match front.state {
                SlotState::Reading | SlotState::Inline(_) => break,
                SlotState::Bundled(n) if !self.bundles.contains_key(&n) => break,
                _ => {}
            }
            let Some(mut slot) = self.pending.pop_front() else {
                break;
            };
            self.base += 1;
            self.cursor -= 1;
            if let SlotState::Failed = slot.state {
                // Skipped: reported, not in the snapshot (and its counts undone).
                self.uncount(&slot);
                continue;
            }
            if let SlotState::Bundled(n) = slot.state {
                let id = self.bundles[&n];
                for x in &mut slot.entry.content {
                    x.blob = id;
                }
            }
            self.line.clear();
            slot.entry.write_line(&mut self.line);
            if self.line.len() > crate::repo::limits::MAX_ENTRY_LINE {
                // Readers refuse an entry this long (repo::limits): skipped, not written.
                let why = format!(
                    "{} pieces: too many for one file list entry (docs/FORMAT.md, \"Limits\")",
                    slot.entry.content.len()
                );
                self.skipped
                    .push((format!("/{}", slot.entry.path_display()), why));
                self.uncount(&slot);
                continue;
            }
            for x in &slot.entry.content {
                self.refs.insert(x.blob);
            }
            if slot.cache {
                self.new_cache.push((
                    slot.entry.path.clone(),
                    CachedFile {
                        size: slot.entry.size,
                        mtime: slot.entry.mtime,
                        ctime: slot.entry.ctime,
                        ino: slot.entry.ino,
                        content: slot.entry.content.clone(),
                    },
                ));
                if self.new_cache.len() >= CACHE_ROWS {
                    let rows = std::mem::take(&mut self.new_cache);
                    self.catalog
                        .save_files(rows.iter().map(|(p, f)| (p.as_slice(), f)))?;
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(ix) = &mut self.tree_index {
                ix.line(&slot.entry.path, line.len());
            }
            for chunk in self.splitter.push(&line) {
                self.store_tree_blob(chunk)?;
            }
            self.line = line;
        }
        Ok(())
    }

    fn close_bundle(&mut self) -> Result<()> {
        if self.bundle.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.bundle);
        let id = self.store_blob(BlobKind::Data, data)?;
        self.bundles.insert(self.bundle_no, id);
        self.bundle_no += 1;
        Ok(())
    }

    fn store_blob(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<BlobId> {
        let id = self.repo.keys.blob_id(&data);
        if self.dedup.claim(&id) {
            self.seal_tx
                .send(PlainBlob { id, kind, data })
                .map_err(|_| Error::Stopped("backup pipeline stopped"))?;
        }
        Ok(id)
    }

    fn store_tree_blob(&mut self, chunk: Vec<u8>) -> Result<()> {
        if let Some(ix) = &mut self.tree_index {
            ix.chunk(chunk.len());
        }
        let id = self.store_blob(BlobKind::Tree, chunk)?;
        self.tree.push(id);
        Ok(())
    }

    /// Ends the file list, writes its index and the reference list.
    fn finish(&mut self, meta_chunker: &Chunker) -> Result<Finished> {
        let splitter = std::mem::replace(&mut self.splitter, Splitter::new(meta_chunker.clone()));
        for chunk in splitter.finish() {
            self.store_tree_blob(chunk)?;
        }
        let tree_index = match self.tree_index.take().and_then(TreeIndexBuilder::finish) {
            Some(ix) => Some(self.store_blob(BlobKind::Tree, ix)?),
            None => None,
        };
        let mut refs: Vec<BlobId> = self
            .refs
            .drain()
            .chain(self.tree.iter().copied())
            .chain(tree_index)
            .collect();
        refs.sort_unstable();
        refs.dedup();
        let bytes: Vec<u8> = refs.iter().flat_map(|r| r.0).collect();
        let mut ref_splitter = Splitter::new(meta_chunker.clone());
        let mut chunks = ref_splitter.push(&bytes);
        chunks.extend(ref_splitter.finish());
        let (mut ref_ids, mut refs_plain) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let id = self.store_blob(BlobKind::Refs, chunk.clone())?;
            ref_ids.push(id);
            refs_plain.push((id, chunk));
        }
        Ok(Finished {
            tree: std::mem::take(&mut self.tree),
            refs: ref_ids,
            tree_index,
            refs_plain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_counted_then_skipped_leaves_no_trace_in_the_counts() {
        let (mut summary, mut seen) = (Summary::default(), Seen::default());
        for c in [
            Counted::New,
            Counted::Changed,
            Counted::Unchanged,
            Counted::Hardlink,
        ] {
            c.apply(&mut summary, &mut seen, false);
        }
        Counted::Not.apply(&mut summary, &mut seen, false);
        assert_eq!(summary.files, 4);
        assert_eq!(
            summary.files_new + summary.files_changed + summary.files_unchanged + seen.hardlinks,
            summary.files
        );
        Counted::New.apply(&mut summary, &mut seen, true);
        Counted::Hardlink.apply(&mut summary, &mut seen, true);
        assert_eq!(
            (summary.files, summary.files_new, seen.hardlinks),
            (2, 0, 0)
        );
        assert_eq!((summary.files_changed, summary.files_unchanged), (1, 1));
    }
    use crate::repo::chunker::ChunkerParams;
    use crate::repo::keys::{AgentKey, Keys};

    /// Reads `abs` as a reader thread does, its metadata taken first (the
    /// walk's), with `small` as the inline threshold.
    fn read(
        abs: PathBuf,
        meta: std::fs::Metadata,
        small: u64,
        seal_tx: &Sender<PlainBlob>,
    ) -> std::result::Result<(FileContent, bool), ReadFailure> {
        let id = age::x25519::Identity::generate();
        let keys = Keys::from_agent_key(&AgentKey::generate("t".into(), vec![id.to_public()]));
        let dedup = Dedup {
            known: BlobMap::default(),
            queued: Mutex::new(HashSet::new()),
        };
        let job = FileJob { seq: 0, abs, meta };
        let chunker = Chunker::new(ChunkerParams::with_avg(1024), 0);
        let read_bytes = AtomicU64::new(0);
        read_file(
            &job,
            &chunker,
            small,
            &dedup,
            &keys,
            seal_tx,
            &super::super::NoProgress,
            &read_bytes,
        )
    }

    /// Rows below a backed-up source that the run did not see are gone;
    /// rows of other sources, of look-alike names (`srv2` is not below
    /// `srv`) and below folders the run could not list are kept.
    #[test]
    fn the_file_cache_forgets_only_what_left_the_sources() {
        let rows = [
            "srv/a",
            "srv/d/b",
            "srv2/c",
            "etc/x",
            "srv",
            "srv/locked/f",
            "home/u/f",
        ]
        .map(|p| p.as_bytes().to_vec());
        let sources = [b"srv".to_vec(), b"home/u/f".to_vec()];
        let spared = [b"srv/locked".to_vec()];
        let gone = gone_from_sources(rows.clone(), &sources, &spared);
        assert_eq!(
            gone,
            ["srv/a", "srv/d/b", "srv", "home/u/f"].map(|p| p.as_bytes().to_vec())
        );
        // A backup of `/` covers every row.
        assert_eq!(
            gone_from_sources(rows.clone(), &[Vec::new()], &[]).len(),
            rows.len()
        );
        assert!(gone_from_sources(rows, &[b"var".to_vec()], &[]).is_empty());
        assert!(is_under(b"a/b", b"a") && is_under(b"a", b"a") && !is_under(b"ab", b"a"));
    }

    /// A file removed between the walk and the read is told apart from one
    /// that can not be read; sealers gone mid-file mean the backup stops.
    #[test]
    fn a_read_says_why_it_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let (seal_tx, seal_rx) = unbounded();

        let (content, changed) = read(path.clone(), meta.clone(), 1 << 20, &seal_tx).unwrap();
        assert!(!changed);
        assert!(matches!(content, FileContent::Inline(d) if d.len() == 10_000));

        drop(seal_rx);
        let e = read(path.clone(), meta.clone(), 0, &seal_tx).unwrap_err();
        assert!(matches!(e, ReadFailure::Stopping), "{e:?}");
        assert_eq!(e.to_string(), "backup is stopping");

        let e = read(dir.path().to_path_buf(), meta.clone(), 0, &seal_tx).unwrap_err();
        assert!(matches!(e, ReadFailure::Io(_)), "{e:?}");

        std::fs::remove_file(&path).unwrap();
        let e = read(path, meta, 0, &seal_tx).unwrap_err();
        assert!(
            matches!(&e, ReadFailure::Vanished(io) if io.kind() == std::io::ErrorKind::NotFound)
        );
        assert_eq!(e.to_string(), "No such file or directory (os error 2)");
    }
}
