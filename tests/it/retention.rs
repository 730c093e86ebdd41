//! Scheduling, retention and prune over three simulated months: the real
//! scheduler, backup engine, forget and prune, driven by a simulated clock
//! (snapshot times are the simulated ones) against a local repository.

use crate::env::{TestEnv, write_random_file};
use coffer::agent::schedule::{local_day, next_run};
use coffer::catalog::Catalog;
use coffer::config::{Retention, Schedule, ScheduleKind};
use coffer::engine::NoProgress;
use coffer::engine::backup::{BackupOptions, backup};
use coffer::engine::forget::{Filter, ForgetOptions, forget};
use coffer::engine::prune::{PruneOptions, prune};
use coffer::repo::Repository;
use coffer::repo::keys::AgentKey;
use coffer::repo::store::Store;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;

fn data_bytes(env: &TestEnv) -> u64 {
    env.packs().iter().map(|(_, _, s)| s).sum()
}

#[test]
fn three_months_of_six_a_day_keep_the_window_and_storage_stays_flat() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    for i in 0..4 {
        write_random_file(&src.join(format!("stable-{i}")), 200 * 1024, i);
    }
    let key = AgentKey::load(&env.agent_key).unwrap();
    let store = Store::open(env.repo_url.to_str().unwrap(), &Default::default()).unwrap();
    let repo = Repository::open_agent(store, &key).unwrap();
    let mut catalog = Catalog::open(&env.path("sim.sqlite"), &repo.config.id).unwrap();
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let schedule = Schedule {
        kind: ScheduleKind::Times(vec![30, 270, 510, 750, 990, 1230]),
        max_per_day: 6,
        timezone: "Europe/Berlin".into(),
        jitter: SignedDuration::ZERO,
        catch_up: true,
    };
    let policy = Retention {
        keep_within: coffer::time::days(90),
        ..Retention::default()
    };
    let prune_opts = PruneOptions {
        grace: SignedDuration::ZERO,
        ..Default::default()
    };
    let filter = Filter::default();
    let cancel = AtomicBool::new(false);

    let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let outage = (
        start + coffer::time::days(94) + SignedDuration::from_hours(2),
        start + coffer::time::days(96) + SignedDuration::from_hours(13),
    );
    let end = start + coffer::time::days(100);
    let mut now = start;
    let mut starts: Vec<Timestamp> = Vec::new();
    let mut made: Vec<Timestamp> = Vec::new();
    let mut changed_on: Option<jiff::civil::Date> = None;
    let mut catch_ups = 0;
    let mut bytes_by_day: BTreeMap<i64, u64> = BTreeMap::new();
    loop {
        let mut at = next_run(&schedule, &tz, SignedDuration::ZERO, &starts, now);
        if at > outage.0 && now < outage.1 {
            // The server is off: the clock jumps to when it is back.
            now = outage.1;
            at = next_run(&schedule, &tz, SignedDuration::ZERO, &starts, now);
            assert_eq!(at, now, "one catch-up run right after the outage");
            catch_ups += 1;
        } else if at == now && !starts.is_empty() {
            catch_ups += 1;
        }
        if at >= end {
            break;
        }
        now = at;
        let day = local_day(&tz, now);
        if changed_on != Some(day) {
            // One file changes every day: its old versions expire with the window.
            write_random_file(&src.join("daily"), 64 * 1024, made.len() as u64 + 100);
            changed_on = Some(day);
        }
        let opts = BackupOptions {
            sources: vec![src.clone()],
            profile: "sim".into(),
            time: Some(now),
            ..Default::default()
        };
        backup(&repo, &mut catalog, &opts, &NoProgress, &cancel).unwrap();
        starts.push(now);
        made.push(now);
        let report = forget(
            &repo,
            &mut catalog,
            &ForgetOptions {
                policy: policy.clone(),
                filter: filter.clone(),
                tz: tz.clone(),
                now,
                dry_run: false,
                lock_wait: Default::default(),
                prune_follows: false,
            },
        )
        .unwrap();
        // The expected set: every snapshot made within 90 days of now.
        let expect: BTreeSet<Timestamp> = made
            .iter()
            .copied()
            .filter(|t| now.duration_since(*t) < coffer::time::days(90))
            .collect();
        let kept: BTreeSet<Timestamp> = report
            .decisions
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.time)
            .collect();
        assert_eq!(
            kept, expect,
            "at {now}: the kept snapshots are exactly those of the last 90 days"
        );
        let in_repo = repo.list_snapshot_ids().unwrap().len();
        assert_eq!(
            in_repo,
            expect.len(),
            "at {now}: forgotten snapshots are gone from storage"
        );
        if starts.iter().filter(|t| local_day(&tz, **t) == day).count() == 1 {
            prune(&repo, &mut catalog, &prune_opts, &AtomicBool::new(false)).unwrap();
            bytes_by_day.insert(now.duration_since(start).as_hours() / 24, data_bytes(&env));
        }
    }
    // 100 days × 6, less the runs the outage cost, plus its one catch-up.
    let mut per_day: BTreeMap<jiff::civil::Date, usize> = BTreeMap::new();
    for t in &made {
        *per_day.entry(local_day(&tz, *t)).or_default() += 1;
    }
    assert!(
        per_day.values().all(|n| *n <= 6),
        "the cap of 6 a day holds: {per_day:?}"
    );
    assert_eq!(catch_ups, 1, "exactly one catch-up run after the outage");
    assert!(
        (570..=600).contains(&made.len()),
        "about 100 days of six a day: {} runs",
        made.len()
    );
    let days_90: usize = made
        .iter()
        .filter(|t| **t < start + coffer::time::days(90))
        .count();
    assert_eq!(days_90, 540, "three months of six a day");

    // Once the window is full, storage is flat: each day's expired data leaves.
    let full = bytes_by_day
        .range(91..)
        .map(|(_, b)| *b)
        .collect::<Vec<_>>();
    let at_91 = full[0];
    for b in &full {
        assert!(
            *b <= at_91 + at_91 / 50,
            "storage must not grow once the window is full: {full:?}"
        );
    }
    let mid = bytes_by_day.range(60..61).map(|(_, b)| *b).next().unwrap();
    assert!(
        at_91 > mid,
        "storage grew while the window filled ({mid} -> {at_91})"
    );
    // Every kept snapshot still restores: check the repository with the identity.
    env.check(true).expect_ok();
}
