//! The agent: the scheduler, the per-profile state, notifications and
//! metrics, and the service loop. The job a run carries out (hooks, backup,
//! copy, retention, prune) is the engine's use case `engine::job`.

pub mod clock;
pub mod journal;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod schedule;
pub mod service;
pub mod state;
pub mod systemd;
