//! `coffer agent --check`: what would make a profile fail at its scheduled
//! time, found now. Per profile: its sources exist and can be read; its
//! agent key loads; its storage settings are sound (https, CA bundle,
//! credentials file) and, unless offline, storage answers and the key opens
//! the repository; its schedule runs every slot it asks for and never leaves
//! more than a day between runs. Every problem names the thing and the fix.

use crate::config::{MAX_PER_DAY, Profile, Schedule, ScheduleKind};
use crate::repo::Repository;
use crate::repo::keys::AgentKey;
use crate::repo::store::Store;
use jiff::{SignedDuration, Timestamp};
use std::path::Path;

/// One thing wrong with a profile: what (a profile key) and a message that
/// ends with the fix.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub what: &'static str,
    pub message: String,
}

impl Problem {
    fn new(what: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            what,
            message: message.into(),
        }
    }
}

/// What the pre-flight found for one profile.
#[derive(Clone, Debug, Default)]
pub struct ProfileCheck {
    pub problems: Vec<Problem>,
    /// What was not checked, and why (`--offline`).
    pub skipped: Vec<String>,
}

const DAY: i64 = 86_400;

/// The most runs an interval starts on one 24-hour day: a day that begins
/// on a slot holds one more than the whole intervals in it.
fn interval_slots_per_day(step: SignedDuration) -> i64 {
    let step = step.as_secs().max(1);
    (DAY - 1) / step + 1
}

/// The shortest interval that fits `max` runs into a day, in whole minutes.
fn shortest_interval(max: u32) -> String {
    crate::engine::forget::format_duration(SignedDuration::from_mins(
        (DAY / 60 + i64::from(max.max(1)) - 1) / i64::from(max.max(1)),
    ))
}

/// A schedule that asks for runs the per-day cap drops, or that leaves more
/// than a day between runs. Pure: the rule is the same wherever it is asked.
pub fn schedule_problems(s: &Schedule) -> Vec<Problem> {
    let max = s.max_per_day;
    let mut out = Vec::new();
    match &s.kind {
        ScheduleKind::Times(mins) => {
            if mins.len() as u32 > max {
                out.push(Problem::new(
                    "schedule",
                    format!(
                        "times has {} entries but at most {max} runs start a day (max_per_day; {MAX_PER_DAY} at most), so the last {} never run: remove times down to {max}",
                        mins.len(),
                        mins.len() as u32 - max
                    ),
                ));
            }
        }
        ScheduleKind::Interval(step) => {
            let text = crate::engine::forget::format_duration(*step);
            let slots = interval_slots_per_day(*step);
            if slots > i64::from(max) {
                // The cap takes the day's first slots: the rest of the day is empty.
                let last_run = step.as_secs().saturating_mul(i64::from(max) - 1);
                let gap = SignedDuration::from_secs(DAY - last_run);
                out.push(Problem::new(
                    "schedule",
                    format!(
                        "interval = \"{text}\" asks for {slots} runs a day but at most {max} start (max_per_day; {MAX_PER_DAY} at most): {}, then none for {}; use interval = \"{}\" or longer, or times = [...] with at most {max} entries",
                        if max > 1 {
                            format!(
                                "they start in the first {} of the day",
                                crate::engine::forget::format_duration(SignedDuration::from_secs(
                                    last_run
                                ))
                            )
                        } else {
                            "one starts at the day's first slot".to_string()
                        },
                        crate::engine::forget::format_duration(gap),
                        shortest_interval(max)
                    ),
                ));
            }
            if step.as_secs() > DAY {
                out.push(Problem::new(
                    "schedule",
                    format!(
                        "interval = \"{text}\" leaves more than a day between runs: use interval = \"24h\" or shorter, or times = [...]"
                    ),
                ));
            }
        }
    }
    out
}

