//! The plan of a restore, made before anything is written: what happens to
//! each entry (created, replaced, left alone, refused and why), which blobs
//! are read from which packs in which coalesced reads, where each piece is
//! written, and the totals. Pure: the target's state comes in through a
//! lookup, so tests build entries and a blob map and assert on the plan.

use super::{Action, FailKind, Failure, Overwrite, RestoreOptions};
use crate::catalog::BlobMap;
use crate::engine::{Run, coalesce};
use crate::repo::ids::{BlobId, PackId};
use crate::repo::pack::PackEntry;
use crate::repo::tree::{Entry, EntryKind, ListCheck, Refusal};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What stands at an entry's place in the target before the restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    File {
        len: u64,
        /// Nanoseconds since the epoch.
        mtime: i128,
    },
    Dir,
    /// A symlink and where it points (None if that could not be read).
    Symlink(Option<Vec<u8>>),
    /// A fifo, a device, a socket.
    Other,
}

/// Looks at `abs` without following a symlink there.
pub fn look(abs: &Path) -> Option<Existing> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(abs).ok()?;
    let t = m.file_type();
    Some(if t.is_file() {
        Existing::File {
            len: m.len(),
            mtime: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    } else if t.is_dir() {
        Existing::Dir
    } else if t.is_symlink() {
        Existing::Symlink(
            std::fs::read_link(abs)
                .ok()
                .map(|p| p.as_os_str().as_bytes().to_vec()),
        )
    } else {
        Existing::Other
    })
}

/// An existing target's fate under `policy`.
fn decide(e: &Entry, existing: &Existing, policy: Overwrite) -> Action {
    match policy {
        Overwrite::Always => Action::Replace,
        Overwrite::Never => Action::SkipExisting,
        Overwrite::IfChanged => {
            let same = match (e.kind, existing) {
                (EntryKind::File, Existing::File { len, mtime }) => {
                    *len == e.size && *mtime == e.mtime as i128
                }
                (EntryKind::Symlink, Existing::Symlink(Some(t))) => {
                    t.as_slice() == e.target.as_deref().unwrap_or_default()
                }
                _ => false,
            };
            if same {
                Action::SkipUnchanged
            } else {
                Action::Replace
            }
        }
    }
}

/// One piece of a file: `len` bytes at `blob_off` in a blob go to `file_off`
/// of the file at place `file` in [`RestorePlan::entries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub file: usize,
    pub file_off: u64,
    pub blob_off: u64,
    pub len: u64,
}

/// The blobs needed from one pack, by offset, each with the pieces it feeds.
pub type PackWork = (PackId, Vec<(PackEntry, Vec<Piece>)>);

/// One selected entry and what the restore does with it.
#[derive(Debug)]
pub struct PlannedEntry {
    /// The entry, without its content list (the pieces hold it now).
    pub entry: Entry,
    pub action: Action,
    /// Where it is written first, to be renamed over what is there
    /// (`Replace`); None: written in place.
    pub temp: Option<PathBuf>,
    /// Refused by the plan (its reason is in [`RestorePlan::failures`]).
    pub failed: bool,
    /// How many pieces make its content.
    pub pieces: u32,
}

impl PlannedEntry {
    pub fn skipped(&self) -> bool {
        matches!(self.action, Action::SkipExisting | Action::SkipUnchanged)
    }
}

/// Everything a restore will do, before it does any of it.
#[derive(Debug, Default)]
pub struct RestorePlan {
    pub target: PathBuf,
    /// The selected entries in walk order (without those refused outright).
    pub entries: Vec<PlannedEntry>,
    /// Entries the plan refuses, in the order found.
    pub failures: Vec<Failure>,
    /// Blobs the index lacks, with the places of the files that need them.
    pub missing: Vec<(BlobId, Vec<usize>)>,
    /// The blobs to read, by pack, packs in the order of the files they feed
    /// (so files are written roughly in walk order).
    pub packs: Vec<PackWork>,
    /// The ranged reads: (place in `packs`, the run of its blobs).
    pub reads: Vec<(usize, Run)>,
    /// Bytes of file content to write.
    pub bytes: u64,
    /// Existing entries left alone by the overwrite policy.
    pub skipped: u64,
}

