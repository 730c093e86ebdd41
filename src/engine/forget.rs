//! Retention: which snapshots a policy keeps, and why (`plan`), and removing
//! the others from the repository (`forget`). Works with the agent key: the
//! snapshot objects it reads hold times, hosts and profiles, no file names.
//!
//! Snapshots are judged per group (host, profile), so one profile's policy
//! never removes another server's history. Within a group a snapshot is kept
//! if any rule keeps it; the newest is always kept, so a server that was off
//! for longer than `keep_within` does not lose its last good backup.
//!
//! A snapshot is judged by [`retention_time`]: a suspect one
//! ([`is_suspect`]: planted, or from a machine whose clock runs ahead) by
//! the time storage recorded writing it, not its claim. A suspect one takes
//! no place that counts (newest, last N, hourly … monthly), so planted
//! snapshots can not push real ones out; only `keep_within` keeps it, or
//! being the newest of a group that has nothing else.

use super::{is_suspect, retention_time, sync_snapshots};
use crate::Result;
use crate::catalog::Catalog;
use crate::config::Retention;
use crate::repo::Repository;
use crate::repo::ids::SnapshotId;
use crate::repo::lock::WriterLock;
use crate::repo::snapshot::Snapshot;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

/// The verdict on one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    pub id: SnapshotId,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    pub host: String,
    pub profile: String,
    pub keep: bool,
    /// The rules that keep it ("within 90d", "daily 3/7", "newest", …); empty if it goes.
    pub reasons: Vec<String>,
}

/// Which snapshots to consider.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub host: Option<String>,
    pub profile: Option<String>,
}

impl Filter {
    fn matches(&self, s: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|h| *h == s.host)
            && self.profile.as_ref().is_none_or(|p| *p == s.profile)
    }
}

/// Period keys for the bucketed rules: snapshots in the same period share a key.
fn period_keys(t: Timestamp, tz: &TimeZone) -> [(i32, i32, i32, i32); 4] {
    let z = t.to_zoned(tz.clone());
    let (y, m, d, h) = (
        z.year() as i32,
        z.month() as i32,
        z.day() as i32,
        z.hour() as i32,
    );
    let week = z.date().iso_week_date();
    [
        (y, m, d, h),
        (y, m, d, 0),
        (week.year() as i32, week.week() as i32, 0, 0),
        (y, m, 0, 0),
    ]
}

/// Decides, for every snapshot matching `filter`, whether `policy` keeps it
/// at time `now`. Periods (hour, day, ISO week, month) are those of `tz`.
pub fn plan(
    snaps: &[(SnapshotId, Snapshot)],
    policy: &Retention,
    filter: &Filter,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    let mut groups: std::collections::BTreeMap<(&str, &str), Vec<&(SnapshotId, Snapshot)>> =
        Default::default();
    for s in snaps.iter().filter(|(_, s)| filter.matches(s)) {
        groups
            .entry((s.1.host.as_str(), s.1.profile.as_str()))
            .or_default()
            .push(s);
    }
    let buckets = [
        ("hourly", policy.keep_hourly),
        ("daily", policy.keep_daily),
        ("weekly", policy.keep_weekly),
        ("monthly", policy.keep_monthly),
    ];
    let within = format_duration(policy.keep_within);
    let mut out = Vec::new();
    for (_, mut group) in groups {
        // Newest first; ties broken by id so the plan is deterministic.
        group.sort_by(|a, b| {
            retention_time(&b.1)
                .cmp(&retention_time(&a.1))
                .then(b.0.0.cmp(&a.0.0))
        });
        let all_suspect = group.iter().all(|x| is_suspect(&x.1));
        let mut last_key: [Option<(i32, i32, i32, i32)>; 4] = [None; 4];
        let mut kept_in: [u32; 4] = [0; 4];
        // Places that count: the snapshots before this one that are not suspect.
        let mut i = 0usize;
        for (n, (id, s)) in group.iter().map(|x| (&x.0, &x.1)).enumerate() {
            let mut reasons = Vec::new();
            let time = retention_time(s);
            if now.duration_since(time) < policy.keep_within {
                reasons.push(format!("within {within}"));
            }
            if is_suspect(s) {
                if all_suspect && n == 0 {
                    reasons.insert(0, "newest".to_string());
                }
                out.push(decision(id, s, reasons));
                continue;
            }
            if i == 0 {
                reasons.insert(0, "newest".to_string());
            }
            if (i as u32) < policy.keep_last {
                reasons.push(format!("last {}/{}", i + 1, policy.keep_last));
            }
            i += 1;
            let keys = period_keys(time, tz);
            for (b, (name, limit)) in buckets.iter().enumerate() {
                if last_key[b] != Some(keys[b]) {
                    last_key[b] = Some(keys[b]);
                    if kept_in[b] < *limit {
                        kept_in[b] += 1;
                        reasons.push(format!("{name} {}/{limit}", kept_in[b]));
                    }
                }
            }
            out.push(decision(id, s, reasons));
        }
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.0.cmp(&b.id.0)));
    out
}

