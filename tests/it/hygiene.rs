//! What coffer leaves behind on the machine it runs on: hooks that do not
//! see its secrets, a catalog only its owner can read, a file cache that
//! forgets files gone from every source.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::env::*;

fn toml_str(p: impl AsRef<Path>) -> String {
    format!("{:?}", p.as_ref().to_str().expect("UTF-8 test path"))
}

/// The `NAME=value` lines a hook's `env > FILE` wrote, as (name, value).
fn env_lines(file: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("the hook did not write {}: {e}", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Regression: `before`/`after` hooks inherited COFFER_PASSPHRASE and the
/// AWS secrets of the process that ran them. They are scrubbed now, unless
/// the profile's `[hooks] pass_env` names them; other variables pass.
#[test]
fn hooks_do_not_inherit_secrets_unless_the_profile_passes_them() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("db");
    write_file(&src.join("table.dat"), b"rows\n");
    let secrets: [(&str, &OsStr); 6] = [
        ("COFFER_PASSPHRASE", "pass-phrase".as_ref()),
        ("AWS_SECRET_ACCESS_KEY", "secret-key".as_ref()),
        ("AWS_SESSION_TOKEN", "session-token".as_ref()),
        ("AWS_ACCESS_KEY_ID", "access-key".as_ref()),
        ("COFFER_WEBHOOK_TOKEN", "webhook-token".as_ref()),
        ("HOOK_VISIBLE", "plain".as_ref()),
    ];
    for (name, pass_env, passed) in [
        ("plain", "", &[][..]),
        (
            "passing",
            "pass_env = [\"AWS_ACCESS_KEY_ID\", \"COFFER_PASSPHRASE\"]\n",
            &["AWS_ACCESS_KEY_ID", "COFFER_PASSPHRASE"][..],
        ),
    ] {
        let (before, after) = (
            env.path(format!("{name}-before")),
            env.path(format!("{name}-after")),
        );
        let profile = env.path(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\nsources = [{}]\nrepository = {}\nagent_key = {}\n\n[hooks]\nbefore = {:?}\nafter = {:?}\n{pass_env}",
            toml_str(&src),
            toml_str(env.repo_url.to_str().expect("UTF-8 repository")),
            toml_str(&env.agent_key),
            format!("env > {}", before.display()),
            format!("env > {}", after.display()),
        );
        write_file(&profile, text.as_bytes());
        let state = env.path(format!("{name}-state"));
        let out = env.run_with_env(
            [
                "run".as_ref(),
                "--profile".as_ref(),
                profile.as_os_str(),
                "--state-dir".as_ref(),
                state.as_os_str(),
            ],
            &secrets,
        );
        out.expect_ok();
        for file in [&before, &after] {
            let seen = env_lines(file);
            let has = |k: &str| seen.iter().any(|(n, _)| n == k);
            for (k, v) in &secrets[..5] {
                let value = seen.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                if passed.contains(k) {
                    assert_eq!(value, v.to_str(), "{k} is in pass_env: the hook gets it");
                } else {
                    assert!(!has(k), "{name}: the hook saw {k}\n{out}");
                }
            }
            assert!(
                has("HOOK_VISIBLE") && has("PATH"),
                "other variables pass\n{out}"
            );
            assert!(
                seen.iter().any(|(k, v)| k == "COFFER_PROFILE" && v == name),
                "the hook still gets COFFER_PROFILE"
            );
        }
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The catalog files in `dir` (`*.sqlite` and its `-wal`, `-shm`).
fn catalog_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".sqlite"))
        .collect();
    files.sort();
    files
}

