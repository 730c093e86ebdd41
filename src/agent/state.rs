//! Per-profile state files (`<state dir>/<profile>.json`): the last run, the
//! recent run starts (for the per-day cap and catch-up) and running totals.
//! Written by each run, read by the agent, `coffer status` and the metrics.
//! The job history itself is in the catalog; this is the at-a-glance view,
//! readable without storage access.

use crate::engine::job::JobReport;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProfileState {
    pub profile: String,
    /// Start times of recent runs (two days), successful or not.
    #[serde(default)]
    #[serde(with = "crate::time::serde_rfc3339::vec")]
    pub starts: Vec<Timestamp>,
    /// Set while a run is under way (cleared when it ends).
    #[serde(default)]
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub running_since: Option<Timestamp>,
    #[serde(default)]
    pub last: Option<JobReport>,
    #[serde(default)]
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub last_success: Option<Timestamp>,
    #[serde(default)]
    pub runs_ok: u64,
    #[serde(default)]
    pub runs_failed: u64,
}

/// The state folder: flag, `$COFFER_STATE_DIR`, `$XDG_STATE_HOME/coffer`,
/// `~/.local/state/coffer`, else `/var/lib/coffer`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("COFFER_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("coffer")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/coffer")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/coffer"))
}

fn path(dir: &Path, profile: &str) -> PathBuf {
    dir.join(format!("{profile}.json"))
}

impl ProfileState {
    /// Reads a profile's state; a missing or unreadable file is a fresh state
    /// (it is rewritten at the next run).
    pub fn load(dir: &Path, profile: &str) -> ProfileState {
        std::fs::read(path(dir, profile))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| ProfileState {
                profile: profile.to_string(),
                ..Default::default()
            })
    }

    /// Writes atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let target = path(dir, &self.profile);
        let tmp = dir.join(format!(".{}.json.tmp-{}", self.profile, std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(&tmp, &target)
    }

    /// Records a start; forgets starts older than two days.
    pub fn started(&mut self, at: Timestamp) {
        self.starts
            .retain(|t| at.duration_since(*t) < crate::time::days(2));
        self.starts.push(at);
        self.running_since = Some(at);
    }

    pub fn finished(&mut self, report: &JobReport) {
        self.running_since = None;
        if report.status.succeeded() {
            self.runs_ok += 1;
            self.last_success = Some(report.started);
        } else {
            self.runs_failed += 1;
        }
        self.last = Some(report.clone());
    }
}

/// Runs `job` between its start and its end recorded in the profile's state
/// file (`coffer run`). A run the agent started has its start recorded by
/// the agent already (`scheduled`): only `running_since` is set again.
pub fn record_around(
    dir: &Path,
    profile: &str,
    scheduled: bool,
    started: Timestamp,
    job: impl FnOnce() -> JobReport,
) -> JobReport {
    let mut state = ProfileState::load(dir, profile);
    if scheduled {
        state.running_since = Some(started);
    } else {
        state.started(started);
    }
    let _ = state.save(dir);
    let report = job();
    state.finished(&report);
    let _ = state.save(dir);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::RunStatus;

    #[test]
    fn a_run_is_recorded_around_the_job_and_counted_by_status() {
        let dir = tempfile::tempdir().unwrap();
        let t0: Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        let report = |status, at| JobReport {
            status,
            started: at,
            ..JobReport::new("p", at)
        };
        let r = record_around(dir.path(), "p", false, t0, || {
            let during = ProfileState::load(dir.path(), "p");
            assert_eq!(during.running_since, Some(t0), "running while the job runs");
            report(RunStatus::Partial, t0)
        });
        assert_eq!(r.status, RunStatus::Partial);
        let t1 = t0 + jiff::SignedDuration::from_hours(1);
        record_around(dir.path(), "p", false, t1, || {
            report(RunStatus::Cancelled, t1)
        });
        let st = ProfileState::load(dir.path(), "p");
        assert_eq!((st.runs_ok, st.runs_failed), (1, 1));
        assert_eq!(st.last_success, Some(t0));
        assert_eq!(st.starts, vec![t0, t1]);
        assert_eq!(st.running_since, None);
        // A scheduled run's start was recorded by the agent: not again.
        let t2 = t1 + jiff::SignedDuration::from_hours(1);
        record_around(dir.path(), "p", true, t2, || report(RunStatus::Ok, t2));
        let st = ProfileState::load(dir.path(), "p");
        assert_eq!(st.starts.len(), 2);
        assert_eq!(st.last.map(|l| l.status), Some(RunStatus::Ok));
        let text = std::fs::read_to_string(dir.path().join("p.json")).unwrap();
        assert!(text.contains("\"status\": \"ok\""), "{text}");
    }
}
