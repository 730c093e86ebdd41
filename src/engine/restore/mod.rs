//! Restore: plan every file's pieces, fetch each needed blob once (grouped by
//! pack, adjacent blobs in one ranged read, packs in parallel), write pieces
//! in place, then set metadata (folders last, deepest first).

use super::{Progress, Run, coalesce, for_each_entry};
use crate::catalog::BlobLocation;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::pack::{PackEntry, open_blob};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, EntryKind, ListCheck, Refusal};
use crate::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Globs over snapshot paths (no leading `/`); empty means everything.
    pub include: Vec<String>,
    /// Globs of entries (and what is below them) to leave out.
    pub exclude: Vec<String>,
    /// Exactly these paths, if set (the fallback restores single files).
    pub only: Option<HashSet<Vec<u8>>>,
    /// What to do with a file that already exists in the target.
    pub overwrite: Overwrite,
    /// Plan only: report what would be written, touch nothing.
    pub dry_run: bool,
    /// Read every written file back and compare it with the snapshot.
    pub verify: bool,
}

/// The overwrite policy for files that exist in the target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Leave existing files alone.
    Never,
    /// Replace a file whose size or modification time differs (the default).
    #[default]
    IfChanged,
    /// Replace every existing file.
    Always,
}

/// What a restore does (or, in a dry run, would do) with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Replace,
    /// Exists with the same size and time (`if-changed`).
    SkipUnchanged,
    /// Exists (`never`).
    SkipExisting,
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    /// Entries restored without some metadata (e.g. devices when not root).
    pub warnings: Vec<String>,
    /// The raw paths of `failed` entries (names need not be UTF-8).
    pub failed_paths: Vec<Vec<u8>>,
    /// Blobs that could not be read or opened (damaged or missing).
    pub bad_blobs: HashSet<BlobId>,
    /// Blobs whose bytes were read and failed verification (pack, blob,
    /// why): recorded in the repository as damage.
    pub damaged: Vec<(PackId, BlobId, String)>,
    /// Existing files left alone by the overwrite policy.
    pub skipped: u64,
    /// In a dry run, every selected entry and what would happen to it.
    pub plan: Vec<(String, &'static str, Action)>,
    /// Files read back and found equal to the snapshot (`verify`).
    pub verified: u64,
}

/// (file, offset, length, BLAKE3) of a piece written, for `verify`.
type PieceHash = (usize, u64, u64, [u8; 32]);

/// The blobs needed from one pack, each with the pieces it feeds.
type PackWork = (PackId, Vec<(PackEntry, Vec<Piece>)>);

/// One piece of a file: `len` bytes at `blob_off` in a blob go to `file_off`.
#[derive(Clone, Copy)]
struct Piece {
    file: usize,
    file_off: u64,
    blob_off: u64,
    len: u64,
}

fn build_includes(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches('/');
        let g = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Invalid(format!("include {p:?}: {e}")))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Whether the path or one of its parents matches.
fn matches_here_or_above(set: &GlobSet, path: &[u8]) -> bool {
    let mut p: &[u8] = path;
    loop {
        if set.is_match(Path::new(OsStr::from_bytes(p))) {
            return true;
        }
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p = &p[..i],
            None => return false,
        }
    }
}

/// What a restore selects: includes (or everything), minus excludes, or an exact set.
pub struct Selection {
    includes: Option<GlobSet>,
    excludes: Option<GlobSet>,
    only: Option<HashSet<Vec<u8>>>,
}

impl Selection {
    pub fn new(opts: &RestoreOptions) -> Result<Selection> {
        Ok(Selection {
            includes: build_includes(&opts.include)?,
            // Like backup excludes: without a '/', a pattern names files anywhere.
            excludes: build_includes(
                &opts
                    .exclude
                    .iter()
                    .map(|p| {
                        if p.contains('/') {
                            p.clone()
                        } else {
                            format!("**/{p}")
                        }
                    })
                    .collect::<Vec<_>>(),
            )?,
            only: opts.only.clone(),
        })
    }

