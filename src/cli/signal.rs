//! SIGINT (Ctrl-C) and SIGTERM for the commands that write: backup, restore,
//! prune, copy, erase, export, repair and run. The first signal sets a flag that the
//! engine checks at its safe points; it stops there, releases the writer
//! lock, removes its spool files, and the command exits with 130 (SIGINT) or
//! 143 (SIGTERM), the codes a shell gives a process a signal killed. A
//! second signal ends the process at once, with the same code: what it
//! leaves (a lock, spool files) the next run on this machine takes over.

use super::Exit;
use anyhow::{Context as _, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The cancel flag of one command, set by SIGINT or SIGTERM.
pub struct Cancel {
    flag: Arc<AtomicBool>,
    /// The signal that set the flag (0: none yet).
    signal: Arc<AtomicUsize>,
}

/// The exit code for a command stopped by `signal`: 128 + its number, as shells report it.
fn code(signal: i32) -> Exit {
    if signal == SIGTERM {
        Exit::Terminated
    } else {
        Exit::Interrupted
    }
}

fn name(signal: i32) -> &'static str {
    if signal == SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    }
}

/// A command stopped by a signal at a safe point: what it means for the
/// repository and what to do. The CLI exits with the signal's code.
#[derive(Debug, thiserror::Error)]
#[error("{command} stopped by {}: {what}", name(*.signal))]
pub struct Stopped {
    pub command: &'static str,
    pub signal: i32,
    /// What was left and what to do next.
    pub what: String,
}

impl Stopped {
    pub fn exit(&self) -> Exit {
        code(self.signal)
    }
}

impl Cancel {
    /// Installs the handlers; from now on SIGINT and SIGTERM set the flag.
    pub fn install() -> Result<Cancel> {
        let flag = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // The order matters: the exit runs only when the flag was already
            // set (a second signal); the flag is set after it.
            signal_hook::flag::register_conditional_shutdown(sig, code(sig) as i32, flag.clone())
                .context("installing a signal handler")?;
            signal_hook::flag::register_usize(sig, signal.clone(), sig as usize)
                .context("installing a signal handler")?;
            signal_hook::flag::register(sig, flag.clone())
                .context("installing a signal handler")?;
        }
        Ok(Cancel { flag, signal })
    }

    /// The flag the engines check.
    pub fn flag(&self) -> &AtomicBool {
        &self.flag
    }

    /// The signal received, if any.
    pub fn received(&self) -> Option<i32> {
        match self.signal.load(Ordering::SeqCst) {
            0 if self.flag.load(Ordering::SeqCst) => Some(SIGINT),
            0 => None,
            s => Some(s as i32),
        }
    }

    /// A command's error once a signal came: [`Stopped`], with `what` (the
    /// state left and the next step), and the error itself when it was
    /// another failure than the stop. Without a signal, the error as it is.
    pub fn explain(&self, command: &'static str, e: anyhow::Error, what: &str) -> anyhow::Error {
        let Some(signal) = self.received() else {
            return e;
        };
        let interrupted = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<crate::Error>(),
                Some(crate::Error::Interrupted)
            )
        });
        let what = if interrupted {
            what.to_string()
        } else {
            format!("{what} ({})", super::render_error(&e))
        };
        Stopped {
            command,
            signal,
            what,
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_shells() {
        assert_eq!(code(SIGINT) as i32, 128 + SIGINT);
        assert_eq!(code(SIGTERM) as i32, 128 + SIGTERM);
        let s = Stopped {
            command: "backup",
            signal: SIGTERM,
            what: "the lock is released".into(),
        };
        assert_eq!(
            s.to_string(),
            "backup stopped by SIGTERM: the lock is released"
        );
        assert_eq!(s.exit(), Exit::Terminated);
    }
}
