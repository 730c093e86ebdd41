//! The single-writer lock against a server whose conditional create is
//! atomic (moto; s3s-fs's is not, see shared/notes/s3-testing.md): racing
//! writers, exactly one wins; a stale lease is taken over.
//!
//! moto must be installed (`scripts/test.sh` does it): the test fails
//! without it, unless COFFER_SKIP_MOTO=1 says to skip on purpose.

use crate::env::{Backend, TestEnv};
use crate::s3server::TestCerts;
use coffer::repo::RepoError;
use coffer::repo::keys::{AgentKey, Keys};
use coffer::repo::lock::RepoLock;
use coffer::repo::store::Store;
use coffer::storage::S3Options;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_moto(certs: &TestCerts) -> Option<Moto> {
    let bin = std::env::var("COFFER_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let spawned = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", "0", "-c"])
        .arg(&certs.leaf_pem)
        .arg("-k")
        .arg(&certs.key_pem)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("COFFER_SKIP_MOTO").as_deref() == Ok("1") {
                eprintln!("moto_server not found ({e}): skipped because COFFER_SKIP_MOTO=1");
                return None;
            }
            panic!(
                "moto_server ({bin}) cannot be started: {e}. Run the suite with scripts/test.sh, which installs it"
            );
        }
    };
    // moto prints " * Running on https://127.0.0.1:PORT" on stderr.
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("moto_server exited before it listened")
            .unwrap();
        if let Some(rest) = line.split("https://127.0.0.1:").nth(1) {
            break rest.trim().trim_end_matches('/').parse::<u16>().unwrap();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    // moto takes any keys; the SDK wants some. Every moto test sets the same.
    // SAFETY: the same values from every test, before any S3 client reads them.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "moto");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "moto");
    }
    Some(Moto { child, port })
}

#[test]
fn racing_writers_on_s3_exactly_one_wins_and_a_stale_lease_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path());
    let Some(moto) = start_moto(&certs) else {
        return;
    };
    let opts = S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("https://127.0.0.1:{}", moto.port)),
        ca_bundle: Some(certs.ca_pem.clone()),
        max_attempts: 3,
        ..S3Options::default()
    };
    let store = Store::open("s3://lock-race/repo", &opts).unwrap();
    store.create_location().unwrap();
    let operator = age::x25519::Identity::generate();
    let keys = Keys::from_agent_key(&AgentKey::generate(
        "race".into(),
        vec![operator.to_public()],
    ));
    let lease = jiff::SignedDuration::from_mins(30);

    // The capability probe finds the create-only write honoured here.
    let found = coffer::repo::caps::probe(&store, 16 << 20).unwrap();
    assert!(
        found.conditional_create && found.list_after_write,
        "{found:?}"
    );
    assert_eq!(found.lock, coffer::repo::lock::LockProtocol::Create);
    assert!(
        store.list("probe/").unwrap().is_empty(),
        "the probe cleans up"
    );

    let results: Vec<Result<RepoLock, RepoError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|_| s.spawn(|| RepoLock::acquire(&store, &keys, lease)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        winners, 1,
        "exactly one of 12 racing writers may hold the lock"
    );
    for r in &results {
        if let Err(e) = r {
            let msg = e.to_string();
            assert!(
                matches!(e, RepoError::Locked { .. })
                    && msg.contains("repository is locked by")
                    && msg.contains(" since "),
                "a loser must be told who holds the lock since when: {msg}"
            );
        }
    }
    // A second writer while the first works: refused.
    assert!(matches!(
        RepoLock::acquire(&store, &keys, lease),
        Err(RepoError::Locked { .. })
    ));
    for r in results.into_iter().flatten() {
        r.release(&store, &keys).unwrap();
    }
    assert_eq!(
        store.stat("lock").unwrap(),
        None,
        "release removes the lock"
    );

    // A writer that died with its lease run out: the next one takes over.
    let dead = RepoLock::acquire(&store, &keys, jiff::SignedDuration::from_secs(-1)).unwrap();
    std::mem::forget(dead);
    let taker = RepoLock::acquire(&store, &keys, lease).expect("a stale lease is taken over");
    taker.release(&store, &keys).unwrap();
}

