//! When a profile runs: pure functions of the schedule, the recent run starts
//! and the time, so the agent, `coffer status` and the tests (on a simulated
//! clock) share one answer.
//!
//! - `times` slots are local times of day in the schedule's zone (a time that a
//!   DST change skips runs that much later, 02:30 becoming 03:30, as cron-like
//!   schedulers and RFC 5545 do);
//!   `interval` slots are multiples of the interval since the Unix epoch.
//! - Each server adds a fixed offset below `jitter`, derived from its host and
//!   profile names: a fleet spreads out, and one server's times stay stable.
//! - At most `max_per_day` runs start on one local day; a run over the cap
//!   moves to the next day's first slot.
//! - If a slot passed since the last run started (the server was off), one
//!   catch-up run starts now; the missed slots are not replayed one by one.

use crate::config::{Schedule, ScheduleKind};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The local day `t` falls on.
pub fn local_day(tz: &TimeZone, t: Timestamp) -> jiff::civil::Date {
    t.to_zoned(tz.clone()).date()
}

/// The first slot strictly after `after`.
pub fn next_slot(s: &Schedule, tz: &TimeZone, after: Timestamp) -> Timestamp {
    match &s.kind {
        ScheduleKind::Interval(d) => {
            let step = d.as_secs().max(1);
            let n = crate::time::unix_seconds(after).div_euclid(step) + 1;
            Timestamp::from_second(n.saturating_mul(step)).unwrap_or(after)
        }
        ScheduleKind::Times(mins) => {
            let mut day = local_day(tz, after);
            // Three days always hold a slot, whatever DST does.
            for _ in 0..3 {
                for m in mins {
                    let at = day.at((m / 60) as i8, (m % 60) as i8, 0, 0);
                    if let Ok(z) = at.to_zoned(tz.clone()) {
                        let t = z.timestamp();
                        if t > after {
                            return t;
                        }
                    }
                }
                day = day.tomorrow().unwrap_or(day);
            }
            after + crate::time::days(1)
        }
    }
}

