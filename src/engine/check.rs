//! Check: every object the snapshots need exists, has the right size and,
//! with `read_data`, the right content. Damage is traced to the snapshots
//! (and, with the identity, the files) that lose data; a blob stored again
//! elsewhere (a backup healed it) costs no snapshot anything. What a read
//! finds bad is recorded in the repository (`damage/`), so every later
//! command, on every machine, knows it.

use super::health::{Health, PackInfo};
use super::{Progress, decode_refs, for_each_entry, is_bad_object, read_blobs};
use crate::Result;
use crate::catalog::{BlobCopies, BlobLocation, BlobMap};
use crate::repo::Repository;
use crate::repo::damage::{BadPack, DamageRecord};
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
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
    /// Not damage: e.g. packs left by a cut-off backup, reused by the next
    /// one, or damaged packs whose every needed blob is stored elsewhere.
    pub notes: Vec<String>,
    pub snapshots: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    /// On a repository under Object Lock: objects history needs for longer
    /// than their lock runs (not damage: nothing is lost yet).
    pub lock_gaps: Vec<LockGapRow>,
    /// Damage records written for what this check found.
    pub damage_recorded: Vec<String>,
    /// Damage records deleted: every pack they name read back whole.
    pub damage_cleared: Vec<String>,
    /// Snapshots that claim a time later than storage recorded writing
    /// them ([`super::is_suspect`]). Not damage: `ok` is not changed by them.
    pub suspect: Vec<SuspectSnapshot>,
    /// Ids of the snapshots no problem names (verified, with `read_data`
    /// and the identity).
    #[serde(skip)]
    pub sound: Vec<SnapshotId>,
}

/// An object whose lock ends before history stops needing it.
#[derive(Debug, Serialize)]
pub struct LockGapRow {
    pub object: String,
    pub problem: String,
    /// When its lock ends (RFC 3339); null: none, or it could not be read.
    pub locked_until: Option<String>,
    pub needed_until: String,
    /// When its lock ends, as the ledger should have it (the epoch where
    /// there is none).
    #[serde(skip)]
    pub ends: jiff::Timestamp,
}

/// A snapshot whose claimed time storage's record contradicts.
#[derive(Debug, Clone, Serialize)]
pub struct SuspectSnapshot {
    /// Its object (`snapshots/…`).
    pub object: String,
    /// Its short id.
    pub snapshot: String,
    /// The time it claims.
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: jiff::Timestamp,
    /// When storage recorded writing it.
    #[serde(with = "crate::time::serde_rfc3339")]
    pub stored: jiff::Timestamp,
}

impl std::fmt::Display for SuspectSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::states::claim_against_storage(
            self.time,
            self.stored,
        ))
    }
}

/// One damaged object: why, and the blobs it can no longer give.
struct Damage {
    problem: String,
    blobs: HashSet<BlobId>,
}

impl Damage {
    fn of(problem: String) -> Damage {
        Damage {
            problem,
            blobs: HashSet::new(),
        }
    }

    fn with(self, blobs: HashSet<BlobId>) -> Damage {
        Damage { blobs, ..self }
    }
}

/// Why a snapshot's reference list can not be read.
#[derive(Clone, Debug, thiserror::Error)]
enum ListUnreadable {
    /// A blob of it could not be read (the read's error, as text: one
    /// blob's failure is told for every snapshot that shares it).
    #[error("{0}")]
    Read(String),
    #[error("blob {} is missing from the index", .0.short())]
    Missing(BlobId),
    #[error("{0}")]
    Decode(String),
}

/// Runs a check: [`gather`] reads the index, the pack listing and the
/// damage records; [`plan`] decides from them alone what is already known
/// damaged and which packs are read ([`CheckPlan`]); the executor reads
/// them, the snapshots and their lists, and traces damage to snapshots.
pub fn check(repo: &Repository, read_data: bool, progress: &dyn Progress) -> Result<CheckReport> {
    let facts = gather(repo)?;
    let plan = plan(facts, read_data);
    execute(repo, plan, progress)
}

/// What storage holds, as check reads it first.
struct CheckFacts {
    index: FreshIndex,
    stored: HashMap<PackId, PackInfo>,
    /// The damage records that could be read.
    records: Vec<([u8; 32], DamageRecord)>,
    /// Damage records that could not be read: (key, what is wrong).
    bad_records: Vec<(String, Damage)>,
    /// For packs stored longer than indexed: the chunk-length line they
    /// begin with, if they begin with one (an upload's aws-chunked framing).
    framing: HashMap<PackId, String>,
}

/// Reads the index (afresh, not from the catalog), lists the packs, and
/// reads the damage records.
fn gather(repo: &Repository) -> Result<CheckFacts> {
    let index = read_index_fresh(repo)?;
    let stored: HashMap<PackId, PackInfo> = repo
        .store
        .list("data/")?
        .into_iter()
        .filter_map(|o| {
            let info = PackInfo {
                size: o.size,
                modified: o.modified,
            };
            PackId::from_key(&o.key).map(|p| (p, info))
        })
        .collect();
    let mut records = Vec::new();
    let mut bad_records = Vec::new();
    for o in repo.list_damage()? {
        match repo.read_damage(&o) {
            Ok(r) => records.push((o.id, r)),
            Err(e) => {
                let e = crate::Error::from(e);
                if !is_bad_object(&e) {
                    return Err(e);
                }
                bad_records.push((o.key.clone(), Damage::of(e.to_string())));
            }
        }
    }
    // One ranged read of 24 bytes per pack stored longer than indexed.
    let mut framing = HashMap::new();
    for (pack, (size, _)) in &index.packs {
        if let Some(s) = stored.get(pack).filter(|s| s.size > *size)
            && let Some(line) = crate::repo::caps::framing(&repo.store, &pack.key(), s.size)
        {
            framing.insert(*pack, line);
        }
    }
    Ok(CheckFacts {
        index,
        stored,
        records,
        bad_records,
        framing,
    })
}

