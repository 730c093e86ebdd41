//! What the repository can vouch for (docs/FORMAT.md, "Damage"): which
//! packs storage holds at the size their index says, and which blobs a read
//! found bad (damage records). It decides which copy of a blob readers use,
//! which blobs a backup may deduplicate against, and which snapshots are
//! damaged. Built from the listings `sync` makes anyway: no extra reads.

use crate::catalog::{BlobLocation, BlobMap};
use crate::repo::damage::DamageRecord;
use crate::repo::ids::{BlobId, IndexId, PackId, SnapshotId};
use jiff::Timestamp;
use std::collections::{HashMap, HashSet};

/// A pack as storage lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackInfo {
    pub size: u64,
    pub modified: Option<Timestamp>,
}

/// Listings give times to the second (a pack and the index written right
/// after it can share one), and a provider's nodes may disagree a little.
const CLOCK_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_secs(1);

#[derive(Debug, Default)]
pub struct Health {
    /// Every pack in storage.
    pub stored: HashMap<PackId, PackInfo>,
    /// Whole packs that can not be used, with the reason.
    bad_packs: HashMap<PackId, String>,
    /// Single blobs a read found bad, in the pack it found them in.
    bad_blobs: HashMap<(PackId, BlobId), String>,
    /// Snapshots whose file list a check found invalid.
    bad_snapshots: HashMap<SnapshotId, String>,
    /// The damage records this was built from (object id, record).
    pub records: Vec<([u8; 32], DamageRecord)>,
}

impl Health {
    /// `indexed`: each indexed pack's size as its index says.
    pub fn new(
        stored: HashMap<PackId, PackInfo>,
        indexed: &HashMap<PackId, u64>,
        records: Vec<([u8; 32], DamageRecord)>,
    ) -> Health {
        let mut h = Health {
            stored,
            records: Vec::new(),
            ..Default::default()
        };
        for (pack, size) in indexed {
            if let Some(info) = h.stored.get(pack)
                && info.size != *size
            {
                h.bad_packs.insert(
                    *pack,
                    format!(
                        "storage holds {} bytes, its index says {size} (truncated or replaced)",
                        info.size
                    ),
                );
            }
        }
        for (_, r) in &records {
            h.learn(r);
        }
        h.records = records;
        h
    }

    /// Takes in what one damage record says.
    pub fn learn(&mut self, r: &DamageRecord) {
        for p in &r.packs {
            if p.blobs.is_empty() {
                self.bad_packs
                    .entry(p.id)
                    .or_insert_with(|| p.reason.clone());
            }
            for b in &p.blobs {
                self.bad_blobs
                    .entry((p.id, *b))
                    .or_insert_with(|| p.reason.clone());
            }
        }
        for s in &r.snapshots {
            self.bad_snapshots
                .entry(s.id)
                .or_insert_with(|| s.reason.clone());
        }
    }

    /// Why this copy of a blob can not be used; None if it can.
    pub fn problem(&self, loc: &BlobLocation) -> Option<String> {
        if !self.stored.contains_key(&loc.pack) {
            return Some(format!("pack {} is missing from storage", loc.pack.short()));
        }
        if let Some(why) = self.bad_packs.get(&loc.pack) {
            return Some(format!("pack {}: {why}", loc.pack.short()));
        }
        self.bad_blobs.get(&(loc.pack, loc.entry.id)).map(|why| {
            format!(
                "blob {} in pack {}: {why}",
                loc.entry.id.short(),
                loc.pack.short()
            )
        })
    }

    pub fn usable(&self, loc: &BlobLocation) -> bool {
        self.stored.contains_key(&loc.pack)
            && !self.bad_packs.contains_key(&loc.pack)
            && !self.bad_blobs.contains_key(&(loc.pack, loc.entry.id))
    }

    /// Why a snapshot is damaged beyond its blobs (its file list), if it is.
    pub fn snapshot_problem(&self, id: &SnapshotId) -> Option<&str> {
        self.bad_snapshots.get(id).map(String::as_str)
    }

    /// Marks a whole pack unusable (a read found it bad just now).
    pub fn mark_bad(&mut self, pack: PackId, reason: String) {
        self.bad_packs.insert(pack, reason);
    }

    /// Packs known bad as a whole, with the reason.
    pub fn bad_packs(&self) -> &HashMap<PackId, String> {
        &self.bad_packs
    }

