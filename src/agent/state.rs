//! Per-profile state files (`<state dir>/<profile>.json`): the last run, the
//! recent run starts (for the per-day cap and catch-up) and running totals.
//! Written by each run, read by the agent, `coffer status` and the metrics.
//! The job history itself is in the catalog; this is the at-a-glance view,
//! readable without storage access.

use crate::engine::job::{JobReport, RunStatus};
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
    /// Runs that ended `ok` (a `partial` run is not a success: some files
    /// were not saved).
    #[serde(default)]
    pub runs_ok: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub runs_partial: u64,
    /// Runs that ended `failed` or `cancelled`.
    #[serde(default)]
    pub runs_failed: u64,
    /// The repository's figures as the last run that counted them saw them;
    /// a run that failed before counting leaves them as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryFigures>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Snapshots and stored bytes of the whole repository (every host and
/// profile writing to it), and when they were counted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepositoryFigures {
    pub snapshots: usize,
    pub storage_bytes: u64,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub at: Timestamp,
}

impl RepositoryFigures {
    /// The figures a run counted, if it got that far: a run that counted
    /// the repository always counts at least the snapshot it saved.
    pub fn of(report: &JobReport) -> Option<RepositoryFigures> {
        (report.snapshots > 0).then_some(RepositoryFigures {
            snapshots: report.snapshots,
            storage_bytes: report.storage_bytes,
            at: report.started,
        })
    }
}

/// The state folder the installed agent uses (`StateDirectory=coffer` in
/// scripts/coffer-agent.service, which sets `COFFER_STATE_DIR` to it).
pub const INSTALLED_DIR: &str = "/var/lib/coffer";

/// The state folder: flag, `$COFFER_STATE_DIR`, `$XDG_STATE_HOME/coffer`,
/// `~/.local/state/coffer`, else `/var/lib/coffer`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("COFFER_STATE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("coffer")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/coffer")))
        .unwrap_or_else(|| PathBuf::from(INSTALLED_DIR))
}

/// The installed agent's state folder: `$COFFER_INSTALLED_STATE_DIR` (for
/// packagers who move it, and tests), else [`INSTALLED_DIR`].
pub fn installed_dir() -> PathBuf {
    std::env::var_os("COFFER_INSTALLED_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(INSTALLED_DIR))
}

/// What a state folder holds for a set of profiles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirHolds {
    /// The state file of at least one of the profiles.
    State,
    /// Nothing of theirs (the folder may not exist).
    Nothing,
    /// It cannot be read (another user's, mode 0700).
    Unreadable(String),
}

/// Whether `dir` holds the state of any of `profiles`.
pub fn holds(dir: &Path, profiles: &[&str]) -> DirHolds {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirHolds::Nothing,
        Err(e) => DirHolds::Unreadable(e.to_string()),
        Ok(_) => {
            if profiles.iter().any(|p| path(dir, p).is_file()) {
                DirHolds::State
            } else {
                DirHolds::Nothing
            }
        }
    }
}

/// Which state folder `coffer status` reads when none was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The first candidate that holds state of the profiles.
    Dir(PathBuf),
    /// None does; the unreadable ones with their reason.
    None { unreadable: Vec<(PathBuf, String)> },
}

