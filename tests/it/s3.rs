//! S3 over TLS: the storage conformance suite on both backends, the CLI round
//! trip against the in-process S3 server, and the refusals (plain http,
//! untrusted certificate, wrong credentials, missing bucket).

use crate::env::{Output, TestEnv, assert_trees_equal, random_bytes, restored_path, write_file};
use crate::s3server::S3Server;
use bytes::Bytes;
use coffer::repo::store::Store;
use coffer::storage::{Cap, LocalStorage, S3Options, StorageError};
use std::ffi::OsStr;

/// The behaviour every backend must show (restic's backend test suite idea).
/// A whole-object read of at most `max` bytes.
fn cap(max: u64) -> Cap {
    Cap {
        max,
        what: "a test object",
    }
}

pub(crate) fn conformance(store: &Store) {
    let who = store.location();
    assert!(store.exists().unwrap(), "{who}: exists");
    assert!(
        store.list("data/").unwrap().is_empty(),
        "{who}: empty at start"
    );
    assert!(
        store
            .get_capped("config", cap(1 << 20))
            .unwrap_err()
            .is_not_found(),
        "{who}: missing object is NotFound"
    );
    assert_eq!(
        store.stat("config").unwrap(),
        None,
        "{who}: stat of a missing object"
    );

    let big = Bytes::from(random_bytes(3 * 1024 * 1024 + 7, 1));
    store.put("data/ab/abcdef", big.clone()).unwrap();
    store.put("index/1", Bytes::from_static(b"one")).unwrap();
    store.put("index/2", Bytes::from_static(b"two")).unwrap();
    let len = big.len() as u64;
    assert_eq!(
        store.get_capped("data/ab/abcdef", cap(len)).unwrap(),
        big,
        "{who}: get"
    );
    // One byte over its cap, an object is refused (before it is read),
    // naming the key; retrying would not help.
    let e = store
        .get_capped("data/ab/abcdef", cap(len - 1))
        .unwrap_err();
    assert!(
        matches!(e, StorageError::TooLarge { size, .. } if size == len) && !e.is_transient(),
        "{who}: {e:?}"
    );
    assert!(
        e.to_string().contains("data/ab/abcdef")
            && e.to_string().contains("larger than a test object can be"),
        "{who}: {e}"
    );
    // Ranges past the end, however large, are errors, never allocations.
    for (offset, length) in [(0, 1 << 62), (1 << 62, 1 << 62), (u64::MAX, 2), (len, 1)] {
        assert!(
            store.get_range("data/ab/abcdef", offset, length).is_err(),
            "{who}: range {offset}+{length}"
        );
    }
    assert_eq!(
        store.stat("data/ab/abcdef").unwrap(),
        Some(big.len() as u64)
    );
    assert_eq!(
        store.get_range("data/ab/abcdef", 1000, 5000).unwrap(),
        big.slice(1000..6000),
        "{who}: ranged read"
    );
    assert!(
        store
            .get_range("data/ab/abcdef", big.len() as u64 - 10, 20)
            .is_err(),
        "{who}: a range past the end is an error, not a short read"
    );
    let keys: Vec<String> = store
        .list("index/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["index/1", "index/2"], "{who}: list by prefix");
    let data = store.list("data/").unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].size, big.len() as u64, "{who}: listed size");

    // Overwrite is atomic and complete; create is exclusive.
    store.put("index/1", Bytes::from_static(b"uno")).unwrap();
    assert_eq!(
        store.get_capped("index/1", cap(3)).unwrap(),
        Bytes::from_static(b"uno")
    );
    assert!(
        store.create("lock", Bytes::from_static(b"a")).unwrap(),
        "{who}: first create wins"
    );
    assert!(
        !store.create("lock", Bytes::from_static(b"b")).unwrap(),
        "{who}: second create loses"
    );
    assert_eq!(
        store.get_capped("lock", cap(1)).unwrap(),
        Bytes::from_static(b"a")
    );

    store.delete("lock").unwrap();
    store.delete("lock").unwrap(); // deleting a missing object is fine
    assert_eq!(store.stat("lock").unwrap(), None);
    for o in store.list("").unwrap() {
        store.delete(&o.key).unwrap();
    }
    assert!(
        store.list("").unwrap().is_empty(),
        "{who}: everything deleted"
    );
}

