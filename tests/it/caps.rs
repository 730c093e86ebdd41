//! Capabilities probed, not assumed (docs/FORMAT.md, "Capabilities" and
//! "The lock"): `init` and writers probe the storage and adapt. Against
//! the test server's quirk switches: a server that ignores `If-None-Match`
//! gets the list-and-check lock, and racing writers never hold it
//! together; a server that stores aws-chunked framing as data gets no
//! repository, and a backup whose pack does not read back as written fails
//! naming the pack; `check` names such a pack; trailing checksums refused
//! and whole-object checksums on ranges are recorded or refused as the
//! checksum setting makes them matter.

use crate::env::*;
use crate::s3server::{ACCESS_KEY, Quirks, S3Server, SECRET_KEY};
use async_trait::async_trait;
use bytes::Bytes;
use coffer::repo::RepoError;
use coffer::repo::caps::{self, Capabilities};
use coffer::repo::keys::{AgentKey, Keys};
use coffer::repo::lock::{LockProtocol, RepoLock};
use coffer::repo::store::Store;
use coffer::storage::{Cap, LocalStorage, ObjectInfo, Opened, S3Options, Storage, StorageError};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Makes the SDK send CRC32 checksums (aws-chunked trailers on streamed
/// uploads), as `[s3] checksums = "when_supported"` does; coffer's default
/// on a custom endpoint sends none.
const CHECKSUMS_ON: (&str, &str) = ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported");

fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a OsStr)> {
    pairs.iter().map(|(k, v)| (*k, OsStr::new(*v))).collect()
}

/// `coffer init --json` in `env`, with extra environment variables.
fn init(env: &TestEnv, extra: &[(&str, &str)]) -> Output {
    let args: Vec<OsString> = vec![
        "init".into(),
        "--json".into(),
        "--repo".into(),
        env.repo_url.clone(),
        "--recipient".into(),
        env.recipient.clone().into(),
        "--agent-key".into(),
        env.agent_key.clone().into(),
    ];
    env.run_with_env(args, &vars(extra))
}

/// A fresh S3 environment with an identity, its server imitating `quirks`.
fn quirky(quirks: Quirks) -> TestEnv {
    let mut env = TestEnv::new_on_quirks(quirks);
    env.recipient = env.generate_identity(&env.identity.clone());
    env
}

/// What `init --json` says it found.
fn recorded(out: &Output) -> serde_json::Value {
    out.expect_ok();
    out.json()["capabilities"].clone()
}

/// `backup SRC --json` with extra environment variables.
fn backup_with(env: &TestEnv, src: &Path, extra: &[(&str, &str)]) -> Output {
    let mut args: Vec<OsString> = vec!["backup".into(), src.into(), "--json".into()];
    args.extend(env.repo_flags());
    env.run_with_env(args, &vars(extra))
}

/// Options for an in-process client of `server` (static keys from a file).
fn s3_options(server: &S3Server, dir: &Path) -> S3Options {
    let creds = dir.join("credentials");
    std::fs::write(
        &creds,
        format!("aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint()),
        ca_bundle: Some(server.ca_pem.clone()),
        credentials_file: Some(creds),
        ..S3Options::default()
    }
}

fn test_keys() -> Keys {
    let operator = age::x25519::Identity::generate();
    Keys::from_agent_key(&AgentKey::generate(
        "caps-test".into(),
        vec![operator.to_public()],
    ))
}

const PACK_SIZE: u64 = 16 * 1024 * 1024;

#[test]
fn a_server_that_keeps_its_promises_gets_the_create_only_lock() {
    let env = quirky(Quirks::default());
    let caps = recorded(&init(&env, &[]));
    assert_eq!(caps["conditional_create"], true, "{caps}");
    assert_eq!(caps["lock"]["protocol"], "create", "{caps}");
    assert_eq!(caps["list_after_write"], true, "{caps}");
    assert_eq!(caps["ranged_read_checksum"], "none", "{caps}");
    assert!(caps["uploads"]["put"].as_u64() > Some(0), "{caps}");
    assert!(
        caps["uploads"]["put_file"].as_u64() > Some(1 << 20),
        "{caps}"
    );
    // Packs of 16 MiB stay under the 64 MiB threshold: not probed.
    assert!(caps["uploads"]["multipart"].is_null(), "{caps}");
    assert!(
        env.repo.join("capabilities").is_file(),
        "the record is in the repository"
    );
    assert!(
        !env.repo.join("probe").exists() || list_files(&env.repo.join("probe")).is_empty(),
        "the probe cleans up after itself"
    );
}

#[test]
fn a_server_that_ignores_if_none_match_gets_the_list_and_check_lock() {
    let env = quirky(Quirks {
        ignore_if_none_match: true,
        ..Quirks::default()
    });
    let caps = recorded(&init(&env, &[]));
    assert_eq!(caps["conditional_create"], false, "{caps}");
    assert_eq!(caps["lock"]["protocol"], "list", "{caps}");
    assert!(caps["lock"]["settle_ms"].as_u64() >= Some(1000), "{caps}");

    // Writers go by the record: a backup holds `locks/<id>`, never `lock`,
    // and leaves none behind.
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 300 * 1024, 1);
    env.backup(&[&src]);
    assert!(!env.repo.join("lock").exists());
    assert!(list_files(&env.repo.join("locks")).is_empty());
    env.check(false).expect_ok();
}

