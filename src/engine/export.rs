//! Export: a snapshot, or the part of it that include globs select, as a
//! standard tar archive (optionally zstd-compressed) written to any stream.
//!
//! Memory stays bounded whatever the size. One thread reads the file list and
//! hands the blobs each file needs, in order, to a few fetch workers; the
//! caller's thread takes the entries and their blobs in the same order and
//! appends each file to the archive piece by piece. At most [`AHEAD`] blobs
//! are being fetched or waiting at any time, and consecutive pieces of one
//! blob (small files bundled together) fetch it once.

use super::restore::{RestoreOptions, Selection};
use super::{Progress, for_each_entry};
use crate::catalog::BlobMap;
use crate::repo::Repository;
use crate::repo::ids::BlobId;
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, EntryKind, Extent};
use crate::{Error, Result};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Blobs fetched ahead of the writer (each at most about 1 MiB of plaintext).
const AHEAD: usize = 8;
/// Parallel blob reads (ranged GETs on S3, decryption and decompression).
const WORKERS: usize = 4;
/// zstd level of `tar.zst`.
const ZSTD_LEVEL: i32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarZst,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarZst => "tar.zst",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Globs over snapshot paths (no leading `/`), as restore's `--include`:
    /// a match takes what is below it too. Empty means everything.
    pub include: Vec<String>,
    pub format: Format,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub files: u64,
    pub dirs: u64,
    /// Symlinks and hard links.
    pub links: u64,
    /// Fifos and device nodes.
    pub special: u64,
    /// File content written (plaintext bytes).
    pub bytes: u64,
    /// Bytes of the archive as written (after compression).
    pub archive_bytes: u64,
}

/// A fetched blob, or why it could not be read (naming the blob and its pack).
type Fetched = std::result::Result<Vec<u8>, ContentError>;

/// Why a file's content stopped before its end; its text is the reason in
/// [`Error::Unreadable`].
#[derive(Debug, thiserror::Error)]
enum ContentError {
    #[error("blob {blob} is missing from the index; `coffer check` tells more")]
    NotIndexed { blob: String },
    /// Reading or opening the blob failed: the repository's error on one
    /// line, naming the blob and its pack.
    #[error("{0}")]
    Blob(String),
    /// The file list thread failed (its error's text).
    #[error("{0}")]
    List(String),
    #[error("{}", Error::Interrupted)]
    Interrupted,
    #[error("the file list reader stopped")]
    ListReaderStopped,
    #[error("the blob reader stopped")]
    BlobReaderStopped,
    #[error("the file list points outside blob {blob} ({offset} + {length} > {len})")]
    OutsideBlob {
        blob: String,
        offset: u64,
        length: u64,
        len: usize,
    },
}

/// What the file-list thread hands the writer, in archive order: an entry,
/// then for each of its content extents the blob it reads (`None`: the same
/// blob as the extent before it). The entry goes first, so the writer starts
/// on a large file while its later blobs are still being asked for.
enum Item {
    Entry(Entry),
    Piece(Option<Receiver<Fetched>>),
}