/// What a check knows before it reads data, and what it will read.
struct CheckPlan {
    read_data: bool,
    index: FreshIndex,
    health: Health,
    /// Each indexed pack's size.
    sizes: HashMap<PackId, u64>,
    /// Objects known damaged already, by key.
    damaged: BTreeMap<String, Damage>,
    /// Packs of the wrong size that are read (with `read_data`): the
    /// problem is told with what the read finds.
    size_notes: HashMap<PackId, String>,
    /// The packs read whole and verified (with `read_data`): every indexed
    /// pack not known damaged already.
    to_read: Vec<PackId>,
    notes: Vec<String>,
}

/// Decides, without I/O, what is known damaged and what will be read.
fn plan(facts: CheckFacts, read_data: bool) -> CheckPlan {
    let CheckFacts {
        mut index,
        stored,
        records,
        bad_records,
        framing,
    } = facts;
    let mut damaged: BTreeMap<String, Damage> = std::mem::take(&mut index.unreadable)
        .into_iter()
        .chain(bad_records)
        .collect();
    let sizes: HashMap<PackId, u64> = index.packs.iter().map(|(p, (s, _))| (*p, *s)).collect();
    let health = Health::new(stored, &sizes, records);
    let mut size_notes: HashMap<PackId, String> = HashMap::new();
    for (pack, (size, _)) in &index.packs {
        let problem = match health.stored.get(pack) {
            None => {
                let blobs = pack_blobs(&index.packs, pack);
                damaged.insert(
                    pack.key(),
                    Damage::of("missing from storage".into()).with(blobs),
                );
                continue;
            }
            Some(s) if s.size != *size => size_problem(s.size, *size, framing.get(pack)),
            _ => continue,
        };
        if read_data {
            // Reading it tells exactly which blobs survive.
            size_notes.insert(*pack, problem);
        } else {
            damaged.insert(
                pack.key(),
                Damage::of(problem).with(pack_blobs(&index.packs, pack)),
            );
        }
    }
    let mut notes = Vec::new();
    let unindexed = health
        .stored
        .keys()
        .filter(|p| !index.packs.contains_key(p))
        .count();
    if unindexed > 0 {
        notes.push(format!(
            "{unindexed} pack(s) are not in any index (left by an interrupted backup, or their index is lost); the next backup or `coffer repair index` adopts them"
        ));
    }
    let mut to_read = Vec::new();
    if read_data {
        to_read = index
            .packs
            .keys()
            .filter(|p| !damaged.contains_key(&p.key()))
            .copied()
            .collect();
        to_read.sort();
    } else {
        // Earlier findings, for the packs this check does not read again.
        recorded_damage(&health, &index.packs, &mut damaged);
        // Packs storage says were written after their index: replaced in
        // place by someone. Only reading them tells whether they changed.
        let suspects = health.suspects(&index.pack_indexes, &index.index_times, &HashMap::new());
        if let Some(first) = suspects.first() {
            notes.push(format!(
                "{} pack(s) were written after the index that lists them (replaced in storage?), e.g. {}; `coffer check --read-data` verifies them",
                suspects.len(),
                first.key()
            ));
        }
    }
    CheckPlan {
        read_data,
        index,
        health,
        sizes,
        damaged,
        size_notes,
        to_read,
        notes,
    }
}

/// The problem of a pack stored at `stored` bytes that its index says
/// holds `indexed`. A pack stored with the chunk framing of its upload
/// (`framing`: its first line) is longer: named, with what to do.
fn size_problem(stored: u64, indexed: u64, framing: Option<&String>) -> String {
    match framing {
        Some(line) => format!(
            "size is {stored} bytes, the index says {indexed}, and it begins `{line}\\r\\n`: stored with its upload's aws-chunked framing as data (the server does not understand aws-chunked uploads with trailing checksums: turn them off with `checksums = \"when_required\"` in the profile's [s3] section, AWS_REQUEST_CHECKSUM_CALCULATION unset, and back up again: the next backup stores the lost data again)"
        ),
        None => format!("size is {stored} bytes, the index says {indexed} (truncated or altered)"),
    }
}

/// Whether a copy of a blob is bad: unusable, or in an object found damaged.
fn bad_copy(health: &Health, damaged: &BTreeMap<String, Damage>, loc: &BlobLocation) -> bool {
    !health.usable(loc)
        || damaged
            .get(&loc.pack.key())
            .is_some_and(|d| d.blobs.contains(&loc.entry.id))
}

