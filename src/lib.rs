//! coffer: an encrypted, deduplicating backup agent.
//!
//! Layers, arrows pointing down only:
//!
//! * [`cli`] is the front end; only it prints (the agent logs through
//!   `tracing`, rendered by the CLI as plain or JSON lines).
//! * [`agent`] schedules and runs profiles as a service: scheduling, hooks,
//!   state, notifications, metrics. Each run is a child `coffer run`.
//! * [`engine`] holds the use cases (backup, restore, check, catalog rebuild,
//!   forget, prune).
//!   It is the only layer that combines the repository format, storage and the
//!   catalog.
//! * [`repo`] is the repository format: ids, keys, chunking, packs, index,
//!   snapshots, the lock. It knows nothing of the CLI.
//! * [`storage`] moves opaque bytes (a local directory, S3 over TLS; every
//!   backend under one retry layer) and knows
//!   nothing of the format.
//! * [`catalog`] is the local SQLite cache.
//!
//! # Concurrency
//!
//! Storage is async (the S3 SDK is); everything else is plain threads.
//! [`repo::Store`] owns a small tokio runtime and offers blocking calls, so the
//! engines stay synchronous and readable. A backup runs a fixed pipeline:
//! one walker thread (sorted, deterministic order) feeds the driver, which owns
//! the only SQLite connection; file reading, chunking and hashing run on a
//! bounded pool of reader threads; compression and encryption on a bounded pool
//! of sealer threads; one packer thread assembles packs and hands them to the
//! runtime for upload with a bounded number in flight. Every hop is a bounded
//! channel, so memory stays flat whatever the data size, and both cores stay busy.

pub mod agent;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod duration;
pub mod engine;
pub mod error;
pub mod host;
pub mod repo;
pub mod storage;
pub mod time;

pub use error::{Error, Result};