/// The next `n` runs, as the agent would start them if each ran at its
/// time (starts of earlier runs in `starts`; the per-day cap applies).
pub fn next_runs(
    s: &Schedule,
    offset: SignedDuration,
    starts: &[Timestamp],
    now: Timestamp,
    n: usize,
) -> Vec<Timestamp> {
    let tz = s.tz();
    let mut starts = starts.to_vec();
    let mut at = now;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = super::schedule::next_run(s, &tz, offset, &starts, at);
        out.push(next);
        starts.push(next);
        // The next is planned from just after this one started.
        at = next + SignedDuration::from_secs(1);
    }
    out
}

/// A source that does not exist or cannot be read.
pub fn source_problems(sources: &[std::path::PathBuf]) -> Vec<Problem> {
    let mut out = Vec::new();
    for src in sources {
        let shown = src.display();
        let meta = match std::fs::metadata(src) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let hint = similar_name(src)
                    .map(|m| format!(" (did you mean {}?)", m.display()))
                    .unwrap_or_default();
                out.push(Problem::new(
                    "sources",
                    format!("{shown} does not exist{hint}; correct it in sources, or create it"),
                ));
                continue;
            }
            Err(e) => {
                out.push(Problem::new(
                    "sources",
                    format!("{shown}: {e}; make it readable by the agent's user"),
                ));
                continue;
            }
        };
        let readable = if meta.is_dir() {
            std::fs::read_dir(src).map(|_| ())
        } else {
            std::fs::File::open(src).map(|_| ())
        };
        if let Err(e) = readable {
            out.push(Problem::new(
                "sources",
                format!(
                    "{shown} cannot be read: {e}; make it readable by the agent's user (the installed service reads everything through CAP_DAC_READ_SEARCH)"
                ),
            ));
        }
    }
    out
}

