//! The executor of a [`RestorePlan`], in phases: folders and special
//! files, file creation (on all cores), fetch and write (reads in flight in
//! the store, a rendezvous channel, parallel writers), replacements,
//! links, metadata, and verification. Each entry's state is one [`Item`];
//! a failure is recorded in one place, [`Exec::fail`].

use super::plan::{PackWork, Piece, PlannedEntry, RestorePlan};
use super::{FailKind, Failure, RestoreReport, interrupted, parent_of};
use crate::engine::{Progress, Run};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::pack::{PackEntry, open_blob};
use crate::repo::tree::{Entry, EntryKind};
use crate::{Error, Result};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// (file, offset, length, BLAKE3) of a piece written, for `verify`.
type PieceHash = (usize, u64, u64, [u8; 32]);

/// One entry as the restore goes: its plan, and what the writers did.
struct Item {
    plan: PlannedEntry,
    /// Written whole by its single piece, metadata already set.
    finished: AtomicBool,
    /// Pieces written (a stopped restore removes unfinished files).
    written: AtomicU32,
}

impl Item {
    fn entry(&self) -> &Entry {
        &self.plan.entry
    }

    /// Neither left alone nor failed.
    fn active(&self) -> bool {
        !self.plan.skipped() && !self.plan.failed
    }
}

/// Why a folder, a fifo, a device node or a link could not be made in the
/// target; its text is the failure's message.
#[derive(Debug, thiserror::Error)]
enum MakeError {
    /// Something other than a folder (a symlink planted in the target)
    /// stands where a folder is to be.
    #[error("{} exists and is not a folder; refusing to write through it", .path.display())]
    NotAFolder { path: PathBuf },
    /// A hard link's source lies beyond something that is not a folder.
    #[error(
        "link target goes through {}, which is not a folder; refusing to link through it",
        .path.display()
    )]
    LinkThrough { path: PathBuf },
    #[error("device files can only be restored as root")]
    DeviceNeedsRoot,
    /// A path with a NUL byte can not be handed to the system.
    #[error("{0}")]
    Nul(std::ffi::NulError),
    /// The system refused (mkdir, mkfifo, mknod).
    #[error("{}: {error}", .path.display())]
    Os {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Creates the folders leading to `rel` below `root`, refusing to go through
/// anything that is not a real folder (a symlink planted in the target).
/// It remembers the last folder it made sure of, whose ancestors are real
/// folders too: a list in walk order checks each folder once, in memory of
/// one path, and a path of any depth is walked in a loop, not a recursion.
struct DirMaker {
    root: PathBuf,
    /// A folder (relative to `root`) known to be real, with every folder above it.
    verified: Vec<u8>,
}

impl DirMaker {
    fn new(root: PathBuf) -> DirMaker {
        DirMaker {
            root,
            verified: Vec::new(),
        }
    }

    fn ensure(&mut self, rel_dir: &[u8]) -> std::result::Result<(), MakeError> {
        // The folders `rel_dir` shares with the verified one are real.
        let mut done = 0;
        let slash = |b: &u8| *b == b'/';
        for (a, b) in self.verified.split(slash).zip(rel_dir.split(slash)) {
            if a != b || a.is_empty() {
                break;
            }
            done += a.len() + 1;
        }
        let done = done.saturating_sub(1);
        self.verified.truncate(done);
        let mut abs = self.root.join(OsStr::from_bytes(&rel_dir[..done]));
        for c in rel_dir[done..]
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
        {
            abs.push(OsStr::from_bytes(c));
            match std::fs::symlink_metadata(&abs) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(MakeError::NotAFolder { path: abs }),
                Err(_) => std::fs::create_dir(&abs).map_err(|error| MakeError::Os {
                    path: abs.clone(),
                    error,
                })?,
            }
            if !self.verified.is_empty() {
                self.verified.push(b'/');
            }
            self.verified.extend_from_slice(c);
        }
        Ok(())
    }
}