fn s3_options(server: &S3Server) -> S3Options {
    S3Options {
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint()),
        ca_bundle: Some(server.ca_pem.clone()),
        max_attempts: 2,
        ..S3Options::default()
    }
}

#[test]
fn both_backends_pass_the_conformance_suite() {
    let env = TestEnv::new();
    let dir = env.path("local-repo");
    std::fs::create_dir_all(&dir).unwrap();
    conformance(&Store::new(LocalStorage::new(&dir).opened()).unwrap());

    let server = S3Server::start(&env.root);
    server.create_bucket("conformance");
    // Credentials come from the standard chain; give them to this process.
    // SAFETY: set before any thread of this test reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", crate::s3server::ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", crate::s3server::SECRET_KEY);
    }
    let store = Store::open("s3://conformance/hosts/web-1", &s3_options(&server)).unwrap();
    conformance(&store);
    // Two repositories share a bucket under different prefixes.
    let other = Store::open("s3://conformance/hosts/web-2", &s3_options(&server)).unwrap();
    other.put("config", Bytes::from_static(b"x")).unwrap();
    assert!(
        store.list("").unwrap().is_empty(),
        "prefixes keep repositories apart"
    );
}

fn o(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Runs coffer with the server's AWS environment.
fn run_s3(env: &TestEnv, server: &S3Server, args: &[&OsStr]) -> Output {
    let vars = server.env();
    let vars: Vec<(&str, &OsStr)> = vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    env.run_with_env(args, &vars)
}

#[test]
fn backup_and_restore_over_tls_to_s3() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = S3Server::start(&env.root);
    server.create_bucket("backups");
    let url = "s3://backups/fleet/web-1";
    let flags: Vec<&OsStr> = vec![
        o("--repo"),
        o(url),
        o("--agent-key"),
        env.agent_key.as_os_str(),
        o("--catalog"),
        env.catalog.as_os_str(),
    ];
    let mut init = vec![o("init"), o("--recipient"), o(&env.recipient)];
    init.extend(&flags);
    run_s3(&env, &server, &init).expect_ok();

    let src = env.source_dir("src");
    write_file(&src.join("big.bin"), &random_bytes(6 * 1024 * 1024, 3));
    for i in 0..50 {
        write_file(
            &src.join(format!("small/{i}.txt")),
            format!("file {i}\n").as_bytes(),
        );
    }
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    let mut backup = vec![o("backup"), src.as_os_str(), o("--json")];
    backup.extend(&flags);
    run_s3(&env, &server, &backup).expect_ok();
    let before = server.requests.load(std::sync::atomic::Ordering::Relaxed);
    let again = run_s3(&env, &server, &backup);
    again.expect_ok();
    let used = server.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    // lock (create, read before release, release), list index/data, the new file list
    // pack, its index, the snapshot: a handful, not one per file.
    assert!(
        used <= 16,
        "an unchanged re-backup over S3 took {used} requests"
    );
    assert_eq!(
        again.json()["data_added"],
        0,
        "unchanged re-backup over S3 adds nothing\n{again}"
    );

    // Objects really are in the bucket under the prefix, and only ciphertext.
    let packs = std::fs::read_dir(server.root.join("backups/fleet/web-1/data"))
        .expect("packs under the prefix")
        .count();
    assert!(packs > 0);

    let mut snaps = vec![o("snapshots"), o("--json")];
    snaps.extend(&flags);
    let listed = run_s3(&env, &server, &snaps);
    listed.expect_ok();
    assert_eq!(listed.json().as_array().map(Vec::len), Some(2), "{listed}");

    let mut check = vec![
        o("check"),
        o("--read-data"),
        o("--identity"),
        env.identity.as_os_str(),
    ];
    check.extend(&flags);
    run_s3(&env, &server, &check).expect_ok();

    let target = env.path("restored");
    let mut restore = vec![
        o("restore"),
        o("latest"),
        o("--target"),
        target.as_os_str(),
        o("--identity"),
        env.identity.as_os_str(),
    ];
    restore.extend(&flags);
    run_s3(&env, &server, &restore).expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// `base` with some variables changed (Some) or removed (None).
fn changed(
    base: &[(&'static str, std::ffi::OsString)],
    changes: &[(&'static str, Option<&str>)],
) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut vars: Vec<_> = base
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    vars.extend(
        changes
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v.into()))),
    );
    vars
}

#[test]
fn insecure_or_untrusted_endpoints_and_bad_credentials_are_refused() {
    let env = TestEnv::new();
    let server = S3Server::start(&env.root);
    server.create_bucket("bk1");
    let base = server.env();
    env.run([
        "key",
        "generate",
        "--output",
        env.identity.to_str().unwrap(),
    ])
    .expect_ok();
    let id = env.identity.to_str().unwrap();
    // `snapshots` on s3://bk1/x with the server's environment, some variables
    // changed (Some) or removed (None).
    let run = |changes: &[(&'static str, Option<&str>)]| -> Output {
        let vars = changed(&base, changes);
        let vars: Vec<(&str, &OsStr)> = vars.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let out = env.run_with_env(
            ["snapshots", "--repo", "s3://bk1/x", "--identity", id],
            &vars,
        );
        println!("{changes:?} -> {}", out.stderr.trim());
        out
    };
    let http = format!("http://127.0.0.1:{}", server.addr.port());
    let out = run(&[("AWS_ENDPOINT_URL", Some(&http))]);
    out.expect_failure();
    out.expect_stderr_contains("plain HTTP");
    let out = run(&[("AWS_ENDPOINT_URL", Some("http://example.com"))]);
    out.expect_failure();
    out.expect_stderr_contains("https://");

    // Without our CA, the server's certificate does not chain to a trusted root.
    let out = run(&[("AWS_CA_BUNDLE", None)]);
    out.expect_failure();
    out.expect_stderr_contains("ca_bundle");
    out.expect_stderr_contains(&server.endpoint());

    let out = run(&[("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))]);
    out.expect_failure();
    out.expect_stderr_contains("credentials");

    let out = env.run_with_env(
        [
            "snapshots",
            "--repo",
            "s3://no-such-bucket/x",
            "--identity",
            id,
        ],
        &base
            .iter()
            .map(|(k, v)| (*k, v.as_os_str()))
            .collect::<Vec<_>>(),
    );
    out.expect_failure();
    out.expect_stderr_contains("no-such-bucket");

    // Static keys by file, from a profile: refused when others can read it,
    // used (over the environment's wrong ones) when it is private.
    let creds = env.path("s3.credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            crate::s3server::ACCESS_KEY,
            crate::s3server::SECRET_KEY
        ),
    )
    .unwrap();
    let profile = env.path("p.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"p\"\nsources = [\"/tmp\"]\nrepository = \"s3://bk1/x\"\n\n[s3]\ncredentials_file = {:?}\n",
            creds.display().to_string()
        ),
    )
    .unwrap();
    let with_profile = |vars: &[(&'static str, Option<&str>)]| {
        let v = changed(&base, vars);
        let v: Vec<(&str, &OsStr)> = v.iter().map(|(k, x)| (*k, x.as_os_str())).collect();
        env.run_with_env(
            [
                "snapshots",
                "--profile",
                profile.to_str().unwrap(),
                "--identity",
                id,
            ],
            &v,
        )
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = with_profile(&[]);
    out.expect_failure();
    out.expect_stderr_contains("chmod 600");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = with_profile(&[("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))]);
    out.expect_failure();
    out.expect_stderr_contains("coffer init"); // authenticated: the bucket is just empty

    // An empty bucket is not a repository: say so, and how to make one.
    let out = run(&[]);
    out.expect_failure();
    out.expect_stderr_contains("coffer init");
}

#[test]
fn init_on_a_missing_bucket_fails_unless_asked_to_create_it() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = S3Server::start(&env.root);
    let init = |extra: &[&str]| {
        let mut args = vec![
            o("init"),
            o("--repo"),
            o("s3://fresh-bucket/web-1"),
            o("--recipient"),
            o(&env.recipient),
            o("--agent-key"),
            env.agent_key.as_os_str(),
        ];
        args.extend(extra.iter().map(|s| o(s)));
        run_s3(&env, &server, &args)
    };
    let out = init(&[]);
    out.expect_failure();
    out.expect_stderr_contains("fresh-bucket");
    out.expect_stderr_contains("--create-bucket");
    assert!(!env.agent_key.exists(), "a failed init writes no agent key");
    init(&["--create-bucket"]).expect_ok();
    assert!(server.root.join("fresh-bucket/web-1/config").is_file());
}

#[test]
fn copy_replicates_to_a_second_repository_that_restores_equal() {
    let env = TestEnv::with_repo();
    let server = S3Server::start(&env.root);
    server.create_bucket("replica");
    let src = env.source_dir("src");
    write_file(&src.join("big.bin"), &random_bytes(5 * 1024 * 1024, 11));
    write_file(&src.join("note.txt"), b"replicate me\n");
    env.backup(&[&src]);

    let mut copy = vec![o("copy"), o("--to"), o("s3://replica/copy"), o("--json")];
    let flags = env.repo_flags();
    copy.extend(flags.iter().map(|f| f.as_os_str()));
    let first = run_s3(&env, &server, &copy);
    first.expect_ok();
    assert!(
        first.json()["objects_copied"].as_u64().unwrap() > 3,
        "{first}"
    );
    // Only what the target lacks is sent: a second copy sends nothing.
    write_file(&src.join("later.txt"), b"a later file\n");
    env.backup(&[&src]);
    let second = run_s3(&env, &server, &copy);
    second.expect_ok();
    let sent = second.json()["objects_copied"].as_u64().unwrap();
    assert!(
        (1..=6).contains(&sent),
        "the second copy sends only the new objects, sent {sent}\n{second}"
    );

    // The copy is a repository of its own: check and restore from it alone.
    let on_copy = |args: &[&OsStr]| {
        let mut a: Vec<&OsStr> = args.to_vec();
        a.extend([
            o("--repo"),
            o("s3://replica/copy"),
            o("--identity"),
            env.identity.as_os_str(),
            o("--catalog"),
            o("copy.sqlite"),
        ]);
        run_s3(&env, &server, &a)
    };
    on_copy(&[o("check"), o("--read-data")]).expect_ok();
    let target = env.path("from-copy");
    on_copy(&[o("restore"), o("latest"), o("--target"), target.as_os_str()]).expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));

    // A damaged pack in the source is not spread to the copy.
    let pack = env.packs().into_iter().next().unwrap();
    let good = std::fs::read(&pack.1).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&pack.1, bytes).unwrap();
    let mut copy2 = vec![o("copy"), o("--to"), o("s3://replica/other"), o("--json")];
    copy2.extend(flags.iter().map(|f| f.as_os_str()));
    let out = run_s3(&env, &server, &copy2);
    out.expect_failure();
    out.expect_stderr_contains(&pack.0);

    // The failed copy holds everything but the damaged pack, so it does not
    // check whole; once the pack is mended the next copy finishes it, and
    // it checks whole.
    let mut check = vec![
        o("check"),
        o("--read-data"),
        o("--repo"),
        o("s3://replica/other"),
    ];
    check.extend([o("--identity"), env.identity.as_os_str()]);
    check.extend([o("--catalog"), o("other.sqlite")]);
    run_s3(&env, &server, &check).expect_failure();
    std::fs::write(&pack.1, good).unwrap();
    run_s3(&env, &server, &copy2).expect_ok();
    run_s3(&env, &server, &check).expect_ok();
}

#[test]
fn a_profile_with_copy_to_replicates_after_each_backup() {
    let env = TestEnv::with_repo();
    let server = S3Server::start(&env.root);
    server.create_bucket("second");
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"kept in two places\n");
    let profile = env.path("web.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"web\"\nsources = [{src:?}]\nrepository = {repo:?}\nagent_key = {key:?}\n\
             catalog = {cat:?}\ncopy_to = \"s3://second/web\"\n\n[s3]\nca_bundle = {ca:?}\n",
            src = src.display().to_string(),
            repo = env.repo.display().to_string(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
            ca = server.ca_pem.display().to_string(),
        ),
    )
    .unwrap();
    let out = run_s3(
        &env,
        &server,
        &[o("backup"), o("--profile"), profile.as_os_str()],
    );
    out.expect_ok();
    assert!(out.stdout.contains("copied"), "{out}");
    assert!(
        server.root.join("second/web/config").is_file(),
        "the copy is a repository"
    );
    let target = env.path("from-second");
    run_s3(
        &env,
        &server,
        &[
            o("restore"),
            o("latest"),
            o("--target"),
            target.as_os_str(),
            o("--repo"),
            o("s3://second/web"),
            o("--identity"),
            env.identity.as_os_str(),
            o("--catalog"),
            o("second.sqlite"),
        ],
    )
    .expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// A pack above the profile's `multipart_threshold_mib` goes up as a
/// multipart upload in 16 MiB parts (the 20 MiB file fills a pack past
/// 16 MiB: two parts), and restores equal.
#[test]
fn packs_above_the_threshold_go_up_in_parts() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = S3Server::start(&env.root);
    server.create_bucket("parts");
    let src = env.source_dir("src");
    write_file(&src.join("big.bin"), &random_bytes(20 << 20, 7));
    let profile = env.path("parts.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"parts\"\nsources = [{src:?}]\nrepository = \"s3://parts/p\"\n\
             agent_key = {key:?}\ncatalog = {cat:?}\n\n[s3]\nca_bundle = {ca:?}\n\
             multipart_threshold_mib = 5\n",
            src = src.display().to_string(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
            ca = server.ca_pem.display().to_string(),
        ),
    )
    .unwrap();
    let p = profile.as_os_str();
    run_s3(
        &env,
        &server,
        &[
            o("init"),
            o("--profile"),
            p,
            o("--recipient"),
            o(&env.recipient),
        ],
    )
    .expect_ok();
    run_s3(&env, &server, &[o("backup"), o("--profile"), p]).expect_ok();

    // s3s-fs gives a completed multipart upload the ETag "<md5>-<parts>".
    let parts: Vec<String> = std::fs::read_dir(&server.root)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter_map(|info| {
            let v: serde_json::Value = serde_json::from_str(&info).ok()?;
            let etag = v["e_tag"].as_str()?.to_string();
            etag.rsplit_once('-').map(|(_, n)| n.to_string())
        })
        .collect();
    assert!(
        parts.iter().any(|n| n.parse::<u32>().is_ok_and(|n| n >= 2)),
        "no object went up in two parts or more: {parts:?}"
    );

    let target = env.path("restored");
    run_s3(
        &env,
        &server,
        &[
            o("restore"),
            o("latest"),
            o("--profile"),
            p,
            o("--identity"),
            env.identity.as_os_str(),
            o("--target"),
            target.as_os_str(),
        ],
    )
    .expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));
}
