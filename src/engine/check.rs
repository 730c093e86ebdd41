//! Check: every object the snapshots need exists, has the right size and,
//! with `read_data`, the right content. Damage is traced to the snapshots
//! (and, with the identity, the files) it affects.

use super::{Progress, decode_refs, for_each_entry, read_blobs};
use crate::Result;
use crate::catalog::BlobLocation;
use crate::repo::Repository;
use crate::repo::ids::{BlobId, PackId, SnapshotId};
use crate::repo::limits;
use crate::repo::pack::{BlobKind, PackEntry, open_blob, parse_pack};
use crate::repo::snapshot::Snapshot;
use crate::repo::tree::{ListCheck, TreeParser, Verdict, parse_index};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The storage object concerned (`data/ab/ab…`, `index/…`, `snapshots/…`).
    pub object: String,
    pub problem: String,
    /// Short ids of the snapshots that lose data.
    pub snapshots: Vec<String>,
    /// Files that lose data (known only with the identity).
    pub files: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    pub problems: Vec<Problem>,
    /// Not damage: e.g. packs left by a cut-off backup, reused by the next one.
    pub notes: Vec<String>,
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
}

pub fn check(repo: &Repository, read_data: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    // Blob → object holding it, for blobs we know are damaged or missing.
    let mut damaged: BTreeMap<String, (String, HashSet<BlobId>)> = BTreeMap::new();

    // The index, read fresh from the repository (the catalog is not trusted here).
    let mut blobs: HashMap<BlobId, BlobLocation> = HashMap::new();
    // Each pack's size and blob list, so per-pack work never scans every blob.
    let mut packs: HashMap<PackId, (u64, Vec<PackEntry>)> = HashMap::new();
    // Objects are read with several requests in flight: on S3 a check is
    // bound by requests, not by work.
    let index_ids = repo.list_indexes()?;
    for (id, read) in index_ids.iter().zip(repo.read_indexes(&index_ids)) {
        match read {
            Ok(index) => {
                for p in index.packs {
                    packs.insert(p.id, (p.size, p.blobs.clone()));
                    for b in p.blobs {
                        blobs.insert(
                            b.id,
                            BlobLocation {
                                pack: p.id,
                                entry: b,
                            },
                        );
                    }
                }
            }
            Err(e) => {
                damaged
                    .entry(id.key())
                    .or_insert((e.to_string(), HashSet::new()));
            }
        }
    }
    report.blobs = blobs.len();
    report.packs = packs.len();
    let by_pack = |pack: &PackId| -> HashSet<BlobId> {
        packs
            .get(pack)
            .map(|(_, b)| b.iter().map(|e| e.id).collect())
            .unwrap_or_default()
    };

    let stored: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    let mut size_notes: HashMap<PackId, String> = HashMap::new();
    for (pack, (size, _)) in &packs {
        match stored.get(pack) {
            None => {
                damaged.insert(pack.key(), ("missing from storage".into(), by_pack(pack)));
            }
            Some(s) if s != size => {
                let problem =
                    format!("size is {s} bytes, the index says {size} (truncated or altered)");
                if read_data {
                    // Reading it tells exactly which blobs survive.
                    size_notes.insert(*pack, problem);
                } else {
                    damaged.insert(pack.key(), (problem, by_pack(pack)));
                }
            }
            _ => {}
        }
    }
    let unindexed = stored.keys().filter(|p| !packs.contains_key(p)).count();
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} pack(s) are not in any index (left by an interrupted backup); the next backup reuses them"
        ));
    }

    if read_data {
        let todo: Vec<(PackId, u64)> = packs
            .iter()
            .filter(|(p, _)| !damaged.contains_key(&p.key()))
            .map(|(p, (s, _))| (*p, *s))
            .collect();
        progress.phase("read data", Some(todo.len() as u64));
        report.packs_read = todo.len();
        let found = super::par_map(todo, 2, |(pack, _)| {
            let entries = packs.get(&pack).map_or(&[][..], |(_, b)| b);
            let bad = read_pack(repo, &pack, entries);
            progress.advance(1);
            bad
        });
        for (pack, problem, bad) in found.into_iter().flatten() {
            let problem = match size_notes.get(&pack) {
                Some(note) => format!("{note}; {problem}"),
                None => problem,
            };
            damaged.insert(pack.key(), (problem, bad));
        }
    }

    // Snapshots: readable, and every blob they need indexed and undamaged.
    let all_damaged: HashSet<BlobId> = damaged
        .values()
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    let mut affected: HashMap<String, Vec<(SnapshotId, Snapshot)>> = HashMap::new();
    let snap_ids = repo.list_snapshot_ids()?;
    report.snapshots = snap_ids.len();
    let mut snaps = Vec::with_capacity(snap_ids.len());
    for (id, read) in snap_ids.iter().zip(repo.read_snapshots(&snap_ids)) {
        match read {
            Ok(s) => snaps.push((*id, s)),
            Err(e) => report.problems.push(Problem {
                object: id.key(),
                problem: e.to_string(),
                snapshots: vec![id.short()],
                files: vec![],
            }),
        }
    }
    check_file_lists(repo, &blobs, &snaps, read_data, progress, &mut report);
    // Consecutive snapshots share most blobs of their reference lists: each
    // distinct blob is read once.
    let mut wanted: Vec<BlobId> = snaps
        .iter()
        .flat_map(|(_, s)| s.refs.iter().copied())
        .filter(|b| blobs.contains_key(b))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    wanted.sort_by_key(|b| blobs.get(b).map(|l| (l.pack.0, l.entry.offset)));
    let refs_blobs: HashMap<BlobId, std::result::Result<Vec<u8>, String>> = wanted
        .iter()
        .copied()
        .zip(read_blobs(repo, &blobs, &wanted).map(|r| r.map_err(|e| e.to_string())))
        .collect();
    for (id, snap) in snaps {
        let refs = match reference_list(&snap, &refs_blobs) {
            Ok(r) => r,
            Err(e) => {
                report.problems.push(Problem {
                    object: id.key(),
                    problem: format!("reference list unreadable: {e}"),
                    snapshots: vec![id.short()],
                    files: vec![],
                });
                continue;
            }
        };
        let missing: Vec<&BlobId> = refs
            .iter()
            .chain(&snap.refs)
            .filter(|b| !blobs.contains_key(b))
            .collect();
        if !missing.is_empty() {
            report.problems.push(Problem {
                object: id.key(),
                problem: format!("{} blob(s) it needs are in no index", missing.len()),
                snapshots: vec![id.short()],
                files: vec![],
            });
        }
        for (object, (_, bad)) in &damaged {
            if refs.iter().chain(&snap.tree).any(|b| bad.contains(b)) {
                affected
                    .entry(object.clone())
                    .or_default()
                    .push((id, snap.clone()));
            }
        }
    }

    for (object, (problem, bad)) in damaged {
        let snaps = affected.remove(&object).unwrap_or_default();
        let mut files = Vec::new();
        if repo.keys.is_operator() {
            for (_, snap) in &snaps {
                if snap.tree.iter().any(|t| all_damaged.contains(t)) {
                    files.push("(the snapshot's file list itself)".to_string());
                    continue;
                }
                let _ = for_each_entry(repo, &blobs, snap, |e| {
                    if e.content.iter().any(|x| bad.contains(&x.blob)) {
                        files.push(format!("/{}", e.path_display()));
                    }
                    Ok(())
                });
            }
            files.sort();
            files.dedup();
        }
        report.problems.push(Problem {
            object,
            problem,
            snapshots: snaps.iter().map(|(id, _)| id.short()).collect(),
            files,
        });
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

/// A snapshot's reference list from its blobs, read beforehand.
fn reference_list(
    snap: &Snapshot,
    read: &HashMap<BlobId, std::result::Result<Vec<u8>, String>>,
) -> std::result::Result<Vec<BlobId>, String> {
    let mut parts = Vec::with_capacity(snap.refs.len());
    for b in &snap.refs {
        match read.get(b) {
            Some(Ok(data)) => parts.push(data.as_slice()),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(format!("blob {} is missing from the index", b.short())),
        }
    }
    decode_refs(parts).map_err(|e| e.to_string())
}

/// Downloads one pack and verifies it. Returns (pack, problem, damaged blobs).
fn read_pack(
    repo: &Repository,
    pack: &PackId,
    indexed: &[PackEntry],
) -> Option<(PackId, String, HashSet<BlobId>)> {
    let all: HashSet<BlobId> = indexed.iter().map(|e| e.id).collect();
    let bytes = match repo
        .store
        .get_capped(&pack.key(), limits::pack(repo.config.pack_size))
    {
        Ok(b) => b,
        Err(e) => return Some((*pack, e.to_string(), all)),
    };
    let hash_ok = blake3::hash(&bytes).as_bytes() == &pack.0;
    // Blob by blob: with the identity every blob can be opened, so the damage
    // is located exactly; without it only bookkeeping blobs can be.
    let mut bad = HashSet::new();
    for e in indexed {
        let end = e.offset.saturating_add(e.length);
        let readable = repo.keys.is_operator() || e.kind == BlobKind::Refs;
        let ok = match bytes.get(e.offset as usize..end as usize) {
            None => false,
            Some(sealed) if readable => open_blob(&repo.keys, e, pack, sealed).is_ok(),
            Some(_) => hash_ok,
        };
        if !ok {
            bad.insert(e.id);
        }
    }
    if hash_ok && bad.is_empty() {
        if let Err(e) = parse_pack(&repo.keys, pack, &bytes) {
            return Some((*pack, e.to_string(), HashSet::new()));
        }
        return None;
    }
    let problem = if hash_ok {
        format!("{} blob(s) fail to decrypt or verify", bad.len())
    } else {
        format!(
            "content does not match its name (altered or damaged); {} blob(s) affected",
            bad.len()
        )
    };
    Some((*pack, problem, bad))
}

// ---------------------------------------------------------------------------
// File lists: what restore would refuse
// ---------------------------------------------------------------------------

/// Entries named one by one per snapshot; past this a problem counts the rest.
const NAMED_PER_SNAPSHOT: usize = 100;

/// How one pass over a snapshot's file list ended.
enum ListPass {
    Done,
    /// A streaming pass met an entry out of walk order.
    Unordered,
    /// A blob could not be read: damage, which the rest of `check` reports.
    Unreadable,
}

/// Judges every snapshot's file list by the rules restore applies (the
/// same `Entry::parse_line`, [`TreeParser`] cap, `Entry::piece_outside` and
/// [`ListCheck`]): a list restore would refuse whole, and each entry it
/// would refuse, is a problem in `report` naming the snapshot and the entry.
/// A list in walk order is checked in constant memory; one out of order is
/// read a second time, remembering its paths. Only with `read_data` and the
/// identity (file lists are sealed to the operator).
fn check_file_lists(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snaps: &[(SnapshotId, Snapshot)],
    read_data: bool,
    progress: &dyn Progress,
    report: &mut CheckReport,
) {
    if !read_data || !repo.keys.is_operator() {
        return;
    }
    progress.phase("file lists", Some(snaps.len() as u64));
    let problems = &mut report.problems;
    for (id, snap) in snaps {
        let mut found = Vec::new();
        if let ListPass::Unordered =
            judge_file_list(repo, blobs, snap, ListCheck::streaming(), &mut found)
        {
            found.clear();
            judge_file_list(repo, blobs, snap, ListCheck::remembering(), &mut found);
        }
        let more = found.len().saturating_sub(NAMED_PER_SNAPSHOT);
        for (problem, file) in found.into_iter().take(NAMED_PER_SNAPSHOT) {
            problems.push(Problem {
                object: id.key(),
                problem: format!("file list: {problem}"),
                snapshots: vec![id.short()],
                files: file.into_iter().collect(),
            });
        }
        if more > 0 {
            problems.push(Problem {
                object: id.key(),
                problem: format!("file list: {more} more entries that restore would refuse"),
                snapshots: vec![id.short()],
                files: vec![],
            });
        }
        progress.advance(1);
    }
}

/// One pass over a snapshot's file list; what restore would refuse goes
/// to `found` as (problem, the entry's path). A tree index (format 2) must
/// point where entries start, at the entries it names: `restore` of chosen
/// paths and `cat` go through it and refuse one that does not.
fn judge_file_list(
    repo: &Repository,
    blobs: &HashMap<BlobId, BlobLocation>,
    snap: &Snapshot,
    mut rules: ListCheck,
    found: &mut Vec<(String, Option<String>)>,
) -> ListPass {
    let what = "snapshot file list";
    let raw_length = |b: &BlobId| blobs.get(b).map(|l| l.entry.raw_length);
    // (blob, offset) → the path the tree index says starts there.
    let mut expected: BTreeMap<(usize, usize), Vec<u8>> = BTreeMap::new();
    if let Some(ix) = snap.usable_tree_index() {
        let Some(Ok(data)) = read_blobs(repo, blobs, &[ix]).next() else {
            return ListPass::Unreadable;
        };
        match parse_index(&data) {
            Ok(lines) => {
                for l in lines {
                    expected.insert((l.blob as usize, l.offset as usize), l.path);
                }
            }
            Err(e) => found.push((
                format!(
                    "its tree index is corrupt ({e}); restore of chosen paths and cat refuse it"
                ),
                None,
            )),
        }
    }
    let mut starts: VecDeque<(usize, usize)> = VecDeque::new();
    let mut parser = TreeParser::default();
    for (k, data) in read_blobs(repo, blobs, &snap.tree).enumerate() {
        let Ok(data) = data else {
            return ListPass::Unreadable;
        };
        if !expected.is_empty() {
            // Where the entries that start in this blob start.
            let mut at = match parser.in_line() {
                true => data.iter().position(|&b| b == b'\n').map(|p| p + 1),
                false => Some(0),
            };
            while let Some(p) = at.filter(|&p| p < data.len()) {
                starts.push_back((k, p));
                at = data[p..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|q| p + q + 1);
            }
        }
        let entries = match parser.feed(&data, what) {
            Ok(entries) => entries,
            Err(e) => {
                found.push((format!("{e}; restore refuses the whole list"), None));
                return ListPass::Done;
            }
        };
        for e in entries {
            let path = format!("/{}", e.path_display());
            if let Some(named) = starts.pop_front().and_then(|s| expected.remove(&s))
                && named != e.path
            {
                found.push((
                    format!(
                        "its tree index names /{} where {path} starts; restore of chosen paths and cat refuse it",
                        String::from_utf8_lossy(&named)
                    ),
                    Some(path.clone()),
                ));
            }
            if let Some(outside) = e.piece_outside(raw_length) {
                found.push((
                    format!("{path}: {outside}; restore refuses it"),
                    Some(path.clone()),
                ));
            }
            match rules.entry(&e.path, e.kind) {
                Verdict::Ok => {}
                Verdict::Refused(r) => found.push((format!("{path}: {}", r.reason()), Some(path))),
                Verdict::Unordered => return ListPass::Unordered,
            }
        }
    }
    if let Err(e) = parser.finish(what) {
        found.push((format!("{e}; restore refuses the whole list"), None));
    }
    for ((blob, offset), path) in expected {
        found.push((
            format!(
                "its tree index says /{} starts at byte {offset} of list blob {blob}, where no entry starts; restore of chosen paths and cat refuse it",
                String::from_utf8_lossy(&path)
            ),
            None,
        ));
    }
    ListPass::Done
}