/// The verdict on `s`: kept if any of `reasons` keeps it.
fn decision(id: &SnapshotId, s: &Snapshot, reasons: Vec<String>) -> Decision {
    Decision {
        id: *id,
        time: s.time,
        host: s.host.clone(),
        profile: s.profile.clone(),
        keep: !reasons.is_empty(),
        reasons,
    }
}

/// `90d`, `36h`, `15m`: the largest whole unit.
pub fn format_duration(d: jiff::SignedDuration) -> String {
    let s = d.as_secs();
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= n && s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

#[derive(Debug, Serialize)]
pub struct ForgetReport {
    pub decisions: Vec<Decision>,
    pub removed: usize,
    pub dry_run: bool,
    /// What was not done that the operator should hear of.
    pub warnings: Vec<String>,
}

/// How to apply a policy.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    pub policy: Retention,
    pub filter: Filter,
    /// Whose hours, days, weeks and months.
    pub tz: TimeZone,
    /// "Now" for `keep_within` (simulated in tests).
    pub now: Timestamp,
    /// Plan only: no lock, nothing deleted.
    pub dry_run: bool,
    pub lock_wait: std::time::Duration,
    /// A prune follows (it writes the fleet status): forget need not.
    pub prune_follows: bool,
}

/// What applying a policy does: the verdict on every snapshot it judges;
/// the objects of those no rule keeps are deleted.
#[derive(Clone, Debug)]
pub struct ForgetPlan {
    pub decisions: Vec<Decision>,
}

impl ForgetPlan {
    /// The verdicts of `opts` on `snaps` (see [`plan`]).
    pub fn new(snaps: &[(SnapshotId, Snapshot)], opts: &ForgetOptions) -> ForgetPlan {
        ForgetPlan {
            decisions: plan(snaps, &opts.policy, &opts.filter, &opts.tz, opts.now),
        }
    }

    /// The snapshots that go, oldest first.
    pub fn removals(&self) -> Vec<SnapshotId> {
        self.decisions
            .iter()
            .filter(|d| !d.keep)
            .map(|d| d.id)
            .collect()
    }

    pub fn report(self, dry_run: bool) -> ForgetReport {
        ForgetReport {
            removed: self.removals().len(),
            decisions: self.decisions,
            dry_run,
            warnings: Vec::new(),
        }
    }
}

/// Applies the policy: removes the snapshot objects it does not keep. The data
/// they alone used stays until `prune`. Takes the writer lock; a dry run
/// reads the snapshots, plans, and takes no lock.
pub fn forget(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &ForgetOptions,
) -> Result<ForgetReport> {
    if opts.dry_run {
        let (snaps, _) = sync_snapshots(repo, catalog)?;
        return Ok(ForgetPlan::new(&snaps, opts).report(true));
    }
    let mut lock = WriterLock::of(repo, opts.lock_wait)?;
    let done = forget_locked(repo, catalog, opts, &mut lock);
    lock.release_after(done)
}