/// Regression: the catalog (decrypted file paths, the audit log) was created
/// 0644 in a 0755 cache folder. Now the folders coffer creates for it are
/// 0700 and its files 0600; a cache folder and catalog files left looser by
/// an older coffer are tightened when the catalog is opened. A folder the
/// user named (`--catalog`) that already exists is left as it is.
#[test]
fn the_catalog_is_private_to_its_owner() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("data");
    write_file(&src.join("secret-name.txt"), b"x");
    let cache = env.home.join("fresh").join("cache");
    let cache_env: [(&str, &OsStr); 1] = [("COFFER_CACHE_DIR", cache.as_os_str())];
    let backup = |extra: &[&OsStr]| {
        let mut args: Vec<&OsStr> = vec![
            "backup".as_ref(),
            src.as_os_str(),
            "--repo".as_ref(),
            env.repo_url.as_os_str(),
            "--agent-key".as_ref(),
            env.agent_key.as_os_str(),
        ];
        args.extend_from_slice(extra);
        env.run_with_env(args, &cache_env).expect_ok();
    };
    backup(&[]);
    let files = catalog_files(&cache);
    assert_eq!(files.len(), 3, "the database, its WAL and shm: {files:?}");
    for dir in [&cache, &env.home.join("fresh")] {
        assert_eq!(mode(dir), 0o700, "{} was created private", dir.display());
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // What an older coffer left: loose modes, tightened at the next open.
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o755)).unwrap();
    for f in &files {
        fs::set_permissions(f, fs::Permissions::from_mode(0o644)).unwrap();
    }
    backup(&[]);
    assert_eq!(mode(&cache), 0o700);
    for f in &catalog_files(&cache) {
        assert_eq!(mode(f), 0o600, "{} was tightened", f.display());
    }

    // `--catalog` in a folder of the user's: the folder stays as it is, the
    // folder coffer makes below it is private, the files are.
    let shared = env.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    let custom = shared.join("made").join("c.sqlite");
    backup(&["--catalog".as_ref(), custom.as_os_str()]);
    assert_eq!(
        mode(&shared),
        0o755,
        "a folder coffer did not make is left alone"
    );
    assert_eq!(mode(&shared.join("made")), 0o700);
    let files = catalog_files(&shared.join("made"));
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}

/// The number of rows in the file cache of the catalog at `path`.
fn file_cache_rows(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open the catalog");
    conn.query_row("SELECT count(*) FROM files", [], |r| r.get(0))
        .expect("count the file cache")
}

/// Regression: the file cache kept rows for files deleted long ago (120 of
/// 1,002 rows in one run). A backup now forgets the rows of files that left
/// its sources; a backup that fails keeps them all, and another source's
/// rows are not touched.
#[test]
fn the_file_cache_forgets_files_gone_from_the_sources() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("many");
    let other = env.source_dir("other");
    for i in 0..1000 {
        write_file(
            &src.join(format!("d{}/f{i}", i % 10)),
            format!("{i}").as_bytes(),
        );
    }
    write_file(&other.join("kept"), b"other source");
    env.backup(&[&other]);
    env.backup(&[&src]);
    assert_eq!(file_cache_rows(&env.catalog), 1001);
    for i in (0..1000).step_by(25).flat_map(|i| [i, i + 1, i + 2]) {
        fs::remove_file(src.join(format!("d{}/f{i}", i % 10))).unwrap();
    }
    // Storage that goes down at points of the backup (one try per request:
    // the lock, the index, a pack upload after the walk): no
    // snapshot, and no row forgotten.
    let profile = env.path("once.toml");
    let text = format!(
        "name = \"once\"\nsources = [{}]\nrepository = {}\nagent_key = {}\ncatalog = {}\n[s3]\nmax_attempts = 1\n",
        toml_str(&src),
        toml_str(env.repo_url.to_str().expect("UTF-8 repository")),
        toml_str(&env.agent_key),
        toml_str(&env.catalog),
    );
    write_file(&profile, text.as_bytes());
    for down_after in [2, 6, 10] {
        let down = format!("seed=1,down_after={down_after}");
        let out = env.run_with_env(
            ["backup".as_ref(), "--profile".as_ref(), profile.as_os_str()],
            &[("COFFER_FAULTS", down.as_ref())],
        );
        out.expect_failure();
        assert_eq!(
            file_cache_rows(&env.catalog),
            1001,
            "after a failed backup\n{out}"
        );
    }
    let v = env.backup(&[&src]);
    assert_eq!(u64_field(&v, "files"), 880);
    assert_eq!(
        file_cache_rows(&env.catalog),
        881,
        "880 files of this source and the other source's one"
    );
}
