//! The `--json` shapes of every command, in one place. Each prints its keys
//! in the order it always has: alphabetical, except `backup`'s (declared
//! order); a library report nested inside is carried as a
//! `serde_json::Value`, whose keys serialize sorted, for the same reason.

use crate::catalog::RunStatus;
use crate::engine::history;
use crate::engine::restore::Action;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `key generate --json`.
#[derive(Serialize)]
pub struct KeyGenerated<'a> {
    pub identity: &'a Path,
    pub recipient: String,
    pub signer: String,
    pub signing_key: &'a Path,
}

/// `key add-signing --json`.
#[derive(Serialize)]
pub struct SigningKeyAdded<'a> {
    pub identity: &'a Path,
    pub signer: String,
    pub signing_key: &'a Path,
}

/// `init --json`.
#[derive(Serialize)]
pub struct Initialized<'a> {
    pub agent_key: &'a Path,
    pub capabilities: Value,
    pub id: &'a str,
    pub repository: String,
}

/// One row of `snapshots --json`.
#[derive(Serialize)]
pub struct SnapshotRow<'a> {
    pub bytes: u64,
    pub damage: Option<&'a str>,
    pub data_added: u64,
    pub dirs: u64,
    pub files: u64,
    pub host: &'a str,
    pub id: String,
    pub paths: &'a [String],
    pub profile: &'a str,
    pub short_id: String,
    pub state: crate::engine::SnapshotState,
    /// When storage recorded writing it (null where the backend gives no time).
    pub stored: Option<String>,
    /// It claims a time later than `stored` (beyond the clock skew): never `latest`.
    pub suspect: bool,
    pub time: String,
    pub tree_blobs: usize,
}

/// One row of `ls --json`.
#[derive(Serialize)]
pub struct EntryRow {
    pub mode: u32,
    pub mtime: String,
    pub path: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `diff --json`.
#[derive(Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<Changed>,
    pub from: String,
    pub removed: Vec<String>,
    pub summary: DiffSummary,
    pub to: String,
}

#[derive(Serialize)]
pub struct Changed {
    pub path: String,
    pub what: Vec<&'static str>,
}

#[derive(Serialize)]
pub struct DiffSummary {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

/// `copy --json`.
#[derive(Serialize)]
pub struct Copied {
    pub bytes_copied: u64,
    /// Objects of a locked copy whose lock was lengthened.
    pub locks_extended: usize,
    pub objects_copied: u64,
    pub objects_present: u64,
    pub to: String,
}

/// `export --json`.
#[derive(Serialize)]
pub struct Exported<'a> {
    pub archive_bytes: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub files: u64,
    pub format: &'static str,
    pub links: u64,
    pub output: &'a str,
    pub seconds: f64,
    pub snapshot: String,
    pub special: u64,
}

/// `catalog rebuild --json`.
#[derive(Serialize)]
pub struct Rebuilt<'a> {
    pub blobs: usize,
    pub catalog: &'a Path,
    pub files: usize,
    pub snapshots: usize,
}

/// `repair keyring --json`.
#[derive(Serialize)]
pub struct KeyringRepaired<'a> {
    pub dry_run: bool,
    pub written: &'a [String],
}

/// `forget --json` (with `--prune`, the prune report too; null without).
#[derive(Serialize)]
pub struct Forgot {
    pub forget: Value,
    pub prune: Option<Value>,
}

/// `status --json`: every profile, and the files that do not parse.
#[derive(Serialize)]
pub struct Status<'a> {
    pub broken: Vec<BrokenRow<'a>>,
    pub profiles: &'a [StatusRow],
}

/// `agent --check --json`: every profile's problems and next runs, the
/// files that do not parse, and problems of the folder itself.
#[derive(Serialize)]
pub struct AgentCheck<'a> {
    pub broken: Vec<BrokenRow<'a>>,
    pub folder_problems: Vec<String>,
    pub ok: bool,
    pub profiles: Vec<AgentCheckRow<'a>>,
}

