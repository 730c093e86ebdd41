//! Restore, planned before it acts. [`prepare`] lists the selected entries
//! and makes a [`RestorePlan`] (pure, in [`plan`]): what happens to each
//! entry, which blobs are read from which packs in which coalesced reads,
//! where each piece goes. [`execute`] then runs it in phases (in `write`):
//! folders and special files, file creation, fetch and write (packs in
//! parallel), replacements, links, metadata (folders last, deepest first),
//! and, if asked, a read-back verification. A dry run is the plan alone.

mod plan;
mod write;

pub use plan::{Existing, PackWork, Piece, PlanInput, PlannedEntry, RestorePlan, look};
pub use write::execute;

use super::{Progress, for_each_entry};
use crate::catalog::BlobLocation;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, EntryKind};
use crate::{Error, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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

impl Action {
    /// The action's name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::SkipUnchanged => "skip-unchanged",
            Action::SkipExisting => "skip-existing",
        }
    }
}

/// Why an entry was not restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The file list names it twice, or out of walk order.
    Refused,
    /// A folder stands where a file or link is to go.
    FolderInTheWay,
    /// The file list points outside a blob.
    BadList,
    /// It, or a folder on its way, could not be created.
    Create,
    /// A blob it needs is missing (from the index, or from storage).
    MissingBlob,
    /// A blob it needs could not be read (storage gave up).
    Unreadable,
    /// A blob it needs was read and is damaged.
    DamagedBlob,
    /// Writing its content failed.
    Write,
    /// Renaming it over the existing file failed.
    Replace,
    /// Making the link failed.
    Link,
    /// Read back, it differs from the snapshot.
    Verify,
}

/// One entry that could not be restored: its raw path (names need not be
/// UTF-8), the kind of reason, and the message for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub path: Vec<u8>,
    pub kind: FailKind,
    pub message: String,
}

impl Failure {
    pub fn new(path: &[u8], kind: FailKind, message: String) -> Failure {
        Failure {
            path: path.to_vec(),
            kind,
            message,
        }
    }

    pub fn path_display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries that could not be restored, each once, with the reason.
    pub failures: Vec<Failure>,
    /// Entries restored without some metadata (e.g. devices when not root).
    pub warnings: Vec<String>,
    /// Blobs that could not be read or opened (damaged or missing).
    pub bad_blobs: HashSet<BlobId>,
    /// Blobs whose bytes were read and failed verification (pack, blob,
    /// why): recorded in the repository as damage.
    pub damaged: Vec<(PackId, BlobId, String)>,
    /// Existing files left alone by the overwrite policy.
    pub skipped: u64,
    /// Files read back and found equal to the snapshot (`verify`).
    pub verified: u64,
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
            .map_err(|e| Error::Pattern {
                what: "include",
                pattern: p.to_string(),
                reason: e.to_string(),
            })?;
        b.add(g);
    }
    b.build().map(Some).map_err(|e| Error::Pattern {
        what: "includes",
        pattern: patterns.join(" "),
        reason: e.to_string(),
    })
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

fn parent_of(rel: &[u8]) -> &[u8] {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &[],
    }
}

fn interrupted(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// The entries of `snap` that `opts` selects, in walk order. Plain include
/// paths (no glob characters) are looked up through the tree index.
fn list_entries(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
) -> Result<Vec<Entry>> {
    let selection = Selection::new(opts)?;
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
                interrupted(cancel)?;
                if selection.selects(&e.path) && seen.insert(e.path.clone()) {
                    entries.push(e);
                }
                Ok(())
            })?;
        }
    } else {
        for_each_entry(repo, blobs, snap, |e| {
            interrupted(cancel)?;
            if selection.selects(&e.path) {
                entries.push(e);
            }
            Ok(())
        })?;
    }
    Ok(entries)
}

/// Lists what `opts` selects of `snap` and plans its restore; writes
/// nothing (a dry run is this and nothing more).
pub fn prepare(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
) -> Result<RestorePlan> {
    let fresh = std::fs::read_dir(&opts.target).map_or(true, |mut d| d.next().is_none());
    let entries = list_entries(repo, blobs, snap, opts, cancel)?;
    Ok(plan::plan(
        entries,
        &PlanInput {
            opts,
            fresh,
            lookup: &look,
            blobs,
            span: super::read_span(&repo.store),
        },
    ))
}

/// Restores `snap` as `opts` says: [`prepare`], then [`execute`].
pub fn restore(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    opts: &RestoreOptions,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> Result<RestoreReport> {
    let plan = prepare(repo, blobs, snap, opts, cancel)?;
    execute(repo, plan, opts.verify, progress, cancel)
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
    let e = found.ok_or_else(|| Error::NotInSnapshot {
        path: shown.to_string(),
        parent: String::from_utf8_lossy(parent_of(path)).into_owned(),
    })?;
    if e.kind != EntryKind::File {
        return Err(Error::NotAFile {
            path: shown.to_string(),
            kind: e.kind.name(),
        });
    }
    let mut last: Option<(BlobId, Vec<u8>)> = None;
    let mut n = 0u64;
    for x in &e.content {
        // The blob of the extent before, or this one's, read now.
        let data = match &mut last {
            Some((id, plain)) if *id == x.blob => plain,
            held => {
                let loc = blobs.get(&x.blob).ok_or_else(|| Error::MissingBlob {
                    path: shown.to_string(),
                    blob: x.blob.short(),
                })?;
                let plain = repo.read_blob(&loc.pack, &loc.entry).inspect_err(|e| {
                    if let crate::repo::RepoError::Corrupt { .. }
                    | crate::repo::RepoError::WrongKey { .. } = e
                    {
                        // Best effort: the error below is what the operator needs.
                        let _ =
                            super::record_damage(repo, "cat", &[(loc.pack, x.blob, e.to_string())]);
                    }
                })?;
                &mut held.insert((x.blob, plain)).1
            }
        };
        let piece = x
            .offset
            .checked_add(x.length)
            .and_then(|end| data.get(x.offset as usize..end as usize))
            .ok_or_else(|| Error::OutsideBlob {
                path: shown.to_string(),
                blob: x.blob.short(),
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
    use super::*;

    #[test]
    fn action_names_are_their_json() {
        for a in [
            Action::Create,
            Action::Replace,
            Action::SkipUnchanged,
            Action::SkipExisting,
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.name());
        }
    }

    #[test]
    fn selection_takes_includes_minus_excludes_or_an_exact_set() {
        let s = Selection::new(&RestoreOptions {
            include: vec!["/srv/*".into()],
            exclude: vec!["*.tmp".into(), "srv/b/c".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(s.selects(b"srv/a") && s.selects(b"srv/a/deep/x"));
        assert!(!s.selects(b"srv") && !s.selects(b"etc/a"));
        assert!(!s.selects(b"srv/a/x.tmp") && !s.selects(b"srv/b/c/d"));
        assert!(s.selects(b"srv/b/cc"));
        let only = Selection::new(&RestoreOptions {
            include: vec!["**".into()],
            only: Some([b"x/y".to_vec()].into_iter().collect()),
            ..Default::default()
        })
        .unwrap();
        assert!(only.selects(b"x/y") && !only.selects(b"x") && !only.selects(b"x/y/z"));
    }
}