    pub fn selects(&self, path: &[u8]) -> bool {
        if let Some(only) = &self.only {
            return only.contains(path);
        }
        self.includes
            .as_ref()
            .is_none_or(|s| matches_here_or_above(s, path))
            && !self
                .excludes
                .as_ref()
                .is_some_and(|s| matches_here_or_above(s, path))
    }
}

/// A temporary name beside `abs`, for an atomic replace by rename.
fn temp_beside(abs: &Path, n: usize) -> PathBuf {
    let mut name = std::ffi::OsString::from(format!(".coffer-restore-{}-{n}-", std::process::id()));
    name.push(abs.file_name().unwrap_or_default());
    abs.with_file_name(name)
}

/// Decides an existing target's fate; None if nothing is there.
fn existing_action(abs: &Path, e: &Entry, policy: Overwrite) -> Option<Action> {
    let m = std::fs::symlink_metadata(abs).ok()?;
    Some(match policy {
        Overwrite::Always => Action::Replace,
        Overwrite::Never => Action::SkipExisting,
        Overwrite::IfChanged => {
            use std::os::unix::fs::MetadataExt;
            let same_time =
                m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128 == e.mtime as i128;
            let same = match e.kind {
                EntryKind::File => m.is_file() && m.len() == e.size && same_time,
                EntryKind::Symlink => {
                    m.file_type().is_symlink()
                        && std::fs::read_link(abs).is_ok_and(|t| {
                            t.as_os_str().as_bytes() == e.target.as_deref().unwrap_or_default()
                        })
                }
                _ => false,
            };
            if same {
                Action::SkipUnchanged
            } else {
                Action::Replace
            }
        }
    })
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

    fn ensure(&mut self, rel_dir: &[u8]) -> std::result::Result<(), String> {
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
                Ok(_) => {
                    return Err(format!(
                        "{} exists and is not a folder; refusing to write through it",
                        abs.display()
                    ));
                }
                Err(_) => {
                    std::fs::create_dir(&abs).map_err(|e| format!("{}: {e}", abs.display()))?
                }
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
fn real_folders(root: &Path, rel_dir: &[u8]) -> std::result::Result<(), String> {
    let mut abs = root.to_path_buf();
    for c in rel_dir.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        abs.push(OsStr::from_bytes(c));
        if std::fs::symlink_metadata(&abs).is_ok_and(|m| !m.is_dir()) {
            return Err(format!(
                "link target goes through {}, which is not a folder; refusing to link through it",
                abs.display()
            ));
        }
    }
    Ok(())
}

fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &[],
    }
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

