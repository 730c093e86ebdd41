//! Per-profile state files (`<state dir>/<profile>.json`): the last run, the
//! recent run starts (for the per-day cap and catch-up) and running totals.
//! Written by each run, read by the agent, `coffer status` and the metrics.
//! The job history itself is in the catalog; this is the at-a-glance view,
//! readable without storage access.

use super::job::JobReport;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProfileState {
    pub profile: String,
    /// Start times of recent runs (two days), successful or not.
    #[serde(default)]
    pub starts: Vec<DateTime<Utc>>,
    /// Set while a run is under way (cleared when it ends).
    #[serde(default)]
    pub running_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last: Option<JobReport>,
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
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
    pub fn started(&mut self, at: DateTime<Utc>) {
        self.starts.retain(|t| at - *t < chrono::Duration::days(2));
        self.starts.push(at);
        self.running_since = Some(at);
    }

    pub fn finished(&mut self, report: &JobReport) {
        self.running_since = None;
        if report.status == "failed" || report.status == "cancelled" {
            self.runs_failed += 1;
        } else {
            self.runs_ok += 1;
            self.last_success = Some(report.started);
        }
        self.last = Some(report.clone());
    }
}