/// Runs the plan: reads the packs it names (recording what is bad), the
/// snapshots, their file and reference lists, and names the snapshots
/// and files each damaged object costs.
fn execute(repo: &Repository, plan: CheckPlan, progress: &dyn Progress) -> Result<CheckReport> {
    let CheckPlan {
        read_data,
        mut index,
        mut health,
        sizes,
        mut damaged,
        size_notes,
        to_read,
        notes,
    } = plan;
    let mut report = CheckReport {
        blobs: index.copies.len(),
        packs: index.packs.len(),
        notes,
        ..Default::default()
    };
    let mut found = DamageRecord::new("check");
    if read_data {
        let (bad_packs, sound) = read_all_packs(
            repo,
            &index.packs,
            to_read,
            &size_notes,
            &mut damaged,
            progress,
            &mut report,
        )?;
        found.packs.extend(bad_packs);
        health = clear_stale_records(repo, health, &sizes, &sound, &mut report);
    }
    // A blob is lost when no copy of it is good.
    let lost_blobs: HashSet<BlobId> = damaged
        .values()
        .flat_map(|d| d.blobs.iter())
        .filter(|b| index.copies.of(b).all(|l| bad_copy(&health, &damaged, &l)))
        .copied()
        .collect();
    let snaps = read_snapshots(repo, &mut report)?;
    lock_gaps(repo, &index, &snaps, &mut report);
    // One good copy of each blob (the first, if none is good), for reading
    // reference lists and file lists; the copies go as it is made.
    let good: BlobMap =
        std::mem::take(&mut index.copies).into_chosen(|l| !bad_copy(&health, &damaged, l));
    check_file_lists(
        repo,
        &good,
        &snaps,
        read_data,
        progress,
        &mut report,
        &mut found,
    );
    let traced = Traced {
        damaged: &damaged,
        lost: &lost_blobs,
        health: &health,
    };
    let (named, affected) = traced.snapshots(repo, &good, &snaps, read_data, &mut report);
    name_damage(repo, damaged, affected, &good, &lost_blobs, &mut report);
    keep_unrecorded(&mut found, &health);
    if !found.is_empty() {
        report.damage_recorded = repo.write_damage(&found)?;
    }
    report.sound = snaps
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !named.contains(id))
        .collect();
    report.ok = report.problems.is_empty() && report.lock_gaps.is_empty();
    Ok(report)
}

/// On a repository under Object Lock: every object history needs whose
/// lock ends too early (or that has none) is a problem.
fn lock_gaps(
    repo: &Repository,
    index: &FreshIndex,
    snaps: &[(SnapshotId, Snapshot)],
    report: &mut CheckReport,
) {
    let Some(lock) = repo.config.object_lock else {
        return;
    };
    if repo.store.as_of().is_some() {
        // Storage keeps the locks of current versions, not of the past read.
        report
            .notes
            .push("locks are not checked with --as-of".into());
        return;
    }
    let window = crate::time::days(i64::from(lock.window_days));
    let snapshots: Vec<(String, jiff::Timestamp)> =
        snaps.iter().map(|(id, s)| (id.key(), s.time)).collect();
    let indexes: HashSet<&IndexId> = index
        .pack_indexes
        .values()
        .flatten()
        .chain(index.index_times.keys())
        .collect();
    let others = index
        .packs
        .keys()
        .map(PackId::key)
        .chain(indexes.into_iter().map(IndexId::key))
        .chain(
            [
                crate::repo::CONFIG_KEY,
                crate::repo::KEYRING_KEY,
                crate::repo::KEYRING_COPY_KEY,
            ]
            .iter()
            .map(|k| k.to_string()),
        );
    let needed = super::locks::needed_until(window, jiff::Timestamp::now(), &snapshots, others);
    for gap in super::locks::gaps(repo, &needed) {
        report.lock_gaps.push(LockGapRow {
            problem: gap.text(),
            locked_until: gap.until.map(crate::time::rfc3339_secs),
            needed_until: crate::time::rfc3339_secs(gap.needed),
            ends: gap.until.unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            object: gap.key,
        });
    }
}

/// Reads every snapshot; one that can not be read is a problem, one that
/// claims a time later than storage recorded writing it is suspect.
fn read_snapshots(
    repo: &Repository,
    report: &mut CheckReport,
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let listed: Vec<(SnapshotId, Option<jiff::Timestamp>)> = repo
        .store
        .list("snapshots/")?
        .into_iter()
        .filter_map(|o| Some((SnapshotId::from_key(&o.key)?, o.modified)))
        .collect();
    let snap_ids: Vec<SnapshotId> = listed.iter().map(|(id, _)| *id).collect();
    report.snapshots = snap_ids.len();
    let mut snaps = Vec::with_capacity(snap_ids.len());
    for ((id, stored), read) in listed.iter().zip(repo.read_snapshots(&snap_ids)) {
        match read {
            Ok(mut s) => {
                s.stored = *stored;
                if let Some(stored) = s.stored.filter(|_| super::is_suspect(&s)) {
                    report.suspect.push(SuspectSnapshot {
                        object: id.key(),
                        snapshot: id.short(),
                        time: s.time,
                        stored,
                    });
                }
                snaps.push((*id, s));
            }
            Err(e) => {
                let e = crate::Error::from(e);
                if !is_bad_object(&e) {
                    return Err(e);
                }
                report.problems.push(snapshot_problem(
                    id,
                    format!("{e}; the snapshot can not be read"),
                ));
            }
        }
    }
    Ok(snaps)
}

