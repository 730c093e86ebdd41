//! Facts about this host the repository's writers go by: its name, and
//! whether a process that left a lock or a temporary file still runs.

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The name of user `uid` in the system's user database (getpwuid_r:
/// /etc/passwd or whatever NSS is set up with), if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain old data; getpwuid_r fills it, pointing
        // into `buf`, which outlives every read of it below.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the lengths given.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name
            .to_str()
            .ok()
            .filter(|n| !n.is_empty())
            .map(str::to_string);
    }
}

/// State and start time of a process, from `/proc/PID/stat`.
pub fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22 of the whole line: the 20th after the state.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether a process (a lock holder, a temp file's writer) still runs on this host: not gone, not a zombie,
/// and not a new process that happens to have the same pid.
pub fn process_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    // 0 and negative pids name process groups for kill(): never a writer.
    let Some(raw) = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0) else {
        return false;
    };
    match proc_stat(pid) {
        Some((state, start)) => state != 'Z' && start_ticks.is_none_or(|t| t == start),
        // Not in /proc: gone, or hidden from this user (procfs with
        // hidepid, as the agent's unit sets with ProtectProc=invisible, hides
        // an operator's coffer running as root), or no procfs. Signal 0
        // tells them apart: EPERM means the pid exists.
        None => {
            // SAFETY: kill with signal 0 sends nothing.
            let rc = unsafe { libc::kill(raw, 0) };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
        }
    }
}

/// This process's mark in the names of its temporary files:
/// `PID-STARTTICKS` (the start time tells a reused pid), or `PID` alone
/// where there is no procfs.
pub fn temp_mark() -> String {
    static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        let pid = std::process::id();
        match proc_stat(pid) {
            Some((_, ticks)) => format!("{pid}-{ticks}"),
            None => pid.to_string(),
        }
    })
    .clone()
}

/// Whether the writer of a temporary file is gone, from what follows the
/// file's prefix: `PID-STARTTICKS-RANDOM` ([`temp_mark`]) or `PID-RANDOM`
/// (older files, and where there is no procfs). A name without a pid has
/// no writer to wait for.
pub fn temp_writer_gone(mark: &[u8]) -> bool {
    let Ok(mark) = std::str::from_utf8(mark) else {
        return true;
    };
    let parts: Vec<&str> = mark.split('-').collect();
    let Some(pid) = parts.first().and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    let ticks = match parts.len() {
        3.. => parts[1].parse::<u64>().ok(),
        _ => None,
    };
    !process_alive(pid, ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_marks_tell_a_live_writer_from_a_gone_or_reused_pid() {
        let mark = temp_mark();
        let me = std::process::id();
        assert!(mark.starts_with(&format!("{me}-")), "{mark}");
        assert!(!temp_writer_gone(format!("{mark}-00ff").as_bytes()));
        assert!(
            !temp_writer_gone(format!("{me}-00ff").as_bytes()),
            "older names: the pid alone"
        );
        let (_, ticks) = proc_stat(me).expect("procfs");
        assert!(
            temp_writer_gone(format!("{me}-{}-00ff", ticks + 1).as_bytes()),
            "our pid with another start time is an earlier process"
        );
        assert!(temp_writer_gone(
            format!("{}-1-00ff", u32::MAX - 1).as_bytes()
        ));
        assert!(temp_writer_gone(b"garbage"));
    }

    #[test]
    fn pids_that_name_no_single_process_are_not_alive() {
        assert!(!process_alive(0, None));
        assert!(
            !process_alive(u32::MAX, None),
            "-1 for kill(): every process"
        );
        assert!(!process_alive(i32::MAX as u32 + 1, None));
        // Init exists in every pid namespace, visible in /proc or not.
        assert!(process_alive(1, None));
    }
}
