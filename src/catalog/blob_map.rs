//! The blob map: where each blob of the repository is, held in memory by
//! every command that reads or deduplicates. It holds every blob the
//! history keeps (each round of a slowly changing server adds its changed
//! chunks and file-list pieces), so its size is what a reader's memory
//! grows by with history: about 60 bytes a blob here, against some 150 for
//! a map of whole [`BlobLocation`]s (the pack's 32-byte id repeated in every
//! blob, the blob's id twice, 64-bit lengths).

use super::BlobLocation;
use crate::repo::ids::{BlobId, PackId};
use crate::repo::pack::{BlobKind, PackEntry};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// A blob's place, compact: its pack by number in the map's pack table, and
/// 32-bit offset and lengths (packs are far below 4 GiB; a location that
/// does not fit is kept whole beside, see [`BlobMap::wide`]).
#[derive(Clone, Copy, Debug)]
struct Slot {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

/// A map from blob id to [`BlobLocation`], stored compactly. Reads give
/// locations by value.
#[derive(Clone, Debug, Default)]
pub struct BlobMap {
    /// Every pack a slot names, by number.
    packs: Vec<PackId>,
    numbers: HashMap<PackId, u32>,
    slots: HashMap<BlobId, Slot>,
    /// Locations whose numbers do not fit a slot: none in a repository
    /// coffer wrote, but a catalog row is not trusted to fit.
    wide: HashMap<BlobId, BlobLocation>,
    /// The pack numbered last: an index lists a pack's blobs together.
    last: Option<(PackId, u32)>,
}

impl BlobMap {
    /// A map with room for `n` blobs without growing.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            slots: HashMap::with_capacity(n),
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_key(&self, id: &BlobId) -> bool {
        self.slots.contains_key(id) || self.wide.contains_key(id)
    }

    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        match self.slots.get(id) {
            Some(s) => Some(self.location(*id, s)),
            None => self.wide.get(id).copied(),
        }
    }

    /// Puts `l` under its blob's id, replacing any location there; returns that one.
    pub fn insert(&mut self, l: BlobLocation) -> Option<BlobLocation> {
        let id = l.entry.id;
        // One lookup for the common case: a blob in neither half, or in
        // the compact one; the other half is looked at only when it can hold it.
        match self.slot(&l) {
            Some(s) => match self.slots.insert(id, s) {
                Some(old) => Some(self.location(id, &old)),
                None if self.wide.is_empty() => None,
                None => self.wide.remove(&id),
            },
            None => {
                let compact = self.slots.remove(&id).map(|o| self.location(id, &o));
                let wide = self.wide.insert(id, l);
                compact.or(wide)
            }
        }
    }

    /// Puts `l` in the map unless the map's location of its blob is `keep`
    /// (and `l` is not): one lookup for the common case, a new blob.
    pub fn insert_unless(&mut self, l: BlobLocation, keep: &dyn Fn(&BlobLocation) -> bool) {
        let id = l.entry.id;
        if !self.wide.contains_key(&id)
            && let Some(s) = self.slot(&l)
        {
            match self.slots.entry(id) {
                Entry::Vacant(v) => {
                    v.insert(s);
                }
                Entry::Occupied(mut o) => {
                    let old = Self::location_in(&self.packs, id, o.get());
                    if !keep(&old) || keep(&l) {
                        o.insert(s);
                    }
                }
            }
            return;
        }
        if self.get(&id).is_none_or(|old| !keep(&old) || keep(&l)) {
            self.insert(l);
        }
    }

    pub fn remove(&mut self, id: &BlobId) -> Option<BlobLocation> {
        match self.slots.remove(id) {
            Some(s) => Some(self.location(*id, &s)),
            None => self.wide.remove(id),
        }
    }

    /// Keeps the blobs `f` says to keep.
    pub fn retain(&mut self, mut f: impl FnMut(&BlobLocation) -> bool) {
        let packs = &self.packs;
        self.slots
            .retain(|id, s| f(&Self::location_in(packs, *id, s)));
        self.wide.retain(|_, l| f(l));
    }

    /// Every blob's location, in no order.
    pub fn values(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        let slots = self.slots.iter().map(|(id, s)| self.location(*id, s));
        slots.chain(self.wide.values().copied())
    }