/// Checks that no folder on the way to `rel_dir` below `root` is a symlink
/// or anything else but a folder (a missing one is left to the caller).
fn real_folders(root: &Path, rel_dir: &[u8]) -> std::result::Result<(), MakeError> {
    let mut abs = root.to_path_buf();
    for c in rel_dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        abs.push(OsStr::from_bytes(c));
        if std::fs::symlink_metadata(&abs).is_ok_and(|m| !m.is_dir()) {
            return Err(MakeError::LinkThrough { path: abs });
        }
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sets times by path without following or opening anything (`utimensat`
/// with `AT_SYMLINK_NOFOLLOW`): opening a restored fifo would block.
fn set_times(path: &Path, mtime_ns: i64) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(
        mtime_ns.div_euclid(1_000_000_000),
        mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    filetime::set_symlink_file_times(path, t, t)
}

fn apply_metadata(path: &Path, e: &Entry, root: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let symlink = e.kind == EntryKind::Symlink;
    if root {
        std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))?;
    }
    if !symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    }
    set_times(path, e.mtime)
}

/// fchown, fchmod, futimens: metadata without another path lookup.
fn set_metadata_fd(f: &std::fs::File, e: &Entry, root: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if root {
        std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.mtime.max(0) as u64);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
}

/// Makes a fifo or a device node at `abs` (replacing what is there).
fn make_node(abs: &Path, e: &Entry, root: bool) -> std::result::Result<(), MakeError> {
    let kind = match e.kind {
        EntryKind::Fifo => None,
        EntryKind::Chardev => Some(libc::S_IFCHR),
        _ => Some(libc::S_IFBLK),
    };
    if kind.is_some() && !root {
        return Err(MakeError::DeviceNeedsRoot);
    }
    let c = std::ffi::CString::new(abs.as_os_str().as_bytes()).map_err(MakeError::Nul)?;
    let _ = std::fs::remove_file(abs);
    let made = match kind {
        // SAFETY: c is a valid NUL-terminated path.
        None => unsafe { libc::mkfifo(c.as_ptr(), (e.mode & 0o777) as libc::mode_t) },
        // SAFETY: c is a valid NUL-terminated path.
        Some(kind) => unsafe {
            libc::mknod(
                c.as_ptr(),
                kind | (e.mode & 0o777) as libc::mode_t,
                e.rdev as libc::dev_t,
            )
        },
    };
    if made != 0 {
        return Err(MakeError::Os {
            path: abs.to_path_buf(),
            error: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The first "disk full" seen by any worker; once set, workers stop.
#[derive(Default)]
struct Full(std::sync::OnceLock<(PathBuf, String)>);

impl Full {
    fn note(&self, path: &Path, e: &std::io::Error) {
        if crate::error::is_full(e) {
            let _ = self.0.set((path.to_path_buf(), e.to_string()));
        }
    }
    fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
    /// A full target stops the restore with one message, not one per file.
    fn check(self) -> Result<()> {
        match self.0.into_inner() {
            Some((path, reason)) => Err(Error::TargetFull { path, reason }),
            None => Ok(()),
        }
    }
}

/// How many threads create and write files.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// A restore under way: the plan's entries with their state, the report,
/// and what every phase needs.
struct Exec<'a> {
    repo: &'a Repository,
    target: PathBuf,
    root: bool,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
    items: Vec<Item>,
    report: RestoreReport,
}

/// Carries out `plan`, its phases in order (see the module docs). `cancel`
/// stops it at a safe point with [`crate::Error::Interrupted`]: the files
/// written whole stay, files not finished are removed, and existing files
/// being replaced are left as they were.
pub fn execute(
    repo: &Repository,
    plan: RestorePlan,
    verify: bool,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreReport> {
    let RestorePlan {
        target,
        entries,
        failures,
        missing,
        packs,
        reads,
        bytes,
        skipped,
    } = plan;
    std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    let mut x = Exec {
        repo,
        target,
        root: is_root(),
        progress,
        cancel,
        items: entries
            .into_iter()
            .map(|plan| Item {
                plan,
                finished: AtomicBool::new(false),
                written: AtomicU32::new(0),
            })
            .collect(),
        report: RestoreReport {
            failures,
            skipped,
            ..RestoreReport::default()
        },
    };
    x.make_folders_and_nodes()?;
    x.create_files()?;
    for (blob, files) in missing {
        x.report.bad_blobs.insert(blob);
        for i in files {
            let why = format!("blob {} is missing from the repository", blob.short());
            x.fail(i, FailKind::MissingBlob, why);
        }
    }
    progress.phase("restore", Some(bytes));
    let hashes = x.fetch_and_write(&packs, &reads, verify)?;
    x.put_replacements_in_place();
    x.make_links();
    x.set_metadata();
    if let Some(hashes) = hashes {
        x.verify(hashes);
    }
    Ok(x.report)
}

impl Exec<'_> {
    /// Records that entry `i` was not restored, once: the one place a
    /// failure is recorded.
    fn fail(&mut self, i: usize, kind: FailKind, message: String) {
        let Some(item) = self.items.get_mut(i) else {
            return;
        };
        if item.plan.failed {
            return;
        }
        item.plan.failed = true;
        self.report
            .failures
            .push(Failure::new(&item.plan.entry.path, kind, message));
    }

    fn abs(&self, e: &Entry) -> PathBuf {
        self.target.join(e.path_os())
    }

    /// Where item `i` is written: its place, or a temporary name beside it.
    fn write_path(&self, i: usize) -> PathBuf {
        let item = &self.items[i];
        item.plan
            .temp
            .clone()
            .unwrap_or_else(|| self.abs(item.entry()))
    }

    /// Phase 1: folders, fifos and devices; files and links come later. No
    /// file is written yet, so stopping here leaves only whole things.
    fn make_folders_and_nodes(&mut self) -> Result<()> {
        let mut dirs = DirMaker::new(self.target.clone());
        for i in 0..self.items.len() {
            interrupted(self.cancel)?;
            if !self.items[i].active() {
                continue;
            }
            let e = self.items[i].entry();
            let made = dirs.ensure(parent_of(&e.path)).and_then(|()| match e.kind {
                EntryKind::Dir => dirs.ensure(&e.path),
                EntryKind::Fifo | EntryKind::Chardev | EntryKind::Blockdev => {
                    make_node(&self.abs(e), e, self.root)
                }
                // Files are created below, in parallel (file creation is
                // most of a restore's system time); links come after the
                // files they point to.
                EntryKind::File | EntryKind::Symlink | EntryKind::Hardlink => Ok(()),
            });
            if let Err(why) = made {
                self.fail(i, FailKind::Create, why.to_string());
            }
        }
        Ok(())
    }

    /// Phase 2: create, on all cores, the files that are not written whole
    /// by one piece (those are created by their write, which saves a pass
    /// over tens of thousands of small files).
    fn create_files(&mut self) -> Result<()> {
        let files: Vec<usize> = (0..self.items.len())
            .filter(|&i| {
                let it = &self.items[i];
                it.entry().kind == EntryKind::File && it.plan.pieces != 1 && it.active()
            })
            .collect();
        let errors: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        let full = Full::default();
        let workers = workers();
        std::thread::scope(|s| {
            for part in files.chunks(files.len().div_ceil(workers).max(1)) {
                let (errors, full, this) = (&errors, &full, &*self);
                s.spawn(move || {
                    for &i in part {
                        if full.is_set() || this.cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let abs = this.write_path(i);
                        // The pieces cover the whole file, so writing them sets its size.
                        let made = std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .open(&abs);
                        if let (Err(err), Ok(mut errs)) = (made, errors.lock()) {
                            full.note(&abs, &err);
                            errs.push((i, format!("{}: {err}", abs.display())));
                        }
                    }
                });
            }
        });
        full.check()?;
        for (i, why) in errors.into_inner().unwrap_or_default() {
            self.fail(i, FailKind::Create, why);
        }
        Ok(())
    }

    /// Phase 3: fetch and write, packs in parallel. Returns the hashes of
    /// the pieces written, when verifying.
    fn fetch_and_write(
        &mut self,
        packs: &[PackWork],
        reads: &[(usize, Run)],
        verify: bool,
    ) -> Result<Option<Vec<PieceHash>>> {
        let writer = Writer {
            exec: self,
            errors: Mutex::new(Vec::new()),
            full: Full::default(),
            bad_blobs: Mutex::new(HashSet::new()),
            damaged: Mutex::new(Vec::new()),
            hashes: verify.then(|| Mutex::new(Vec::new())),
        };
        let (repo, cancel) = (self.repo, self.cancel);
        // The store keeps reads in flight (many on S3, where each waits a round
        // trip; bounded in bytes) while the workers decrypt and write. The
        // channel is a rendezvous: finished reads wait in the store's pipeline,
        // not in a queue of their own, so memory is the reads in flight plus one
        // run per worker.
        let (tx, rx) = crossbeam_channel::bounded(0);
        std::thread::scope(|s| {
            for _ in 0..workers() {
                let (rx, writer) = (rx.clone(), &writer);
                s.spawn(move || {
                    for (pack, items, fetched) in rx {
                        write_blobs(writer, pack, items, fetched);
                    }
                });
            }
            let ranges = reads
                .iter()
                .map(|(n, run)| run.read(packs[*n].0.key()))
                .collect();
            let fetched = repo.store.read_ahead(ranges, repo.store.read_concurrency());
            for ((n, run), f) in reads.iter().zip(fetched) {
                let w = &packs[*n];
                if writer.full.is_set()
                    || cancel.load(Ordering::Relaxed)
                    || tx.send((&w.0, &w.1[run.items.clone()], f)).is_err()
                {
                    break;
                }
            }
            drop(tx);
        });
        let Writer {
            errors,
            full,
            bad_blobs,
            damaged,
            hashes,
            ..
        } = writer;
        if cancel.load(Ordering::Relaxed) {
            self.remove_unfinished();
            return Err(Error::Interrupted);
        }
        let report = &mut self.report;
        report
            .bad_blobs
            .extend(bad_blobs.into_inner().unwrap_or_default());
        report.damaged = damaged.into_inner().unwrap_or_default();
        if let Some(w) = crate::engine::record_damage(repo, "restore", &report.damaged) {
            report.warnings.push(w);
        }
        full.check()?;
        for (i, kind, why) in errors.into_inner().unwrap_or_default() {
            self.fail(i, kind, why);
        }
        Ok(hashes.map(|h| h.into_inner().unwrap_or_default()))
    }

    /// Stopped: no file is left half written. A replacement is removed
    /// (the existing file stays as it was), and so is a file written in
    /// place that did not get all its pieces.
    fn remove_unfinished(&self) {
        for it in &self.items {
            if it.entry().kind != EntryKind::File || it.plan.skipped() {
                continue;
            }
            match &it.plan.temp {
                Some(t) => {
                    let _ = std::fs::remove_file(t);
                }
                None if it.written.load(Ordering::Relaxed) < it.plan.pieces => {
                    let _ = std::fs::remove_file(self.abs(it.entry()));
                }
                None => {}
            }
        }
    }

    /// Phase 4: replaced files take their place in one rename each; a failed
    /// one leaves the old file as it was (and never a file with holes).
    fn put_replacements_in_place(&mut self) {
        for i in 0..self.items.len() {
            let it = &self.items[i];
            let Some(t) = &it.plan.temp else { continue };
            if it.entry().kind != EntryKind::File {
                continue;
            }
            if it.plan.failed {
                let _ = std::fs::remove_file(t);
            } else if let Err(err) = std::fs::rename(t, self.abs(it.entry())) {
                let _ = std::fs::remove_file(t);
                self.fail(i, FailKind::Replace, format!("replacing it: {err}"));
            }
        }
    }

    /// Phase 5: symlinks and hard links (a replaced one is made beside its
    /// place and renamed over it).
    fn make_links(&mut self) {
        for i in 0..self.items.len() {
            let it = &self.items[i];
            let e = it.entry();
            if !it.active() || !matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) {
                continue;
            }
            let abs = self.abs(e);
            let at = self.write_path(i);
            let made = if e.kind == EntryKind::Symlink {
                let _ = std::fs::remove_file(&at);
                std::os::unix::fs::symlink(
                    OsStr::from_bytes(e.target.as_deref().unwrap_or_default()),
                    &at,
                )
                .map_err(|err| format!("{}: {err}", abs.display()))
            } else {
                let t = e.target.as_deref().unwrap_or_default();
                let src = self.target.join(OsStr::from_bytes(t));
                // link(2) follows symlinks on the way to its source: a
                // symlink of the snapshot must not lead a link out of the target.
                real_folders(&self.target, parent_of(t))
                    .map_err(|m| format!("link to {}: {m}", src.display()))
                    .and_then(|()| {
                        let _ = std::fs::remove_file(&at);
                        std::fs::hard_link(&src, &at).map_err(|err| {
                            format!("{}: link to {}: {err}", abs.display(), src.display())
                        })
                    })
            };
            let made = made.and_then(|()| match &it.plan.temp {
                Some(t) => {
                    std::fs::rename(t, &abs).map_err(|err| format!("{}: {err}", abs.display()))
                }
                None => Ok(()),
            });
            if let Err(why) = made {
                self.fail(i, FailKind::Link, why);
            }
        }
    }

    /// Phase 6: counts, and metadata: files and links in order, folders
    /// last, deepest first. A failed file written in place is removed:
    /// never a file with holes where damaged data was.
    fn set_metadata(&mut self) {
        let (root, report) = (self.root, &mut self.report);
        let warn = |report: &mut RestoreReport, e: &Entry, err: std::io::Error| {
            let w = format!("{}: metadata not restored: {err}", e.path_display());
            report.warnings.push(w);
        };
        for it in &self.items {
            let e = it.entry();
            if it.plan.skipped() {
                continue;
            }
            let abs = self.target.join(e.path_os());
            if it.plan.failed {
                if e.kind == EntryKind::File && it.plan.temp.is_none() {
                    let _ = std::fs::remove_file(&abs);
                }
                continue;
            }
            match e.kind {
                EntryKind::Dir => {
                    report.dirs += 1;
                    continue;
                }
                EntryKind::File => {
                    report.files += 1;
                    report.bytes += e.size;
                    if it.finished.load(Ordering::Relaxed) {
                        continue;
                    }
                }
                EntryKind::Hardlink => {
                    report.links += 1;
                    continue; // shares the metadata of its first name
                }
                _ => report.links += u64::from(e.kind == EntryKind::Symlink),
            }
            if let Err(err) = apply_metadata(&abs, e, root) {
                warn(report, e, err);
            }
        }
        for it in self.items.iter().rev() {
            let e = it.entry();
            if e.kind == EntryKind::Dir
                && !it.plan.failed
                && let Err(err) = apply_metadata(&self.target.join(e.path_os()), e, root)
            {
                warn(report, e, err);
            }
        }
    }

    /// Phase 7: reads every piece written back from disk and compares its
    /// hash; a file whose size or content differs from the snapshot fails.
    fn verify(&mut self, mut hashes: Vec<PieceHash>) {
        hashes.sort_unstable_by_key(|h| (h.0, h.1));
        let mut checked: HashSet<usize> = HashSet::new();
        let mut buf = Vec::new();
        for (file, off, len, want) in hashes {
            let Some(it) = self.items.get(file).filter(|it| !it.plan.failed) else {
                continue;
            };
            let e = it.entry();
            let abs = self.abs(e);
            let ok = std::fs::File::open(&abs).and_then(|f| {
                if f.metadata()?.len() != e.size {
                    return Ok(false);
                }
                buf.resize(len as usize, 0);
                f.read_exact_at(&mut buf, off)?;
                Ok(*blake3::hash(&buf).as_bytes() == want)
            });
            if matches!(ok, Ok(true)) {
                checked.insert(file);
                continue;
            }
            let size = e.size;
            let why = match ok {
                Err(err) => format!("verify: {}: {err}", abs.display()),
                _ => "verify: what was written differs from the snapshot".into(),
            };
            self.report.files = self.report.files.saturating_sub(1);
            self.report.bytes = self.report.bytes.saturating_sub(size);
            self.fail(file, FailKind::Verify, why);
        }
        let empty_files = self
            .items
            .iter()
            .filter(|it| it.entry().kind == EntryKind::File && it.entry().size == 0)
            .filter(|it| !it.plan.failed)
            .count();
        let whole = checked.iter().filter(|&&f| !self.items[f].plan.failed);
        self.report.verified = (whole.count() + empty_files) as u64;
    }
}

/// What the fetch workers share: the restore (read only while they run),
/// and what went wrong.
struct Writer<'a> {
    exec: &'a Exec<'a>,
    errors: Mutex<Vec<(usize, FailKind, String)>>,
    full: Full,
    bad_blobs: Mutex<HashSet<BlobId>>,
    damaged: Mutex<Vec<(PackId, BlobId, String)>>,
    /// (file, offset, length, BLAKE3) of every piece written, when verifying.
    hashes: Option<Mutex<Vec<PieceHash>>>,
}

impl Writer<'_> {
    /// This blob could not be read or opened; `damaged`: its bytes were
    /// read and are bad (not merely unreachable).
    fn bad(&self, pack: &PackId, entry: &PackEntry, damaged: Option<&str>) {
        if let Ok(mut b) = self.bad_blobs.lock() {
            b.insert(entry.id);
        }
        if let Some(why) = damaged
            && let Ok(mut d) = self.damaged.lock()
        {
            d.push((*pack, entry.id, why.to_string()));
        }
    }

    fn fail(&self, pieces: &[Piece], kind: FailKind, reason: &str) {
        if let Ok(mut errs) = self.errors.lock() {
            errs.extend(pieces.iter().map(|p| (p.file, kind, reason.to_string())));
        }
    }

    /// Writes one piece. A file made of a single piece is created, written
    /// and given its metadata through one open descriptor.
    fn write(&self, plain: &[u8], p: &Piece) -> std::result::Result<(), (FailKind, String)> {
        let end = p
            .blob_off
            .checked_add(p.len)
            .filter(|&x| x <= plain.len() as u64)
            .ok_or_else(|| {
                let why = format!(
                    "file list points outside blob ({} + {} > {})",
                    p.blob_off,
                    p.len,
                    plain.len()
                );
                (FailKind::BadList, why)
            })?;
        let it = &self.exec.items[p.file];
        let e = it.entry();
        let abs = self.exec.write_path(p.file);
        let single = it.plan.pieces == 1;
        let data = &plain[p.blob_off as usize..end as usize];
        if let Some(h) = &self.hashes
            && let Ok(mut h) = h.lock()
        {
            h.push((p.file, p.file_off, p.len, *blake3::hash(data).as_bytes()));
        }
        let res = std::fs::OpenOptions::new()
            .write(true)
            .create(single)
            .truncate(single)
            .open(&abs)
            .and_then(|f| {
                f.write_all_at(data, p.file_off)?;
                // Times before 1970 need the path call in the metadata pass.
                if single && e.mtime >= 0 {
                    set_metadata_fd(&f, e, self.exec.root)?;
                    it.finished.store(true, Ordering::Relaxed);
                }
                Ok(())
            });
        res.map_err(|err| {
            self.full.note(&abs, &err);
            (FailKind::Write, format!("{}: {err}", abs.display()))
        })
    }
}

