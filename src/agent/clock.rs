//! The agent's two seams: the clock it plans by and sleeps on, and the
//! runner that carries out one run. The binary uses the wall clock and a
//! child process per run (`coffer run --scheduled`); tests use tokio's
//! paused time ([`TokioClock`]) and a runner of their own, so months of
//! schedule run in seconds, in-process.

use crate::config::Profile;
use crate::engine::job::JobReport;
use jiff::Timestamp;
use std::future::Future;
use std::pin::Pin;

/// A future the agent awaits, owned (it may outlive the call that made it).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where the agent's "now" comes from, and how it waits for a time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Resolves at `t` (at once if `t` has passed).
    fn sleep_until(&self, t: Timestamp) -> BoxFuture<()>;
}

/// The system's clock. Sleeps are measured on tokio's clock; the agent never
/// sleeps more than an hour at once, so a wall clock that jumps (a suspend,
/// an NTP step) is noticed within the hour.
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<()> {
        let d =
            std::time::Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or_default();
        Box::pin(tokio::time::sleep(d))
    }
}

/// Tokio's clock, read as UTC from a chosen start: under paused time
/// (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`) it jumps to
/// the next timer whenever every task waits, so a test's day passes at once.
pub struct TokioClock {
    origin: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `origin` now.
    pub fn starting_at(origin: Timestamp) -> TokioClock {
        TokioClock {
            origin,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let passed = tokio::time::Instant::now() - self.start;
        self.origin
            .saturating_add(crate::time::from_std(passed))
            .unwrap_or(Timestamp::MAX)
    }

    fn sleep_until(&self, t: Timestamp) -> BoxFuture<()> {
        let after =
            std::time::Duration::try_from(t.duration_since(self.origin)).unwrap_or_default();
        Box::pin(tokio::time::sleep_until(self.start + after))
    }
}

/// What the agent asks of a run under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Go on.
    No,
    /// Stop at a safe point (SIGTERM to a child).
    Gently,
    /// Stop now (SIGKILL): the run did not stop within `--stop-timeout`.
    Now,
}

/// One run to carry out.
pub struct RunRequest {
    pub profile: Profile,
    /// When the agent started it (recorded in the state file already).
    pub started: Timestamp,
    /// Changes when the agent stops.
    pub stop: tokio::sync::watch::Receiver<Stop>,
}

/// Carries out runs; the report it returns is logged, notified and planned on.
pub trait Runner: Send + Sync {
    fn run(&self, request: RunRequest) -> BoxFuture<JobReport>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_reads_utc_from_its_origin_and_sleeps_on_paused_time() {
        let origin: Timestamp = "2026-03-28T22:00:00Z".parse().unwrap();
        let clock = TokioClock::starting_at(origin);
        assert_eq!(clock.now(), origin);
        let later = origin + crate::time::days(3);
        let real = std::time::Instant::now();
        clock.sleep_until(later).await;
        assert_eq!(clock.now(), later);
        assert!(
            real.elapsed() < std::time::Duration::from_secs(5),
            "paused time"
        );
        // A time that passed resolves at once.
        clock.sleep_until(origin).await;
        assert_eq!(clock.now(), later);
    }
}