/// Two processes: a backup holds the list-and-check lock (frozen while it
/// does, so timing plays no part) and a prune started meanwhile is refused
/// naming the lock; the backup then finishes.
#[test]
fn a_second_writer_is_refused_where_if_none_match_is_ignored() {
    let env = quirky(Quirks {
        ignore_if_none_match: true,
        ..Quirks::default()
    });
    env.init_repo();
    let src = env.source_dir("src");
    for i in 0..3 {
        write_random_file(&src.join(format!("r{i}.bin")), 4 * MIB, 70 + i);
    }
    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into(), "--json".into()];
    args.extend(env.repo_flags());
    let (mut first, out_path, err_path) = spawn_background(&env, &args, "first-writer");
    let locks = env.repo.join("locks");
    let start = std::time::Instant::now();
    while list_files(&locks).is_empty() {
        if let Some(status) = first.try_wait().unwrap() {
            panic!(
                "the first backup ended ({status}) before its lock was seen\n{}",
                String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default())
            );
        }
        assert!(
            start.elapsed() < command_timeout(),
            "no locks/ object appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let pid = first.id() as libc::pid_t;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let second = env.agent(["prune"]);
    let still_running = first.try_wait().unwrap().is_none();
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let status = first.wait().unwrap();
    let first_out = Output::from_status(
        "coffer backup (first writer)".into(),
        status,
        std::fs::read(&out_path).unwrap_or_default(),
        std::fs::read(&err_path).unwrap_or_default(),
        std::time::Duration::ZERO,
    );
    first_out.expect_ok();
    assert!(
        still_running,
        "the first writer ended before the second asked"
    );
    second
        .expect_failure()
        .expect_stderr_contains("repository is locked by")
        .expect_stderr_contains("`locks/")
        .expect_short_stderr(3);
    assert!(
        list_files(&locks).is_empty(),
        "the first writer released it"
    );
    assert!(!env.repo.join("lock").exists());
}

/// Writers started together, again and again, on a server that ignores
/// `If-None-Match`: at most one holds the lock at any moment. Each holder
/// counts itself in and out; a second one inside is an overlap.
#[test]
fn racing_writers_where_if_none_match_is_ignored_never_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start_with(
        dir.path(),
        Quirks {
            ignore_if_none_match: true,
            ..Quirks::default()
        },
    );
    server.create_bucket("race");
    let store = Store::open("s3://race/repo", &s3_options(&server, dir.path())).unwrap();
    let keys = test_keys();
    let lease = jiff::SignedDuration::from_mins(30);

    // Why the probe matters: the create-only lock is not exclusive here.
    let a = RepoLock::acquire(&store, &keys, lease).unwrap();
    let b = RepoLock::acquire(&store, &keys, lease)
        .expect("the ignored condition lets a second create-only lock through");
    drop((a, b));
    store.delete("lock").unwrap();

    let found = caps::probe(&store, PACK_SIZE).unwrap();
    assert!(!found.conditional_create);
    let LockProtocol::List { settle_ms } = found.lock else {
        panic!("the probe must pick list-and-check: {found:?}");
    };
    assert!(settle_ms >= 1000);
    // The settle only helps listings that lag; this one shows objects at
    // once (found.list_lag_ms == 0), so a short one keeps the test quick.
    assert_eq!(found.list_lag_ms, 0);
    let protocol = LockProtocol::List { settle_ms: 20 };

    const WRITERS: usize = 5;
    const ROUNDS: usize = 6;
    let inside = AtomicUsize::new(0);
    let overlaps = AtomicUsize::new(0);
    let holds = AtomicUsize::new(0);
    let start = std::sync::Barrier::new(WRITERS);
    let errors = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    start.wait();
                    let wait = std::time::Duration::from_secs(4);
                    let lock =
                        match RepoLock::acquire_wait_with(&store, &keys, lease, wait, protocol) {
                            Ok(l) => l,
                            Err(RepoError::Locked { .. }) => continue,
                            // No panic here: the others would wait at the
                            // barrier for ever.
                            Err(e) => {
                                errors.lock().unwrap().push(e.to_string());
                                continue;
                            }
                        };
                    if inside.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    holds.fetch_add(1, Ordering::SeqCst);
                    // Work while holding it: a read of the listing.
                    let _ = store.list("locks/");
                    inside.fetch_sub(1, Ordering::SeqCst);
                    if let Err(e) = lock.release(&store, &keys) {
                        errors.lock().unwrap().push(e.to_string());
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    let holds = holds.load(Ordering::SeqCst);
    eprintln!("{holds} holds by {WRITERS} writers in {ROUNDS} rounds");
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two writers held the lock at once ({holds} holds; errors: {errors:?})"
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        holds >= ROUNDS,
        "every round some writer got the lock: {holds}"
    );
    assert!(
        store.list("locks/").unwrap().is_empty(),
        "every lock released"
    );
}