fn forget_locked(
    repo: &Repository,
    catalog: &mut Catalog,
    opts: &ForgetOptions,
    lock: &mut WriterLock,
) -> Result<ForgetReport> {
    let (snaps, _) = sync_snapshots(repo, catalog)?;
    let plan = ForgetPlan::new(&snaps, opts);
    let gone = plan.removals();
    if !gone.is_empty() {
        let keys: Vec<String> = gone.iter().map(SnapshotId::key).collect();
        lock.confirm()?;
        repo.store.delete_many(&keys)?;
        let tx = catalog.begin()?;
        for id in &gone {
            tx.remove_snapshot(id)?;
        }
        tx.commit()?;
    }
    let mut report = plan.report(false);
    // The fleet view counts snapshots: told at once, not at the next backup.
    if !gone.is_empty() && !opts.prune_follows {
        report
            .warnings
            .extend(super::fleet::refresh_status(repo, catalog));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(t: &str, host: &str) -> (SnapshotId, Snapshot) {
        let time: Timestamp = t.parse().unwrap();
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&time.as_second().to_be_bytes());
        id[8] = host.len() as u8;
        (SnapshotId(id), Snapshot::bare(time, host))
    }

    fn policy() -> Retention {
        Retention {
            run_by: Default::default(),
            keep_within: jiff::SignedDuration::ZERO,
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        }
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        d.iter()
            .filter(|d| d.keep)
            .map(|d| d.time.strftime("%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_newest_is_always_kept() {
        let snaps: Vec<_> = [
            "2026-11-01T01:00:00Z",
            "2026-11-01T13:00:00Z",
            "2026-11-02T01:00:00Z",
            "2026-11-02T13:00:00Z",
            "2026-11-03T01:00:00Z",
        ]
        .iter()
        .map(|t| snap(t, "a"))
        .collect();
        let now = "2026-11-03T02:00:00Z".parse().unwrap();
        let p = Retention {
            keep_daily: 2,
            ..policy()
        };
        let d = plan(&snaps, &p, &Filter::default(), &TimeZone::UTC, now);
        assert_eq!(kept(&d), ["11-02 13:00", "11-03 01:00"]);
        // In UTC+12 the day boundaries move: 11-01 13:00Z is 11-02 01:00 local.
        let tz = TimeZone::fixed(jiff::tz::offset(12));
        let d = plan(&snaps, &p, &Filter::default(), &tz, now);
        assert_eq!(kept(&d), ["11-02 01:00", "11-03 01:00"]);
        // Nothing else asked for: only the newest stays.
        let d = plan(&snaps, &policy(), &Filter::default(), &TimeZone::UTC, now);
        assert_eq!(kept(&d), ["11-03 01:00"]);
        assert_eq!(d.iter().find(|d| d.keep).unwrap().reasons, ["newest"]);
    }

    /// A snapshot claiming `claims`, written to storage at `stored`.
    fn stored(claims: &str, stored: &str) -> (SnapshotId, Snapshot) {
        let (id, mut s) = snap(claims, "a");
        s.stored = Some(stored.parse().unwrap());
        (id, s)
    }

    #[test]
    fn a_planted_snapshot_is_not_the_newest_and_takes_no_place() {
        let snaps = vec![
            stored("2026-11-01T01:00:00Z", "2026-11-01T01:00:30Z"),
            stored("2026-11-02T01:00:00Z", "2026-11-02T01:00:30Z"),
            // Planted on 11-03, claiming 2099.
            stored("2099-01-01T00:00:00Z", "2026-11-03T01:00:00Z"),
        ];
        let now = "2026-11-03T02:00:00Z".parse().unwrap();
        let last_one = Retention {
            keep_last: 1,
            keep_daily: 1,
            ..policy()
        };
        let d = plan(&snaps, &last_one, &Filter::default(), &TimeZone::UTC, now);
        let verdict = |t: &str| {
            d.iter()
                .find(|d| d.time == t.parse::<Timestamp>().unwrap())
                .unwrap()
        };
        let real = verdict("2026-11-02T01:00:00Z");
        assert!(real.keep);
        assert_eq!(real.reasons, ["newest", "last 1/1", "daily 1/1"]);
        assert!(!verdict("2099-01-01T00:00:00Z").keep);
        assert!(!verdict("2026-11-01T01:00:00Z").keep);
        // keep-within judges it by when storage wrote it: an hour ago, not in 2099.
        let within = Retention {
            keep_within: jiff::SignedDuration::from_hours(2),
            ..policy()
        };
        let d = plan(&snaps, &within, &Filter::default(), &TimeZone::UTC, now);
        let planted = d.iter().find(|d| d.time == snaps[2].1.time).unwrap();
        assert_eq!(planted.reasons, ["within 2h"]);
        let later = now + crate::time::days(1);
        let d = plan(&snaps, &within, &Filter::default(), &TimeZone::UTC, later);
        assert_eq!(kept(&d), ["11-02 01:00"]);
    }

    /// Caught by the S3 prune test: storage records whole seconds, so two
    /// backups in one second must keep the order their claims give.
    #[test]
    fn backups_within_one_stored_second_keep_their_order() {
        let snaps = vec![
            stored("2026-11-03T01:00:00.200Z", "2026-11-03T01:00:00Z"),
            stored("2026-11-03T01:00:00.700Z", "2026-11-03T01:00:00Z"),
        ];
        let p = Retention {
            keep_last: 1,
            ..policy()
        };
        let now = "2026-11-03T02:00:00Z".parse().unwrap();
        let d = plan(&snaps, &p, &Filter::default(), &TimeZone::UTC, now);
        let kept: Vec<Timestamp> = d.iter().filter(|d| d.keep).map(|d| d.time).collect();
        assert_eq!(kept, [snaps[1].1.time]);
    }

    #[test]
    fn a_group_of_only_suspect_snapshots_keeps_its_newest_and_backdated_ones_count() {
        // A machine whose clock runs a day ahead: every snapshot suspect.
        let snaps = vec![
            stored("2026-11-02T01:00:00Z", "2026-11-01T01:00:00Z"),
            stored("2026-11-03T01:00:00Z", "2026-11-02T01:00:00Z"),
        ];
        let now = "2026-11-03T02:00:00Z".parse().unwrap();
        let d = plan(&snaps, &policy(), &Filter::default(), &TimeZone::UTC, now);
        assert_eq!(kept(&d), ["11-03 01:00"]);
        // Backdated imports (claims earlier than written) count as claimed.
        let snaps = vec![
            stored("2026-03-01T10:00:00Z", "2026-11-03T01:00:00Z"),
            stored("2026-03-02T10:00:00Z", "2026-11-03T01:00:01Z"),
        ];
        let p = Retention {
            keep_last: 1,
            ..policy()
        };
        let d = plan(&snaps, &p, &Filter::default(), &TimeZone::UTC, now);
        assert_eq!(kept(&d), ["03-02 10:00"]);
    }

    #[test]
    fn groups_are_judged_apart_and_the_filter_limits_the_plan() {
        let snaps = vec![
            snap("2026-01-01T00:00:00Z", "a"),
            snap("2026-01-02T00:00:00Z", "a"),
            snap("2026-01-01T00:00:00Z", "bb"),
        ];
        let now = "2026-06-01T00:00:00Z".parse().unwrap();
        let d = plan(&snaps, &policy(), &Filter::default(), &TimeZone::UTC, now);
        assert_eq!(
            d.iter().filter(|d| d.keep).count(),
            2,
            "newest of each host"
        );
        let only_a = Filter {
            host: Some("a".into()),
            profile: None,
        };
        let d = plan(&snaps, &policy(), &only_a, &TimeZone::UTC, now);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn within_last_weekly_and_monthly_combine() {
        // One snapshot a day at noon for 120 days.
        let start: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let snaps: Vec<_> = (0..120)
            .map(|i| {
                snap(
                    &crate::time::rfc3339_offset(start + crate::time::days(i)),
                    "a",
                )
            })
            .collect();
        let now = start + crate::time::days(119) + jiff::SignedDuration::from_hours(1);
        let p = Retention {
            keep_within: crate::time::days(10),
            keep_last: 3,
            keep_weekly: 4,
            keep_monthly: 3,
            ..policy()
        };
        let d = plan(&snaps, &p, &Filter::default(), &TimeZone::UTC, now);
        let k = kept(&d);
        // 10 within (days 110..=119), weekly adds Sundays before them, monthly adds month ends.
        assert!(k.contains(&"04-30 12:00".to_string()), "{k:?}");
        assert!(k.contains(&"03-31 12:00".to_string()), "{k:?}");
        assert!(k.contains(&"02-28 12:00".to_string()), "{k:?}");
        assert!(!k.contains(&"01-31 12:00".to_string()), "{k:?}");
        let within = d
            .iter()
            .filter(|d| d.reasons.iter().any(|r| r.starts_with("within")))
            .count();
        assert_eq!(within, 10);
        assert_eq!(format_duration(p.keep_within), "10d");
    }

    #[test]
    fn the_plan_removes_exactly_what_no_rule_keeps() {
        let snaps: Vec<_> = [
            "2026-11-01T01:00:00Z",
            "2026-11-02T01:00:00Z",
            "2026-11-03T01:00:00Z",
        ]
        .iter()
        .map(|t| snap(t, "a"))
        .collect();
        let opts = ForgetOptions {
            policy: Retention {
                keep_last: 2,
                ..policy()
            },
            filter: Filter::default(),
            tz: TimeZone::UTC,
            now: "2026-11-03T02:00:00Z".parse().unwrap(),
            dry_run: true,
            lock_wait: std::time::Duration::ZERO,
            prune_follows: false,
        };
        let plan = ForgetPlan::new(&snaps, &opts);
        assert_eq!(plan.removals(), vec![snaps[0].0]);
        let report = plan.report(true);
        assert_eq!((report.removed, report.decisions.len()), (1, 3));
        assert!(report.dry_run);
        assert_eq!(report.decisions[2].reasons, ["newest", "last 1/2"]);
    }
}
