//! The coffer binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A full disk may show up as SIGXFSZ under a file-size limit: get EFBIG instead.
    // SAFETY: setting a signal to ignored has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Per-thread malloc arenas keep freed chunk buffers around; two arenas
        // hold peak memory down with no measurable cost in speed.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    match coffer::cli::run() {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => ExitCode::from(coffer::cli::report_failure(&e) as u8),
    }
}