/// The state the planner needs beside the entries: what is in the target
/// (`fresh`: nothing, so no lookup), where blobs are, how reads coalesce.
pub struct PlanInput<'a> {
    pub opts: &'a RestoreOptions,
    pub fresh: bool,
    pub lookup: &'a dyn Fn(&Path) -> Option<Existing>,
    pub blobs: &'a BlobMap,
    /// Largest gap read through, and longest read ([`crate::engine::read_span`]).
    pub span: (u64, u64),
}

/// A temporary name beside `abs`, for an atomic replace by rename.
fn temp_beside(abs: &Path, n: usize) -> PathBuf {
    let mut name = std::ffi::OsString::from(format!(".coffer-restore-{}-{n}-", std::process::id()));
    name.push(abs.file_name().unwrap_or_default());
    abs.with_file_name(name)
}

/// Plans the restore of `entries` (selected, in walk order).
pub fn plan(mut entries: Vec<Entry>, input: &PlanInput) -> RestorePlan {
    let mut out = RestorePlan {
        target: input.opts.target.clone(),
        ..RestorePlan::default()
    };
    refuse_malformed(&mut entries, &mut out.failures);
    let mut by_blob: HashMap<BlobId, Vec<Piece>> = HashMap::new();
    out.entries.reserve_exact(entries.len());
    for (i, mut e) in entries.into_iter().enumerate() {
        let (action, temp, mut failed) = place(&e, i, input, &mut out.failures);
        let skipped = matches!(action, Action::SkipExisting | Action::SkipUnchanged);
        let mut pieces = 0;
        if e.kind == EntryKind::File && !skipped && !failed {
            // Every piece must lie inside its blob (as indexed) before
            // anything is created: a hostile list could otherwise make a
            // file of any declared size.
            if let Some(why) = e.piece_outside(|b| input.blobs.get(b).map(|l| l.entry.raw_length)) {
                failed = true;
                out.failures
                    .push(Failure::new(&e.path, FailKind::BadList, why));
            } else {
                pieces = u32::try_from(e.content.len()).unwrap_or(u32::MAX);
                let mut off = 0;
                for x in &e.content {
                    by_blob.entry(x.blob).or_default().push(Piece {
                        file: i,
                        file_off: off,
                        blob_off: x.offset,
                        len: x.length,
                    });
                    off += x.length;
                }
                out.bytes += e.size;
            }
        }
        // The pieces hold the content now: free the list before fetching.
        e.content = Vec::new();
        out.skipped += u64::from(skipped);
        out.entries.push(PlannedEntry {
            entry: e,
            action,
            temp,
            failed,
            pieces,
        });
    }
    (out.packs, out.missing) = by_pack(by_blob, input.blobs);
    let (gap, max_read) = input.span;
    out.reads = out
        .packs
        .iter()
        .enumerate()
        .flat_map(|(n, w)| {
            coalesce(&w.1, |i| (i.0.offset, i.0.length), gap, max_read)
                .into_iter()
                .map(move |r| (n, r))
        })
        .collect();
    out
}

/// A file list names each path once, parents before children. A hostile
/// one may not: a second entry for a path would race the first, or put
/// its metadata through a symlink of that name; a folder after what is
/// below it is out of place. Only the first of a path is kept. (An entry
/// below a symlink or file is left to the executor, which never writes
/// through one; `check --read-data` reports it from the same rules.)
fn refuse_malformed(entries: &mut Vec<Entry>, failures: &mut Vec<Failure>) {
    let refused: Vec<(usize, Refusal)> = ListCheck::refusals(entries)
        .into_iter()
        .filter(|(_, r)| !matches!(r, Refusal::BelowNonFolder { .. }))
        .collect();
    if refused.is_empty() {
        return;
    }
    for (i, reason) in &refused {
        failures.push(Failure::new(
            &entries[*i].path,
            FailKind::Refused,
            reason.reason(),
        ));
    }
    let drop: HashSet<usize> = refused.iter().map(|r| r.0).collect();
    let mut i = 0;
    entries.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
}