/// Older builds hold `lock`; new writers on a server without the
/// create-only write hold `locks/<id>`: each respects the other's. A
/// writer whose lock is gone stops at its next check.
#[test]
fn both_lock_objects_are_respected_and_a_lost_lock_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(LocalStorage::new(dir.path()).opened()).unwrap();
    let keys = test_keys();
    let lease = jiff::SignedDuration::from_mins(30);
    let listed = LockProtocol::List { settle_ms: 10 };

    let old = RepoLock::acquire(&store, &keys, lease).unwrap();
    let e = RepoLock::acquire_with(&store, &keys, lease, listed)
        .err()
        .unwrap();
    assert!(
        matches!(&e, RepoError::Locked { object, .. } if object == "lock"),
        "{e}"
    );
    assert!(store.list("locks/").unwrap().is_empty(), "nothing written");
    old.release(&store, &keys).unwrap();

    let new = RepoLock::acquire_with(&store, &keys, lease, listed).unwrap();
    assert!(new.object().starts_with("locks/"));
    let e = RepoLock::acquire(&store, &keys, lease).err().unwrap();
    assert!(
        matches!(&e, RepoError::Locked { object, .. } if object == new.object()),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("`{}`", new.object())),
        "{e}"
    );
    assert_eq!(store.stat("lock").unwrap(), None, "the loser withdrew");

    // Someone deleted it (or took it over after its lease ran out).
    let mut new = new;
    store.delete(new.object()).unwrap();
    let e = new.confirm(&store, &keys).unwrap_err();
    assert!(matches!(e, RepoError::LockLost { .. }), "{e}");
    assert!(e.to_string().contains("stopping"), "{e}");

    // A stale listed lock (its lease ran out) is taken over.
    let dead =
        RepoLock::acquire_with(&store, &keys, jiff::SignedDuration::from_secs(-1), listed).unwrap();
    std::mem::forget(dead);
    let taker = RepoLock::acquire_with(&store, &keys, lease, listed).unwrap();
    assert_eq!(store.list("locks/").unwrap().len(), 1, "the stale one went");
    taker.release(&store, &keys).unwrap();
}

/// A local folder whose listings do not show a new object until three
/// listings later, and whose create-only write overwrites: a server whose
/// listing lags.
struct LaggyListing {
    inner: LocalStorage,
    /// Keys hidden from the next so many listings.
    hidden: Mutex<Vec<(String, u32)>>,
}

impl LaggyListing {
    fn hide(&self, key: &str) {
        self.hidden.lock().unwrap().push((key.to_string(), 2));
    }
}

#[async_trait]
impl Storage for LaggyListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put(key, data).await?;
        self.hide(key);
        Ok(())
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        self.inner.put_file(key, path).await?;
        self.hide(key);
        Ok(())
    }
    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        self.put(key, data).await.map(|()| true)
    }
    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        self.inner.get_capped(key, cap).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        self.inner.get_range(key, offset, length).await
    }
    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let listed = self.inner.list(prefix).await?;
        let mut hidden = self.hidden.lock().unwrap();
        let shown = listed
            .into_iter()
            .filter(|o| !hidden.iter().any(|(k, n)| *k == o.key && *n > 0))
            .collect();
        for (k, n) in hidden.iter_mut() {
            if k.starts_with(prefix) {
                *n = n.saturating_sub(1);
            }
        }
        Ok(shown)
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key).await
    }
    async fn exists(&self) -> Result<bool, StorageError> {
        self.inner.exists().await
    }
    async fn create_location(&self) -> Result<(), StorageError> {
        self.inner.create_location().await
    }
}

