//! The walker: a deterministic pre-order walk (parents first, names sorted
//! bytewise), so file lists of unchanged trees are byte-identical and dedup.

use super::{Counted, Progress};
use crate::repo::tree::walk_order;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Node {
    pub abs: PathBuf,
    /// Path relative to `/`, as stored in the snapshot.
    pub rel: Vec<u8>,
    pub meta: Metadata,
}

pub enum WalkItem {
    Node(Node),
    /// Something that could not be listed or examined; reported, not fatal.
    Skipped {
        path: String,
        error: String,
    },
}

/// Backup's excludes: the one glob rule of [`super::glob`], matched
/// against each path below a source (without its leading `/`).
pub use super::glob::{GlobError as ExcludeError, Globs as Excludes};

fn excluded(excludes: &Excludes, abs: &Path) -> bool {
    let b = abs.as_os_str().as_bytes();
    excludes.is_match(b.strip_prefix(b"/").unwrap_or(b))
}

pub fn rel_of(abs: &Path) -> Vec<u8> {
    let b = abs.as_os_str().as_bytes();
    b.strip_prefix(b"/").unwrap_or(b).to_vec()
}

/// Walks `sources` (absolute, normalised) in order, sending every node.
/// Returns false if the receiver hung up (the backup is stopping).
pub fn walk(sources: &[PathBuf], excludes: &Excludes, tx: &Sender<WalkItem>) -> bool {
    let mut sources: Vec<&PathBuf> = sources.iter().collect();
    // Walk order (component by component), so `/x/www/app` comes before
    // `/x/www-old`, as it would inside one walked folder; the tree index
    // relies on the whole file list being in this order.
    sources.sort_by(|a, b| walk_order(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
    sources.dedup();
    let mut emitted_dirs: Vec<PathBuf> = Vec::new();
    let mut done: Vec<&PathBuf> = Vec::new();
    for src in sources {
        // A source inside another source is already covered.
        if done.iter().any(|d| src.starts_with(d)) {
            continue;
        }
        done.push(src);
        // Ancestors first, so a restore recreates them with their metadata.
        let ancestors: Vec<&Path> = src
            .ancestors()
            .skip(1)
            .filter(|a| a.parent().is_some())
            .collect();
        for anc in ancestors.into_iter().rev() {
            if emitted_dirs.iter().any(|d| d == anc) {
                continue;
            }
            emitted_dirs.push(anc.to_path_buf());
            if !send_node(anc, tx) {
                return false;
            }
        }
        if !visit(src, excludes, tx) {
            return false;
        }
    }
    true
}

fn send_node(abs: &Path, tx: &Sender<WalkItem>) -> bool {
    let item = match std::fs::symlink_metadata(abs) {
        Ok(meta) => WalkItem::Node(Node {
            abs: abs.to_path_buf(),
            rel: rel_of(abs),
            meta,
        }),
        Err(e) => WalkItem::Skipped {
            path: abs.display().to_string(),
            error: e.to_string(),
        },
    };
    tx.send(item).is_ok()
}

fn visit(abs: &Path, excludes: &Excludes, tx: &Sender<WalkItem>) -> bool {
    match std::fs::symlink_metadata(abs) {
        Ok(meta) => visit_node(abs.to_path_buf(), meta, excludes, tx),
        Err(e) => tx
            .send(WalkItem::Skipped {
                path: abs.display().to_string(),
                error: e.to_string(),
            })
            .is_ok(),
    }
}

fn visit_node(abs: PathBuf, meta: Metadata, excludes: &Excludes, tx: &Sender<WalkItem>) -> bool {
    let is_dir = meta.is_dir();
    let node = Node {
        rel: rel_of(&abs),
        abs: abs.clone(),
        meta,
    };
    if tx.send(WalkItem::Node(node)).is_err() {
        return false;
    }
    if !is_dir {
        return true;
    }
    let mut children: Vec<std::fs::DirEntry> = match std::fs::read_dir(&abs) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
        Err(e) => {
            return tx
                .send(WalkItem::Skipped {
                    path: abs.display().to_string(),
                    error: format!("cannot list folder: {e}"),
                })
                .is_ok();
        }
    };
    children.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for child in children {
        let path = child.path();
        if excluded(excludes, &path) {
            continue;
        }
        // DirEntry::metadata is fstatat on the open folder: no path walk, no follow.
        let ok = match child.metadata() {
            Ok(meta) => visit_node(path, meta, excludes, tx),
            Err(e) => tx
                .send(WalkItem::Skipped {
                    path: path.display().to_string(),
                    error: e.to_string(),
                })
                .is_ok(),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// How often the pre-scan reports its count, in files.
const COUNT_EVERY: u64 = 1024;

/// The pre-scan's counter: counts the regular files and bytes of a walk
/// (fed by [`walk`] on another thread) and reports them to `progress`.
/// Returns early, without a final report, once `stop` is set: dropping the
/// receiver then stops the walk at its next send.
pub fn count(rx: Receiver<WalkItem>, stop: &AtomicBool, progress: &dyn Progress) {
    let mut c = Counted::default();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(WalkItem::Node(n)) if n.meta.is_file() => {
                c.files += 1;
                c.bytes += n.meta.len();
                if c.files.is_multiple_of(COUNT_EVERY) {
                    progress.counted(c);
                }
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    c.done = true;
    progress.counted(c);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a pre-scan reports.
    #[derive(Default)]
    struct Reports(std::sync::Mutex<Vec<Counted>>);
    impl Progress for Reports {
        fn counted(&self, c: Counted) {
            self.0.lock().unwrap().push(c);
        }
    }

    /// The pre-scan counts what the backup's walk would read: regular files
    /// and their bytes, excludes left out; stopped, it reports no total.
    #[test]
    fn the_pre_scan_counts_files_and_bytes_and_stops_when_told() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/one"), b"12345").unwrap();
        std::fs::write(root.join("a/b/two"), b"123").unwrap();
        std::fs::write(root.join("a/b/skip.tmp"), b"1234567").unwrap();
        std::os::unix::fs::symlink("one", root.join("a/link")).unwrap();
        let excludes = Excludes::new(&["*.tmp".to_string()], "exclude").unwrap();
        let run = |stop: &AtomicBool| {
            let reports = Reports::default();
            let (tx, rx) = crossbeam_channel::bounded(4);
            let (sources, excludes) = ([root.join("a")], &excludes);
            std::thread::scope(|s| {
                s.spawn(move || walk(&sources, excludes, &tx));
                count(rx, stop, &reports);
            });
            reports.0.into_inner().unwrap()
        };
        let done = Counted {
            files: 2,
            bytes: 8,
            done: true,
        };
        assert_eq!(run(&AtomicBool::new(false)), [done]);
        assert!(run(&AtomicBool::new(true)).is_empty());
    }

    /// `www-old` sorts before `www/app` as a whole string, after it in walk
    /// order; the file list (and the tree index over it) needs walk order.
    #[test]
    fn sources_are_walked_in_walk_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for d in ["www/app", "www-old"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("f"), b"x").unwrap();
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let sources = [root.join("www-old"), root.join("www/app")];
        assert!(walk(&sources, &Excludes::new(&[], "exclude").unwrap(), &tx));
        drop(tx);
        let rels: Vec<Vec<u8>> = rx
            .iter()
            .filter_map(|item| match item {
                WalkItem::Node(n) => Some(n.rel),
                WalkItem::Skipped { .. } => None,
            })
            .collect();
        assert!(
            rels.is_sorted_by(|a, b| walk_order(a, b).is_lt()),
            "not in walk order: {:?}",
            rels.iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>()
        );
        let tail: Vec<&[u8]> = rels
            .iter()
            .map(|r| &r[r.len() - 9.min(r.len())..])
            .collect();
        assert!(tail.contains(&&b"www/app/f"[..]) && tail.contains(&&b"www-old/f"[..]));
    }
}
