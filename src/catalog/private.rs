//! File modes of the catalog: it holds decrypted file names and the audit
//! log, so only its owner may read it.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `path` empty with mode 0600 if it does not exist (SQLite takes
/// an empty file for a new database).
pub(super) fn create_file(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The permission bits `current` keeps under the ceiling `max` (0600 for a
/// file, 0700 for a folder), or None if it is within it already.
pub(super) fn tightened(current: u32, max: u32) -> Option<u32> {
    let bits = current & 0o7777;
    (bits & !max != 0).then_some(bits & max)
}

/// Removes the group and other bits above `max` from `path`, if it exists.
/// Best effort: a file this user may not change keeps its mode (the
/// catalog is a cache; the open that follows says what is wrong).
pub(super) fn tighten(path: &Path, max: u32) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if let Some(mode) = tightened(meta.mode(), max) {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
}

/// Makes the cache folder 0700, if it is this user's own folder and not a
/// shared one (a sticky folder such as /tmp named as `$COFFER_CACHE_DIR`).
pub(super) fn tighten_own_folder(dir: &Path) {
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions and can not fail.
    let me = unsafe { libc::geteuid() };
    if meta.is_dir() && meta.uid() == me && meta.mode() & 0o1000 == 0 {
        tighten(dir, 0o700);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_group_and_other_bits_above_the_ceiling_go() {
        assert_eq!(tightened(0o100644, 0o600), Some(0o600));
        assert_eq!(tightened(0o40755, 0o700), Some(0o700));
        assert_eq!(tightened(0o600, 0o600), None);
        assert_eq!(tightened(0o400, 0o600), None, "never loosened");
        assert_eq!(tightened(0o40700, 0o700), None);
        assert_eq!(tightened(0o4755, 0o700), Some(0o700), "setuid goes too");
    }

    #[test]
    fn files_are_created_private_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        create_file(&p).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        std::fs::write(&p, b"kept").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&p).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"kept",
            "an existing file is kept"
        );
        tighten(&p, 0o600);
        assert_eq!(mode(&p), 0o600);
        tighten(&dir.path().join("missing"), 0o600);

        let sticky = dir.path().join("shared");
        std::fs::create_dir(&sticky).unwrap();
        std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
        tighten_own_folder(&sticky);
        assert_eq!(
            mode(&sticky),
            0o777,
            "a sticky folder is shared: left alone"
        );
        let own = dir.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        tighten_own_folder(&own);
        assert_eq!(mode(&own), 0o700);
    }
}