/// Writes the archive of `snap` (or its selected part) to `out`.
///
/// Stops with [`Error::Interrupted`] once `cancel` is set (checked before
/// each entry and each blob). On error the archive is left unfinished (no end-of-archive blocks, no zstd
/// epilogue), so a reader notices; the caller removes a partial file.
pub fn export<W: Write>(
    repo: &Repository,
    blobs: &BlobMap,
    snap: &Snapshot,
    opts: &ExportOptions,
    out: W,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ExportReport> {
    let selection = if opts.include.is_empty() {
        None
    } else {
        Some(Selection::new(&RestoreOptions {
            include: opts.include.clone(),
            ..Default::default()
        })?)
    };
    // With a selection, a pre-pass over the file list finds the bytes to
    // write and the hard links whose first name is left out (the first such
    // link in the archive carries the content).
    let mut plan = Plan::new(selection);
    let total = match &plan.selection {
        None => snap.summary.bytes,
        Some(sel) => {
            let mut total = 0;
            let mut used = sel.includes_used();
            for_each_entry(repo, blobs, snap, |e| {
                if sel.selects(&e.path) {
                    sel.note(&mut used, &e.path);
                    total += e.size;
                    if let (EntryKind::Hardlink, Some(t)) = (e.kind, &e.target)
                        && !sel.selects(t)
                    {
                        plan.wanted.insert(t.clone());
                    }
                }
                Ok(())
            })?;
            sel.require_used(&used)?;
            total
        }
    };
    progress.phase("export", Some(total));

    let (items_tx, items_rx) = bounded::<Result<Item>>(256);
    let (jobs_tx, jobs_rx) = bounded::<(BlobId, Sender<Fetched>)>(AHEAD);
    let (tokens_tx, tokens_rx) = bounded::<()>(AHEAD);
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            let jobs_rx = jobs_rx.clone();
            s.spawn(move || {
                while let Ok((id, tx)) = jobs_rx.recv() {
                    let _ = tx.send(fetch(repo, blobs, &id));
                }
            });
        }
        drop(jobs_rx);
        s.spawn(move || {
            let mut last: Option<BlobId> = None;
            let stopped = || Error::Interrupted;
            let res = for_each_entry(repo, blobs, snap, |e| {
                let Some(entry) = plan.take(e) else {
                    return Ok(());
                };
                let blobs: Vec<BlobId> = match entry.kind {
                    EntryKind::File => entry.content.iter().map(|x| x.blob).collect(),
                    _ => Vec::new(),
                };
                items_tx
                    .send(Ok(Item::Entry(entry)))
                    .map_err(|_| stopped())?;
                for blob in blobs {
                    let piece = if last == Some(blob) {
                        None
                    } else {
                        last = Some(blob);
                        // Blocks while AHEAD blobs are out; fails once the writer has stopped.
                        tokens_tx.send(()).map_err(|_| stopped())?;
                        let (tx, rx) = bounded(1);
                        jobs_tx.send((blob, tx)).map_err(|_| stopped())?;
                        Some(rx)
                    };
                    items_tx
                        .send(Ok(Item::Piece(piece)))
                        .map_err(|_| stopped())?;
                }
                Ok(())
            });
            if let Err(e) = res
                && !matches!(e, Error::Interrupted)
            {
                let _ = items_tx.send(Err(e));
            }
        });
        write_archive(items_rx, tokens_rx, opts.format, out, progress, cancel)
    })
}

/// Reads one blob; an error names the blob and its pack.
fn fetch(repo: &Repository, blobs: &BlobMap, id: &BlobId) -> Fetched {
    let loc = blobs
        .get(id)
        .ok_or_else(|| ContentError::NotIndexed { blob: id.short() })?;
    repo.read_blob(&loc.pack, &loc.entry).map_err(|e| {
        if let crate::repo::RepoError::Corrupt { .. } | crate::repo::RepoError::WrongKey { .. } = e
        {
            // Best effort: the export's own report names the file.
            let _ = super::record_damage(repo, "export", &[(loc.pack, *id, e.to_string())]);
        }
        // One line, whatever the layers below say (age's messages span two).
        let msg = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        ContentError::Blob(if msg.contains(&loc.pack.key()) {
            msg
        } else {
            format!("blob {} in {}: {msg}", id.short(), loc.pack.key())
        })
    })
}

/// What goes into the archive, entry by entry, and how hard links that lost
/// their first name to the selection are carried.
struct Plan {
    selection: Option<Selection>,
    /// Left-out first names of selected hard links.
    wanted: HashSet<Vec<u8>>,
    /// Their entries, kept until the first link takes their place.
    kept: HashMap<Vec<u8>, Entry>,
    /// A left-out first name → the path that carries its content.
    moved: HashMap<Vec<u8>, Vec<u8>>,
}

impl Plan {
    fn new(selection: Option<Selection>) -> Plan {
        Plan {
            selection,
            wanted: HashSet::new(),
            kept: HashMap::new(),
            moved: HashMap::new(),
        }
    }