/// Restores `snap` as `opts` says. `cancel` stops it at a safe point with
/// [`Error::Interrupted`]: the files written whole stay, files not finished
/// are removed, and existing files being replaced are left as they were.
pub fn restore(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreReport> {
    let stop = || -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        Ok(())
    };
    let selection = Selection::new(opts)?;
    // A new or empty target needs no look at what is there, file by file.
    let fresh = std::fs::read_dir(&opts.target).map_or(true, |mut d| d.next().is_none());
    if !opts.dry_run {
        std::fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    }
    let root = is_root();
    let mut report = RestoreReport::default();

    // Pass 1: the file list (selected entries only), in walk order. Plain
    // paths (no glob characters) are looked up through the tree index.
    let mut entries: Vec<Entry> = Vec::new();
    let plain = |p: &String| !p.contains(['*', '?', '[', ']', '{', '}', '\\']);
    if !opts.include.is_empty() && opts.include.iter().all(plain) && opts.only.is_none() {
        let mut prefixes: Vec<Vec<u8>> = opts
            .include
            .iter()
            .map(|p| p.trim_matches('/').as_bytes().to_vec())
            .collect();
        prefixes.sort_by(|a, b| crate::repo::tree::walk_order(a, b));
        prefixes.dedup();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for prefix in &prefixes {
            super::for_each_entry_under(repo, blobs, snap, prefix, |e| {
                stop()?;
                if selection.selects(&e.path) && seen.insert(e.path.clone()) {
                    entries.push(e);
                }
                Ok(())
            })?;
        }
    } else {
        for_each_entry(repo, blobs, snap, |e| {
            stop()?;
            if selection.selects(&e.path) {
                entries.push(e);
            }
            Ok(())
        })?;
    }

    // A file list names each path once, parents before children. A hostile
    // one may not: a second entry for a path would race the first, or put
    // its metadata through a symlink of that name; a folder after what is
    // below it is out of place. Only the first of a path is restored. (An
    // entry below a symlink or file is left to pass 2, which never writes
    // through one; `check --read-data` reports it from the same rules.)
    let refused: Vec<(usize, Refusal)> = ListCheck::refusals(&entries)
        .into_iter()
        .filter(|(_, r)| !matches!(r, Refusal::BelowNonFolder { .. }))
        .collect();
    if !refused.is_empty() {
        for (i, reason) in &refused {
            report
                .failed
                .push((entries[*i].path_display(), reason.reason()));
            report.failed_paths.push(entries[*i].path.clone());
        }
        let drop: HashSet<usize> = refused.iter().map(|r| r.0).collect();
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            !drop.contains(&(i - 1))
        });
    }

    // What exists already: skip it, or write beside it and rename over it.
    let mut temp: Vec<Option<PathBuf>> = vec![None; entries.len()];
    let mut skip: Vec<bool> = vec![false; entries.len()];
    let mut failed: HashSet<usize> = HashSet::new();
    if !fresh || opts.dry_run {
        for (i, e) in entries.iter().enumerate() {
            let abs = opts.target.join(e.path_os());
            let action = if fresh || e.kind == EntryKind::Dir {
                Action::Create
            } else {
                existing_action(&abs, e, opts.overwrite).unwrap_or(Action::Create)
            };
            match action {
                Action::SkipExisting | Action::SkipUnchanged => skip[i] = true,
                Action::Replace if std::fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) => {
                    failed.insert(i);
                    report.failed.push((
                        e.path_display(),
                        format!(
                            "{} is a folder; move it away to restore this {}",
                            abs.display(),
                            e.kind.name()
                        ),
                    ));
                    report.failed_paths.push(e.path.clone());
                }
                Action::Replace => temp[i] = Some(temp_beside(&abs, i)),
                Action::Create => {}
            }
            if opts.dry_run {
                report.plan.push((e.path_display(), e.kind.name(), action));
            }
        }
        report.skipped = skip.iter().filter(|s| **s).count() as u64;
        if opts.dry_run {
            return Ok(report);
        }
    }

    // Pass 2: folders, empty files, special files; plan the pieces per blob.
    let mut dirs = DirMaker::new(opts.target.clone());
    let mut plan: HashMap<BlobId, Vec<Piece>> = HashMap::new();
    let mut total_bytes = 0u64;
    for (i, e) in entries.iter().enumerate() {
        stop()?; // no file is written yet: folders, fifos and devices are whole
        if skip[i] || failed.contains(&i) {
            continue;
        }
        let abs = opts.target.join(e.path_os());
        let made = dirs.ensure(parent_of(&e.path)).and_then(|()| match e.kind {
            EntryKind::Dir => dirs.ensure(&e.path),
            EntryKind::File => {
                // Every piece must lie inside its blob (as indexed) before
                // anything is created: a hostile list could otherwise make a
                // file of any declared size.
                if let Some(outside) = e.piece_outside(|b| blobs.get(b).map(|l| l.entry.raw_length))
                {
                    return Err(outside);
                }
                // Created below, in parallel: file creation is most of a
                // restore's system time.
                let mut off = 0;
                for x in &e.content {
                    plan.entry(x.blob).or_default().push(Piece {
                        file: i,
                        file_off: off,
                        blob_off: x.offset,
                        len: x.length,
                    });
                    off += x.length;
                }
                total_bytes += e.size;
                Ok(())
            }
            EntryKind::Fifo => {
                let c = std::ffi::CString::new(abs.as_os_str().as_bytes())
                    .map_err(|err| err.to_string())?;
                let _ = std::fs::remove_file(&abs);
                // SAFETY: c is a valid NUL-terminated path.
                if unsafe { libc::mkfifo(c.as_ptr(), (e.mode & 0o777) as libc::mode_t) } != 0 {
                    return Err(format!(
                        "{}: {}",
                        abs.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(())
            }
            EntryKind::Chardev | EntryKind::Blockdev => {
                if !root {
                    return Err("device files can only be restored as root".into());
                }
                let c = std::ffi::CString::new(abs.as_os_str().as_bytes())
                    .map_err(|err| err.to_string())?;
                let kind = if e.kind == EntryKind::Chardev {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let _ = std::fs::remove_file(&abs);
                // SAFETY: c is a valid NUL-terminated path.
                if unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        kind | (e.mode & 0o777) as libc::mode_t,
                        e.rdev as libc::dev_t,
                    )
                } != 0
                {
                    return Err(format!(
                        "{}: {}",
                        abs.display(),
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(())
            }
            // Links come after the files they point to.
            EntryKind::Symlink | EntryKind::Hardlink => Ok(()),
        });
        if let Err(reason) = made {
            failed.insert(i);
            report.failed.push((e.path_display(), reason));
            report.failed_paths.push(e.path.clone());
        }
    }

    // The plan now holds the pieces; free the lists before fetching.
    for e in &mut entries {
        e.content = Vec::new();
    }
    let write_path = |i: usize| -> PathBuf {
        temp[i]
            .clone()
            .unwrap_or_else(|| opts.target.join(entries[i].path_os()))
    };

    // Pass 2b: create, on all cores, the files that are not written whole by
    // one piece (those are created by their write, which saves a pass over
    // tens of thousands of small files).
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let mut piece_count = vec![0u32; entries.len()];
    for p in plan.values().flatten() {
        piece_count[p.file] += 1;
    }
    let files: Vec<usize> = (0..entries.len())
        .filter(|i| {
            entries[*i].kind == EntryKind::File
                && piece_count[*i] != 1
                && !failed.contains(i)
                && !skip[*i]
        })
        .collect();
    let create_errors: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let full = Full::default();
    std::thread::scope(|s| {
        for part in files.chunks(files.len().div_ceil(workers).max(1)) {
            let (create_errors, full, write_path) = (&create_errors, &full, &write_path);
            s.spawn(move || {
                for &i in part {
                    if full.is_set() || cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let abs = write_path(i);
                    // The pieces cover the whole file, so writing them sets its size.
                    let made = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(&abs);
                    if let (Err(err), Ok(mut errs)) = (made, create_errors.lock()) {
                        full.note(&abs, &err);
                        errs.push((i, format!("{}: {err}", abs.display())));
                    }
                }
            });
        }
    });
    if let Some((path, reason)) = full.0.get().cloned() {
        return Err(Error::TargetFull { path, reason });
    }
    for (i, reason) in create_errors.into_inner().unwrap_or_default() {
        failed.insert(i);
        report.failed.push((entries[i].path_display(), reason));
        report.failed_paths.push(entries[i].path.clone());
    }

    // Pass 3: fetch and write, packs in parallel.
    progress.phase("restore", Some(total_bytes));
    let mut by_pack: HashMap<PackId, Vec<(PackEntry, Vec<Piece>)>> = HashMap::new();
    for (blob, pieces) in plan {
        match blobs.get(&blob) {
            Some(loc) => by_pack
                .entry(loc.pack)
                .or_default()
                .push((loc.entry, pieces)),
            None => {
                report.bad_blobs.insert(blob);
                for p in pieces {
                    if failed.insert(p.file) {
                        report.failed.push((
                            entries[p.file].path_display(),
                            format!("blob {} is missing from the repository", blob.short()),
                        ));
                        report.failed_paths.push(entries[p.file].path.clone());
                    }
                }
            }
        }
    }
    // Packs in the order of the files they feed, so files are written
    // roughly in walk order: folders stay hot in the kernel's caches and
    // large files grow front to back.
    let mut work: Vec<PackWork> = by_pack.into_iter().collect();
    let first_file = |w: &PackWork| {
        w.1.iter()
            .flat_map(|(_, ps)| ps.iter().map(|p| p.file))
            .min()
    };
    work.sort_by_key(first_file);
    for (_, items) in &mut work {
        items.sort_by_key(|(e, _)| e.offset);
    }
    let (gap, max_read) = super::read_span(&repo.store);
    let reads: Vec<(&PackWork, Run)> = work
        .iter()
        .flat_map(|w| {
            coalesce(&w.1, |i| (i.0.offset, i.0.length), gap, max_read)
                .into_iter()
                .map(move |r| (w, r))
        })
        .collect();
    let writer = Writer {
        write_path: &write_path,
        entries: &entries,
        piece_count: &piece_count,
        finished: (0..entries.len()).map(|_| AtomicBool::new(false)).collect(),
        written: (0..entries.len()).map(|_| AtomicU32::new(0)).collect(),
        root,
        errors: Mutex::new(Vec::new()),
        full,
        progress,
        bad_blobs: Mutex::new(HashSet::new()),
        damaged: Mutex::new(Vec::new()),
        hashes: opts.verify.then(|| Mutex::new(Vec::new())),
    };
    // The store keeps reads in flight (many on S3, where each waits a round
    // trip; bounded in bytes) while the workers decrypt and write. The
    // channel is a rendezvous: finished reads wait in the store's pipeline,
    // not in a queue of their own, so memory is the reads in flight plus one
    // run per worker.
    let (tx, rx) = crossbeam_channel::bounded(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let (rx, writer) = (rx.clone(), &writer);
            s.spawn(move || {
                for (pack, items, fetched) in rx {
                    write_blobs(repo, writer, pack, items, fetched);
                }
            });
        }
        let ranges = reads.iter().map(|(w, run)| run.read(w.0.key())).collect();
        let fetched = repo.store.read_ahead(ranges, repo.store.read_concurrency());
        for ((w, run), f) in reads.iter().zip(fetched) {
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
        finished,
        written,
        errors,
        full,
        bad_blobs,
        damaged,
        hashes,
        ..
    } = writer;
    if cancel.load(Ordering::Relaxed) {
        // Stopped: no file is left half written. A replacement is removed
        // (the existing file stays as it was), and so is a file written in
        // place that did not get all its pieces.
        for (i, e) in entries.iter().enumerate() {
            if e.kind != EntryKind::File || skip[i] {
                continue;
            }
            match &temp[i] {
                Some(t) => {
                    let _ = std::fs::remove_file(t);
                }
                None if written[i].load(Ordering::Relaxed) < piece_count[i] => {
                    let _ = std::fs::remove_file(opts.target.join(e.path_os()));
                }
                None => {}
            }
        }
        return Err(Error::Interrupted);
    }
    report
        .bad_blobs
        .extend(bad_blobs.into_inner().unwrap_or_default());
    report.damaged = damaged.into_inner().unwrap_or_default();
    if let Some(w) = super::record_damage(repo, "restore", &report.damaged) {
        report.warnings.push(w);
    }
    // A full target stops the restore with one message, not one per file.
    if let Some((path, reason)) = full.0.into_inner() {
        return Err(Error::TargetFull { path, reason });
    }
    for (file, reason) in errors.into_inner().unwrap_or_default() {
        if failed.insert(file) {
            report.failed.push((entries[file].path_display(), reason));
            report.failed_paths.push(entries[file].path.clone());
        }
    }
    // Replaced files take their place in one rename each; a failed one leaves
    // the old file as it was (and never a file with holes).
    for (i, t) in temp.iter().enumerate() {
        let Some(t) = t else { continue };
        if entries[i].kind != EntryKind::File {
            continue;
        }
        if failed.contains(&i) {
            let _ = std::fs::remove_file(t);
        } else if let Err(err) = std::fs::rename(t, opts.target.join(entries[i].path_os())) {
            failed.insert(i);
            let _ = std::fs::remove_file(t);
            report
                .failed
                .push((entries[i].path_display(), format!("replacing it: {err}")));
            report.failed_paths.push(entries[i].path.clone());
        }
    }

    // Pass 4: links, then metadata; folders last, deepest first.
    for (i, e) in entries.iter().enumerate() {
        if skip[i] || failed.contains(&i) {
            continue;
        }
        let abs = opts.target.join(e.path_os());
        let at = write_path(i);
        let res = match e.kind {
            EntryKind::Symlink => {
                let _ = std::fs::remove_file(&at);
                std::os::unix::fs::symlink(
                    OsStr::from_bytes(e.target.as_deref().unwrap_or_default()),
                    &at,
                )
                .map_err(|err| format!("{}: {err}", abs.display()))
            }
            EntryKind::Hardlink => {
                let t = e.target.as_deref().unwrap_or_default();
                let src = opts.target.join(OsStr::from_bytes(t));
                // link(2) follows symlinks on the way to its source: a
                // symlink of the snapshot must not lead a link out of the target.
                let via = real_folders(&opts.target, parent_of(t))
                    .map_err(|m| format!("link to {}: {m}", src.display()));
                via.and_then(|()| {
                    let _ = std::fs::remove_file(&at);
                    std::fs::hard_link(&src, &at).map_err(|err| {
                        format!("{}: link to {}: {err}", abs.display(), src.display())
                    })
                })
            }
            _ => Ok(()),
        };
        let res = res.and_then(|()| match (&temp[i], e.kind) {
            (Some(t), EntryKind::Symlink | EntryKind::Hardlink) => {
                std::fs::rename(t, &abs).map_err(|err| format!("{}: {err}", abs.display()))
            }
            _ => Ok(()),
        });
        if let Err(reason) = res {
            failed.insert(i);
            report.failed.push((e.path_display(), reason));
            report.failed_paths.push(e.path.clone());
        }
    }
    for (i, e) in entries.iter().enumerate() {
        if skip[i] {
            continue;
        }
        if failed.contains(&i) {
            if e.kind == EntryKind::File && temp[i].is_none() {
                // Never leave a file with holes where damaged data was.
                let _ = std::fs::remove_file(opts.target.join(e.path_os()));
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
                if finished[i].load(Ordering::Relaxed) {
                    continue;
                }
            }
            EntryKind::Hardlink => {
                report.links += 1;
                continue; // shares the metadata of its first name
            }
            _ => report.links += u64::from(e.kind == EntryKind::Symlink),
        }
        if let Err(err) = apply_metadata(&opts.target.join(e.path_os()), e, root) {
            report.warnings.push(format!(
                "{}: metadata not restored: {err}",
                e.path_display()
            ));
        }
    }
    for (i, e) in entries.iter().enumerate().rev() {
        if e.kind == EntryKind::Dir
            && !failed.contains(&i)
            && let Err(err) = apply_metadata(&opts.target.join(e.path_os()), e, root)
        {
            report.warnings.push(format!(
                "{}: metadata not restored: {err}",
                e.path_display()
            ));
        }
    }
    if let Some(hashes) = hashes {
        verify(
            opts,
            &entries,
            &mut failed,
            &mut report,
            hashes.into_inner().unwrap_or_default(),
        );
    }
    Ok(report)
}

/// Reads every piece written back from disk and compares its hash; a file
/// whose size or content differs from the snapshot is reported as failed.
fn verify(
    opts: &RestoreOptions,
    entries: &[Entry],
    failed: &mut HashSet<usize>,
    report: &mut RestoreReport,
    mut hashes: Vec<PieceHash>,
) {
    hashes.sort_unstable_by_key(|h| (h.0, h.1));
    let mut checked: HashSet<usize> = HashSet::new();
    let mut buf = Vec::new();
    for (file, off, len, want) in hashes {
        if failed.contains(&file) {
            continue;
        }
        let e = &entries[file];
        let abs = opts.target.join(e.path_os());
        let ok = std::fs::File::open(&abs).and_then(|f| {
            if f.metadata()?.len() != e.size {
                return Ok(false);
            }
            buf.resize(len as usize, 0);
            f.read_exact_at(&mut buf, off)?;
            Ok(*blake3::hash(&buf).as_bytes() == want)
        });
        if !matches!(ok, Ok(true)) {
            failed.insert(file);
            report.files = report.files.saturating_sub(1);
            report.bytes = report.bytes.saturating_sub(e.size);
            report.failed.push((
                e.path_display(),
                match ok {
                    Err(err) => format!("verify: {}: {err}", abs.display()),
                    _ => "verify: what was written differs from the snapshot".into(),
                },
            ));
            report.failed_paths.push(e.path.clone());
        } else {
            checked.insert(file);
        }
    }
    let empty_files = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.kind == EntryKind::File && e.size == 0 && !failed.contains(i))
        .count();
    report.verified = (checked.iter().filter(|f| !failed.contains(f)).count() + empty_files) as u64;
}

/// What the fetch workers share: where and what to write, and what went wrong.
struct Writer<'a> {
    /// Where file `i` is written (its own path, or a temporary name beside it).
    write_path: &'a (dyn Fn(usize) -> PathBuf + Sync),
    entries: &'a [Entry],
    piece_count: &'a [u32],
    /// Files written whole by their single piece, metadata already set.
    finished: Vec<AtomicBool>,
    /// Pieces written per file (a stopped restore removes unfinished files).
    written: Vec<AtomicU32>,
    root: bool,
    errors: Mutex<Vec<(usize, String)>>,
    full: Full,
    progress: &'a dyn Progress,
    bad_blobs: Mutex<HashSet<BlobId>>,
    damaged: Mutex<Vec<(PackId, BlobId, String)>>,
    /// (file, offset, length, BLAKE3) of every piece written, when verifying.
    hashes: Option<Mutex<Vec<PieceHash>>>,
}

impl Writer<'_> {
    fn bad(&self, entry: &PackEntry) {
        if let Ok(mut b) = self.bad_blobs.lock() {
            b.insert(entry.id);
        }
    }

    /// The bytes of this blob were read and are bad (not merely unreachable).
    fn damaged(&self, pack: &PackId, entry: &PackEntry, reason: &str) {
        if let Ok(mut d) = self.damaged.lock() {
            d.push((*pack, entry.id, reason.to_string()));
        }
    }

    fn fail(&self, pieces: &[Piece], reason: &str) {
        if let Ok(mut errs) = self.errors.lock() {
            errs.extend(pieces.iter().map(|p| (p.file, reason.to_string())));
        }
    }

    /// Writes one piece. A file made of a single piece is created, written
    /// and given its metadata through one open descriptor.
    fn write(&self, plain: &[u8], p: &Piece) -> std::result::Result<(), String> {
        let end = p
            .blob_off
            .checked_add(p.len)
            .filter(|&x| x <= plain.len() as u64)
            .ok_or_else(|| {
                format!(
                    "file list points outside blob ({} + {} > {})",
                    p.blob_off,
                    p.len,
                    plain.len()
                )
            })?;
        let e = &self.entries[p.file];
        let abs = (self.write_path)(p.file);
        let single = self.piece_count[p.file] == 1;
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
                    set_metadata_fd(&f, e, self.root)?;
                    self.finished[p.file].store(true, Ordering::Relaxed);
                }
                Ok(())
            });
        res.map_err(|err| {
            self.full.note(&abs, &err);
            format!("{}: {err}", abs.display())
        })
    }
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

