//! The crate error: one enum wrapping each layer's own error.

use std::path::PathBuf;

/// Everything that can go wrong in the library; the CLI adds context and renders it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: {reason}: the restore target is full; free space there or restore to another --target (the repository is fine)"
    )]
    TargetFull { path: PathBuf, reason: String },
    /// A file system that holds the pack spool or the repository is full.
    #[error("{path}: no space left on device ({reason}); {hint}")]
    NoSpace {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Prune(#[from] crate::engine::prune::PruneError),
    #[error(transparent)]
    Erase(#[from] crate::engine::erase::EraseError),
    #[error(transparent)]
    Exclude(#[from] crate::engine::ExcludeError),
    /// A backup source that can not be looked at.
    #[error("source {path}: {reason}; check the path in the profile or command line")]
    Source { path: PathBuf, reason: String },
    #[error("nothing to back up: name at least one path")]
    NoSources,
    /// Includes of a restore or export that select no entry of the snapshot.
    #[error(
        "{} {} nothing in the snapshot{}; `coffer ls SNAPSHOT` lists what it holds (a pattern without '/' matches names anywhere, one with '/' the whole path)",
        patterns.iter().map(|p| format!("--include {p:?}")).collect::<Vec<_>>().join(", "),
        if patterns.len() == 1 { "selects" } else { "select" },
        if *excludes { " (after the excludes)" } else { "" }
    )]
    NothingSelected {
        patterns: Vec<String>,
        excludes: bool,
    },
    /// A glob (`--include`, `find`, …) that does not parse.
    #[error("{what} {pattern:?}: {reason}")]
    Pattern {
        what: &'static str,
        pattern: String,
        reason: String,
    },
    /// `cat` of a path the snapshot does not have.
    #[error("/{path} is not in the snapshot; list it with `coffer ls SNAPSHOT {parent}`")]
    NotInSnapshot { path: String, parent: String },
    /// `cat` of a folder, a link, …
    #[error("/{path} is a {kind}, not a file")]
    NotAFile { path: String, kind: &'static str },
    /// A file needs a blob no index lists.
    #[error("/{path}: blob {blob} is missing from the repository; `coffer check` tells more")]
    MissingBlob { path: String, blob: String },
    /// A file list extent that ends past its blob's plaintext.
    #[error("/{path}: the file list points outside blob {blob}")]
    OutsideBlob { path: String, blob: String },
    /// `--at` (or `as of`) before the first snapshot.
    #[error("no snapshot at or before {at}; list them with `coffer snapshots`")]
    NoSnapshotBefore { at: String },
    /// `latest` (or `--at`) when every snapshot it could choose is suspect.
    #[error(
        "every snapshot{} is suspect: the newest, {newest}: {why}; choose a snapshot by id (`coffer snapshots` lists them) if you trust it",
        if *at { " at or before that time" } else { "" }
    )]
    AllSuspect {
        at: bool,
        newest: String,
        why: String,
    },
    /// None at all, or none that the filters let through.
    #[error("no snapshots (that match the filters); list them with `coffer snapshots`")]
    NoSnapshots,
    /// A file whose stored data could not be read back.
    #[error(
        "/{path}: {reason}; `coffer check --read-data` names what is damaged, and an older snapshot may hold this file intact"
    )]
    Unreadable { path: String, reason: String },
    /// A stage of a pipeline stopped before the work was done; the first
    /// stage's own error is what the caller reports, this only says so.
    #[error("{0}")]
    Stopped(&'static str),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// Stopped by the caller's cancel flag (SIGINT, SIGTERM) at a safe point.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether an I/O error means a full file system (or a quota, or a file-size limit).
pub fn is_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), StorageFull | QuotaExceeded | FileTooLarge)
}

/// What to say after "no space left on device": the OS error, without
/// repeating those words.
pub fn full_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) if e.kind() == std::io::ErrorKind::StorageFull => format!("os error {n}"),
        _ => e.to_string(),
    }
}

impl Error {
    /// Whether storage was out for longer than the retry layer waits (so a
    /// later run may get through: worth saying where a next run exists).
    pub fn storage_gave_up(&self) -> bool {
        match self {
            Error::Storage(s) | Error::Repo(crate::repo::RepoError::Storage(s)) => s.gave_up(),
            _ => false,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