/// The first of `candidates` (the user's own folder, then the installed
/// agent's) holding state of any of `profiles`.
pub fn find_dir(candidates: &[PathBuf], profiles: &[&str]) -> Found {
    let mut unreadable = Vec::new();
    for dir in candidates {
        match holds(dir, profiles) {
            DirHolds::State => return Found::Dir(dir.clone()),
            DirHolds::Nothing => {}
            DirHolds::Unreadable(why) => unreadable.push((dir.clone(), why)),
        }
    }
    Found::None { unreadable }
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

    /// Writes atomically (temporary file, then rename), mode 0600 in a
    /// folder created 0700: the state names paths, hosts and errors.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let target = path(dir, &self.profile);
        let tmp = dir.join(format!(".{}.json.tmp-{}", self.profile, std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).unwrap_or_default())?;
        drop(f);
        std::fs::rename(&tmp, &target)
    }

    /// The repository's last known figures (a state file written before
    /// they were kept apart has them in its last report only).
    pub fn repository_figures(&self) -> Option<RepositoryFigures> {
        self.repository
            .clone()
            .or_else(|| self.last.as_ref().and_then(RepositoryFigures::of))
    }

    /// Records a start; forgets starts older than two days.
    pub fn started(&mut self, at: Timestamp) {
        self.starts
            .retain(|t| at.duration_since(*t) < crate::time::days(2));
        self.starts.push(at);
        self.running_since = Some(at);
    }

    /// Records a run's end. Only `ok` is a success; a failed run keeps
    /// the repository figures an earlier run counted.
    pub fn finished(&mut self, report: &JobReport) {
        self.running_since = None;
        match report.status {
            RunStatus::Ok => {
                self.runs_ok += 1;
                self.last_success = Some(report.started);
            }
            RunStatus::Partial => self.runs_partial += 1,
            RunStatus::Failed | RunStatus::Cancelled => self.runs_failed += 1,
        }
        if let Some(f) = RepositoryFigures::of(report) {
            self.repository = Some(f);
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
        // A partial run is counted as partial, not as a success: the
        // last-success time (what alerts watch) stays unset.
        assert_eq!((st.runs_ok, st.runs_partial, st.runs_failed), (0, 1, 1));
        assert_eq!(st.last_success, None);
        assert_eq!(st.starts, vec![t0, t1]);
        assert_eq!(st.running_since, None);
        // A scheduled run's start was recorded by the agent: not again.
        let t2 = t1 + jiff::SignedDuration::from_hours(1);
        record_around(dir.path(), "p", true, t2, || report(RunStatus::Ok, t2));
        let st = ProfileState::load(dir.path(), "p");
        assert_eq!(st.starts.len(), 2);
        assert_eq!(st.last.map(|l| l.status), Some(RunStatus::Ok));
        assert_eq!((st.runs_ok, st.last_success), (1, Some(t2)));
        let text = std::fs::read_to_string(dir.path().join("p.json")).unwrap();
        assert!(text.contains("\"status\": \"ok\""), "{text}");
    }

    #[test]
    fn a_failed_run_keeps_the_repository_figures_counted_before() {
        let t0: Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        let t1 = t0 + jiff::SignedDuration::from_hours(4);
        let mut st = ProfileState::default();
        st.finished(&JobReport {
            status: RunStatus::Ok,
            snapshots: 12,
            storage_bytes: 5000,
            ..JobReport::new("p", t0)
        });
        let counted = RepositoryFigures {
            snapshots: 12,
            storage_bytes: 5000,
            at: t0,
        };
        assert_eq!(st.repository_figures(), Some(counted.clone()));
        // A run that failed before counting reports zeros: not figures.
        st.finished(&JobReport::failed("p", t1, "storage down".into()));
        assert_eq!(st.repository_figures(), Some(counted));
        assert_eq!(st.last_success, Some(t0));
        // A state file from before the figures were kept: its last report's.
        let old = ProfileState {
            last: Some(JobReport {
                snapshots: 3,
                storage_bytes: 10,
                ..JobReport::new("p", t1)
            }),
            ..Default::default()
        };
        assert_eq!(
            old.repository_figures().map(|f| (f.snapshots, f.at)),
            Some((3, t1))
        );
    }

    #[test]
    fn state_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        let st = ProfileState {
            profile: "p".into(),
            ..Default::default()
        };
        st.save(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir.join("p.json")), 0o600);
        // Rewriting keeps the mode (a new file each time, renamed over).
        st.save(&dir).unwrap();
        assert_eq!(mode(&dir.join("p.json")), 0o600);
    }

    #[test]
    fn status_finds_the_folder_that_holds_the_profiles_state() {
        let root = tempfile::tempdir().unwrap();
        let (own, installed) = (root.path().join("own"), root.path().join("installed"));
        let candidates = [own.clone(), installed.clone()];
        assert_eq!(
            find_dir(&candidates, &["web"]),
            Found::None { unreadable: vec![] }
        );
        let st = ProfileState {
            profile: "web".into(),
            ..Default::default()
        };
        st.save(&installed).unwrap();
        assert_eq!(
            find_dir(&candidates, &["web"]),
            Found::Dir(installed.clone())
        );
        // Another profile's state does not count.
        assert_eq!(
            find_dir(&candidates, &["db"]),
            Found::None { unreadable: vec![] }
        );
        // The user's own folder wins when it holds the state.
        st.save(&own).unwrap();
        assert_eq!(find_dir(&candidates, &["web", "db"]), Found::Dir(own));
        // A folder that is a file cannot be listed: reported, not skipped silently.
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        match find_dir(std::slice::from_ref(&file), &["web"]) {
            Found::None { unreadable } => assert_eq!(unreadable.len(), 1, "{unreadable:?}"),
            other => panic!("{other:?}"),
        }
    }
}