#[derive(Serialize)]
pub struct AgentCheckRow<'a> {
    pub file: &'a PathBuf,
    #[serde(serialize_with = "rfc3339_list")]
    pub next_runs: Vec<jiff::Timestamp>,
    pub not_checked: &'a [String],
    pub problems: &'a [crate::agent::preflight::Problem],
    pub profile: &'a str,
}

fn rfc3339_list<S: serde::Serializer>(v: &[jiff::Timestamp], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|t| crate::time::rfc3339(*t)))
}

/// A library report as a sorted-key value (see the module comment).
pub fn sorted(v: &impl Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

/// `coffer backup --json`.
#[derive(serde::Serialize)]
pub(super) struct BackupJson<'a> {
    pub(super) snapshot: String,
    pub(super) files: u64,
    pub(super) dirs: u64,
    pub(super) bytes: u64,
    pub(super) files_new: u64,
    pub(super) files_changed: u64,
    pub(super) files_unchanged: u64,
    /// Of `files`: second names of a file stored once.
    pub(super) hardlinks: u64,
    pub(super) symlinks: u64,
    /// Fifos and device nodes.
    pub(super) special: u64,
    /// Left out (not stored).
    pub(super) sockets: u64,
    pub(super) data_added: u64,
    pub(super) stored_added: u64,
    pub(super) packs_added: u64,
    pub(super) skipped: Vec<SkippedRow<'a>>,
    pub(super) changed_during_backup: &'a [String],
    pub(super) warnings: &'a [String],
    pub(super) seconds: f64,
}

/// A file or folder a backup could not read.
#[derive(serde::Serialize)]
pub(super) struct SkippedRow<'a> {
    pub(super) path: &'a str,
    pub(super) error: &'a str,
}

/// `restore --dry-run --json`.
#[derive(Serialize)]
pub(super) struct PlanJson<'a> {
    pub(super) dry_run: bool,
    pub(super) entries: Vec<PlanEntryJson>,
    pub(super) snapshot: &'a str,
}

#[derive(Serialize)]
pub(super) struct PlanEntryJson {
    pub(super) action: Action,
    pub(super) path: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
}

/// `restore --json` (fields in the order they always had: alphabetical).
#[derive(Serialize)]
pub(super) struct RestoreJson<'a> {
    pub(super) bytes: u64,
    pub(super) dirs: u64,
    pub(super) failed: Vec<FailedJson<'a>>,
    pub(super) fallback: Vec<FallbackJson<'a>>,
    pub(super) files: u64,
    pub(super) links: u64,
    pub(super) skipped: u64,
    pub(super) snapshot: String,
    /// Only with `--verify`; null otherwise.
    pub(super) verified: Option<u64>,
    pub(super) warnings: &'a [String],
}

#[derive(Serialize)]
pub(super) struct FailedJson<'a> {
    pub(super) error: &'a str,
    pub(super) path: String,
}

#[derive(Serialize)]
pub(super) struct FallbackJson<'a> {
    pub(super) error: Option<&'a str>,
    pub(super) from: Option<String>,
    pub(super) path: String,
    pub(super) restored: bool,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub(super) time: Option<jiff::Timestamp>,
}

/// A snapshot as `find` shows it.
#[derive(Serialize)]
pub(super) struct SnapRef {
    pub(super) id: String,
    pub(super) time: String,
}

/// `find --json`, serialized as it is written.
pub(super) struct FindJson<'a> {
    pub(super) found: &'a [history::Found],
    pub(super) refs: &'a [SnapRef],
}

#[derive(Serialize)]
pub(super) struct FoundJson<'a> {
    pub(super) path: std::borrow::Cow<'a, str>,
    pub(super) versions: Vec<VersionJson<'a>>,
}

#[derive(Serialize)]
pub(super) struct VersionJson<'a> {
    pub(super) size: u64,
    pub(super) mtime: String,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) snapshots: Held<'a>,
}

