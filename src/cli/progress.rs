//! Progress bars on a terminal, nothing otherwise. The engines report data
//! (phases, units done, a backup's pre-scan counts, files done); this draws
//! them, as restic does: a backup shows "counting…" until its pre-scan has
//! the total, then a bar with the percentage, files done and an ETA.
//!
//! Each phase gets a new bar, configured before its first frame is drawn:
//! an unconfigured bar drew a full-width empty `0/0` first.

use crate::engine::{Counted, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Makes the draw target of each phase's bar.
type Target = Box<dyn Fn() -> ProgressDrawTarget + Send + Sync>;

pub struct Bar {
    /// None: not a terminal (or quiet, or JSON): nothing is drawn, and a
    /// backup does not pre-scan.
    target: Option<Target>,
    bar: RwLock<ProgressBar>,
    /// The current phase's name (a backup's switches look when counted).
    phase: RwLock<String>,
    counts: Arc<Counts>,
}

/// What the drawing reads at each frame (the engines' threads write it).
#[derive(Default)]
struct Counts {
    files_done: AtomicU64,
    total_files: AtomicU64,
    /// Bytes the pre-scan has counted so far.
    counted_bytes: AtomicU64,
}

/// What a phase's bar shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    /// No total: what is done and how fast.
    Spinner,
    /// Objects of a known number.
    Objects,
    /// Bytes of a known total.
    Bytes,
    /// A backup whose pre-scan is still counting.
    Counting,
    /// A backup whose pre-scan has the total.
    Total,
}

/// The look of phase `name` with `total` (if known), `counting` if a
/// pre-scan reports its total (a backup on a terminal).
fn look(name: &str, total: Option<u64>, counting: bool) -> Look {
    match total {
        _ if name == "backup" && counting => Look::Counting,
        Some(_) if name == "read data" => Look::Objects,
        Some(_) => Look::Bytes,
        None => Look::Spinner,
    }
}

fn template(look: Look) -> &'static str {
    match look {
        Look::Spinner => "{msg:>10} {spinner} {bytes} {bytes_per_sec}",
        Look::Objects => "{msg:>10} [{bar:30}] {pos}/{len}",
        Look::Bytes => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        // Short enough for 80 columns with everyday numbers: a wrapped
        // line is redrawn below itself.
        Look::Counting => "{msg:>10} {spinner} {bytes}, {files_done} files; {counting}",
        Look::Total => {
            "{msg:>10} [{bar:20}] {done_pct} {bytes}/{total_bytes}, {files_done}/{total_files} files, ETA {time_left}"
        }
    }
}

/// Percent of `total` done, whole, at most 100 (a file that grew since the
/// pre-scan counted it); an empty total is all done.
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    (u128::from(done) * 100 / u128::from(total)).min(100) as u64
}

/// Time left at the average rate so far; unknown before anything is done.
fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    if done >= total {
        return Some(Duration::ZERO);
    }
    if done == 0 || elapsed.is_zero() {
        return None;
    }
    let left = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
    Some(Duration::from_secs_f64(left.min(1e9)))
}

/// `1:02:03`, `2:03`, or `?` when unknown.
fn clock(d: Option<Duration>) -> String {
    let Some(d) = d else {
        return "?".into();
    };
    let s = d.as_secs();
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

/// The total while the pre-scan counts: `counting…`, with what it has so far.
fn counting(files: u64, bytes: u64) -> String {
    if files == 0 {
        "counting…".into()
    } else {
        format!("counting… {files} files, {}", super::backup::human(bytes))
    }
}

fn style(look: Look, counts: &Arc<Counts>) -> ProgressStyle {
    let files = Arc::clone(counts);
    let total_files = Arc::clone(counts);
    let counted = Arc::clone(counts);
    ProgressStyle::with_template(template(look))
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "files_done",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", files.files_done.load(Ordering::Relaxed));
            },
        )
        .with_key(
            "total_files",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", total_files.total_files.load(Ordering::Relaxed));
            },
        )
        .with_key(
            "counting",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let (f, b) = (&counted.total_files, &counted.counted_bytes);
                let _ = w.write_str(&counting(
                    f.load(Ordering::Relaxed),
                    b.load(Ordering::Relaxed),
                ));
            },
        )
        .with_key(
            "done_pct",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}%", percent(s.pos(), s.len().unwrap_or(0)));
            },
        )
        .with_key(
            "time_left",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let left = eta(s.pos(), s.len().unwrap_or(0), s.elapsed());
                let _ = w.write_str(&clock(left));
            },
        )
        .progress_chars("=> ")
}

impl Bar {
    /// A bar if stderr is a terminal and the user did not ask for quiet or JSON.
    pub fn new(enabled: bool) -> Bar {
        let target: Option<Target> = (enabled && std::io::stderr().is_terminal())
            .then(|| Box::new(ProgressDrawTarget::stderr) as Target);
        Bar::with_target(target)
    }

    fn with_target(target: Option<Target>) -> Bar {
        Bar {
            target,
            bar: RwLock::new(ProgressBar::hidden()),
            phase: RwLock::new(String::new()),
            counts: Arc::default(),
        }
    }

    pub fn finish(&self) {
        if let Ok(bar) = self.bar.read() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        let Some(target) = &self.target else {
            return;
        };
        self.counts.files_done.store(0, Ordering::Relaxed);
        self.counts.total_files.store(0, Ordering::Relaxed);
        self.counts.counted_bytes.store(0, Ordering::Relaxed);
        // Configured whole before it can draw: no empty first frame.
        let look = look(name, total, true);
        let next = ProgressBar::with_draw_target(total, target())
            .with_style(style(look, &self.counts))
            .with_message(name.to_string());
        if let Ok(mut phase) = self.phase.write() {
            *phase = name.to_string();
        }
        if let Ok(mut bar) = self.bar.write() {
            std::mem::replace(&mut *bar, next.clone()).finish_and_clear();
        }
        next.tick();
    }

