//! `catalog rebuild`: recreate the local cache from the repository alone.

use super::{Progress, for_each_entry, sync};
use crate::Result;
use crate::catalog::{CachedFile, Catalog};
use crate::repo::Repository;
use crate::repo::tree::EntryKind;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Default)]
pub struct RebuildReport {
    pub blobs: usize,
    pub snapshots: usize,
    /// File-cache rows restored from the newest snapshot of each profile (identity only).
    pub files: usize,
    /// Objects skipped because they could not be read, and why.
    pub warnings: Vec<String>,
}

pub fn rebuild(repo: &Repository, path: &Path, progress: &dyn Progress) -> Result<RebuildReport> {
    Catalog::remove_files(path);
    let mut catalog = Catalog::open(path, &repo.config.id)?;
    progress.phase("index and snapshots", None);
    let synced = sync(repo, &mut catalog)?;
    let warnings = synced.warnings();
    let super::Synced { blobs, snaps, .. } = synced;
    let mut report = RebuildReport {
        blobs: blobs.len(),
        snapshots: snaps.len(),
        files: 0,
        warnings,
    };
    if repo.keys.is_operator() {
        // The newest snapshot per (host, profile) carries what the file cache needs.
        let mut newest: HashMap<(&str, &str), &crate::repo::snapshot::Snapshot> = HashMap::new();
        for (_, s) in &snaps {
            newest.insert((s.host.as_str(), s.profile.as_str()), s);
        }
        progress.phase("file cache", Some(newest.len() as u64));
        for snap in newest.values() {
            let mut rows = Vec::new();
            let read = for_each_entry(repo, &blobs, snap, |e| {
                if e.kind == EntryKind::File {
                    rows.push((
                        e.path,
                        CachedFile {
                            size: e.size,
                            mtime: e.mtime,
                            ctime: e.ctime,
                            ino: e.ino,
                            content: e.content,
                        },
                    ));
                }
                Ok(())
            });
            // The cache only saves reading files again: a list that can
            // not be read costs that, nothing more.
            if let Err(e) = read {
                report.warnings.push(format!(
                    "file cache of {} / {}: {e}; the next backup reads those files again",
                    snap.host, snap.profile
                ));
                continue;
            }
            report.files += rows.len();
            catalog.save_files(rows.iter().map(|(p, f)| (p.as_slice(), f)))?;
            progress.advance(1);
        }
    }
    Ok(report)
}