/// What happens to entry `i` given what the target holds at its place:
/// (action, temporary name to write it under, refused).
fn place(
    e: &Entry,
    i: usize,
    input: &PlanInput,
    failures: &mut Vec<Failure>,
) -> (Action, Option<PathBuf>, bool) {
    // A new or empty target needs no look at what is there, file by file.
    if input.fresh || e.kind == EntryKind::Dir {
        return (Action::Create, None, false);
    }
    let abs = input.opts.target.join(e.path_os());
    let Some(existing) = (input.lookup)(&abs) else {
        return (Action::Create, None, false);
    };
    match decide(e, &existing, input.opts.overwrite) {
        Action::Replace if existing == Existing::Dir => {
            let why = format!(
                "{} is a folder; move it away to restore this {}",
                abs.display(),
                e.kind.name()
            );
            failures.push(Failure::new(&e.path, FailKind::FolderInTheWay, why));
            (Action::Replace, None, true)
        }
        Action::Replace => (Action::Replace, Some(temp_beside(&abs, i)), false),
        other => (other, None, false),
    }
}

/// The pieces grouped by pack (packs in the order of the first file they
/// feed, blobs by offset), and the blobs the index lacks with their files.
fn by_pack(
    by_blob: HashMap<BlobId, Vec<Piece>>,
    blobs: &BlobMap,
) -> (Vec<PackWork>, Vec<(BlobId, Vec<usize>)>) {
    let mut packs: HashMap<PackId, Vec<(PackEntry, Vec<Piece>)>> = HashMap::new();
    let mut missing = Vec::new();
    for (blob, pieces) in by_blob {
        match blobs.get(&blob) {
            Some(loc) => packs.entry(loc.pack).or_default().push((loc.entry, pieces)),
            None => missing.push((blob, pieces.iter().map(|p| p.file).collect::<Vec<_>>())),
        }
    }
    let mut work: Vec<PackWork> = packs.into_iter().collect();
    work.sort_by_cached_key(|w| {
        w.1.iter()
            .flat_map(|(_, ps)| ps.iter().map(|p| p.file))
            .min()
    });
    for (_, items) in &mut work {
        items.sort_by_key(|(e, _)| e.offset);
    }
    missing.sort_by_key(|m| m.1.first().copied());
    (work, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BlobLocation;
    use crate::repo::pack::BlobKind;
    use crate::repo::tree::Extent;
    use std::cell::RefCell;

    fn entry(path: &str, kind: EntryKind, content: &[(u8, u64, u64)]) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000_000_000_000,
            ctime: 0,
            ino: 0,
            size: content.iter().map(|c| c.2).sum(),
            content: content
                .iter()
                .map(|&(b, offset, length)| Extent {
                    blob: BlobId([b; 32]),
                    offset,
                    length,
                })
                .collect(),
            target: None,
            rdev: 0,
        }
    }

    /// Blob `b` lies in pack `pack` at `offset`, sealed `length` bytes, `raw` plain.
    fn located(b: u8, pack: u8, offset: u64, length: u64, raw: u64) -> (BlobId, BlobLocation) {
        let id = BlobId([b; 32]);
        let entry = PackEntry {
            id,
            kind: BlobKind::Data,
            offset,
            length,
            raw_length: raw,
        };
        (
            id,
            BlobLocation {
                pack: PackId([pack; 32]),
                entry,
            },
        )
    }

    fn opts(overwrite: Overwrite) -> RestoreOptions {
        RestoreOptions {
            target: PathBuf::from("/t"),
            overwrite,
            ..RestoreOptions::default()
        }
    }

    fn plan_of(
        entries: Vec<Entry>,
        opts: &RestoreOptions,
        fresh: bool,
        lookup: &dyn Fn(&Path) -> Option<Existing>,
        blobs: &BlobMap,
    ) -> RestorePlan {
        plan(
            entries,
            &PlanInput {
                opts,
                fresh,
                lookup,
                blobs,
                span: (100, 1000),
            },
        )
    }

    /// A fresh target: everything is created, nothing is looked at; pieces
    /// are grouped by pack in the order of the files they feed, neighbours
    /// share a read, a blob the index lacks is named with its files.
    #[test]
    fn a_fresh_target_plans_reads_by_pack_and_names_missing_blobs() {
        let blobs: BlobMap = [
            located(1, 9, 0, 500, 400),
            located(2, 9, 550, 300, 300),
            located(3, 9, 5000, 100, 100),
            located(4, 7, 0, 100, 50),
        ]
        .into_iter()
        .map(|(_, l)| l)
        .collect();
        let entries = vec![
            entry("a", EntryKind::Dir, &[]),
            entry("a/one", EntryKind::File, &[(4, 0, 50)]),
            entry("a/two", EntryKind::File, &[(1, 0, 400), (2, 0, 300)]),
            entry("a/three", EntryKind::File, &[(3, 10, 90), (6, 0, 5)]),
            entry("a/empty", EntryKind::File, &[]),
        ];
        let looked = RefCell::new(0);
        let lookup = |_: &Path| {
            *looked.borrow_mut() += 1;
            None
        };
        let p = plan_of(entries, &opts(Overwrite::IfChanged), true, &lookup, &blobs);
        assert_eq!(*looked.borrow(), 0, "a fresh target is not looked at");
        assert!(p.failures.is_empty() && p.skipped == 0);
        assert!(p.entries.iter().all(|e| e.action == Action::Create));
        assert!(p.entries.iter().all(|e| e.entry.content.is_empty()));
        let pieces: Vec<u32> = p.entries.iter().map(|e| e.pieces).collect();
        assert_eq!(pieces, vec![0, 1, 2, 2, 0]);
        assert_eq!(p.bytes, 50 + 700 + 95);
        // Pack 7 feeds file 1 first, pack 9 file 2.
        let order: Vec<PackId> = p.packs.iter().map(|w| w.0).collect();
        assert_eq!(order, vec![PackId([7; 32]), PackId([9; 32])]);
        let offsets: Vec<u64> = p.packs[1].1.iter().map(|(e, _)| e.offset).collect();
        assert_eq!(offsets, vec![0, 550, 5000]);
        assert_eq!(
            p.packs[1].1[1].1,
            vec![Piece {
                file: 2,
                file_off: 400,
                blob_off: 0,
                len: 300
            }]
        );
        // Blobs 1 and 2 are 50 bytes apart (within the gap): one read.
        let reads: Vec<(usize, u64, u64)> = p
            .reads
            .iter()
            .map(|(n, r)| (*n, r.offset, r.length))
            .collect();
        assert_eq!(reads, vec![(0, 0, 100), (1, 0, 850), (1, 5000, 100)]);
        assert_eq!(p.missing, vec![(BlobId([6; 32]), vec![3])]);
    }

    /// What is in the target decides each entry's fate under each policy;
    /// a folder where a file goes is refused, a replacement is written
    /// beside its place.
    #[test]
    fn existing_entries_are_skipped_replaced_or_refused_by_policy() {
        let blobs: BlobMap = [located(1, 9, 0, 100, 10).1].into_iter().collect();
        let same = entry("same", EntryKind::File, &[(1, 0, 10)]);
        let mut link = entry("link", EntryKind::Symlink, &[]);
        link.target = Some(b"same".to_vec());
        let entries = || {
            vec![
                entry("d", EntryKind::Dir, &[]),
                same.clone(),
                entry("changed", EntryKind::File, &[(1, 0, 10)]),
                entry("folder", EntryKind::File, &[(1, 0, 10)]),
                link.clone(),
                entry("new", EntryKind::File, &[(1, 0, 10)]),
            ]
        };
        let lookup = |abs: &Path| match abs.to_str()? {
            "/t/d" | "/t/folder" => Some(Existing::Dir),
            "/t/same" => Some(Existing::File {
                len: 10,
                mtime: same.mtime as i128,
            }),
            "/t/changed" => Some(Existing::File { len: 10, mtime: 5 }),
            "/t/link" => Some(Existing::Symlink(Some(b"same".to_vec()))),
            _ => None,
        };
        let actions =
            |p: &RestorePlan| -> Vec<Action> { p.entries.iter().map(|e| e.action).collect() };
        use Action::*;

        let p = plan_of(
            entries(),
            &opts(Overwrite::IfChanged),
            false,
            &lookup,
            &blobs,
        );
        assert_eq!(
            actions(&p),
            vec![
                Create,
                SkipUnchanged,
                Replace,
                Replace,
                SkipUnchanged,
                Create
            ]
        );
        assert_eq!(p.skipped, 2);
        assert_eq!(p.failures.len(), 1);
        assert_eq!(p.failures[0].kind, FailKind::FolderInTheWay);
        assert_eq!(
            p.failures[0].message,
            "/t/folder is a folder; move it away to restore this file"
        );
        assert!(p.entries[3].failed && p.entries[3].temp.is_none());
        let temp = p.entries[2].temp.as_ref().unwrap();
        assert_eq!(temp.parent(), Some(Path::new("/t")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".coffer-restore-") && name.ends_with("-2-changed"),
            "{name}"
        );
        // Only the changed and the new file are read.
        let files: Vec<usize> = p.packs[0].1[0].1.iter().map(|x| x.file).collect();
        assert_eq!(files, vec![2, 5]);
        assert_eq!(p.bytes, 20);

        let p = plan_of(entries(), &opts(Overwrite::Never), false, &lookup, &blobs);
        assert_eq!(
            actions(&p),
            vec![
                Create,
                SkipExisting,
                SkipExisting,
                SkipExisting,
                SkipExisting,
                Create
            ]
        );
        assert!(p.failures.is_empty());
        let p = plan_of(entries(), &opts(Overwrite::Always), false, &lookup, &blobs);
        assert_eq!(
            actions(&p),
            vec![Create, Replace, Replace, Replace, Replace, Create]
        );
        assert_eq!(p.bytes, 30);
    }

    /// A path listed twice is restored once; a list pointing outside its
    /// blob is refused before anything is created.
    #[test]
    fn malformed_lists_are_refused_in_the_plan() {
        let blobs: BlobMap = [located(1, 9, 0, 100, 10).1].into_iter().collect();
        let entries = vec![
            entry("a", EntryKind::File, &[(1, 0, 10)]),
            entry("a", EntryKind::File, &[(1, 0, 10)]),
            entry("b", EntryKind::File, &[(1, 5, 10)]),
            entry("c", EntryKind::File, &[(1, 0, 4)]),
        ];
        let p = plan_of(
            entries,
            &opts(Overwrite::IfChanged),
            true,
            &|_| None,
            &blobs,
        );
        let kinds: Vec<(&[u8], FailKind)> = p
            .failures
            .iter()
            .map(|f| (f.path.as_slice(), f.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (b"a".as_slice(), FailKind::Refused),
                (b"b", FailKind::BadList)
            ]
        );
        let paths: Vec<&[u8]> = p.entries.iter().map(|e| e.entry.path.as_slice()).collect();
        assert_eq!(paths, vec![b"a".as_slice(), b"b", b"c"]);
        assert!(p.entries[1].failed && p.entries[1].pieces == 0);
        // Places in the pieces are places in the kept entries.
        let files: Vec<usize> = p.packs[0].1[0].1.iter().map(|x| x.file).collect();
        assert_eq!(files, vec![0, 2]);
        assert_eq!(p.bytes, 14);
    }

    #[test]
    fn a_look_at_the_target_tells_files_folders_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("f"), b"12345").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        assert!(matches!(
            look(&d.join("f")),
            Some(Existing::File { len: 5, .. })
        ));
        assert_eq!(look(d), Some(Existing::Dir));
        assert_eq!(
            look(&d.join("l")),
            Some(Existing::Symlink(Some(b"f".to_vec())))
        );
        assert_eq!(look(&d.join("none")), None);
    }
}
