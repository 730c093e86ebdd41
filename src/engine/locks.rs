//! Lengthening Object Locks so that nothing history needs runs out of its
//! lock (docs/IMMUTABILITY.md, "Who lengthens locks, and when").
//!
//! Every object is written locked for window + margin. A snapshot taken at
//! `t` needs what it references until `t + window`. So at the end of each
//! backup (the only thing that adds a need), the writer lengthens, to
//! `now + window + margin`, the lock of every object history still depends
//! on whose lock ends before `now + window`. Each object is lengthened at
//! most once per margin, and the pass asks storage nothing about the
//! others: the catalog's ledger knows how long each lock runs, and an
//! object not in it yet is taken at the lower bound its listing gives
//! (written at `modified`, so locked at least until `modified + window +
//! margin`). Snapshots themselves are not lengthened: written locked for
//! window + margin, each outlives its own window.

use crate::Result;
use crate::catalog::{Catalog, OWN_LOCKS};
use crate::repo::store::Store;
use crate::repo::{CONFIG_KEY, KEYRING_COPY_KEY, KEYRING_KEY, LockConfig, Repository};
use crate::storage::Retention;
use jiff::Timestamp;
use std::collections::HashMap;

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LockPass {
    /// Objects whose lock was lengthened.
    pub extended: usize,
    /// Objects whose lock had to be read from storage (not in the ledger,
    /// not listed).
    pub read: usize,
    /// Objects whose lock could not be read or lengthened: (key, why).
    /// One bad object never stops the pass; the next pass tries again.
    pub failed: Vec<(String, String)>,
}

/// The objects history depends on besides the snapshots, with the time
/// storage recorded for each where a listing gave one.
pub fn needed(
    catalog: &Catalog,
    listed: &HashMap<String, Timestamp>,
) -> Result<HashMap<String, Option<Timestamp>>> {
    let mut keys: HashMap<String, Option<Timestamp>> = HashMap::new();
    for pack in catalog.packs()?.keys() {
        let k = pack.key();
        keys.insert(k.clone(), listed.get(&k).copied());
    }
    for index in catalog.known_indexes()? {
        let k = index.key();
        keys.insert(k.clone(), listed.get(&k).copied());
    }
    for k in [CONFIG_KEY, KEYRING_KEY, KEYRING_COPY_KEY] {
        keys.insert(k.to_string(), None);
    }
    Ok(keys)
}

