//! The `--json` shapes of the commands that print one object or list, in one
//! place. Fields are declared in alphabetical order, the order these outputs
//! have always had; a library report nested inside is carried as a
//! `serde_json::Value`, whose keys serialize sorted, for the same reason.

use serde::Serialize;
use serde_json::Value;
use std::path::Path;

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
    pub broken: Vec<super::agent::BrokenRow<'a>>,
    pub profiles: &'a [super::agent::StatusRow],
}

/// A library report as a sorted-key value (see the module comment).
pub fn sorted(v: &impl Serialize) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
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
        for (declared, sorted) in [
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