    /// The entry to write for `e`, if any.
    fn take(&mut self, mut e: Entry) -> Option<Entry> {
        if self.selection.as_ref().is_some_and(|s| !s.selects(&e.path)) {
            if self.wanted.contains(&e.path) {
                self.kept.insert(e.path.clone(), e);
            }
            return None;
        }
        if e.kind == EntryKind::Hardlink
            && let Some(t) = &e.target
        {
            if let Some(to) = self.moved.get(t) {
                e.target = Some(to.clone());
            } else if let Some(first) = self.kept.remove(t) {
                self.moved.insert(t.clone(), e.path.clone());
                return Some(Entry {
                    path: e.path,
                    ..first
                });
            }
        }
        Some(e)
    }
}

/// Counts what reaches the output; once poisoned it refuses writes, so an
/// archive cut short by an error never gets its end-of-archive blocks.
struct Sink<W: Write> {
    inner: W,
    written: u64,
    poisoned: bool,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.poisoned {
            return Err(std::io::Error::other("export stopped"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The archive's byte stream: plain, or through a zstd encoder.
enum Stream<W: Write> {
    Plain(Sink<W>),
    Zst(zstd::stream::write::Encoder<'static, Sink<W>>),
}

impl<W: Write> Stream<W> {
    fn sink(&mut self) -> &mut Sink<W> {
        match self {
            Stream::Plain(s) => s,
            Stream::Zst(z) => z.get_mut(),
        }
    }

    fn finish(self) -> std::io::Result<u64> {
        let mut sink = match self {
            Stream::Plain(s) => s,
            Stream::Zst(z) => z.finish()?,
        };
        sink.flush()?;
        Ok(sink.written)
    }
}

impl<W: Write> Write for Stream<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Zst(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Zst(z) => z.flush(),
        }
    }
}

fn out_err(e: std::io::Error) -> Error {
    Error::io("the archive output", e)
}

/// The writer's side: takes entries and blobs in order and builds the archive.
fn write_archive<W: Write>(
    items: Receiver<Result<Item>>,
    tokens: Receiver<()>,
    format: Format,
    out: W,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<ExportReport> {
    let sink = Sink {
        inner: out,
        written: 0,
        poisoned: false,
    };
    let stream = match format {
        Format::Tar => Stream::Plain(sink),
        Format::TarZst => {
            Stream::Zst(zstd::stream::write::Encoder::new(sink, ZSTD_LEVEL).map_err(out_err)?)
        }
    };
    let mut tar = tar::Builder::new(stream);
    let mut report = ExportReport::default();
    let mut current: Option<Vec<u8>> = None;
    let result = (|| -> Result<()> {
        while let Ok(item) = items.recv() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let Item::Entry(entry) = item? else {
                return Err(Error::Stopped("export: a blob came without its file"));
            };
            append_entry(
                &mut tar,
                &entry,
                &mut Content {
                    extents: &entry.content,
                    items: &items,
                    next: 0,
                    current: &mut current,
                    pos: 0,
                    end: 0,
                    tokens: &tokens,
                    failure: None,
                    progress,
                    cancel,
                },
                &mut report,
            )?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tar.get_mut().sink().poisoned = true;
        return Err(e);
    }
    report.archive_bytes = tar.into_inner().and_then(Stream::finish).map_err(out_err)?;
    Ok(report)
}

/// A file's content as a reader over its extents' blobs.
struct Content<'a> {
    extents: &'a [Extent],
    /// Where the blob of each extent comes from, in order.
    items: &'a Receiver<Result<Item>>,
    /// The next extent to start.
    next: usize,
    /// The blob of the extent being read (shared with the next entries).
    current: &'a mut Option<Vec<u8>>,
    pos: usize,
    end: usize,
    tokens: &'a Receiver<()>,
    /// Why reading stopped, for the error message.
    failure: Option<ContentError>,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
}

impl Content<'_> {
    fn start_next(&mut self) -> std::result::Result<(), ContentError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(ContentError::Interrupted);
        }
        let x = self.extents[self.next];
        let piece = match self.items.recv() {
            Ok(Ok(Item::Piece(p))) => p,
            Ok(Err(e)) => return Err(ContentError::List(e.to_string())),
            _ => return Err(ContentError::ListReaderStopped),
        };
        if let Some(rx) = piece {
            let blob = rx.recv().map_err(|_| ContentError::BlobReaderStopped)??;
            // The blob before is done with: let the reader fetch one more.
            if self.current.replace(blob).is_some() {
                let _ = self.tokens.recv();
            }
        }
        let len = self.current.as_ref().map_or(0, Vec::len);
        let (start, end) = x
            .offset
            .checked_add(x.length)
            .filter(|&end| end <= len as u64)
            .map(|end| (x.offset as usize, end as usize))
            .ok_or_else(|| ContentError::OutsideBlob {
                blob: x.blob.short(),
                offset: x.offset,
                length: x.length,
                len,
            })?;
        self.pos = start;
        self.end = end;
        self.next += 1;
        Ok(())
    }
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.end {
            if self.next == self.extents.len() {
                return Ok(0);
            }
            if let Err(why) = self.start_next() {
                let msg = why.to_string();
                self.failure = Some(why);
                return Err(std::io::Error::other(msg));
            }
        }
        let data = self.current.as_deref().unwrap_or_default();
        let n = buf.len().min(self.end - self.pos);
        buf[..n].copy_from_slice(&data[self.pos..self.pos + n]);
        self.pos += n;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// `mtime` as a PAX decimal (`-12.5`, `1700000000.123456789`).
fn pax_time(ns: i64) -> String {
    let a = ns.unsigned_abs();
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}.{:09}", a / 1_000_000_000, a % 1_000_000_000)
}

fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    e: &Entry,
    content: &mut Content,
    report: &mut ExportReport,
) -> Result<()> {
    use tar::EntryType;
    let shown = e.path_display();
    let path = Path::new(OsStr::from_bytes(&e.path));
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid.into());
    h.set_gid(e.gid.into());
    h.set_mtime(u64::try_from(e.mtime.div_euclid(1_000_000_000)).unwrap_or(0));
    h.set_size(0);
    h.set_entry_type(match e.kind {
        EntryKind::File => EntryType::Regular,
        EntryKind::Dir => EntryType::Directory,
        EntryKind::Symlink => EntryType::Symlink,
        EntryKind::Hardlink => EntryType::Link,
        EntryKind::Fifo => EntryType::Fifo,
        EntryKind::Chardev => EntryType::Char,
        EntryKind::Blockdev => EntryType::Block,
    });
    let io_err = |err: std::io::Error| Error::io(format!("/{shown}"), err);
    // Nanoseconds (and times before 1970) need a PAX record.
    if e.mtime < 0 || e.mtime % 1_000_000_000 != 0 {
        tar.append_pax_extensions([("mtime", pax_time(e.mtime).as_bytes())])
            .map_err(out_err)?;
    }
    match e.kind {
        EntryKind::File => {
            h.set_size(e.size);
            if let Err(err) = tar.append_data(&mut h, path, &mut *content) {
                return Err(match content.failure.take() {
                    _ if content.cancel.load(Ordering::Relaxed) => Error::Interrupted,
                    Some(why) => Error::Unreadable {
                        path: shown.to_string(),
                        reason: why.to_string(),
                    },
                    None => out_err(err),
                });
            }
            report.files += 1;
            report.bytes += e.size;
        }
        EntryKind::Dir => {
            tar.append_data(&mut h, path, std::io::empty())
                .map_err(io_err)?;
            report.dirs += 1;
        }
        EntryKind::Symlink | EntryKind::Hardlink => {
            let target = e.target.as_deref().unwrap_or_default();
            tar.append_link(&mut h, path, Path::new(OsStr::from_bytes(target)))
                .map_err(io_err)?;
            report.links += 1;
        }
        EntryKind::Fifo | EntryKind::Chardev | EntryKind::Blockdev => {
            if e.kind != EntryKind::Fifo {
                let rdev = e.rdev as libc::dev_t;
                h.set_device_major(libc::major(rdev)).map_err(io_err)?;
                h.set_device_minor(libc::minor(rdev)).map_err(io_err)?;
            }
            tar.append_data(&mut h, path, std::io::empty())
                .map_err(io_err)?;
            report.special += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(1_700_000_000_123_456_789), "1700000000.123456789");
        assert_eq!(pax_time(-1_500_000_000), "-1.500000000");
        assert_eq!(pax_time(5), "0.000000005");
    }
}