    /// Every blob with its location, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (BlobId, BlobLocation)> + '_ {
        self.values().map(|l| (l.entry.id, l))
    }

    /// Every blob id, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &BlobId> + '_ {
        self.slots.keys().chain(self.wide.keys())
    }

    fn location(&self, id: BlobId, s: &Slot) -> BlobLocation {
        Self::location_in(&self.packs, id, s)
    }

    fn location_in(packs: &[PackId], id: BlobId, s: &Slot) -> BlobLocation {
        BlobLocation {
            // A slot's number is always one the table gave.
            pack: packs
                .get(s.pack as usize)
                .copied()
                .unwrap_or(PackId([0; 32])),
            entry: PackEntry {
                id,
                kind: s.kind,
                offset: u64::from(s.offset),
                length: u64::from(s.length),
                raw_length: u64::from(s.raw_length),
            },
        }
    }

    /// `l` as a slot, numbering its pack if new; None if a number does not fit.
    fn slot(&mut self, l: &BlobLocation) -> Option<Slot> {
        let e = &l.entry;
        let (offset, length, raw_length) = (
            u32::try_from(e.offset).ok()?,
            u32::try_from(e.length).ok()?,
            u32::try_from(e.raw_length).ok()?,
        );
        let pack = match (self.last, self.numbers.get(&l.pack)) {
            (Some((p, n)), _) if p == l.pack => n,
            (_, Some(n)) => *n,
            (_, None) => {
                let n = u32::try_from(self.packs.len()).ok()?;
                self.packs.push(l.pack);
                self.numbers.insert(l.pack, n);
                n
            }
        };
        self.last = Some((l.pack, pack));
        Some(Slot {
            pack,
            offset,
            length,
            raw_length,
            kind: e.kind,
        })
    }
}

/// Every copy of each blob, for `check`, which must know them all: the
/// first copy in a [`BlobMap`], the others beside it (few: a blob stored
/// again after its first copy was lost, or by two racing writers).
#[derive(Clone, Debug, Default)]
pub struct BlobCopies {
    first: BlobMap,
    more: HashMap<BlobId, Vec<BlobLocation>>,
}

impl BlobCopies {
    /// Adds a copy, unless this very copy is known.
    pub fn add(&mut self, l: BlobLocation) {
        let id = l.entry.id;
        match self.first.get(&id) {
            None => {
                self.first.insert(l);
            }
            Some(first) if first == l => {}
            Some(_) => {
                let more = self.more.entry(id).or_default();
                if !more.contains(&l) {
                    more.push(l);
                }
            }
        }
    }

    /// Distinct blobs.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// The copies of a blob, in the order they were added.
    pub fn of(&self, id: &BlobId) -> impl Iterator<Item = BlobLocation> + '_ {
        let more = self.more.get(id).into_iter().flatten().copied();
        self.first.get(id).into_iter().chain(more)
    }

    /// One copy of each blob: the first that `good` takes, else the first.
    /// Consumes the copies, so the map is never held twice.
    pub fn into_chosen(self, good: impl Fn(&BlobLocation) -> bool) -> BlobMap {
        let mut chosen = self.first;
        for (id, more) in self.more {
            let first = chosen.get(&id);
            if first.is_some_and(|f| !good(&f))
                && let Some(l) = more.into_iter().find(|l| good(l))
            {
                chosen.insert(l);
            }
        }
        chosen
    }
}

impl FromIterator<BlobLocation> for BlobMap {
    fn from_iter<I: IntoIterator<Item = BlobLocation>>(iter: I) -> Self {
        let mut map = Self::default();
        map.extend(iter);
        map
    }
}

