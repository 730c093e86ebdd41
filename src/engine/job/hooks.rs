//! Hook commands around a backup (`[hooks]`): run by `/bin/sh -c` in their
//! own process group, with a timeout that kills the whole group, their output
//! kept (the last 4 KiB) for the log and the error message.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[error("{which} hook `{command}` {what}{}", if .output.is_empty() { String::new() } else { format!("; output: {}", .output) })]
pub struct HookError {
    pub which: &'static str,
    pub command: String,
    pub what: String,
    pub output: String,
}

const KEEP: usize = 4096;

/// Runs `command`; Ok(output) if it exits 0 within `timeout`.
pub fn run(
    which: &'static str,
    command: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<String, HookError> {
    use std::os::unix::process::CommandExt;
    let fail = |what: String, output: String| HookError {
        which,
        command: command.to_string(),
        what,
        output,
    };
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}"), String::new()))?;
    // Drain both pipes on threads so a chatty hook cannot block on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                // SAFETY: signals the hook's own process group, made above.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(format!("could not be waited for: {e}"), String::new())),
        }
    };
    let mut out = Vec::new();
    for r in readers {
        out.extend(r.join().unwrap_or_default());
    }
    let text = String::from_utf8_lossy(&out[out.len().saturating_sub(KEEP)..])
        .trim()
        .replace('\n', " | ");
    match status {
        Some(s) if s.success() => Ok(text),
        Some(s) => Err(fail(
            match s.code() {
                Some(c) => format!("failed with exit code {c}"),
                None => "was killed by a signal".into(),
            },
            text,
        )),
        None => Err(fail(
            format!("timed out after {}s and was killed", timeout.as_secs()),
            text,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_exit_code_and_timeout_are_reported() {
        let ok = run(
            "before",
            "echo hello; echo err >&2",
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(ok.contains("hello") && ok.contains("err"), "{ok}");
        let e = run(
            "before",
            "echo dump failed; exit 3",
            &[],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "before hook `echo dump failed; exit 3` failed with exit code 3; output: dump failed"
        );
        let started = Instant::now();
        let e = run("after", "sleep 30", &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hook was killed"
        );
        let env = run(
            "after",
            "echo $COFFER_STATUS",
            &[("COFFER_STATUS", "ok".into())],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(env, "ok");
    }
}
