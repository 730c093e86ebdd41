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
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

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
