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
use crate::catalog::BlobMap;
use crate::engine::glob::{GlobError, Globs};
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{Entry, EntryKind};
use crate::{Error, Result};
use std::collections::HashSet;
use std::path::PathBuf;
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

/// Compiles restore's globs under the one rule ([`crate::engine::glob`]).
fn globs(patterns: &[String], what: &'static str) -> Result<Option<Globs>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    Globs::new(patterns, what).map(Some).map_err(|e| match e {
        GlobError::Pattern {
            what,
            pattern,
            error,
        } => Error::Pattern {
            what,
            pattern,
            reason: error.to_string(),
        },
        GlobError::Set(error) => Error::Pattern {
            what,
            pattern: patterns.join(" "),
            reason: error.to_string(),
        },
    })
}

/// What a restore selects: entries an include matches (or everything), and
/// what is below them, minus what an exclude matches and what is below
/// that; or an exact set.
pub struct Selection {
    includes: Option<Globs>,
    excludes: Option<Globs>,
    only: Option<HashSet<Vec<u8>>>,
}

/// Which includes have selected an entry so far ([`Selection::note`]).
pub struct IncludesUsed {
    used: Vec<bool>,
    left: usize,
    which: Vec<usize>,
}

impl Selection {
    pub fn new(opts: &RestoreOptions) -> Result<Selection> {
        Ok(Selection {
            includes: globs(&opts.include, "include")?,
            excludes: globs(&opts.exclude, "exclude")?,
            only: opts.only.clone(),
        })
    }

    pub fn selects(&self, path: &[u8]) -> bool {
        if let Some(only) = &self.only {
            return only.contains(path);
        }
        self.includes
            .as_ref()
            .is_none_or(|s| s.is_match_here_or_above(path))
            && !self
                .excludes
                .as_ref()
                .is_some_and(|s| s.is_match_here_or_above(path))
    }

    /// An account of the includes that have selected something: none yet.
    pub fn includes_used(&self) -> IncludesUsed {
        let n = self.includes.as_ref().map_or(0, |g| g.patterns().len());
        IncludesUsed {
            used: vec![false; n],
            left: n,
            which: Vec::new(),
        }
    }

    /// Notes the includes that select `path` (a path [`Selection::selects`]).
    pub fn note(&self, used: &mut IncludesUsed, path: &[u8]) {
        let Some(g) = self.includes.as_ref().filter(|_| used.left > 0) else {
            return;
        };
        used.which.clear();
        g.which_here_or_above(path, &mut used.which);
        for &i in &used.which {
            if !std::mem::replace(&mut used.used[i], true) {
                used.left -= 1;
            }
        }
    }

    /// [`Error::NothingSelected`] naming every include that selected nothing.
    pub fn require_used(&self, used: &IncludesUsed) -> Result<()> {
        let (Some(g), true) = (&self.includes, used.left > 0) else {
            return Ok(());
        };
        Err(Error::NothingSelected {
            patterns: g
                .patterns()
                .iter()
                .zip(&used.used)
                .filter(|(_, u)| !**u)
                .map(|(p, _)| p.clone())
                .collect(),
            excludes: self.excludes.is_some(),
        })
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

/// The entries of `snap` that `opts` selects, in walk order; an include
/// that selects nothing is an error. Plain include paths (a `/`, no glob
/// characters) are looked up through the tree index.
fn list_entries(
    repo: &Repository,
    blobs: &BlobMap,
    snap: &Snapshot,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
) -> Result<Vec<Entry>> {
    let selection = Selection::new(opts)?;
    let mut entries: Vec<Entry> = Vec::new();
    let plain = |p: &String| p.contains('/') && !p.contains(['*', '?', '[', ']', '{', '}', '\\']);
    let mut used = selection.includes_used();
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
                    selection.note(&mut used, &e.path);
                    entries.push(e);
                }
                Ok(())
            })?;
        }
    } else {
        for_each_entry(repo, blobs, snap, |e| {
            interrupted(cancel)?;
            if selection.selects(&e.path) {
                selection.note(&mut used, &e.path);
                entries.push(e);
            }
            Ok(())
        })?;
    }
    selection.require_used(&used)?;
    Ok(entries)
}

/// Lists what `opts` selects of `snap` and plans its restore; writes
/// nothing (a dry run is this and nothing more).
pub fn prepare(
    repo: &Repository,
    blobs: &BlobMap,
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
    blobs: &BlobMap,
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
    blobs: &BlobMap,
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

    #[test]
    fn includes_follow_the_exclude_rule_and_one_that_selects_nothing_is_named() {
        let s = Selection::new(&RestoreOptions {
            include: vec!["*.bin".into(), "/etc".into(), "*.none".into()],
            exclude: vec!["*.tmp".into()],
            ..Default::default()
        })
        .unwrap();
        // Without '/', a name anywhere, as backup's excludes.
        assert!(s.selects(b"srv/deep/a.bin") && s.selects(b"etc/x.tmp2"));
        assert!(!s.selects(b"srv/a.tmp") && !s.selects(b"srv/a.txt"));
        let mut used = s.includes_used();
        for p in [&b"srv/deep/a.bin"[..], b"etc/passwd"] {
            s.note(&mut used, p);
        }
        match s.require_used(&used) {
            Err(e @ Error::NothingSelected { .. }) => assert_eq!(
                e.to_string(),
                "--include \"*.none\" selects nothing in the snapshot (after the excludes); `coffer ls SNAPSHOT` lists what it holds (a pattern without '/' matches names anywhere, one with '/' the whole path)"
            ),
            other => panic!("{other:?}"),
        }
        s.note(&mut used, b"x/y.none");
        assert!(s.require_used(&used).is_ok());
        // No includes: nothing to account for.
        let all = Selection::new(&RestoreOptions::default()).unwrap();
        assert!(all.require_used(&all.includes_used()).is_ok());
    }
}