/// A sibling of a missing path whose name is one edit away (`/ect`: `/etc`).
fn similar_name(missing: &Path) -> Option<std::path::PathBuf> {
    let name = missing.file_name()?.to_str()?;
    let parent = missing.parent()?;
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(|n| near(n, name)))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// One insertion, deletion, substitution or swap of neighbours apart.
fn near(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    match (ra.len(), rb.len()) {
        (x, y) if x == y => {
            ra[1..] == rb[1..] || (x >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
        }
        (x, y) if x + 1 == y => ra == &rb[1..],
        (x, y) if y + 1 == x => &ra[1..] == rb,
        _ => false,
    }
}

/// The agent key, the storage settings and (unless `offline`) the storage
/// and the repository behind them.
pub fn repository_problems(p: &Profile, offline: bool) -> (Vec<Problem>, Vec<String>) {
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let key = match &p.agent_key {
        None => {
            problems.push(Problem::new(
                "agent_key",
                "not set: the agent needs it to write snapshots; set agent_key to the agent key file `coffer init` wrote",
            ));
            None
        }
        Some(path) => match AgentKey::load(path) {
            Ok(k) => Some(k),
            Err(e) => {
                problems.push(Problem::new("agent_key", e.to_string()));
                None
            }
        },
    };
    let remote = p.repository.starts_with("s3://");
    if remote && let Err(e) = crate::storage::check_s3_settings(&p.repository, &p.s3) {
        problems.push(Problem::new("s3", e.to_string()));
        return (problems, skipped);
    }
    if remote && offline {
        skipped.push("storage and repository not contacted (--offline)".into());
        return (problems, skipped);
    }
    // Without a usable key, storage and the repository's config are still
    // checked: a missing repository is worth knowing at the same time.
    let opened = Store::open(&p.repository, &p.s3)
        .map_err(crate::repo::RepoError::from)
        .and_then(|store| match &key {
            Some(key) => Repository::open_agent(store, key).map(|_| ()),
            None => Repository::read_config(&store).map(|_| ()),
        });
    if let Err(e) = opened {
        problems.push(Problem::new("repository", e.to_string()));
    }
    (problems, skipped)
}

/// Every check of one profile.
pub fn check_profile(p: &Profile, offline: bool) -> ProfileCheck {
    let mut problems = source_problems(&p.sources);
    let (repo, skipped) = repository_problems(p, offline);
    problems.extend(repo);
    problems.extend(schedule_problems(&p.schedule));
    ProfileCheck { problems, skipped }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, max: u32) -> Schedule {
        Schedule {
            kind,
            max_per_day: max,
            timezone: "UTC".into(),
            jitter: SignedDuration::ZERO,
            catch_up: true,
        }
    }

    fn hours(h: i64) -> ScheduleKind {
        ScheduleKind::Interval(SignedDuration::from_hours(h))
    }

    #[test]
    fn schedules_that_drop_runs_or_leave_days_empty_are_problems() {
        // The default, four hours with six a day: fine.
        assert!(schedule_problems(&Schedule::default()).is_empty());
        assert!(schedule_problems(&sched(hours(24), 6)).is_empty());
        assert!(schedule_problems(&sched(hours(8), 3)).is_empty());
        // Hourly with six a day: 00:00 to 05:00, then 19 hours of nothing.
        let p = schedule_problems(&sched(hours(1), 6));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("24 runs a day"), "{}", p[0].message);
        assert!(p[0].message.contains("first 5h"), "{}", p[0].message);
        assert!(p[0].message.contains("none for 19h"), "{}", p[0].message);
        assert!(
            p[0].message.contains("interval = \"4h\""),
            "{}",
            p[0].message
        );
        // An interval that does not divide the day: 4h30m has days of six.
        let odd = ScheduleKind::Interval(SignedDuration::from_mins(270));
        assert_eq!(schedule_problems(&sched(odd, 5)).len(), 1);
        // Two days apart.
        let p = schedule_problems(&sched(hours(48), 6));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("more than a day"), "{}", p[0].message);
        // Seven times, six a day at most: the seventh never runs.
        let seven = ScheduleKind::Times((0..7).map(|h| h * 180).collect());
        let p = schedule_problems(&sched(seven, 6));
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("times has 7 entries"),
            "{}",
            p[0].message
        );
        assert!(
            p[0].message.contains("last 1 never run"),
            "{}",
            p[0].message
        );
        let six = ScheduleKind::Times((0..6).map(|h| h * 180).collect());
        assert!(schedule_problems(&sched(six, 6)).is_empty());
    }

    #[test]
    fn the_next_runs_follow_the_cap_into_the_next_day() {
        let now: Timestamp = "2026-05-01T00:30:00Z".parse().unwrap();
        let runs = next_runs(&sched(hours(1), 3), SignedDuration::ZERO, &[], now, 6);
        let want: Vec<Timestamp> = [
            "2026-05-01T01:00:00Z",
            "2026-05-01T02:00:00Z",
            "2026-05-01T03:00:00Z",
            "2026-05-02T00:00:00Z",
            "2026-05-02T01:00:00Z",
            "2026-05-02T02:00:00Z",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        assert_eq!(runs, want);
        let runs = next_runs(&Schedule::default(), SignedDuration::ZERO, &[], now, 6);
        assert_eq!(runs.len(), 6);
        assert!(
            runs.windows(2)
                .all(|w| w[1].duration_since(w[0]) == SignedDuration::from_hours(4))
        );
    }

    #[test]
    fn missing_sources_are_named_with_a_near_miss() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let ok = [dir.path().join("etc"), dir.path().join("file")];
        assert!(source_problems(&ok).is_empty());
        let p = source_problems(&[dir.path().join("ect")]);
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("does not exist"), "{}", p[0].message);
        assert!(
            p[0].message.contains(&format!(
                "did you mean {}",
                dir.path().join("etc").display()
            )),
            "{}",
            p[0].message
        );
        assert!(near("ect", "etc") && near("etc", "et") && near("srv", "srvx"));
        assert!(near("data", "dota") && !near("etc", "etc") && !near("etc", "usr"));
    }
}