/// Opens the blobs of one read and writes their pieces.
fn write_blobs(
    repo: &Repository,
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
                let fetched = repo.store.get_range(&pack.key(), e.offset, e.length);
                write_blobs(repo, w, pack, one, fetched);
            }
        }
        Err(e) => {
            for (entry, pieces) in items {
                w.bad(entry);
                if e.is_object_fault() && !e.is_not_found() {
                    w.damaged(pack, entry, &e.to_string());
                }
                w.fail(pieces, &e.to_string());
            }
        }
        Ok(bytes) => {
            for (entry, pieces) in items {
                let lo = (entry.offset - start) as usize;
                let Some(sealed) = bytes.get(lo..lo + entry.length as usize) else {
                    let why = format!("{} is shorter than its index says", pack.key());
                    w.bad(entry);
                    w.damaged(pack, entry, &why);
                    w.fail(pieces, &why);
                    continue;
                };
                match open_blob(&repo.keys, entry, pack, sealed) {
                    Err(e) => {
                        w.bad(entry);
                        w.damaged(pack, entry, &e.to_string());
                        w.fail(pieces, &e.to_string())
                    }
                    Ok(plain) => {
                        for p in pieces {
                            match w.write(&plain, p) {
                                Err(e) => w.fail(std::slice::from_ref(p), &e),
                                Ok(()) => {
                                    w.written[p.file].fetch_add(1, Ordering::Relaxed);
                                    w.progress.advance(p.len)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A write error that stops the whole restore: the target has no room left.
fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), StorageFull | QuotaExceeded | FileTooLarge)
}

/// The first "disk full" seen by any worker; once set, workers stop.
#[derive(Default)]
struct Full(std::sync::OnceLock<(PathBuf, String)>);

impl Full {
    fn note(&self, path: &Path, e: &std::io::Error) -> bool {
        if is_full(e) {
            let _ = self.0.set((path.to_path_buf(), e.to_string()));
            return true;
        }
        false
    }
    fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

/// Writes one file's content from a snapshot to `out` (a hard link is
/// followed to its file). Returns the bytes written.
pub fn write_file(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    path: &[u8],
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let mut want = path.to_vec();
    let mut found: Option<Entry> = None;
    // A hard link names an earlier entry: look that up in turn.
    for _ in 0..2 {
        let mut link = None;
        super::for_each_entry_under(repo, blobs, snap, &want, |e| {
            if found.is_none() && link.is_none() && e.path == want {
                match (e.kind, &e.target) {
                    (EntryKind::Hardlink, Some(t)) => link = Some(t.clone()),
                    _ => found = Some(e),
                }
            }
            Ok(())
        })?;
        match link {
            Some(t) => want = t,
            None => break,
        }
    }
    let shown = String::from_utf8_lossy(path);
    let e = found.ok_or_else(|| {
        Error::Invalid(format!(
            "/{shown} is not in the snapshot; list it with `coffer ls SNAPSHOT {}`",
            String::from_utf8_lossy(parent_of(path))
        ))
    })?;
    if e.kind != EntryKind::File {
        return Err(Error::Invalid(format!(
            "/{shown} is a {}, not a file",
            e.kind.name()
        )));
    }
    let mut last: Option<(BlobId, Vec<u8>)> = None;
    let mut n = 0u64;
    for x in &e.content {
        if last.as_ref().is_none_or(|(id, _)| *id != x.blob) {
            let loc = blobs.get(&x.blob).ok_or_else(|| {
                Error::Invalid(format!(
                    "/{shown}: blob {} is missing from the repository; `coffer check` tells more",
                    x.blob.short()
                ))
            })?;
            let plain = repo.read_blob(&loc.pack, &loc.entry).inspect_err(|e| {
                if let crate::repo::RepoError::Corrupt { .. }
                | crate::repo::RepoError::WrongKey { .. } = e
                {
                    // Best effort: the error below is what the operator needs.
                    let _ = super::record_damage(repo, "cat", &[(loc.pack, x.blob, e.to_string())]);
                }
            })?;
            last = Some((x.blob, plain));
        }
        let data = &last
            .as_ref()
            .map(|l| &l.1)
            .ok_or_else(|| Error::Invalid("no blob".into()))?;
        let piece = x
            .offset
            .checked_add(x.length)
            .and_then(|end| data.get(x.offset as usize..end as usize))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "/{shown}: the file list points outside blob {}",
                    x.blob.short()
                ))
            })?;
        out.write_all(piece)
            .map_err(|err| Error::io("standard output", err))?;
        n += x.length;
    }
    out.flush()
        .map_err(|err| Error::io("standard output", err))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::DirMaker;

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
        assert!(err.contains("too long"), "{err}");
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
        assert!(err.contains("not a folder"), "{err}");
        assert!(root.join("x/link").is_symlink());
        // Verified folders survive a refusal below them.
        dirs.ensure(b"x/y/z/w").unwrap();
        assert!(root.join("x/y/z/w").is_dir());
    }
}