    /// The packs each record names are all gone from storage: the record
    /// tells nothing any more (prune deletes it).
    pub fn spent_records(&self) -> Vec<[u8; 32]> {
        self.records
            .iter()
            .filter(|(_, r)| {
                r.snapshots.is_empty() && r.packs.iter().all(|p| !self.stored.contains_key(&p.id))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Packs storage says were written after the oldest index that lists
    /// them: a pack is never rewritten (its name is the hash of its bytes),
    /// so such a pack was replaced, in place, by someone else. Only reading
    /// it whole tells whether its bytes still match its name; `sound` lists
    /// those this machine read and found whole at that size and time.
    pub fn suspects(
        &self,
        pack_indexes: &HashMap<PackId, Vec<IndexId>>,
        index_times: &HashMap<IndexId, Timestamp>,
        sound: &HashMap<PackId, (u64, String)>,
    ) -> Vec<PackId> {
        let mut out: Vec<PackId> = pack_indexes
            .iter()
            .filter_map(|(pack, idxs)| {
                let info = self.stored.get(pack)?;
                let written = info.modified?;
                let indexed = idxs.iter().filter_map(|i| index_times.get(i)).min()?;
                let replaced = written > *indexed + CLOCK_SLACK;
                let known_sound = sound
                    .get(pack)
                    .is_some_and(|(size, at)| *size == info.size && *at == stamp(info.modified));
                (replaced && !known_sound && !self.bad_packs.contains_key(pack)).then_some(*pack)
            })
            .collect();
        out.sort();
        out
    }
}

/// How a listed upload time is kept in the catalog.
pub fn stamp(t: Option<Timestamp>) -> String {
    t.map(crate::time::rfc3339_offset).unwrap_or_default()
}

/// The blobs of `map` whose chosen copy can be used.
pub fn usable_blobs(mut map: BlobMap, health: &Health) -> BlobMap {
    // In place: the map is the history's every blob, not to be held twice.
    map.retain(|l| health.usable(l));
    map
}

/// Ids of the blobs whose chosen copy can not be used.
pub fn unusable_ids(map: &BlobMap, health: &Health) -> HashSet<BlobId> {
    map.iter()
        .filter(|(_, l)| !health.usable(l))
        .map(|(id, _)| id)
        .collect()
}

/// Records blobs a read found bad (pack, blob, why) in the repository, so
/// backups store them again and every machine calls the snapshots that
/// need them damaged. Returns a warning when the record could not be
/// written (read-only credentials, say): the read's own report stands.
pub fn record_damage(
    repo: &crate::repo::Repository,
    found_by: &str,
    bad: &[(PackId, BlobId, String)],
) -> Option<String> {
    if bad.is_empty() {
        return None;
    }
    let mut record = DamageRecord::new(found_by);
    let mut by_pack: std::collections::BTreeMap<PackId, (String, Vec<BlobId>)> = Default::default();
    for (pack, blob, why) in bad {
        let e = by_pack
            .entry(*pack)
            .or_insert_with(|| (why.clone(), Vec::new()));
        e.1.push(*blob);
    }
    for (id, (reason, mut blobs)) in by_pack {
        blobs.sort();
        blobs.dedup();
        record
            .packs
            .push(crate::repo::damage::BadPack { id, reason, blobs });
    }
    repo.write_damage(&record).err().map(|e| {
        format!(
            "{} bad blob(s) could not be recorded in the repository as damaged: {e}",
            bad.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::damage::BadPack;
    use crate::repo::pack::{BlobKind, PackEntry};

    fn loc(pack: u8, blob: u8) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            entry: PackEntry {
                id: BlobId([blob; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 10,
                raw_length: 10,
            },
        }
    }

    #[test]
    fn missing_resized_and_recorded_damage_make_a_copy_unusable() {
        let info = |size| PackInfo {
            size,
            modified: None,
        };
        let stored = HashMap::from([
            (PackId([1; 32]), info(100)),
            (PackId([2; 32]), info(90)),
            (PackId([3; 32]), info(100)),
        ]);
        let indexed = HashMap::from([
            (PackId([1; 32]), 100),
            (PackId([2; 32]), 100),
            (PackId([3; 32]), 100),
        ]);
        let mut rec = DamageRecord::new("check");
        rec.packs.push(BadPack {
            id: PackId([3; 32]),
            reason: "blob fails to decrypt".into(),
            blobs: vec![BlobId([7; 32])],
        });
        let h = Health::new(stored, &indexed, vec![([9; 32], rec)]);
        assert!(h.usable(&loc(1, 7)));
        assert!(!h.usable(&loc(2, 7)), "a pack shorter than indexed");
        assert!(!h.usable(&loc(3, 7)), "a blob a read found bad");
        assert!(h.usable(&loc(3, 8)), "its neighbours stay usable");
        assert!(!h.usable(&loc(4, 8)), "a pack storage does not hold");
        assert!(h.problem(&loc(4, 8)).unwrap().contains("missing"));
        assert!(h.spent_records().is_empty());
    }

    #[test]
    fn a_pack_written_after_its_index_is_a_suspect_until_read_whole() {
        let t = |s: i64| Timestamp::from_second(1_800_000_000 + s).ok();
        let pack = PackId([1; 32]);
        let stored = HashMap::from([(
            pack,
            PackInfo {
                size: 50,
                modified: t(100),
            },
        )]);
        let h = Health::new(stored, &HashMap::from([(pack, 50)]), vec![]);
        let ix = IndexId([5; 32]);
        let map = HashMap::from([(pack, vec![ix])]);
        let early = HashMap::from([(ix, t(1).unwrap())]);
        let late = HashMap::from([(ix, t(101).unwrap())]);
        assert_eq!(h.suspects(&map, &early, &HashMap::new()), vec![pack]);
        assert!(h.suspects(&map, &late, &HashMap::new()).is_empty());
        let sound = HashMap::from([(pack, (50, stamp(t(100))))]);
        assert!(h.suspects(&map, &early, &sound).is_empty());
    }
}
