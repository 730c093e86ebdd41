//! The agent: the scheduler, one run of a profile (`job`), hooks, the
//! per-profile state, notifications and metrics, and the service loop.
//! Backups, retention and prune themselves are engine use cases.

pub mod hooks;
pub mod job;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod service;
pub mod state;