/// This server's fixed share of the jitter window, below the gap between slots.
pub fn jitter_offset(s: &Schedule, host: &str, profile: &str) -> jiff::SignedDuration {
    let window = s.jitter.as_secs();
    if window <= 0 {
        return jiff::SignedDuration::ZERO;
    }
    let gap = match &s.kind {
        ScheduleKind::Interval(d) => d.as_secs(),
        ScheduleKind::Times(m) if m.len() > 1 => {
            let gaps = m.windows(2).map(|w| (w[1] - w[0]) as i64);
            gaps.chain([(1440 - m[m.len() - 1] + m[0]) as i64])
                .min()
                .unwrap_or(1440)
                * 60
        }
        ScheduleKind::Times(_) => 86_400,
    };
    let window = window.min(gap / 2).max(1);
    let h = blake3::hash(format!("{host}\0{profile}").as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    jiff::SignedDuration::from_secs((n % window as u64) as i64)
}

/// When the next run starts, given the starts of earlier runs (any order;
/// the last two days are enough) and the time now.
pub fn next_run(
    s: &Schedule,
    tz: &TimeZone,
    offset: jiff::SignedDuration,
    starts: &[Timestamp],
    now: Timestamp,
) -> Timestamp {
    let last = starts.iter().max().copied();
    let mut at = match last {
        // A slot passed since the last start: one catch-up run, now.
        Some(l) if s.catch_up && next_slot(s, tz, l - offset) + offset <= now => now,
        Some(l) => (next_slot(s, tz, (l - offset).max(now - offset)) + offset).max(now),
        None => next_slot(s, tz, now - offset) + offset,
    };
    // The per-day cap: skip to the first slot of the next local day.
    for _ in 0..400 {
        let day = local_day(tz, at);
        let today = starts.iter().filter(|t| local_day(tz, **t) == day).count();
        if (today as u32) < s.max_per_day {
            return at;
        }
        let midnight = day
            .tomorrow()
            .ok()
            .and_then(|d| d.to_zoned(tz.clone()).ok())
            .map(|z| z.timestamp())
            .unwrap_or(at + crate::time::days(1));
        at = next_slot(
            s,
            tz,
            midnight - jiff::SignedDuration::from_secs(1) - offset,
        ) + offset;
        if at < midnight {
            at = midnight;
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, max: u32) -> Schedule {
        Schedule {
            kind,
            max_per_day: max,
            timezone: "UTC".into(),
            jitter: jiff::SignedDuration::ZERO,
            catch_up: true,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn times_are_local_and_follow_dst() {
        let s = sched(ScheduleKind::Times(vec![2 * 60 + 30, 12 * 60]), 6);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 2026-03-29: 02:30 does not exist in Berlin; it runs an hour later,
        // at 03:30 CEST = 01:30Z.
        assert_eq!(
            next_slot(&s, &berlin, t("2026-03-28T23:00:00Z")),
            t("2026-03-29T01:30:00Z")
        );
        // Winter: 12:00 CET is 11:00Z.
        assert_eq!(
            next_slot(&s, &berlin, t("2026-01-10T02:00:00Z")),
            t("2026-01-10T11:00:00Z")
        );
        assert_eq!(
            next_slot(&s, &TimeZone::UTC, t("2026-01-10T12:00:00Z")),
            t("2026-01-11T02:30:00Z")
        );
    }

    #[test]
    fn the_cap_moves_runs_to_the_next_day() {
        let s = sched(
            ScheduleKind::Interval(jiff::SignedDuration::from_hours(1)),
            3,
        );
        let starts = [
            t("2026-05-01T00:00:00Z"),
            t("2026-05-01T01:00:00Z"),
            t("2026-05-01T02:00:00Z"),
        ];
        let next = next_run(
            &s,
            &TimeZone::UTC,
            jiff::SignedDuration::ZERO,
            &starts,
            t("2026-05-01T02:00:01Z"),
        );
        assert_eq!(next, t("2026-05-02T00:00:00Z"));
    }

    #[test]
    fn one_catch_up_after_downtime_then_back_to_slots() {
        let s = sched(
            ScheduleKind::Interval(jiff::SignedDuration::from_hours(4)),
            6,
        );
        let z = jiff::SignedDuration::ZERO;
        let mut starts = vec![t("2026-05-01T04:00:00Z")];
        let now = t("2026-05-03T10:17:00Z");
        assert_eq!(next_run(&s, &TimeZone::UTC, z, &starts, now), now);
        starts.push(now);
        assert_eq!(
            next_run(
                &s,
                &TimeZone::UTC,
                z,
                &starts,
                now + jiff::SignedDuration::from_mins(5)
            ),
            t("2026-05-03T12:00:00Z")
        );
        let no_catch_up = Schedule {
            catch_up: false,
            ..s.clone()
        };
        assert_eq!(
            next_run(&no_catch_up, &TimeZone::UTC, z, &starts[..1], now),
            t("2026-05-03T12:00:00Z")
        );
    }

    #[test]
    fn jitter_is_stable_per_server_and_below_the_window() {
        let mut s = sched(
            ScheduleKind::Interval(jiff::SignedDuration::from_hours(4)),
            6,
        );
        s.jitter = jiff::SignedDuration::from_mins(10);
        let a = jitter_offset(&s, "web-1", "p");
        assert_eq!(a, jitter_offset(&s, "web-1", "p"));
        let spread: std::collections::HashSet<_> = (0..20)
            .map(|i| jitter_offset(&s, &format!("web-{i}"), "p"))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
        assert!(
            spread
                .iter()
                .all(|d| *d >= jiff::SignedDuration::ZERO
                    && *d < jiff::SignedDuration::from_mins(10))
        );
    }
}
