//! Log lines the journal can sort by priority. When a stream is the
//! journal's (`$JOURNAL_STREAM` names its device and inode, as
//! systemd.exec(5) documents), each line starts with its syslog priority,
//! `<3>` error, `<4>` warning, `<6>` info, `<7>` debug (the sd-daemon(3)
//! convention), so `journalctl -p err` finds the errors. On a terminal or in
//! a file, lines carry no prefix. A run the agent started writes its
//! warnings and progress lines with the prefix, and the agent logs each at
//! the priority it carries.

use std::fmt;
use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The syslog priority of a level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The level a priority prefix asks for (`<0>` to `<3>` are errors).
pub fn level_of(priority: u8) -> Level {
    match priority {
        0..=3 => Level::ERROR,
        4 | 5 => Level::WARN,
        6 => Level::INFO,
        _ => Level::DEBUG,
    }
}

/// Splits a `<N>` priority prefix off a line.
pub fn split_priority(line: &str) -> (Option<u8>, &str) {
    let b = line.as_bytes();
    if b.len() >= 3 && b[0] == b'<' && b[2] == b'>' && b[1].is_ascii_digit() {
        return (Some(b[1] - b'0'), &line[3..]);
    }
    (None, line)
}

/// Whether `journal_stream` (the value of `$JOURNAL_STREAM`, "DEVICE:INODE")
/// names the file with this device and inode.
pub fn names_stream(journal_stream: Option<&str>, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// Whether the open file `fd` (1 for stdout, 2 for stderr) is the journal.
pub fn is_journal(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let meta = fd
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match meta {
        Ok(m) => names_stream(var.to_str(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// An event format that puts the priority before what `inner` writes
/// (plain text or JSON), when `on`.
pub struct Prefixed<F> {
    inner: F,
    on: bool,
}

impl<F> Prefixed<F> {
    pub fn new(inner: F, on: bool) -> Prefixed<F> {
        Prefixed { inner, on }
    }
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        if self.on {
            write!(writer, "<{}>", priority(event.metadata().level()))?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities_and_back() {
        for (level, p) in [
            (Level::ERROR, 3),
            (Level::WARN, 4),
            (Level::INFO, 6),
            (Level::DEBUG, 7),
        ] {
            assert_eq!(priority(&level), p);
            assert_eq!(level_of(p), level);
        }
        assert_eq!(level_of(0), Level::ERROR);
        assert_eq!(level_of(5), Level::WARN);
    }

    #[test]
    fn a_priority_prefix_is_split_off_and_only_a_real_one() {
        assert_eq!(split_priority("<6>progress: x"), (Some(6), "progress: x"));
        assert_eq!(split_priority("<3>"), (Some(3), ""));
        assert_eq!(split_priority("skipped /a"), (None, "skipped /a"));
        assert_eq!(split_priority("<a>b"), (None, "<a>b"));
        assert_eq!(split_priority("<12>x"), (None, "<12>x"));
    }

    #[test]
    fn journal_stream_must_name_this_very_file() {
        assert!(names_stream(Some("8:12345"), 8, 12345));
        assert!(!names_stream(Some("8:12345"), 8, 12346));
        assert!(!names_stream(Some("9:12345"), 8, 12345));
        assert!(!names_stream(Some("garbage"), 8, 12345));
        assert!(!names_stream(None, 8, 12345));
    }
}