/// Which objects are due: their lock (as known, else its lower bound)
/// ends before `need`. Returns (due, the lock ends now known, the keys
/// whose lock is unknown and must be read).
pub fn plan(
    needed: &HashMap<String, Option<Timestamp>>,
    ledger: &HashMap<String, Timestamp>,
    period: jiff::SignedDuration,
    need: Timestamp,
) -> (Vec<String>, Vec<(String, Timestamp)>, Vec<String>) {
    let (mut due, mut known, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (key, modified) in needed {
        let until = ledger
            .get(key)
            .copied()
            .or_else(|| modified.and_then(|m| m.checked_add(period).ok()));
        match until {
            Some(u) if u >= need => known.push((key.clone(), u)),
            Some(_) => due.push(key.clone()),
            None => unknown.push(key.clone()),
        }
    }
    due.sort();
    unknown.sort();
    (due, known, unknown)
}

/// One pass at `now` (the writer lock held). `listed` is what the run's
/// own listings of `data/` and `index/` gave: key → time stored.
pub fn extend(
    repo: &Repository,
    catalog: &mut Catalog,
    listed: &HashMap<String, Timestamp>,
    now: Timestamp,
) -> Result<LockPass> {
    let Some(lock) = repo.config.object_lock else {
        return Ok(LockPass::default());
    };
    let needed = needed(catalog, listed)?;
    extend_at(&repo.store, OWN_LOCKS, lock, catalog, &needed, now)
}

/// The pass over the objects in `needed` (key → time stored, if known) on
/// `store`, whose ledger rows are `place`'s: the repository's own, or a
/// copy's (`coffer copy` keeps its copies' locks as backups keep the
/// repository's).
pub fn extend_at(
    store: &Store,
    place: &str,
    lock: LockConfig,
    catalog: &mut Catalog,
    needed: &HashMap<String, Option<Timestamp>>,
    now: Timestamp,
) -> Result<LockPass> {
    let window = crate::time::days(i64::from(lock.window_days));
    let need = now.saturating_add(window).unwrap_or(Timestamp::MAX);
    let to = lock.write_lock().retention_from(now);
    let ledger = catalog.lock_untils(place)?;
    let (mut due, mut known, unknown) = plan(needed, &ledger, lock.write_lock().period, need);
    let mut pass = LockPass {
        read: unknown.len(),
        ..LockPass::default()
    };
    for (key, read) in store.retentions(&unknown) {
        match read {
            Ok(Some(r)) if r.until >= need => known.push((key, r.until)),
            Ok(_) => due.push(key),
            Err(e) => pass
                .failed
                .push((key, crate::engine::one_line(&e.to_string()))),
        }
    }
    for (key, res) in store.extend_retentions(&due, to) {
        match res {
            Ok(()) => {
                pass.extended += 1;
                known.push((key, to.until));
            }
            // A lock already longer than ours (a bucket default of a year)
            // is refused as a shortening: read it, and keep it if it covers.
            Err(e) => match store.retention(&key) {
                Ok(Some(Retention { until, .. })) if until >= need => known.push((key, until)),
                _ => pass
                    .failed
                    .push((key, crate::engine::one_line(&e.to_string()))),
            },
        }
    }
    // Only what changed is written: a pass with nothing due writes nothing.
    known.retain(|(k, t)| ledger.get(k) != Some(t));
    let gone: Vec<String> = ledger
        .into_keys()
        .filter(|k| !needed.contains_key(k))
        .collect();
    if !known.is_empty() || !gone.is_empty() {
        catalog.record_locks(place, &known, &gone)?;
    }
    Ok(pass)
}

/// An object history needs for longer than its lock covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGap {
    pub key: String,
    /// When its lock ends; None: it has none, or it could not be read (`why`).
    pub until: Option<Timestamp>,
    pub needed: Timestamp,
    pub why: Option<String>,
}

impl LockGap {
    /// The finding, in words, for `check`.
    pub fn text(&self) -> String {
        let needed = crate::time::human(self.needed);
        match (&self.why, self.until) {
            (Some(why), _) => format!(
                "its Object Lock can not be read ({why}); history needs it locked until {needed}"
            ),
            (None, None) => {
                format!("it has no Object Lock; history needs it locked until {needed}")
            }
            (None, Some(u)) => format!(
                "its Object Lock ends {}, but history needs it until {needed}: the next backup lengthens it",
                crate::time::human(u)
            ),
        }
    }
}

/// Reads the lock of every object in `needed` (key → needed until) and
/// returns those it does not cover, sorted by key. For `check`: the truth
/// from storage, not the ledger.
pub fn gaps(repo: &Repository, needed: &HashMap<String, Timestamp>) -> Vec<LockGap> {
    let mut keys: Vec<String> = needed.keys().cloned().collect();
    keys.sort();
    let mut out = Vec::new();
    for (key, read) in repo.store.retentions(&keys) {
        let need = needed[&key];
        let gap = |until, why| LockGap {
            key: key.clone(),
            until,
            needed: need,
            why,
        };
        match read {
            Ok(Some(r)) if r.until >= need => {}
            Ok(r) => out.push(gap(r.map(|r| r.until), None)),
            Err(e) => out.push(gap(None, Some(crate::engine::one_line(&e.to_string())))),
        }
    }
    out
}

