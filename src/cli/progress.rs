//! Progress bars on a terminal, nothing otherwise.

use crate::engine::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar if stderr is a terminal and the user did not ask for quiet or JSON.
    pub fn new(enabled: bool) -> Bar {
        let bar = if enabled && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        Bar { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.bar.reset();
        self.bar.set_length(total.unwrap_or(0));
        let style = if total.is_some() && name != "read data" {
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else if total.is_some() {
            "{msg:>10} [{bar:30}] {pos}/{len}"
        } else {
            "{msg:>10} {spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(s) = ProgressStyle::with_template(style) {
            self.bar.set_style(s.progress_chars("=> "));
        }
        self.bar.set_message(name.to_string());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
}