impl Extend<BlobLocation> for BlobMap {
    fn extend<I: IntoIterator<Item = BlobLocation>>(&mut self, iter: I) {
        for l in iter {
            self.insert(l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(blob: u8, pack: u8, offset: u64) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            entry: PackEntry {
                id: BlobId([blob; 32]),
                kind: BlobKind::Tree,
                offset,
                length: 100 + u64::from(blob),
                raw_length: 200 + u64::from(blob),
            },
        }
    }

    #[test]
    fn locations_come_back_as_they_went_in() {
        let mut map = BlobMap::default();
        let (a, b, c, far) = (at(1, 7, 0), at(2, 7, 4096), at(4, 8, 9), at(3, 8, 5 << 32));
        map.extend([a, b, c, far]);
        assert_eq!(map.len(), 4);
        assert_eq!(map.packs.len(), 2, "a pack is numbered once");
        assert_eq!(map.wide.len(), 1, "an offset past 4 GiB is kept whole");
        for l in [a, b, c, far] {
            assert_eq!(map.get(&l.entry.id), Some(l));
            assert!(map.contains_key(&l.entry.id));
        }
        let mut all: Vec<_> = map.values().collect();
        all.sort_by_key(|l| l.entry.id);
        assert_eq!(all, [a, b, far, c]);
        assert_eq!(map.keys().count(), 4);
        assert_eq!(map.get(&BlobId([9; 32])), None);
    }

    #[test]
    fn a_blob_has_one_location_whichever_way_it_moved() {
        let mut map: BlobMap = [at(1, 7, 0)].into_iter().collect();
        // Moved past 4 GiB, then back: never listed twice.
        assert_eq!(map.insert(at(1, 8, 5 << 32)), Some(at(1, 7, 0)));
        assert_eq!((map.slots.len(), map.wide.len()), (0, 1));
        assert_eq!(map.insert(at(1, 9, 10)), Some(at(1, 8, 5 << 32)));
        assert_eq!((map.slots.len(), map.wide.len()), (1, 0));
        assert_eq!(map.get(&BlobId([1; 32])), Some(at(1, 9, 10)));
        assert_eq!(map.remove(&BlobId([1; 32])), Some(at(1, 9, 10)));
        assert!(map.is_empty());
    }

    #[test]
    fn insert_unless_keeps_a_kept_copy_over_one_that_is_not() {
        let good = |l: &BlobLocation| l.pack != PackId([66; 32]);
        let mut map = BlobMap::default();
        map.insert_unless(at(1, 7, 0), &good);
        map.insert_unless(at(1, 66, 0), &good);
        assert_eq!(map.get(&BlobId([1; 32])), Some(at(1, 7, 0)));
        map.insert_unless(at(1, 8, 16), &good);
        assert_eq!(
            map.get(&BlobId([1; 32])),
            Some(at(1, 8, 16)),
            "a later good copy wins"
        );
        map.insert_unless(at(2, 66, 0), &good);
        map.insert_unless(at(2, 9, 5 << 32), &good);
        assert_eq!(map.get(&BlobId([2; 32])), Some(at(2, 9, 5 << 32)));
        // A kept copy kept whole (past 4 GiB) is not replaced by one that is not kept.
        map.insert_unless(at(2, 66, 8), &good);
        assert_eq!(map.get(&BlobId([2; 32])), Some(at(2, 9, 5 << 32)));
        // Of two copies neither kept, the later one.
        map.insert_unless(at(3, 66, 0), &good);
        map.insert_unless(at(3, 66, 64), &good);
        assert_eq!(map.get(&BlobId([3; 32])), Some(at(3, 66, 64)));
    }

    #[test]
    fn copies_are_kept_apart_and_the_first_good_one_is_chosen() {
        let mut copies = BlobCopies::default();
        for l in [
            at(1, 7, 0),
            at(1, 7, 0),
            at(1, 8, 0),
            at(1, 9, 0),
            at(2, 7, 64),
        ] {
            copies.add(l);
        }
        assert_eq!(copies.len(), 2);
        let of_one: Vec<_> = copies.of(&BlobId([1; 32])).collect();
        assert_eq!(
            of_one,
            [at(1, 7, 0), at(1, 8, 0), at(1, 9, 0)],
            "the same copy once"
        );
        assert_eq!(copies.of(&BlobId([3; 32])).count(), 0);
        let chosen = copies.clone().into_chosen(|l| l.pack != PackId([7; 32]));
        assert_eq!(
            chosen.get(&BlobId([1; 32])),
            Some(at(1, 8, 0)),
            "the first good copy"
        );
        assert_eq!(
            chosen.get(&BlobId([2; 32])),
            Some(at(2, 7, 64)),
            "no good copy: the first"
        );
        let chosen = copies.into_chosen(|_| true);
        assert_eq!(chosen.get(&BlobId([1; 32])), Some(at(1, 7, 0)));
    }

    #[test]
    fn retain_drops_what_it_is_told_to() {
        let mut map: BlobMap = [at(1, 7, 0), at(2, 8, 0), at(3, 8, 5 << 32)]
            .into_iter()
            .collect();
        map.retain(|l| l.pack == PackId([8; 32]));
        let mut kept: Vec<_> = map.keys().copied().collect();
        kept.sort();
        assert_eq!(kept, [BlobId([2; 32]), BlobId([3; 32])]);
    }
}