/// Opens the blobs of one read and writes their pieces (pieces of files
/// already failed are passed over: nothing is written through a folder
/// that could not be made).
fn write_blobs(
    w: &Writer,
    pack: &PackId,
    items: &[(PackEntry, Vec<Piece>)],
    fetched: std::result::Result<bytes::Bytes, crate::storage::StorageError>,
) {
    if w.full.is_set() {
        return;
    }
    let start = items.first().map_or(0, |i| i.0.offset);
    match fetched {
        // A read of several blobs failed (a truncated pack, say): read them
        // one by one, so every blob that is intact still restores.
        Err(_) if items.len() > 1 => {
            for one in items.chunks(1) {
                let e = &one[0].0;
                let fetched = w.exec.repo.store.get_range(&pack.key(), e.offset, e.length);
                write_blobs(w, pack, one, fetched);
            }
        }
        Err(e) => {
            let why = e.to_string();
            let (kind, damaged) = if e.is_not_found() {
                (FailKind::MissingBlob, None)
            } else if e.is_object_fault() {
                (FailKind::DamagedBlob, Some(why.as_str()))
            } else {
                (FailKind::Unreadable, None)
            };
            for (entry, pieces) in items {
                w.bad(pack, entry, damaged);
                w.fail(pieces, kind, &why);
            }
        }
        Ok(bytes) => {
            for (entry, pieces) in items {
                let lo = (entry.offset - start) as usize;
                let Some(sealed) = bytes.get(lo..lo + entry.length as usize) else {
                    let why = format!("{} is shorter than its index says", pack.key());
                    w.bad(pack, entry, Some(&why));
                    w.fail(pieces, FailKind::DamagedBlob, &why);
                    continue;
                };
                match open_blob(&w.exec.repo.keys, entry, pack, sealed) {
                    Err(e) => {
                        let why = e.to_string();
                        w.bad(pack, entry, Some(&why));
                        w.fail(pieces, FailKind::DamagedBlob, &why)
                    }
                    Ok(plain) => {
                        for p in pieces {
                            if w.exec.items[p.file].plan.failed {
                                w.exec.progress.advance(p.len);
                                continue;
                            }
                            match w.write(&plain, p) {
                                Err((kind, why)) => w.fail(std::slice::from_ref(p), kind, &why),
                                Ok(()) => {
                                    w.exec.items[p.file].written.fetch_add(1, Ordering::Relaxed);
                                    w.exec.progress.advance(p.len)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DirMaker, MakeError};

    /// A path of 50,000 components is walked in a loop: the folders are made
    /// until the system refuses the length (PATH_MAX), then a clean error.
    /// (Folder creation used to recurse once per component and overflowed
    /// the stack of a test thread, 2 MiB, long before.)
    #[test]
    fn deep_paths_do_not_recurse() {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = DirMaker::new(dir.path().to_path_buf());
        let deep = vec!["a"; 50_000].join("/");
        let err = dirs.ensure(deep.as_bytes()).unwrap_err();
        assert!(matches!(err, MakeError::Os { .. }), "{err:?}");
        assert!(err.to_string().contains("too long"), "{err}");
        assert!(dir.path().join("a/a/a").is_dir());
    }

    /// Folders made or checked once are not looked at again for their
    /// neighbours, and a symlink in the way is refused wherever it is.
    #[test]
    fn folders_are_made_once_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut dirs = DirMaker::new(root.to_path_buf());
        dirs.ensure(b"x/y/z").unwrap();
        assert_eq!(dirs.verified, b"x/y/z");
        dirs.ensure(b"x/y").unwrap();
        dirs.ensure(b"x/yy/z").unwrap();
        assert_eq!(dirs.verified, b"x/yy/z");
        assert!(root.join("x/yy/z").is_dir() && root.join("x/y/z").is_dir());
        dirs.ensure(b"").unwrap();
        std::os::unix::fs::symlink(root.join("x/y"), root.join("x/link")).unwrap();
        let err = dirs.ensure(b"x/link/sub").unwrap_err();
        assert!(
            matches!(&err, MakeError::NotAFolder { path } if *path == root.join("x/link")),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a folder"), "{err}");
        assert!(root.join("x/link").is_symlink());
        // Verified folders survive a refusal below them.
        dirs.ensure(b"x/y/z/w").unwrap();
        assert!(root.join("x/y/z/w").is_dir());
    }
}