/// The probe measures how long a listing takes to show a new object and
/// sets the list-and-check lock's settle to twice that; a writer whose own
/// lock does not show in its listing after the settle does not go ahead.
#[test]
fn a_lagging_listing_is_measured_and_a_lock_it_hides_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inner = LocalStorage::new(dir.path());
    let tuning = inner.tuning();
    let laggy = LaggyListing {
        inner,
        hidden: Mutex::new(Vec::new()),
    };
    let store = Store::new(Opened {
        storage: Box::new(laggy),
        tuning,
    })
    .unwrap();
    let keys = test_keys();
    let found: Capabilities = caps::probe(&store, PACK_SIZE).unwrap();
    assert!(!found.conditional_create);
    assert!(found.list_after_write);
    assert!(found.list_lag_ms >= 250, "{found:?}");
    assert_eq!(
        found.lock,
        LockProtocol::List {
            settle_ms: 1000.max(2 * found.list_lag_ms)
        }
    );
    let e = RepoLock::acquire_with(
        &store,
        &keys,
        jiff::SignedDuration::from_mins(30),
        LockProtocol::List { settle_ms: 10 },
    )
    .err()
    .unwrap();
    assert!(matches!(e, RepoError::StorageUnfit { .. }), "{e}");
    assert!(
        e.to_string().contains("did not show this writer's lock"),
        "{e}"
    );
    assert!(
        store.list("locks/").unwrap().is_empty()
            && list_files(&dir.path().join("locks")).is_empty(),
        "the refused writer withdrew its lock"
    );
}

#[test]
fn a_server_that_stores_chunk_framing_gets_no_repository() {
    let env = quirky(Quirks {
        store_chunk_framing: true,
        ..Quirks::default()
    });
    // With checksums on, streamed uploads are aws-chunked: the framing is
    // stored, the probe reads it back, and init refuses.
    let out = init(&env, &[CHECKSUMS_ON]);
    out.expect_failure()
        .expect_stderr_contains("will not write to this storage")
        .expect_stderr_contains("a streamed upload from a spool file")
        .expect_stderr_contains("does not read back as sent")
        .expect_stderr_contains("aws-chunked framing was stored as data")
        .expect_stderr_contains("unset AWS_REQUEST_CHECKSUM_CALCULATION or set it to when_required")
        .expect_short_stderr(2);
    assert!(!env.repo.join("config").exists(), "no repository was made");
    assert!(!env.agent_key.exists());
    assert!(
        list_files(&env.repo).is_empty(),
        "the probe deleted its objects"
    );
    // coffer's default on a custom endpoint sends no aws-chunked uploads.
    let caps = recorded(&init(&env, &[]));
    assert!(
        caps["settings"].as_str().unwrap().contains("checksums off"),
        "{caps}"
    );
}

#[test]
fn a_server_that_refuses_trailing_checksums_is_probed_with_the_default() {
    let env = quirky(Quirks {
        reject_trailing_checksums: true,
        ..Quirks::default()
    });
    let out = init(&env, &[CHECKSUMS_ON]);
    out.expect_failure()
        .expect_stderr_contains("will not write to this storage")
        .expect_stderr_contains("a streamed upload from a spool file")
        .expect_stderr_contains("411")
        .expect_stderr_contains("when_required")
        .expect_short_stderr(2);
    assert!(!env.repo.join("config").exists());
    let caps = recorded(&init(&env, &[]));
    assert_eq!(caps["lock"]["protocol"], "create", "{caps}");
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 3 * MIB, 5);
    env.backup(&[&src]);
    let restored = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&restored, &src));
}

#[test]
fn whole_object_checksums_on_ranges_are_recorded_and_do_not_fail_reads() {
    let env = quirky(Quirks {
        whole_object_checksum_on_ranges: true,
        ..Quirks::default()
    });
    let caps = recorded(&init(&env, &[]));
    assert_eq!(caps["ranged_read_checksum"], "whole-object", "{caps}");
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 3 * MIB, 6);
    env.backup(&[&src]);
    env.check(true).expect_ok();
    let restored = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&restored, &src));
}

