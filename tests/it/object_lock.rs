//! A repository under S3 Object Lock, on moto over TLS (moto keeps
//! versions, retention and delete markers; shared/notes/s3-testing.md):
//! every object is written locked, the writer lock still works, locks are
//! lengthened over 120 simulated days at most once per margin, `check`
//! finds a gap made on purpose, and bad inputs are refused plainly.
//!
//! moto does not enforce IAM, and lets a governance lock be shortened (AWS
//! refuses without `s3:BypassGovernanceRetention`): tests that need those
//! refusals check coffer's own behaviour instead, and say so.

use crate::env::{Output, TestEnv};
use crate::moto::{Moto, start_moto};
use crate::s3server::TestCerts;
use coffer::repo::Repository;
use coffer::repo::keys::AgentKey;
use coffer::repo::store::Store;
use coffer::storage::{LockMode, Retention, S3Options};
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};

/// A test environment whose repository is `s3://BUCKET/repo` on moto.
pub(crate) struct Locked {
    pub env: TestEnv,
    pub opts: S3Options,
    pub url: String,
    vars: Vec<(&'static str, OsString)>,
    _moto: Moto,
}

impl Locked {
    pub fn new(bucket: &str) -> Option<Locked> {
        let mut env = TestEnv::new();
        let certs = TestCerts::new(&env.root);
        let moto = start_moto(&certs)?;
        let endpoint = format!("https://127.0.0.1:{}", moto.port);
        let url = format!("s3://{bucket}/repo");
        env.repo_url = url.clone().into();
        env.recipient = env.generate_identity(&env.identity.clone());
        let vars = vec![
            ("AWS_ACCESS_KEY_ID", "moto".into()),
            ("AWS_SECRET_ACCESS_KEY", "moto".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", endpoint.clone().into()),
            ("AWS_CA_BUNDLE", certs.ca_pem.clone().into_os_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ];
        let opts = S3Options {
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            ca_bundle: Some(certs.ca_pem.clone()),
            max_attempts: 2,
            ..S3Options::default()
        };
        Some(Locked {
            env,
            opts,
            url,
            vars,
            _moto: moto,
        })
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        let vars: Vec<(&str, &OsStr)> =
            self.vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        self.env.run_with_env(args, &vars)
    }

    /// `args` with the repository flags (the agent's).
    pub fn agent<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        let mut all: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.extend(self.env.repo_flags());
        self.run(all)
    }

    /// `args` with the repository flags and the identity (the operator's).
    pub fn operator<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Output {
        let mut all: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        all.extend(self.env.operator_flags());
        self.run(all)
    }

    /// `init --create-bucket --object-lock governance --lock-window 10d`.
    pub fn init(&self) {
        self.init_in("governance");
    }

    /// `init` with the lock `mode` (governance or compliance).
    pub fn init_in(&self, mode: &str) {
        self.agent([
            "init",
            "--create-bucket",
            "--object-lock",
            mode,
            "--lock-window",
            "10d",
            "--recipient",
            &self.env.recipient,
        ])
        .expect_ok();
    }

    pub fn store(&self) -> Store {
        Store::open(&self.url, &self.opts).unwrap()
    }

    /// Writes `files` (name, content) under `src/` and backs up `src`.
    pub fn backup(&self, files: &[(&str, &str)]) -> Output {
        let src = self.env.root.join("src");
        std::fs::create_dir_all(&src).unwrap();
        for (name, content) in files {
            std::fs::write(src.join(name), content).unwrap();
        }
        let out = self.agent([OsStr::new("backup"), src.as_os_str()]);
        out.expect_ok();
        out
    }
}

/// Every key the repository holds now, but the writer's lock and probes.
fn history_keys(store: &Store) -> Vec<String> {
    let mut keys: Vec<String> = ["data/", "index/", "snapshots/"]
        .iter()
        .flat_map(|p| store.list(p).unwrap())
        .map(|o| o.key)
        .collect();
    keys.extend(["config", "keyring", "keyring.copy"].map(String::from));
    keys
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

#[test]
fn every_object_history_depends_on_is_written_locked() {
    let Some(t) = Locked::new("locked-writes") else {
        return;
    };
    t.init();
    let before = Timestamp::now();
    t.backup(&[("a.txt", "first"), ("b.bin", &"x".repeat(300_000))]);
    // A second backup: the writer lock (created, then deleted: a delete
    // marker over a locked version) works again on a locked bucket.
    t.backup(&[("a.txt", "second")]);
    let after = Timestamp::now();
    let store = t.store();
    let keys = history_keys(&store);
    assert!(keys.len() >= 8, "{keys:?}");
    for key in &keys {
        let r = store
            .retention(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(r.mode, LockMode::Governance, "{key}");
        // window 10 days + margin 30 days, from when it was written.
        let (lo, hi) = (
            before.checked_add(days(40)).unwrap() - SignedDuration::from_secs(5),
            after.checked_add(days(40)).unwrap() + SignedDuration::from_secs(5),
        );
        assert!(
            r.until >= lo && r.until <= hi,
            "{key}: locked until {}",
            r.until
        );
    }
    assert_eq!(
        store.stat("lock").unwrap(),
        None,
        "the writer lock is released"
    );
    let lock_versions = store.list_versions("lock").unwrap();
    assert!(
        lock_versions.iter().any(|v| v.delete_marker)
            && lock_versions.iter().any(|v| !v.delete_marker),
        "releasing a locked writer lock leaves a delete marker over a kept version: {lock_versions:?}"
    );
    // What the operator sees is whole.
    t.operator(["check", "--read-data"]).expect_ok();
}

#[test]
fn locks_are_lengthened_over_120_days_at_most_once_per_margin() {
    let Some(t) = Locked::new("locked-days") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one"), ("b.txt", "two")]);
    let store = t.store();
    let agent = AgentKey::load(&t.env.agent_key).unwrap();
    let repo = Repository::open_agent(store, &agent).unwrap();
    let mut catalog = coffer::catalog::Catalog::open(&t.env.catalog, &repo.config.id).unwrap();
    let listed: HashMap<String, Timestamp> = ["data/", "index/"]
        .iter()
        .flat_map(|p| repo.store.list(p).unwrap())
        .filter_map(|o| Some((o.key, o.modified?)))
        .collect();
    let start = Timestamp::now();
    let window = days(10);
    let others: Vec<String> = history_keys(&repo.store)
        .into_iter()
        .filter(|k| !k.starts_with("snapshots/"))
        .collect();
    let mut extended_on = Vec::new();
    for day in 1..=120 {
        let now = start.checked_add(days(day)).unwrap();
        let pass = coffer::engine::locks::extend(&repo, &mut catalog, &listed, now).unwrap();
        assert!(pass.failed.is_empty(), "day {day}: {:?}", pass.failed);
        if pass.extended > 0 {
            extended_on.push((day, pass.extended));
        }
        // A snapshot taken today needs all of it for its window: storage's
        // own record of every lock covers that, every day.
        let needed: HashMap<String, Timestamp> = others
            .iter()
            .map(|k| (k.clone(), now.checked_add(window).unwrap()))
            .collect();
        let gaps = coffer::engine::locks::gaps(&repo, &needed);
        assert!(gaps.is_empty(), "day {day}: {gaps:?}");
    }
    // Written (a moment before `start`) locked for 40 days: window 10 +
    // margin 30. Due once less than the window is left, on day 30, and
    // then every 30 days (storage keeps whole seconds, so a lengthened
    // lock is due again on the margin's last day): the margin apart,
    // never more often, every object each time.
    let days_only: Vec<i64> = extended_on.iter().map(|(d, _)| *d).collect();
    assert_eq!(days_only, [30, 60, 90, 120], "{extended_on:?}");
    assert!(
        extended_on.iter().all(|(_, n)| *n == others.len()),
        "{extended_on:?} of {}",
        others.len()
    );
}

#[test]
fn check_finds_a_lock_gap_made_on_purpose() {
    let Some(t) = Locked::new("locked-gap") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one")]);
    t.agent(["check"]).expect_ok();
    let store = t.store();
    let pack = store.list("data/").unwrap().remove(0).key;
    // moto lets a governance lock be shortened (AWS would want the bypass
    // permission): stands in for a lock that ran short.
    store
        .extend_retention(
            &pack,
            Retention {
                mode: LockMode::Governance,
                until: Timestamp::now().checked_add(days(1)).unwrap(),
            },
        )
        .unwrap();
    let out = t.agent(["check", "--json"]);
    out.expect_code(1);
    let report = out.json();
    assert_eq!(report["ok"], false);
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "not damage: {report}"
    );
    let gaps = report["lock_gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "only the pack made short: {report}");
    assert_eq!(gaps[0]["object"], pack.as_str());
    assert!(
        gaps[0]["problem"]
            .as_str()
            .unwrap()
            .contains("its Object Lock ends"),
        "{}",
        gaps[0]
    );
    assert!(gaps[0]["locked_until"].is_string() && gaps[0]["needed_until"].is_string());
    let text = t.agent(["check"]);
    text.expect_code(1);
    assert!(
        text.stdout
            .contains(&format!("LOCK GAP {pack}: its Object Lock ends"))
            && text.stdout.contains("LOCK GAPS FOUND"),
        "{text}"
    );
    // The next backup lengthens it again, and the check passes.
    t.backup(&[("a.txt", "two")]);
    t.agent(["check"]).expect_ok();
}

#[test]
fn object_lock_is_refused_where_it_can_not_hold() {
    // A local folder: refused, nothing created.
    let env = TestEnv::new();
    let recipient = env.generate_identity(&env.identity.clone());
    let out = env.agent([
        "init",
        "--object-lock",
        "governance",
        "--recipient",
        &recipient,
    ]);
    out.expect_failure().expect_short_stderr(2);
    out.expect_stderr_contains("Object Lock needs S3");
    assert!(!env.agent_key.exists(), "no agent key for a refused init");

    // A window without a lock: a usage error.
    env.agent(["init", "--lock-window", "30d", "--recipient", &recipient])
        .expect_code(2);

    let Some(t) = Locked::new("plain-bucket") else {
        return;
    };
    // A bucket made without Object Lock can not get it: refused before
    // anything is written.
    t.store().create_location().unwrap();
    let out = t.agent([
        "init",
        "--object-lock",
        "compliance",
        "--recipient",
        &t.env.recipient,
    ]);
    out.expect_failure().expect_short_stderr(2);
    out.expect_stderr_contains("the bucket has no Object Lock");
    assert!(t.store().list("").unwrap().is_empty(), "nothing written");

    // A bad window.
    let out = t.agent([
        "init",
        "--create-bucket",
        "--object-lock",
        "governance",
        "--lock-window",
        "20y",
        "--recipient",
        &t.env.recipient,
    ]);
    out.expect_failure().expect_short_stderr(2);
}

#[test]
fn a_locked_version_can_not_be_deleted_with_the_agents_credentials() {
    let Some(t) = Locked::new("locked-bypass") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one")]);
    let store = t.store();
    let pack = store.list("data/").unwrap().remove(0).key;
    let version = store
        .list_versions(&pack)
        .unwrap()
        .into_iter()
        .find(|v| !v.delete_marker)
        .unwrap();
    // What an attacker with the server's credentials tries: the version
    // itself, not just a delete marker. coffer never asks for the
    // governance bypass, and storage refuses.
    let refused = store.delete_version(&pack, &version.version).unwrap_err();
    assert!(
        refused.to_string().contains("AccessDenied") || refused.to_string().contains("denied"),
        "{refused}"
    );
    // A plain delete only hides it: the locked version stays.
    store.delete(&pack).unwrap();
    assert_eq!(store.stat(&pack).unwrap(), None);
    assert!(
        store
            .list_versions(&pack)
            .unwrap()
            .iter()
            .any(|v| v.version == version.version),
        "the locked version survives a delete"
    );
}

#[test]
fn an_append_only_agent_leaves_retention_to_the_maintainer() {
    let env = TestEnv::with_repo();
    let src = env.root.join("web-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "one").unwrap();
    let profile = env.root.join("web.toml");
    let toml = |run_by: &str| {
        format!(
            "name = \"web\"\nsources = [{src:?}]\nrepository = {repo:?}\nagent_key = {key:?}\ncatalog = {cat:?}\n\n[retention]\nrun_by = \"{run_by}\"\nkeep_last = 1\n",
            src = src.display().to_string(),
            repo = env.repo_url.to_string_lossy(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
        )
    };
    std::fs::write(&profile, toml("maintainer")).unwrap();
    let state = env.root.join("state");
    let run = || {
        env.run([
            OsStr::new("run"),
            "--profile".as_ref(),
            profile.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ])
    };
    for content in ["one", "two"] {
        std::fs::write(src.join("a.txt"), content).unwrap();
        let out = run();
        out.expect_ok();
        out.expect_stderr_contains("retention left to the maintainer");
    }
    let count = |env: &TestEnv| {
        env.agent(["--json", "snapshots"])
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&env), 2, "the agent forgot nothing");
    // The maintainer applies the same policy with its own credentials.
    env.run([
        OsStr::new("forget"),
        "--prune".as_ref(),
        "--keep-within".as_ref(),
        "0s".as_ref(),
        "--profile".as_ref(),
        profile.as_os_str(),
    ])
    .expect_ok();
    assert_eq!(count(&env), 1, "the maintainer's run keeps the last one");
    // A bad value is refused with the key named.
    std::fs::write(&profile, toml("nobody")).unwrap();
    let out = run();
    out.expect_failure();
    out.expect_stderr_contains(
        "line 8: unknown variant `nobody`, expected `agent` or `maintainer`",
    );
}

#[test]
fn the_lifecycle_rule_is_printed_and_applied() {
    let Some(t) = Locked::new("locked-lifecycle") else {
        return;
    };
    t.init();
    let out = t.agent(["policy", "--lifecycle"]);
    out.expect_ok();
    let rule = &out.json()["Rules"][0];
    assert_eq!(rule["ID"], "coffer-repo");
    assert_eq!(rule["Filter"]["Prefix"], "repo/");
    // Applied twice: the second replaces the first (same id), no error.
    for _ in 0..2 {
        t.agent(["policy", "--lifecycle", "--apply"]).expect_ok();
    }
    // A local repository has no lifecycle rules; --apply needs --lifecycle.
    let env = TestEnv::with_repo();
    env.agent(["policy", "--lifecycle"]).expect_failure();
    t.agent(["policy", "--role", "agent", "--apply"])
        .expect_code(2);
}

#[test]
fn a_copy_of_a_locked_repository_is_locked_where_the_target_can_be() {
    let Some(t) = Locked::new("locked-copy-src") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one")]);
    // Another bucket with Object Lock: every object copied is locked.
    let target = Store::open("s3://locked-copy-dst/repo", &{
        let mut o = t.opts.clone();
        o.object_lock = Some(LockMode::Governance);
        o
    })
    .unwrap();
    target.create_location().unwrap();
    t.agent(["copy", "--to", "s3://locked-copy-dst/repo"])
        .expect_ok();
    let keys = history_keys(&target);
    assert!(keys.iter().any(|k| k.starts_with("data/")), "{keys:?}");
    for key in &keys {
        let r = target.retention(key).unwrap();
        assert!(
            r.is_some_and(|r| r.mode == LockMode::Governance),
            "{key} is copied without its lock"
        );
    }
    // The copy's locks are kept like the repository's: its own ledger
    // rows, so the next copy asks storage nothing and lengthens nothing...
    let out = t.agent(["--json", "copy", "--to", "s3://locked-copy-dst/repo"]);
    out.expect_ok();
    assert_eq!(out.json()["locks_extended"], 0);
    let agent = AgentKey::load(&t.env.agent_key).unwrap();
    let repo = Repository::open_agent(t.store(), &agent).unwrap();
    let mut catalog = coffer::catalog::Catalog::open(&t.env.catalog, &repo.config.id).unwrap();
    let place = target.location();
    let ledger = catalog.lock_untils(&place).unwrap();
    let copied: Vec<&String> = keys
        .iter()
        .filter(|k| !k.starts_with("snapshots/"))
        .collect();
    for key in &copied {
        assert!(ledger.contains_key(*key), "{key} not in the copy's ledger");
    }
    // ...until less than the window is left: on day 31 (window 10, margin
    // 30) each is lengthened to cover the window from then.
    let held: HashMap<String, Option<Timestamp>> =
        copied.iter().map(|k| ((*k).clone(), None)).collect();
    let day31 = Timestamp::now().checked_add(days(31)).unwrap();
    let lock = repo.config.object_lock.unwrap();
    let pass = coffer::engine::locks::extend_at(&target, &place, lock, &mut catalog, &held, day31)
        .unwrap();
    assert_eq!(pass.extended, copied.len(), "{pass:?}");
    for key in &copied {
        let until = target.retention(key).unwrap().unwrap().until;
        assert!(
            until >= day31.checked_add(days(10)).unwrap(),
            "{key}: {until}"
        );
    }
    // The repository's own ledger is apart: the source was not touched.
    assert!(
        catalog
            .lock_untils(coffer::catalog::OWN_LOCKS)
            .unwrap()
            .values()
            .all(|u| *u < day31.checked_add(days(10)).unwrap())
    );
    // A folder can hold no lock: the copy is made, and says so.
    let folder = t.env.root.join("dr-copy");
    let out = t.agent([OsStr::new("copy"), "--to".as_ref(), folder.as_os_str()]);
    out.expect_ok();
    out.expect_stderr_contains("the copy's objects are not locked");
}

#[test]
fn prune_deletes_versions_whose_lock_has_ended_and_nothing_still_locked() {
    let Some(t) = Locked::new("locked-expire") else {
        return;
    };
    t.init();
    t.backup(&[("a.txt", "one"), ("b.txt", "two")]);
    t.backup(&[("a.txt", "one, changed")]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = coffer::time::rfc3339_secs(Timestamp::now());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // An object written with a lock of two seconds, then deleted: once the
    // lock ends, nothing holds its version.
    let store = t.store();
    store
        .set_write_lock(Some(coffer::storage::WriteLock {
            mode: LockMode::Governance,
            period: SignedDuration::from_secs(2),
        }))
        .unwrap();
    store
        .put("scratch/short-lived", bytes::Bytes::from_static(b"x"))
        .unwrap();
    store.delete("scratch/short-lived").unwrap();
    // Forget and prune: deletions are delete markers; every version is
    // younger than the shortest lock, so none is even asked about.
    t.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    let out = t.agent(["--json", "prune", "--max-unused", "0", "--grace", "0s"]);
    out.expect_ok();
    let pruned = out.json();
    let gone =
        pruned["packs_deleted"].as_u64().unwrap() + pruned["packs_repacked"].as_u64().unwrap();
    assert!(gone > 0, "{pruned}");
    let versions = &pruned["versions"];
    assert_eq!(versions["checked"], 0, "{versions}");
    assert_eq!(versions["deleted"], 0, "{versions}");
    std::thread::sleep(std::time::Duration::from_secs(3));

    let agent = AgentKey::load(&t.env.agent_key).unwrap();
    let repo = Repository::open_agent(t.store(), &agent).unwrap();
    let all = || repo.store.list_versions("").unwrap();
    let held = all();
    // Asked about every non-current version (a shortest lock of one
    // second): storage's locks decide. The scratch version's has ended.
    let mut warnings = Vec::new();
    let done = coffer::engine::expire::pass(
        &repo,
        SignedDuration::from_secs(1),
        Timestamp::now(),
        false,
        &mut warnings,
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    // What went: the scratch object and init's storage probes (written
    // before the repository was locked), versions and markers alike.
    let left: Vec<_> = all();
    let gone: BTreeSet<String> = held
        .iter()
        .filter(|v| !left.contains(v))
        .map(|v| v.key.clone())
        .collect();
    assert!(gone.contains("scratch/short-lived"), "{gone:?}");
    assert!(
        gone.iter()
            .all(|k| k == "scratch/short-lived" || k.starts_with("probe/")),
        "{gone:?}"
    );
    assert_eq!(done.deleted + done.markers_deleted, held.len() - left.len());
    assert_eq!(done.checked, done.deleted + done.still_locked, "{done:?}");
    // What stays: every other non-current version, each still locked;
    // prune's deleted packs among them.
    let stays: Vec<_> = left
        .iter()
        .filter(|v| !v.latest && !v.delete_marker)
        .collect();
    assert_eq!(stays.len(), done.still_locked, "{done:?}");
    assert!(
        stays.iter().any(|v| v.key.starts_with("data/")),
        "{stays:?}"
    );
    for v in &stays {
        let r = repo
            .store
            .version_retentions(&[(v.key.clone(), v.version.clone())]);
        let until = r[0].1.as_ref().unwrap().unwrap().until;
        assert!(until > Timestamp::now(), "{v:?} {until}");
    }

    // A clock far ahead of storage's: coffer reads every lock as ended,
    // storage refuses, and it says so; nothing is lost.
    let mut warnings = Vec::new();
    let ahead = Timestamp::now().checked_add(days(400)).unwrap();
    let refused = coffer::engine::expire::pass(
        &repo,
        SignedDuration::from_secs(1),
        ahead,
        false,
        &mut warnings,
    )
    .unwrap();
    assert_eq!(refused.refused, done.still_locked, "{refused:?}");
    assert_eq!(refused.deleted, 0, "{refused:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("storage refused to delete")),
        "{warnings:?}"
    );
    assert_eq!(all(), left);
    // The history before the prune is still there to read, and the
    // repository is whole.
    let listed = t.operator(["--json", "snapshots", "--as-of", &before]);
    listed.expect_ok();
    assert_eq!(listed.json().as_array().unwrap().len(), 2);
    t.operator(["check", "--read-data"]).expect_ok();
}

#[test]
fn a_compliance_lock_holds_every_object_and_the_history_reads_whole() {
    let Some(t) = Locked::new("locked-compliance") else {
        return;
    };
    t.init_in("compliance");
    t.backup(&[("a.txt", "one"), ("b.txt", "two")]);
    t.backup(&[("a.txt", "one, changed")]);
    let store = t.store();
    for key in history_keys(&store) {
        let r = store.retention(&key).unwrap();
        assert_eq!(
            r.map(|r| r.mode),
            Some(LockMode::Compliance),
            "{key} is not under compliance"
        );
    }
    // No version can go before its date, whoever asks (moto, like AWS,
    // refuses even the root account in compliance mode).
    let snapshot = store.list("snapshots/").unwrap().remove(0).key;
    let version = store.list_versions(&snapshot).unwrap().remove(0);
    let refused = store
        .delete_version(&snapshot, &version.version)
        .unwrap_err();
    assert!(refused.to_string().contains("AccessDenied"), "{refused}");
    // Retention and prune work as on a governance bucket: the maintainer's
    // deletions are delete markers, and the history stays whole.
    t.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "1",
        "--prune",
    ])
    .expect_ok();
    t.operator(["check", "--read-data"]).expect_ok();
    let target = t.env.unique_path("restored");
    t.operator([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
    .expect_ok();
    let restored = std::fs::read_to_string(find_file(&target, "a.txt")).unwrap();
    assert_eq!(restored, "one, changed");
}

/// The one file called `name` under `dir`, wherever restore put it.
fn find_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name() == Some(OsStr::new(name)) {
                return p;
            }
        }
    }
    panic!("no {name} under {}", dir.display())
}