fn snapshot_problem(id: &SnapshotId, problem: String) -> Problem {
    Problem {
        object: id.key(),
        problem,
        snapshots: vec![id.short()],
        files: vec![],
    }
}

/// The snapshots each damaged object costs, by the object's key.
type Affected = HashMap<String, Vec<(SnapshotId, Snapshot)>>;

/// What tracing damage to snapshots goes by.
struct Traced<'a> {
    damaged: &'a BTreeMap<String, Damage>,
    /// Blobs no good copy of is left.
    lost: &'a HashSet<BlobId>,
    health: &'a Health,
}

impl Traced<'_> {
    /// Judges every snapshot: readable, and every blob it needs has a good
    /// copy. Returns the snapshots a problem names, and the snapshots each
    /// damaged object costs.
    fn snapshots(
        &self,
        repo: &Repository,
        good: &BlobMap,
        snaps: &[(SnapshotId, Snapshot)],
        read_data: bool,
        report: &mut CheckReport,
    ) -> (HashSet<SnapshotId>, Affected) {
        let mut affected: Affected = HashMap::new();
        let mut named: HashSet<SnapshotId> = HashSet::new();
        // With --read-data and the identity the lists are judged afresh.
        let fresh = read_data && repo.keys.is_operator();
        for_each_reference_list(repo, good, snaps, |id, snap, refs| {
            if let Some(why) = self.health.snapshot_problem(id).filter(|_| !fresh) {
                named.insert(*id);
                report.problems.push(snapshot_problem(
                    id,
                    format!("recorded as damaged: its file list: {why}"),
                ));
            }
            // The damaged object that held the list (or the file list)
            // costs this snapshot too: named with it.
            let refs = match refs {
                Ok(r) => r,
                Err(e) => {
                    named.insert(*id);
                    report.problems.push(snapshot_problem(
                        id,
                        format!("reference list unreadable: {e}"),
                    ));
                    self.costs(&snap.refs, snap, id, &mut affected);
                    return;
                }
            };
            let missing = refs
                .iter()
                .chain(&snap.refs)
                .filter(|b| !good.contains_key(b))
                .count();
            if missing > 0 {
                named.insert(*id);
                report.problems.push(snapshot_problem(
                    id,
                    format!("{missing} blob(s) it needs are in no index"),
                ));
            }
            if self.costs(&refs, snap, id, &mut affected) {
                named.insert(*id);
            }
        });
        (named, affected)
    }

    /// Adds the snapshot to every damaged object that lost one of `refs`
    /// or of its file list; whether any did.
    fn costs(
        &self,
        refs: &[BlobId],
        snap: &Snapshot,
        id: &SnapshotId,
        affected: &mut Affected,
    ) -> bool {
        let mut any = false;
        for (object, d) in self.damaged {
            if refs
                .iter()
                .chain(&snap.tree)
                .any(|b| d.blobs.contains(b) && self.lost.contains(b))
            {
                any = true;
                affected
                    .entry(object.clone())
                    .or_default()
                    .push((*id, snap.clone()));
            }
        }
        any
    }
}

/// Snapshots whose reference lists are read together: their new blobs in
/// shared requests (on S3 several in flight).
const REFS_WINDOW: usize = 32;

/// Hands `f` each snapshot's reference list, in order. Each blob is read
/// once, when a window first needs it, and held only until the last
/// snapshot that needs it: what is held is the lists still to come of the
/// repository's series (one list each, as consecutive snapshots of a series
/// share most blobs, whatever other servers' snapshots lie between), not
/// the history's.
fn for_each_reference_list(
    repo: &Repository,
    good: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    f: impl FnMut(&SnapshotId, &Snapshot, std::result::Result<Vec<BlobId>, ListUnreadable>),
) {
    let read = |wanted: &[BlobId]| -> Vec<_> {
        read_blobs(repo, good, wanted)
            .map(|r| r.map_err(|e| ListUnreadable::Read(e.to_string())))
            .collect()
    };
    each_reference_list(good, snaps, REFS_WINDOW, read, f);
}

/// [`for_each_reference_list`] with the window and the reads given.
fn each_reference_list(
    good: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    window: usize,
    mut read: impl FnMut(&[BlobId]) -> Vec<std::result::Result<Vec<u8>, ListUnreadable>>,
    mut f: impl FnMut(&SnapshotId, &Snapshot, std::result::Result<Vec<BlobId>, ListUnreadable>),
) {
    let last_use = super::read::last_uses(snaps.iter().map(|(_, s)| s.refs.as_slice()));
    let window = window.max(1);
    let mut held: HashMap<BlobId, std::result::Result<Vec<u8>, ListUnreadable>> = HashMap::new();
    for (w, batch) in snaps.chunks(window).enumerate() {
        let start = w * window;
        held.retain(|b, _| last_use.get(b).is_some_and(|last| *last >= start));
        let mut wanted: Vec<BlobId> = batch
            .iter()
            .flat_map(|(_, s)| s.refs.iter().copied())
            .filter(|b| good.contains_key(b) && !held.contains_key(b))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        wanted.sort_by_key(|b| good.get(b).map(|l| (l.pack.0, l.entry.offset)));
        held.extend(wanted.iter().copied().zip(read(&wanted)));
        for (id, snap) in batch {
            f(id, snap, reference_list(snap, &held));
        }
    }
}

