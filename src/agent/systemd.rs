//! Telling systemd how the agent is (sd_notify(3), for `Type=notify`):
//! `READY=1` once the profiles are loaded and metrics served, `STATUS=`
//! lines as runs start and end, `RELOADING=1` around a SIGHUP reload,
//! `STOPPING=1` at shutdown, and `WATCHDOG=1` at half of `WatchdogSec=`
//! (`$WATCHDOG_USEC`), sent from the service loop itself so a stuck loop
//! stops the pings. Without `$NOTIFY_SOCKET` nothing is sent. A message that
//! cannot be sent is logged at debug level; it never stops the agent.

use sd_notify::NotifyState;
use std::time::Duration;

/// The service manager's end of the protocol, read from the environment.
#[derive(Clone, Debug)]
pub struct ServiceManager {
    watchdog: Option<Duration>,
}

impl ServiceManager {
    pub fn from_env() -> ServiceManager {
        ServiceManager {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to send `WATCHDOG=1`: half the watchdog timeout, as
    /// sd_watchdog_enabled(3) advises.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| (d / 2).max(Duration::from_millis(1)))
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "cannot notify the service manager");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// The environment a child must not inherit: only the agent speaks to the
/// service manager.
pub const CHILD_UNSET: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The `STATUS=` text: what runs, and what is next.
pub fn status_text(
    profiles: usize,
    broken: usize,
    running: &[&str],
    next: Option<(&str, jiff::Timestamp)>,
) -> String {
    let mut s = format!("{profiles} profile(s)");
    if broken > 0 {
        s.push_str(&format!(", {broken} broken"));
    }
    if !running.is_empty() {
        s.push_str(&format!("; running: {}", running.join(", ")));
    }
    if let Some((name, at)) = next {
        s.push_str(&format!(
            "; next: {name} at {}",
            crate::time::rfc3339_offset(at)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_what_runs_and_what_is_next() {
        let at: jiff::Timestamp = "2026-05-01T12:00:00Z".parse().unwrap();
        assert_eq!(status_text(2, 0, &[], None), "2 profile(s)");
        let s = status_text(3, 1, &["web", "db"], Some(("mail", at)));
        assert!(
            s.starts_with("3 profile(s), 1 broken; running: web, db; next: mail at "),
            "{s}"
        );
        assert!(s.contains("2026-05-01"), "{s}");
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout() {
        let m = ServiceManager {
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(m.watchdog_every(), Some(Duration::from_secs(15)));
        let off = ServiceManager { watchdog: None };
        assert_eq!(off.watchdog_every(), None);
    }
}