/// A repository probed on a server that stored what it was sent, then
/// served by one that stores aws-chunked framing (a provider that changed,
/// or a record made before): the backup's read-back of its first pack
/// catches it, fails naming the pack and the fix, commits nothing, deletes
/// the pack and the record; the next backup probes again and is refused;
/// with coffer's default checksums it works.
#[test]
fn a_pack_that_does_not_read_back_as_written_fails_the_backup() {
    let mut env = quirky(Quirks::default());
    recorded(&init(&env, &[CHECKSUMS_ON]));
    env.s3 = None;
    env.s3 = Some(S3Server::start_with(
        &env.root,
        Quirks {
            store_chunk_framing: true,
            ..Quirks::default()
        },
    ));
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 2 * MIB, 7);

    let out = backup_with(&env, &src, &[CHECKSUMS_ON]);
    eprintln!("DEBUG {out}");
    out.expect_failure()
        .expect_stderr_contains("pack data/")
        .expect_stderr_contains("does not read back as written")
        .expect_stderr_contains("bytes for")
        .expect_stderr_contains("aws-chunked framing was stored as data")
        .expect_stderr_contains("unset AWS_REQUEST_CHECKSUM_CALCULATION or set it to when_required")
        .expect_stderr_contains("nothing was committed")
        .expect_short_stderr(2);
    assert!(env.snapshots().is_empty(), "no snapshot");
    assert!(
        list_files(&env.repo.join("data")).is_empty(),
        "the pack went"
    );
    assert!(!env.repo.join("capabilities").exists(), "the record went");

    backup_with(&env, &src, &[CHECKSUMS_ON])
        .expect_failure()
        .expect_stderr_contains("will not write to this storage")
        .expect_stderr_contains("aws-chunked framing");

    env.backup(&[&src]);
    let restored = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&restored, &src));
}

/// `check` without --read-data names a pack stored with its upload's
/// aws-chunked framing (written before coffer read packs back), not just
/// "truncated or altered".
#[test]
fn check_names_a_pack_stored_with_chunk_framing() {
    let env = TestEnv::with_repo_on(Backend::S3);
    let src = env.source_dir("src");
    write_random_file(&src.join("a.bin"), 2 * MIB, 8);
    env.backup(&[&src]);
    let (key, path, _) = env.packs().into_iter().next().unwrap();
    let pack = std::fs::read(&path).unwrap();
    let mut framed = Vec::new();
    for chunk in pack.chunks(1 << 20) {
        framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
    env.replace_object(&key, &framed);

    let out = env.operator(["check", "--json"]);
    out.expect_code(4);
    let report = out.json();
    let problem = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["object"] == key.as_str())
        .unwrap_or_else(|| panic!("{key} is named\n{out}"));
    let text = problem["problem"].as_str().unwrap();
    assert!(text.contains("aws-chunked framing"), "{text}");
    assert!(text.contains("begins `100000\\r\\n`"), "{text}");
    assert!(text.contains("checksums = \"when_required\""), "{text}");
}

/// Where packs go up in parts (a threshold below twice the pack size), the
/// probe reads a multipart upload back too, and backups then go on.
#[test]
fn a_low_multipart_threshold_is_probed_with_a_multipart_upload() {
    let env = quirky(Quirks::default());
    let server = env.s3.as_ref().unwrap();
    let src = env.source_dir("src");
    write_random_file(&src.join("big.bin"), 20 * MIB, 9);
    let profile = env.path("parts.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"parts\"\nsources = [{src:?}]\nrepository = {repo:?}\n\
             agent_key = {key:?}\ncatalog = {cat:?}\n\n[s3]\nca_bundle = {ca:?}\n\
             multipart_threshold_mib = 5\n",
            src = src.display().to_string(),
            repo = env.repo_url.to_str().unwrap(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
            ca = server.ca_pem.display().to_string(),
        ),
    )
    .unwrap();
    let p = profile.as_os_str();
    let out = env.run([
        OsStr::new("init"),
        "--json".as_ref(),
        "--profile".as_ref(),
        p,
        "--recipient".as_ref(),
        env.recipient.as_ref(),
    ]);
    let caps = recorded(&out);
    assert_eq!(caps["multipart_threshold"], 5 << 20, "{caps}");
    assert_eq!(caps["uploads"]["multipart"], (5 << 20) + 4097, "{caps}");
    assert!(
        list_files(&env.repo)
            .iter()
            .all(|(k, _)| !k.starts_with("probe"))
    );
    env.run([OsStr::new("backup"), "--profile".as_ref(), p])
        .expect_ok();
    env.check(true).expect_ok();
}