/// One problem per damaged object: the snapshots it costs and, with the
/// identity, their files; a damaged pack that costs none is a note.
fn name_damage(
    repo: &Repository,
    damaged: BTreeMap<String, Damage>,
    mut affected: Affected,
    good: &BlobMap,
    lost: &HashSet<BlobId>,
    report: &mut CheckReport,
) {
    let lost = |id: &BlobId| lost.contains(id);
    for (object, d) in damaged {
        let snaps = affected.remove(&object).unwrap_or_default();
        let is_pack = object.starts_with("data/");
        if is_pack && snaps.is_empty() {
            // Damage that costs no snapshot anything: what it held is not
            // needed, or a backup stored it again elsewhere.
            report.notes.push(format!(
                "{object} is damaged ({}), but no snapshot needs what it lost (not needed, or stored again elsewhere); prune removes it",
                d.problem
            ));
            continue;
        }
        let mut files = Vec::new();
        if repo.keys.is_operator() {
            for (_, snap) in &snaps {
                if snap.tree.iter().any(|t| d.blobs.contains(t) && lost(t)) {
                    files.push("(the snapshot's file list itself)".to_string());
                    continue;
                }
                let _ = for_each_entry(repo, good, snap, |e| {
                    if e.content
                        .iter()
                        .any(|x| d.blobs.contains(&x.blob) && lost(&x.blob))
                    {
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
            problem: d.problem,
            snapshots: snaps.iter().map(|(id, _)| id.short()).collect(),
            files,
        });
    }
}

/// Reads the packs of the plan and verifies each (every blob
/// with the identity; its name and the bookkeeping blobs without). Returns
/// what was found bad, for a damage record, and the packs that read whole.
fn read_all_packs(
    repo: &Repository,
    packs: &HashMap<PackId, (u64, Vec<PackEntry>)>,
    todo: Vec<PackId>,
    size_notes: &HashMap<PackId, String>,
    damaged: &mut BTreeMap<String, Damage>,
    progress: &dyn Progress,
    report: &mut CheckReport,
) -> Result<(Vec<BadPack>, HashSet<PackId>)> {
    progress.phase("read data", Some(todo.len() as u64));
    report.packs_read = todo.len();
    let read = super::par_map(todo, 2, |pack| {
        let entries = packs.get(&pack).map_or(&[][..], |(_, b)| b);
        let bad = read_pack(repo, &pack, entries).map(|r| (pack, r));
        progress.advance(1);
        bad
    });
    let mut sound: HashSet<PackId> = HashSet::new();
    let mut found = Vec::new();
    for r in read {
        let (pack, problem, bad, whole) = match r? {
            (pack, None) => {
                sound.insert(pack);
                continue;
            }
            (_, Some(finding)) => finding,
        };
        let problem = match size_notes.get(&pack) {
            Some(note) => format!("{note}; {problem}"),
            None => problem,
        };
        if !bad.is_empty() || whole {
            let mut blobs: Vec<BlobId> = if whole {
                Vec::new()
            } else {
                bad.iter().copied().collect()
            };
            blobs.sort();
            found.push(BadPack {
                id: pack,
                reason: problem.clone(),
                blobs,
            });
        }
        damaged.insert(
            pack.key(),
            Damage {
                problem,
                blobs: bad,
            },
        );
    }
    Ok((found, sound))
}

/// A pack that hashes to its name holds the bytes its writer uploaded: an
/// earlier finding about it was a bad read, not damage. Records that name
/// only such packs go, and the check judges by what it read: the health
/// without them.
fn clear_stale_records(
    repo: &Repository,
    mut health: Health,
    sizes: &HashMap<PackId, u64>,
    sound: &HashSet<PackId>,
    report: &mut CheckReport,
) -> Health {
    let (stale, kept): (Vec<_>, Vec<_>) = health.records.drain(..).partition(|(_, r)| {
        r.snapshots.is_empty() && r.packs.iter().all(|p| sound.contains(&p.id))
    });
    let keys: Vec<String> = stale
        .iter()
        .map(|(id, _)| format!("{}{}", crate::repo::damage::PREFIX, hex::encode(id)))
        .collect();
    match repo.store.delete_many(&keys) {
        Ok(()) => report.damage_cleared = keys,
        Err(e) => report.notes.push(format!(
            "{} damage record(s) name only packs that read back whole now, but could not be deleted: {e}",
            keys.len()
        )),
    }
    Health::new(health.stored.clone(), sizes, kept)
}

/// The damage earlier reads recorded, for the packs this check does not
/// read again: whole packs, then single blobs.
fn recorded_damage(
    health: &Health,
    packs: &HashMap<PackId, (u64, Vec<PackEntry>)>,
    damaged: &mut BTreeMap<String, Damage>,
) {
    for (pack, why) in health.bad_packs() {
        if packs.contains_key(pack) && !damaged.contains_key(&pack.key()) {
            damaged.insert(
                pack.key(),
                Damage {
                    problem: format!("recorded as damaged: {why}"),
                    blobs: pack_blobs(packs, pack),
                },
            );
        }
    }
    for (pack, (_, entries)) in packs {
        let bad: HashSet<BlobId> = entries
            .iter()
            .filter(|e| {
                health.stored.contains_key(pack)
                    && !health.usable(&BlobLocation {
                        pack: *pack,
                        entry: **e,
                    })
            })
            .map(|e| e.id)
            .collect();
        if !bad.is_empty() && !damaged.contains_key(&pack.key()) {
            damaged.insert(
                pack.key(),
                Damage {
                    problem: format!(
                        "{} blob(s) recorded as damaged by an earlier read",
                        bad.len()
                    ),
                    blobs: bad,
                },
            );
        }
    }
}

/// The ids of the blobs a pack holds, as its index says.
fn pack_blobs(packs: &HashMap<PackId, (u64, Vec<PackEntry>)>, pack: &PackId) -> HashSet<BlobId> {
    packs
        .get(pack)
        .map(|(_, b)| b.iter().map(|e| e.id).collect())
        .unwrap_or_default()
}

/// The index as the repository holds it now (the catalog is not trusted
/// here): every copy of every blob, each pack's size and blob list, the
/// index objects that list each pack and when storage wrote them, and the
/// index objects that can not be read.
struct FreshIndex {
    copies: BlobCopies,
    packs: HashMap<PackId, (u64, Vec<PackEntry>)>,
    pack_indexes: HashMap<PackId, Vec<IndexId>>,
    index_times: HashMap<IndexId, jiff::Timestamp>,
    unreadable: Vec<(String, Damage)>,
}

fn read_index_fresh(repo: &Repository) -> Result<FreshIndex> {
    let mut fresh = FreshIndex {
        copies: BlobCopies::default(),
        packs: HashMap::new(),
        pack_indexes: HashMap::new(),
        index_times: HashMap::new(),
        unreadable: Vec::new(),
    };
    let mut index_ids = Vec::new();
    for o in repo.store.list("index/")? {
        if let Some(id) = IndexId::from_key(&o.key) {
            index_ids.push(id);
            if let Some(t) = o.modified {
                fresh.index_times.insert(id, t);
            }
        }
    }
    // Several requests in flight: on S3 a check is bound by requests.
    for (id, read) in index_ids.iter().zip(repo.read_indexes(&index_ids)) {
        match read {
            Ok(index) => {
                for p in index.packs {
                    fresh.pack_indexes.entry(p.id).or_default().push(*id);
                    for &entry in &p.blobs {
                        fresh.copies.add(BlobLocation { pack: p.id, entry });
                    }
                    fresh.packs.insert(p.id, (p.size, p.blobs));
                }
            }
            Err(e) => {
                let e = crate::Error::from(e);
                if !is_bad_object(&e) {
                    return Err(e);
                }
                fresh.unreadable.push((
                    id.key(),
                    Damage {
                        problem: format!(
                            "{e}; `coffer repair index` rebuilds the index from the packs"
                        ),
                        blobs: HashSet::new(),
                    },
                ));
            }
        }
    }
    Ok(fresh)
}

/// Leaves in `found` only what no damage record says yet: a check run
/// every night must not add a record a night for the same damage.
fn keep_unrecorded(found: &mut DamageRecord, health: &Health) {
    let mut whole: HashSet<PackId> = HashSet::new();
    let mut blobs: HashSet<(PackId, BlobId)> = HashSet::new();
    for p in health.records.iter().flat_map(|(_, r)| r.packs.iter()) {
        if p.blobs.is_empty() {
            whole.insert(p.id);
        }
        blobs.extend(p.blobs.iter().map(|b| (p.id, *b)));
    }
    found.packs.retain_mut(|p| {
        if whole.contains(&p.id) {
            return false;
        }
        if p.blobs.is_empty() {
            return true;
        }
        p.blobs.retain(|b| !blobs.contains(&(p.id, *b)));
        !p.blobs.is_empty()
    });
    found
        .snapshots
        .retain(|s| health.snapshot_problem(&s.id).is_none());
}

/// A snapshot's reference list from its blobs, read beforehand.
fn reference_list(
    snap: &Snapshot,
    read: &HashMap<BlobId, std::result::Result<Vec<u8>, ListUnreadable>>,
) -> std::result::Result<Vec<BlobId>, ListUnreadable> {
    let mut parts = Vec::with_capacity(snap.refs.len());
    for b in &snap.refs {
        match read.get(b) {
            Some(Ok(data)) => parts.push(data.as_slice()),
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(ListUnreadable::Missing(*b)),
        }
    }
    decode_refs(parts).map_err(|e| ListUnreadable::Decode(e.to_string()))
}

/// What reading one pack found: (pack, problem, damaged blobs, whether the
/// whole pack is bad), or None if it is whole.
type PackFinding = Option<(PackId, String, HashSet<BlobId>, bool)>;

/// Downloads one pack and verifies it. A storage error that retrying could
/// mend is an error (storage is down, not the pack); one that can not be
/// mended makes the whole pack bad.
fn read_pack(repo: &Repository, pack: &PackId, indexed: &[PackEntry]) -> Result<PackFinding> {
    let all: HashSet<BlobId> = indexed.iter().map(|e| e.id).collect();
    let bytes = match repo
        .store
        .get_capped(&pack.key(), limits::pack(repo.config.pack_size))
    {
        Ok(b) => b,
        Err(e) if !e.is_object_fault() => return Err(e.into()),
        Err(e) => return Ok(Some((*pack, e.to_string(), all, true))),
    };
    let hash_ok = blake3::hash(&bytes).as_bytes() == &pack.0;
    // Blob by blob: with the identity every blob can be opened, so the damage
    // is located exactly; without it only bookkeeping blobs can be.
    let mut bad = HashSet::new();
    let mut unopened = false;
    for e in indexed {
        let end = e.offset.saturating_add(e.length);
        let readable = repo.keys.is_operator() || e.kind == BlobKind::Refs;
        unopened |= !readable;
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
            return Ok(Some((*pack, e.to_string(), HashSet::new(), false)));
        }
        return Ok(None);
    }
    let problem = if hash_ok {
        format!("{} blob(s) fail to decrypt or verify", bad.len())
    } else {
        format!(
            "content does not match its name (altered or damaged); {} blob(s) affected",
            bad.len()
        )
    };
    // Without the identity a changed pack can not be narrowed down.
    let whole = !hash_ok && unopened;
    Ok(Some((*pack, problem, bad, whole)))
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
    blobs: &BlobMap,
    snaps: &[(SnapshotId, Snapshot)],
    read_data: bool,
    progress: &dyn Progress,
    report: &mut CheckReport,
    record: &mut DamageRecord,
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
        // What restore would refuse marks the snapshot damaged for every
        // later command (a file list never changes, so neither does this).
        if let Some((problem, file)) = found.first() {
            record.snapshots.push(crate::repo::damage::BadSnapshot {
                id: *id,
                reason: match file {
                    Some(f) => format!("{problem} ({f})"),
                    None => problem.clone(),
                },
            });
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
    blobs: &BlobMap,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An index of packs 1..=n, each with one blob (its number + 10) of
    /// 100 bytes and a size of 200; storage holds `stored` (pack, size).
    fn facts(n: u8, stored: &[(u8, u64)]) -> CheckFacts {
        let mut index = FreshIndex {
            copies: BlobCopies::default(),
            packs: HashMap::new(),
            pack_indexes: HashMap::new(),
            index_times: HashMap::new(),
            unreadable: Vec::new(),
        };
        for p in 1..=n {
            let pack = PackId([p; 32]);
            let entry = PackEntry {
                id: BlobId([p + 10; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 100,
                raw_length: 100,
            };
            index.copies.add(BlobLocation { pack, entry });
            index.packs.insert(pack, (200, vec![entry]));
        }
        CheckFacts {
            index,
            stored: stored
                .iter()
                .map(|&(p, size)| {
                    let info = PackInfo {
                        size,
                        modified: None,
                    };
                    (PackId([p; 32]), info)
                })
                .collect(),
            records: Vec::new(),
            bad_records: Vec::new(),
            framing: HashMap::new(),
        }
    }

    #[test]
    fn the_plan_names_missing_and_resized_packs_and_reads_the_rest() {
        // 1 whole, 2 missing, 3 shorter, 4 longer with an upload's framing,
        // 9 in no index.
        let mut f = facts(4, &[(1, 200), (3, 150), (4, 230), (9, 50)]);
        f.framing
            .insert(PackId([4; 32]), "1e;chunk-signature".into());
        let quick = plan(f, false);
        let keys: Vec<&String> = quick.damaged.keys().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        let missing = &quick.damaged[&PackId([2; 32]).key()];
        assert_eq!(missing.problem, "missing from storage");
        assert!(missing.blobs.contains(&BlobId([12; 32])));
        let short = &quick.damaged[&PackId([3; 32]).key()].problem;
        assert_eq!(
            short,
            "size is 150 bytes, the index says 200 (truncated or altered)"
        );
        let framed = &quick.damaged[&PackId([4; 32]).key()].problem;
        assert!(
            framed.contains("begins `1e;chunk-signature\\r\\n`"),
            "{framed}"
        );
        assert!(
            quick.to_read.is_empty(),
            "nothing is read without read_data"
        );
        assert_eq!(quick.notes.len(), 1);
        assert!(quick.notes[0].starts_with("1 pack(s) are not in any index"));

        // With read_data, resized packs are read (and told with what the
        // read finds); a missing one can not be.
        let mut f = facts(4, &[(1, 200), (3, 150), (4, 230), (9, 50)]);
        f.framing
            .insert(PackId([4; 32]), "1e;chunk-signature".into());
        let full = plan(f, true);
        assert_eq!(
            full.to_read,
            vec![PackId([1; 32]), PackId([3; 32]), PackId([4; 32])]
        );
        assert_eq!(full.damaged.len(), 1, "only the missing pack is known");
        assert_eq!(full.size_notes.len(), 2);
    }

    #[test]
    fn recorded_damage_counts_unless_the_pack_is_read_again() {
        let mut f = facts(2, &[(1, 200), (2, 200)]);
        let mut rec = DamageRecord::new("restore");
        rec.packs.push(BadPack {
            id: PackId([2; 32]),
            reason: "blob fails to decrypt".into(),
            blobs: vec![BlobId([12; 32])],
        });
        f.records.push(([7; 32], rec.clone()));
        let quick = plan(f, false);
        let d = &quick.damaged[&PackId([2; 32]).key()];
        assert_eq!(
            d.problem,
            "1 blob(s) recorded as damaged by an earlier read"
        );
        assert!(d.blobs.contains(&BlobId([12; 32])));

        let mut f = facts(2, &[(1, 200), (2, 200)]);
        f.records.push(([7; 32], rec));
        let full = plan(f, true);
        assert!(full.damaged.is_empty());
        assert_eq!(full.to_read.len(), 2, "read again, judged afresh");
    }

    #[test]
    fn a_reference_list_names_what_keeps_it_from_being_read() {
        let snap = Snapshot {
            refs: vec![BlobId([1; 32])],
            ..Snapshot::bare(jiff::Timestamp::now(), "h")
        };
        let none = HashMap::new();
        let e = reference_list(&snap, &none).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("blob {} is missing from the index", BlobId([1; 32]).short())
        );
        let failed = HashMap::from([(BlobId([1; 32]), Err(ListUnreadable::Read("gone".into())))]);
        assert_eq!(
            reference_list(&snap, &failed).unwrap_err().to_string(),
            "gone"
        );
    }

    /// Blob `n` of a test's reference lists.
    fn id(n: u32) -> BlobId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        BlobId(b)
    }

    /// A map of 32-byte refs blobs, one after another in one pack.
    fn refs_blobs(ids: impl Iterator<Item = BlobId>) -> BlobMap {
        ids.enumerate()
            .map(|(n, id)| BlobLocation {
                pack: PackId([9; 32]),
                entry: PackEntry {
                    id,
                    kind: BlobKind::Refs,
                    offset: 32 * n as u64,
                    length: 32,
                    raw_length: 32,
                },
            })
            .collect()
    }

    /// Servers sharing a repository interleave their snapshots: each
    /// series' blobs are still read once, and dropped after their last use.
    #[test]
    fn interleaved_series_read_each_blob_once() {
        // 40 servers, 5 snapshots each, taken in turn: server h's list is
        // its own blob, the same in every snapshot but the last.
        let mut snaps = Vec::new();
        for round in 0..5u32 {
            for h in 0..40u32 {
                let list = if round == 4 { id(1000 + h) } else { id(h) };
                let s = Snapshot {
                    refs: vec![list],
                    ..Snapshot::bare(jiff::Timestamp::UNIX_EPOCH, "h")
                };
                snaps.push((SnapshotId([(round * 40 + h) as u8; 32]), s));
            }
        }
        let good = refs_blobs((0..40).chain(1000..1040).map(id));
        let mut reads: HashMap<BlobId, usize> = HashMap::new();
        let mut most_held = 0;
        let mut lists = 0;
        each_reference_list(
            &good,
            &snaps,
            32,
            |wanted| {
                most_held = most_held.max(wanted.len());
                wanted
                    .iter()
                    .map(|b| {
                        *reads.entry(*b).or_default() += 1;
                        Ok(b.0.to_vec())
                    })
                    .collect()
            },
            |_, snap, list| {
                assert_eq!(list.unwrap(), snap.refs);
                lists += 1;
            },
        );
        assert_eq!(lists, 200);
        assert_eq!(reads.len(), 80);
        assert!(
            reads.values().all(|n| *n == 1),
            "a blob read twice: {reads:?}"
        );
        assert!(most_held <= 32);
    }

    /// Reference lists are read a window at a time: a blob every snapshot
    /// shares is read once, each snapshot gets its own list, and a blob no
    /// index holds costs only the snapshots that need it.
    #[test]
    fn reference_lists_are_read_once_a_window_at_a_time() {
        let piece = |b: &BlobId| b.0.iter().rev().copied().collect::<Vec<u8>>();
        let shared = id(1_000);
        let unindexed = id(2_000);
        let mut snaps = Vec::new();
        for n in 0..70u32 {
            let mut s = Snapshot {
                refs: vec![shared, id(n)],
                ..Snapshot::bare(jiff::Timestamp::UNIX_EPOCH, "h")
            };
            if n == 40 {
                s.refs.push(unindexed);
            }
            snaps.push((SnapshotId([n as u8; 32]), s));
        }
        let good = refs_blobs((0..70).map(id).chain([shared]));
        let mut reads: HashMap<BlobId, usize> = HashMap::new();
        let mut lists = Vec::new();
        each_reference_list(
            &good,
            &snaps,
            32,
            |wanted| {
                assert!(wanted.len() <= 33, "one window's blobs at a time");
                wanted
                    .iter()
                    .map(|b| {
                        *reads.entry(*b).or_default() += 1;
                        Ok(piece(b))
                    })
                    .collect()
            },
            |sid, _, list| lists.push((*sid, list)),
        );
        assert_eq!(reads[&shared], 1, "the shared blob is read once");
        assert!(reads.values().all(|n| *n == 1), "{reads:?}");
        assert_eq!(reads.len(), 71);
        assert_eq!(lists.len(), 70);
        for (n, (sid, list)) in lists.into_iter().enumerate() {
            assert_eq!(sid, SnapshotId([n as u8; 32]));
            if n == 40 {
                assert!(matches!(list, Err(ListUnreadable::Missing(b)) if b == unindexed));
                continue;
            }
            let want = decode_refs([piece(&shared).as_slice(), piece(&id(n as u32)).as_slice()]);
            assert_eq!(list.unwrap(), want.unwrap());
        }
    }
}