/// Until when history needs each object, for `check`: a snapshot for its
/// own window from its time (never later than now: a claim in the future
/// does not buy a longer lock); whatever else it depends on (packs, index
/// objects, the config and keyrings) for the window from the newest
/// snapshot, as the passes at the end of each backup keep it.
pub fn needed_until(
    window: jiff::SignedDuration,
    now: Timestamp,
    snapshots: &[(String, Timestamp)],
    others: impl IntoIterator<Item = String>,
) -> HashMap<String, Timestamp> {
    let end = |t: Timestamp| t.min(now).saturating_add(window).unwrap_or(Timestamp::MAX);
    let mut out: HashMap<String, Timestamp> = snapshots
        .iter()
        .map(|(k, t)| (k.clone(), end(*t)))
        .collect();
    if let Some(newest) = snapshots.iter().map(|(_, t)| *t).max() {
        for k in others {
            out.insert(k, end(newest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(days: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + days * 86_400).unwrap()
    }

    #[test]
    fn history_needs_each_snapshot_for_its_window_and_the_rest_for_the_newest() {
        let window = crate::time::days(90);
        let now = t(100);
        let snaps = [
            ("snapshots/a".to_string(), t(10)),
            ("snapshots/b".to_string(), t(50)),
            ("snapshots/planted".to_string(), t(9000)), // claims the future
        ];
        let got = needed_until(window, now, &snaps, ["data/p".to_string()]);
        assert_eq!(got["snapshots/a"], t(100));
        assert_eq!(got["snapshots/b"], t(140));
        assert_eq!(got["snapshots/planted"], t(190), "capped at now");
        assert_eq!(got["data/p"], t(190));
        assert!(needed_until(window, now, &[], ["data/p".to_string()]).is_empty());
    }

    #[test]
    fn only_locks_that_end_inside_the_window_are_due() {
        let period = crate::time::days(120); // window 90 + margin 30
        let need = t(100 + 90); // now = day 100
        let needed: HashMap<String, Option<Timestamp>> = [
            ("data/old".to_string(), Some(t(60))), // locked to day 180: due
            ("data/new".to_string(), Some(t(95))), // locked to day 215: fine
            ("index/x".to_string(), Some(t(10))),  // listed old, but the ledger says day 200
            ("config".to_string(), None),          // unknown: read it
        ]
        .into();
        let ledger: HashMap<String, Timestamp> = [("index/x".to_string(), t(200))].into();
        let (due, known, unknown) = plan(&needed, &ledger, period, need);
        assert_eq!(due, ["data/old"]);
        assert_eq!(unknown, ["config"]);
        let mut known: Vec<_> = known.into_iter().map(|(k, _)| k).collect();
        known.sort();
        assert_eq!(known, ["data/new", "index/x"]);
    }

    #[test]
    fn an_object_is_lengthened_at_most_once_per_margin() {
        // Daily passes over 120 days: an object written on day 0 is
        // lengthened on day 31 (its lock then ends before the window's
        // end) and next on day 62, 93: every 31 days, never more often.
        let period = crate::time::days(120);
        let window = crate::time::days(90);
        let needed: HashMap<String, Option<Timestamp>> =
            [("data/p".to_string(), Some(t(0)))].into();
        let mut ledger = HashMap::new();
        let mut days_extended = Vec::new();
        for day in 1..=120 {
            let now = t(day);
            let (due, _, _) = plan(&needed, &ledger, period, now.checked_add(window).unwrap());
            if !due.is_empty() {
                days_extended.push(day);
                ledger.insert("data/p".to_string(), now.checked_add(period).unwrap());
            }
            // The lock always covers the window of a snapshot taken today.
            let until = ledger
                .get("data/p")
                .copied()
                .unwrap_or(t(0).checked_add(period).unwrap());
            assert!(until >= now.checked_add(window).unwrap(), "day {day}");
        }
        assert_eq!(days_extended, [31, 62, 93]);
    }
}