#[test]
fn a_bucket_outside_the_allowed_regions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path());
    let Some(moto) = start_moto(&certs) else {
        return;
    };
    let opts = |region: &str, allowed: &[&str]| S3Options {
        region: Some(region.into()),
        endpoint: Some(format!("https://127.0.0.1:{}", moto.port)),
        ca_bundle: Some(certs.ca_pem.clone()),
        max_attempts: 2,
        allowed_regions: allowed.iter().map(|s| s.to_string()).collect(),
        ..S3Options::default()
    };
    Store::open("s3://london-data/x", &opts("eu-west-2", &[]))
        .unwrap()
        .create_location()
        .unwrap();
    let refused = Store::open(
        "s3://london-data/x",
        &opts("eu-west-2", &["eu-west-1", "eu-central-1"]),
    );
    let msg = refused.err().expect("eu-west-2 is not allowed").to_string();
    assert!(
        msg.contains("eu-west-2") && msg.contains("allowed_regions"),
        "{msg}"
    );
    Store::open("s3://london-data/x", &opts("eu-west-2", &["eu-west-2"])).expect("allowed region");

    // A bucket to be made in a region that is not allowed: refused before
    // it is created (moto, unlike s3s-fs, keeps each bucket's region).
    let paris = Store::open("s3://paris-data/x", &opts("eu-west-3", &["eu-west-1"]))
        .expect("a missing bucket is checked when it is created");
    let msg = paris.create_location().unwrap_err().to_string();
    assert!(
        msg.contains("refusing to create bucket paris-data in region eu-west-3")
            && !msg.contains(": :"),
        "{msg}"
    );
    let anywhere = Store::open("s3://paris-data/x", &opts("eu-west-3", &[])).unwrap();
    assert!(!anywhere.exists().unwrap(), "no bucket was created");
}

/// The capability probe records the bucket's Object Lock as it can learn
/// it: "off" on moto (a bucket made without it), "unknown (…)" where the
/// server lacks the call (s3s-fs answers 501), nothing for a local folder.
#[test]
fn the_probe_records_object_lock_as_far_as_it_can_tell() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new(dir.path());
    let Some(moto) = start_moto(&certs) else {
        return;
    };
    let opts = S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(format!("https://127.0.0.1:{}", moto.port)),
        ca_bundle: Some(certs.ca_pem.clone()),
        max_attempts: 2,
        ..S3Options::default()
    };
    let store = Store::open("s3://locked-or-not/x", &opts).unwrap();
    store.create_location().unwrap();
    let caps = coffer::repo::caps::probe(&store, 16 << 20).expect("probe moto");
    assert_eq!(caps.object_lock.as_deref(), Some("off"), "{caps:?}");

    // s3s-fs answers 501 for the call: `init` says what it could tell.
    let env = TestEnv::new_on(Backend::S3);
    let out = env.run([
        OsStr::new("init"),
        OsStr::new("--repo"),
        env.repo_url.as_os_str(),
        OsStr::new("--recipient"),
        OsStr::new(env.generate_identity(&env.path("other.key")).as_str()),
        OsStr::new("--agent-key"),
        env.agent_key.as_os_str(),
        OsStr::new("--json"),
    ]);
    out.expect_ok();
    let lock = out.json()["capabilities"]["object_lock"].clone();
    assert!(
        lock.as_str().is_some_and(|l| l.starts_with("unknown")),
        "{out}"
    );
    let local = Store::open(
        dir.path().join("folder").to_str().unwrap(),
        &S3Options::default(),
    )
    .unwrap();
    local.create_location().unwrap();
    let caps = coffer::repo::caps::probe(&local, 16 << 20).expect("probe a folder");
    assert_eq!(caps.object_lock, None);
}