/// The snapshots that hold a version, by reference to the shared list.
pub(super) struct Held<'a> {
    pub(super) which: &'a [usize],
    pub(super) refs: &'a [SnapRef],
}

impl Serialize for Held<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.which.iter().filter_map(|n| self.refs.get(*n)))
    }
}

impl Serialize for FindJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.found.iter().map(|f| {
            FoundJson {
                path: String::from_utf8_lossy(&f.path),
                versions: f
                    .versions
                    .iter()
                    .map(|v| VersionJson {
                        size: v.size,
                        mtime: crate::time::rfc3339_nanos(v.mtime),
                        kind: v.kind.name(),
                        snapshots: Held {
                            which: &v.snapshots,
                            refs: self.refs,
                        },
                    })
                    .collect(),
            }
        }))
    }
}

/// One profile's line of `coffer status` (and its `--json` object, whose
/// keys have always been in alphabetical order: keep the fields so).
#[derive(serde::Serialize)]
pub(super) struct StatusRow {
    pub(super) bytes_added: Option<u64>,
    pub(super) file: PathBuf,
    pub(super) last_error: Option<String>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub(super) last_run: Option<jiff::Timestamp>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub(super) last_success: Option<jiff::Timestamp>,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub(super) next_run: jiff::Timestamp,
    pub(super) profile: String,
    /// The repository URL `snapshots` and `storage_bytes` are counts of.
    pub(super) repository: String,
    /// When `snapshots` and `storage_bytes` were counted.
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub(super) repository_counted: Option<jiff::Timestamp>,
    pub(super) result: Option<RunStatus>,
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub(super) running_since: Option<jiff::Timestamp>,
    pub(super) runs_failed: u64,
    pub(super) runs_ok: u64,
    pub(super) runs_partial: u64,
    pub(super) seconds: Option<f64>,
    pub(super) skipped_files: Option<usize>,
    pub(super) snapshot: Option<String>,
    /// Of the whole repository (every host and profile writing to it).
    pub(super) snapshots: Option<usize>,
    /// Of the whole repository.
    pub(super) storage_bytes: Option<u64>,
}

/// A profile file that does not parse.
#[derive(serde::Serialize)]
pub(super) struct BrokenRow<'a> {
    pub(super) error: &'a str,
    pub(super) file: &'a PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints as it is declared, and as the same value with sorted keys.
    fn declared_and_sorted(v: &impl Serialize) -> (String, String) {
        let declared = serde_json::to_string(v).unwrap();
        let sorted = serde_json::to_string(&sorted(v).unwrap()).unwrap();
        (declared, sorted)
    }

    #[test]
    fn every_shape_prints_its_keys_in_alphabetical_order() {
        let diff = Diff {
            added: vec!["a".into()],
            changed: vec![Changed {
                path: "c".into(),
                what: vec!["size"],
            }],
            from: "1".into(),
            removed: vec![],
            summary: DiffSummary {
                added: 1,
                changed: 1,
                removed: 0,
            },
            to: "2".into(),
        };
        let exported = Exported {
            archive_bytes: 1,
            bytes: 2,
            dirs: 3,
            files: 4,
            format: "tar",
            links: 5,
            output: "-",
            seconds: 0.5,
            snapshot: "s".into(),
            special: 6,
        };
        let row = EntryRow {
            mode: 0o644,
            mtime: "t".into(),
            path: "p".into(),
            size: 1,
            kind: "file",
        };
        let copied = Copied {
            bytes_copied: 1,
            locks_extended: 4,
            objects_copied: 2,
            objects_present: 3,
            to: "t".into(),
        };
        let generated = KeyGenerated {
            identity: Path::new("i"),
            recipient: "age1".into(),
            signer: "ed25519:".into(),
            signing_key: Path::new("i.sign"),
        };
        let added = SigningKeyAdded {
            identity: Path::new("i"),
            signer: "ed25519:".into(),
            signing_key: Path::new("i.sign"),
        };
        let notes = vec!["n".to_string()];
        let hosts = vec!["web-1".to_string()];
        let fleet = Fleet {
            generated: "g".into(),
            location: "s3://b",
            repositories: vec![FleetRepo {
                age_seconds: Some(1),
                damage_records: Some(0),
                damaged: false,
                damaged_snapshots: Some(0),
                hosts: Some(&hosts),
                hosts_sealed: false,
                id: Some("i"),
                last_complete: Some("t".into()),
                newest_stored: None,
                notes: &notes,
                repository: "r",
                snapshots: 1,
                stale: false,
                state: "ok",
                status_written: None,
                stored_bytes: Some(1),
                strip: FleetStrip {
                    cells: "c",
                    per_day: 6,
                    start: "s".into(),
                },
            }],
            stale_after_seconds: None,
            unlisted: vec![FleetUnlisted {
                folder: "f/",
                reason: "r",
            }],
        };
        for (declared, sorted) in [
            declared_and_sorted(&fleet),
            declared_and_sorted(&generated),
            declared_and_sorted(&added),
            declared_and_sorted(&diff),
            declared_and_sorted(&exported),
            declared_and_sorted(&row),
            declared_and_sorted(&copied),
        ] {
            assert_eq!(declared, sorted);
        }
    }

    #[test]
    fn a_nested_report_keeps_sorted_keys() {
        #[derive(Serialize)]
        struct Report {
            zeta: u8,
            alpha: u8,
        }
        let f = Forgot {
            forget: sorted(&Report { zeta: 1, alpha: 2 }).unwrap(),
            prune: None,
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"forget":{"alpha":2,"zeta":1},"prune":null}"#
        );
    }
}