    fn advance(&self, n: u64) {
        if self.target.is_some()
            && let Ok(bar) = self.bar.read()
        {
            bar.inc(n);
        }
    }

    fn wants_total(&self) -> bool {
        self.target.is_some()
    }

    fn counted(&self, c: Counted) {
        if self.target.is_none() {
            return;
        }
        self.counts.total_files.store(c.files, Ordering::Relaxed);
        self.counts.counted_bytes.store(c.bytes, Ordering::Relaxed);
        let backup = self.phase.read().is_ok_and(|p| p.as_str() == "backup");
        if c.done
            && backup
            && let Ok(bar) = self.bar.read()
        {
            // The length first: until the style changes, frames still say
            // "counting…", never a bar without its total.
            bar.set_length(c.bytes);
            bar.set_style(style(Look::Total, &self.counts));
            bar.tick();
        }
    }

    fn file_done(&self) {
        self.counts.files_done.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn percent_and_eta() {
        assert_eq!(percent(0, 200), 0);
        assert_eq!(percent(50, 200), 25);
        assert_eq!(percent(199, 200), 99);
        assert_eq!(percent(300, 200), 100, "a file grew after it was counted");
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX / 2, u64::MAX), 49, "no overflow");
        let ten = Duration::from_secs(10);
        assert_eq!(eta(0, 100, ten), None, "no rate yet");
        assert_eq!(eta(25, 100, ten), Some(Duration::from_secs(30)));
        assert_eq!(eta(100, 100, ten), Some(Duration::ZERO));
        assert_eq!(eta(150, 100, ten), Some(Duration::ZERO));
        assert_eq!(eta(5, 100, Duration::ZERO), None);
        assert_eq!(clock(None), "?");
        assert_eq!(clock(Some(Duration::from_secs(123))), "2:03");
        assert_eq!(clock(Some(Duration::from_secs(3723))), "1:02:03");
        assert_eq!(counting(0, 0), "counting…");
        assert_eq!(counting(12, 2048), "counting… 12 files, 2.0 KiB");
    }

    #[test]
    fn the_look_before_and_after_the_total_is_known() {
        assert_eq!(look("backup", None, true), Look::Counting);
        assert_eq!(look("backup", None, false), Look::Spinner);
        assert_eq!(look("index", None, true), Look::Spinner);
        assert_eq!(look("restore", Some(10), true), Look::Bytes);
        assert_eq!(look("read data", Some(10), true), Look::Objects);
        assert!(template(Look::Counting).contains("{counting}"));
        assert!(
            !template(Look::Counting).contains("{bar"),
            "no bar without a total"
        );
        for key in ["{bar", "{done_pct}", "{total_files}", "{time_left}"] {
            assert!(template(Look::Total).contains(key), "{key}");
        }
    }

    /// A terminal that keeps every line drawn.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<Vec<String>>>);
    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            if !s.trim().is_empty() {
                self.0.lock().unwrap().push(s.to_string());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drawn() -> (Bar, Screen) {
        let screen = Screen::default();
        let s = screen.clone();
        let bar = Bar::with_target(Some(Box::new(move || {
            ProgressDrawTarget::term_like(Box::new(s.clone()))
        })));
        (bar, screen)
    }

    /// Regression: backup and restore first drew a full-width empty `0/0`
    /// bar. A restore's first frame has its total; a backup's says
    /// "counting…" until the pre-scan is done, then shows the percentage,
    /// files and ETA.
    #[test]
    fn no_empty_frame_and_a_total_once_counted() {
        let (bar, screen) = drawn();
        bar.phase("restore", Some(4096));
        bar.advance(1024);
        let frames = screen.0.lock().unwrap().clone();
        assert!(
            frames[0].contains("restore") && frames[0].contains("4.00 KiB"),
            "{frames:?}"
        );
        assert!(frames.iter().all(|f| !f.contains("0/0")), "{frames:?}");

        let (bar, screen) = drawn();
        assert!(bar.wants_total());
        bar.phase("index", None);
        bar.phase("backup", None);
        bar.advance(100);
        bar.file_done();
        bar.counted(Counted {
            files: 2,
            bytes: 200,
            done: false,
        });
        bar.advance(0);
        bar.counted(Counted {
            files: 4,
            bytes: 400,
            done: true,
        });
        bar.advance(100);
        let frames = screen.0.lock().unwrap().clone();
        assert!(frames[0].starts_with("     index"), "{frames:?}");
        let backup: Vec<&String> = frames.iter().filter(|f| f.contains("backup")).collect();
        assert!(backup[0].ends_with("0 B, 0 files; counting…"), "{backup:?}");
        assert!(
            backup
                .iter()
                .any(|f| f.contains("1 files; counting… 2 files, 200 B")),
            "{backup:?}"
        );
        let last = backup.last().unwrap();
        assert!(
            last.contains("50%") && last.contains("1/4 files") && last.contains("ETA "),
            "{last}"
        );
        assert!(frames.iter().all(|f| !f.contains("0/0")), "{frames:?}");
    }

    #[test]
    fn nothing_is_drawn_or_counted_off_a_terminal() {
        let bar = Bar::with_target(None);
        bar.phase("backup", None);
        bar.advance(5);
        assert!(!bar.wants_total());
    }
}
