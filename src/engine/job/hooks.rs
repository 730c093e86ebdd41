//! Hook commands around a backup (`[hooks]`): run by `/bin/sh -c` in their
//! own process group, with a timeout that kills the whole group, their output
//! kept (the last 4 KiB) for the log and the error message. A hook gets
//! coffer's environment without its secrets ([`is_secret`]) unless the
//! profile's `pass_env` names them: a dump script has no use for the
//! operator's passphrase or the storage keys.

use std::ffi::{OsStr, OsString};
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

/// Secrets named in full: the passphrase and the AWS chain's keys.
const SECRETS: [&str; 4] = [
    "COFFER_PASSPHRASE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];
/// Any other `COFFER_*` or `AWS_*` name with one of these in it is taken
/// for a secret too (AWS_SECURITY_TOKEN, AWS_CONTAINER_AUTHORIZATION_TOKEN…).
const SECRET_WORDS: [&str; 4] = ["PASSPHRASE", "PASSWORD", "SECRET", "TOKEN"];

/// Whether a hook does not inherit the variable `name` by default.
pub fn is_secret(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    SECRETS.contains(&name)
        || (name.starts_with("COFFER_") || name.starts_with("AWS_"))
            && SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// Of the variables `names`, those a hook must not inherit: the secrets the
/// profile's `pass_env` does not name.
pub fn scrubbed(names: impl IntoIterator<Item = OsString>, pass_env: &[String]) -> Vec<OsString> {
    names
        .into_iter()
        .filter(|n| is_secret(n) && !pass_env.iter().any(|p| OsStr::new(p) == n))
        .collect()
}

/// Runs `command`; Ok(output) if it exits 0 within `timeout`. It inherits
/// this process's environment less its secrets (but those in `pass_env`),
/// plus `env`.
pub fn run(
    which: &'static str,
    command: &str,
    env: &[(&str, String)],
    pass_env: &[String],
    timeout: Duration,
) -> Result<String, HookError> {
    use std::os::unix::process::CommandExt;
    let fail = |what: String, output: String| HookError {
        which,
        command: command.to_string(),
        what,
        output,
    };
    let mut cmd = Command::new("/bin/sh");
    for name in scrubbed(std::env::vars_os().map(|(k, _)| k), pass_env) {
        cmd.env_remove(name);
    }
    let mut child = cmd
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
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(ok.contains("hello") && ok.contains("err"), "{ok}");
        let e = run(
            "before",
            "echo dump failed; exit 3",
            &[],
            &[],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "before hook `echo dump failed; exit 3` failed with exit code 3; output: dump failed"
        );
        let started = Instant::now();
        let e = run("after", "sleep 30", &[], &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hook was killed"
        );
        let env = run(
            "after",
            "echo $COFFER_STATUS",
            &[("COFFER_STATUS", "ok".into())],
            &[],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(env, "ok");
    }

    /// The passphrase, the AWS keys and other COFFER_/AWS_ secrets are
    /// scrubbed, unless passed on by name; everything else is inherited.
    #[test]
    fn secrets_are_scrubbed_unless_passed_on() {
        let names = [
            "PATH",
            "HOME",
            "COFFER_PASSPHRASE",
            "COFFER_REPO",
            "COFFER_CACHE_DIR",
            "COFFER_NOTIFY_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_REGION",
            "AWS_PROFILE",
            "MY_TOKEN",
        ]
        .map(OsString::from);
        assert_eq!(
            scrubbed(names.clone(), &[]),
            [
                "COFFER_PASSPHRASE",
                "COFFER_NOTIFY_TOKEN",
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_SECURITY_TOKEN"
            ]
            .map(OsString::from)
        );
        let pass = ["AWS_ACCESS_KEY_ID".to_string(), "UNSET".to_string()];
        let kept = scrubbed(names, &pass);
        assert_eq!(kept.len(), 5);
        assert!(!kept.contains(&OsString::from("AWS_ACCESS_KEY_ID")));
        // A name that is not UTF-8 is no name coffer or AWS reads.
        use std::os::unix::ffi::OsStringExt;
        assert!(!is_secret(&OsString::from_vec(
            b"COFFER_\xffTOKEN".to_vec()
        )));
    }
}