/// `fleet --json` (and the data the HTML page embeds).
#[derive(Serialize)]
pub struct Fleet<'a> {
    pub generated: String,
    pub location: &'a str,
    pub repositories: Vec<FleetRepo<'a>>,
    pub stale_after_seconds: Option<i64>,
    pub unlisted: Vec<FleetUnlisted<'a>>,
}

/// One repository of `fleet --json`: what storage recorded (`snapshots`,
/// `newest_stored`) and what its status claims (the rest), judged.
#[derive(Serialize)]
pub struct FleetRepo<'a> {
    pub age_seconds: Option<i64>,
    pub damage_records: Option<u64>,
    pub damaged: bool,
    pub damaged_snapshots: Option<u64>,
    pub hosts: Option<&'a [String]>,
    /// The status holds host names only the operator or this repository's agent key opens.
    pub hosts_sealed: bool,
    pub id: Option<&'a str>,
    pub last_complete: Option<String>,
    pub newest_stored: Option<String>,
    pub notes: &'a [String],
    pub repository: &'a str,
    pub snapshots: u64,
    pub stale: bool,
    pub state: &'static str,
    pub status_written: Option<String>,
    pub stored_bytes: Option<u64>,
    pub strip: FleetStrip<'a>,
}

/// The 90-day strip: one character per schedule slot from `start`.
#[derive(Serialize)]
pub struct FleetStrip<'a> {
    pub cells: &'a str,
    pub per_day: u32,
    pub start: String,
}

/// A folder `fleet` could not list.
#[derive(Serialize)]
pub struct FleetUnlisted<'a> {
    pub folder: &'a str,
    pub reason: &'a str,
}

/// `undelete --json`: the plan (restored keys with the version and how,
/// hidden keys, spared keys, how many were unchanged) and what was done.
#[derive(Serialize)]
pub struct Undeleted {
    pub as_of: String,
    pub dry_run: bool,
    pub failed: Vec<UndeleteFailure>,
    pub hidden: usize,
    pub plan: Value,
    pub restored: usize,
}

/// A key `undelete` could not restore or hide.
#[derive(Serialize)]
pub struct UndeleteFailure {
    pub key: String,
    pub reason: String,
}
