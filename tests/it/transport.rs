//! Transport to S3 providers that are not AWS (issue 14): checksums that
//! work with every server (against the test server's quirk switches), one
//! retry layer, one-line errors that say what to do, residency checked
//! before a bucket is made, and repository URLs that can't be mistaken.

use crate::env::{
    Output, TestEnv, assert_trees_equal, command_timeout, random_bytes, restored_path, run_command,
    write_file,
};
use crate::s3server::{Quirks, S3Server};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const SDK_DEFAULTS: [(&str, &str); 2] = [
    ("AWS_REQUEST_CHECKSUM_CALCULATION", "when_supported"),
    ("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_supported"),
];

/// Runs coffer with `server`'s AWS environment, variables added or
/// replaced (`Some`) or removed (`None`).
fn run_on(
    env: &TestEnv,
    server: &S3Server,
    args: &[&OsStr],
    vars: &[(&str, Option<&str>)],
) -> Output {
    let mut cmd = env.command(args);
    cmd.envs(server.env());
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let cmdline = format!("coffer {}", args.join(OsStr::new(" ")).to_string_lossy());
    run_command(cmd, cmdline, command_timeout())
}

fn o(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The error is one line that says `wants` and is not a dump.
#[track_caller]
fn one_line(out: &Output, wants: &[&str]) {
    out.expect_failure();
    out.expect_short_stderr(1);
    for w in wants {
        out.expect_stderr_contains(w);
    }
    for dump in [
        "DispatchFailure",
        "ConnectorError",
        "ServiceError {",
        "SdkBody",
    ] {
        assert!(!out.stderr.contains(dump), "a dump, not a message\n{out}");
    }
    assert!(out.stderr.len() < 500, "too long for one line\n{out}");
}

/// The objects under `bucket/prefix` on `server` whose upload stored a CRC32.
fn with_stored_crc32(server: &S3Server, bucket: &str, prefix: &str) -> usize {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let start = format!(".bucket-{}.object-", b64(bucket));
    std::fs::read_dir(&server.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(key) = name
                .strip_prefix(&start)
                .and_then(|r| r.strip_suffix(".internal.json"))
            else {
                return false;
            };
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(key)
                .unwrap_or_default();
            String::from_utf8_lossy(&key).starts_with(prefix)
                && std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("checksum_crc32"))
        })
        .count()
}

/// A profile for the repository `repo_url` with `[s3]` lines.
fn profile(env: &TestEnv, name: &str, repo_url: &str, src: &Path, s3: &str) -> PathBuf {
    let path = env.path(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = {name:?}\nsources = [{src:?}]\nrepository = {repo_url:?}\nagent_key = {key:?}\n\
             catalog = {cat:?}\n\n[s3]\n{s3}\n",
            src = src.display().to_string(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
        ),
    )
    .unwrap();
    path
}

/// Issue 14, item 1: `coffer copy` puts objects from memory, with a CRC32
/// header under the SDK's defaults; a server that stores it and sends it
/// with every ranged GET made the SDK fail each range of the copy, so
/// check and restore of the copy failed ("altered or damaged at the
/// provider"). Ranged reads now validate no checksum, so the copy checks
/// and restores, both with coffer's default for a custom endpoint (no
/// checksums sent) and with the SDK's defaults forced by its variables.
#[test]
fn a_copy_restores_from_a_server_that_sends_whole_object_checksums_with_ranges() {
    let env = TestEnv::with_repo();
    let quirks = Quirks {
        whole_object_checksum_on_ranges: true,
        ..Quirks::default()
    };
    let server = S3Server::start_with(&env.path("server"), quirks);
    server.create_bucket("replica");
    let src = env.source_dir("src");
    write_file(&src.join("big.bin"), &random_bytes(5 * 1024 * 1024, 11));
    for i in 0..20 {
        write_file(
            &src.join(format!("small/{i}.txt")),
            format!("{i}\n").as_bytes(),
        );
    }
    env.backup(&[&src]);

    for (name, vars) in [("auto", &[][..]), ("sdk", &SDK_DEFAULTS[..])] {
        let vars: Vec<(&str, Option<&str>)> = vars.iter().map(|(k, v)| (*k, Some(*v))).collect();
        let to = format!("s3://replica/{name}");
        let mut copy = vec![o("copy"), o("--to"), o(&to)];
        let flags = env.repo_flags();
        copy.extend(flags.iter().map(|f| f.as_os_str()));
        run_on(&env, &server, &copy, &vars).expect_ok();
        let crcs = with_stored_crc32(&server, "replica", name);
        if name == "auto" {
            assert_eq!(
                crcs, 0,
                "no checksum is sent to a custom endpoint by default"
            );
        } else {
            assert!(
                crcs > 3,
                "the SDK's defaults put a CRC32 with each object: {crcs}"
            );
        }
        let catalog = env.path(format!("{name}.sqlite"));
        let on_copy = |args: &[&OsStr]| {
            let mut a: Vec<&OsStr> = args.to_vec();
            a.extend([o("--repo"), o(&to), o("--identity")]);
            a.extend([
                env.identity.as_os_str(),
                o("--catalog"),
                catalog.as_os_str(),
            ]);
            run_on(&env, &server, &a, &vars)
        };
        on_copy(&[o("check"), o("--read-data")]).expect_ok();
        let target = env.path(format!("from-{name}"));
        on_copy(&[o("restore"), o("latest"), o("--target"), target.as_os_str()]).expect_ok();
        assert_trees_equal(&src, &restored_path(&target, &src));
    }
}

/// A server that refuses aws-chunked uploads with trailing checksums (Ceph
/// 16: 411): coffer's default for a custom endpoint sends none, so backups
/// work; with checksums asked for, the refusal is named as a checksum mode
/// mismatch with the setting that fixes it, at once (no retries), and
/// never as damage or an outage.
#[test]
fn trailing_checksums_a_server_refuses_are_named_as_a_checksum_mode_mismatch() {
    let quirks = Quirks {
        reject_trailing_checksums: true,
        ..Quirks::default()
    };
    let env = TestEnv::with_repo_on_quirks(quirks);
    let server = env.s3.as_ref().unwrap();
    let src = env.source_dir("src");
    write_file(&src.join("a.bin"), &random_bytes(300 * 1024, 1));
    let snap = env.backup(&[&src]);
    let target = env.restore(snap["snapshot"].as_str().unwrap());
    assert_trees_equal(&src, &restored_path(&target, &src));

    write_file(&src.join("b.bin"), &random_bytes(300 * 1024, 2));
    let before = server.requests.load(Ordering::Relaxed);
    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into()];
    args.extend(env.repo_flags());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let vars = [("AWS_REQUEST_CHECKSUM_CALCULATION", Some("when_supported"))];
    let out = run_on(&env, server, &args, &vars);
    one_line(
        &out,
        &[
            "411 MissingContentLength on PutObject",
            "checksum mode does not match",
            "AWS_REQUEST_CHECKSUM_CALCULATION",
            "when_required",
        ],
    );
    assert!(!out.stderr.contains("gave up"), "not retried\n{out}");
    assert!(
        !out.stderr.contains("next backup"),
        "no next run fixes it\n{out}"
    );
    assert!(!out.stderr.contains("damaged"), "{out}");
    let used = server.requests.load(Ordering::Relaxed) - before;
    assert!(
        used < 20,
        "refused at the first pack, not retried: {used} requests"
    );

    // The same from the profile's setting: the message names the key.
    let p = profile(
        &env,
        "sums",
        env.repo_url.to_str().unwrap(),
        &src,
        "checksums = \"when_supported\"",
    );
    let out = run_on(
        &env,
        server,
        &[o("backup"), o("--profile"), p.as_os_str()],
        &[],
    );
    one_line(
        &out,
        &[
            "checksum mode does not match",
            "checksums = \"when_required\"",
        ],
    );
}

/// A server that stores the aws-chunked framing of a streamed upload as the
/// object (s3rver 3: silent corruption): coffer's default for a custom
/// endpoint streams without aws-chunked, so what is stored reads back
/// whole. With the SDK's defaults forced, the corruption shows: the backup
/// fails or, at the latest, restore finds the new snapshot damaged (never a
/// restore of wrong bytes).
#[test]
fn a_server_that_stores_chunk_framing_gets_none_by_default() {
    let quirks = Quirks {
        store_chunk_framing: true,
        ..Quirks::default()
    };
    let env = TestEnv::with_repo_on_quirks(quirks);
    let server = env.s3.as_ref().unwrap();
    let src = env.source_dir("src");
    write_file(&src.join("a.bin"), &random_bytes(2 * 1024 * 1024, 3));
    env.backup(&[&src]);
    env.check(true).expect_ok();
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));

    write_file(&src.join("b.bin"), &random_bytes(2 * 1024 * 1024, 4));
    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into()];
    args.extend(env.repo_flags());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let vars: Vec<(&str, Option<&str>)> =
        SDK_DEFAULTS.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let backup = run_on(&env, server, &args, &vars);
    if backup.ok() {
        // The snapshot that names the framed pack is found damaged, and
        // restore falls back to the one before: b.bin is not restored.
        let target = env.unique_path("restore-framed");
        std::fs::create_dir(&target).unwrap();
        let restore = env.restore_raw("latest", &target, &[]);
        let b = restored_path(&target, &src).join("b.bin");
        assert!(
            !restore.ok() || (restore.stderr.contains("damaged") && !b.exists()),
            "{restore}"
        );
    }
}

/// With validation on, a whole object whose bytes no longer match the
/// checksum stored at upload is reported as changed at the provider, not
/// as a checksum mode mismatch.
#[test]
fn bytes_changed_at_the_provider_are_reported_as_such() {
    let mut env = TestEnv::new_on(crate::env::Backend::S3);
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = env.s3.as_ref().unwrap();
    let vars: Vec<(&str, Option<&str>)> =
        SDK_DEFAULTS.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let init = [
        o("init"),
        o("--repo"),
        env.repo_url.as_os_str(),
        o("--recipient"),
        o(&env.recipient),
        o("--agent-key"),
        env.agent_key.as_os_str(),
    ];
    run_on(&env, server, &init, &vars).expect_ok();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"kept\n");
    let mut args: Vec<OsString> = vec!["backup".into(), src.clone().into()];
    args.extend(env.repo_flags());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    run_on(&env, server, &args, &vars).expect_ok();
    assert!(with_stored_crc32(server, crate::env::TEST_BUCKET, "repo/") > 3);

    // Damage at rest: a byte of the snapshot object changes on the
    // server's disk; the checksum stored with it stays.
    let snaps = env.repo.join("snapshots");
    let snap = walk_files(&snaps).pop().expect("a snapshot object");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let mut args: Vec<OsString> = vec!["check".into()];
    args.extend(env.operator_flags());
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run_on(&env, server, &args, &vars);
    out.expect_failure();
    let all = out.all_output();
    assert!(all.contains("the bytes changed at the provider"), "{out}");
    assert!(!all.contains("checksum mode"), "{out}");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Each refusal is one line naming the operation, the provider's code (where
/// there is one) and what to do, reported at the first attempt; none says
/// "the next run resumes" (none of these commands has a next run).
#[test]
fn refusals_are_one_line_that_says_what_to_do() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = S3Server::start(&env.path("server"));
    server.create_bucket("bk1");
    let init = |url: &str, vars: &[(&str, Option<&str>)]| {
        let args = [
            o("init"),
            o("--repo"),
            o(url),
            o("--recipient"),
            o(&env.recipient),
            o("--agent-key"),
            env.agent_key.as_os_str(),
        ];
        let out = run_on(&env, &server, &args, vars);
        println!("{vars:?} -> {}", out.stderr.trim());
        assert!(
            !env.agent_key.exists(),
            "a failed init writes no key\n{out}"
        );
        assert!(!out.stderr.contains("next run"), "{out}");
        assert!(!out.stderr.contains("gave up"), "no retries\n{out}");
        out
    };
    let no_keys = [("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)];
    one_line(
        &init("s3://bk1/web-1", &no_keys),
        &["no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"],
    );
    one_line(
        &init(
            "s3://bk1/web-1",
            &[("AWS_SECRET_ACCESS_KEY", Some("wrong-secret"))],
        ),
        &[
            "403 SignatureDoesNotMatch on ListObjectsV2",
            "the secret key does not match",
            "AWS_SECRET_ACCESS_KEY",
        ],
    );
    one_line(
        &init("s3://no-such-bucket/web-1", &[]),
        &["no-such-bucket", "--create-bucket"],
    );
    let out = run_on(
        &env,
        &server,
        &[
            o("snapshots"),
            o("--repo"),
            o("s3://no-such-bucket/web-1"),
            o("--identity"),
            env.identity.as_os_str(),
        ],
        &[],
    );
    one_line(
        &out,
        &[
            "s3://no-such-bucket/web-1 does not exist (no such bucket",
            "--create-bucket",
        ],
    );
    assert!(!out.stderr.contains("gave up"), "{out}");
    let port = closed_port();
    let endpoint = format!("https://127.0.0.1:{port}");
    one_line(
        &init("s3://bk1/web-1", &[("AWS_ENDPOINT_URL", Some(&endpoint))]),
        &[&format!("connection refused by {endpoint}"), "port"],
    );
    one_line(
        &init(
            "s3://bk1/web-1",
            &[("AWS_ENDPOINT_URL", Some("https://no-such-host.invalid"))],
        ),
        &["cannot resolve no-such-host.invalid (DNS)", "endpoint"],
    );

    // Credentials without s3:PutObject: the operation, the key, the
    // permission and where.
    run_on(&env, &server, &init_args(&env, "s3://bk1/web-1"), &[]).expect_ok();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"a\n");
    server.read_only.store(true, Ordering::Relaxed);
    let mut args: Vec<OsString> = vec!["backup".into(), src.into()];
    args.extend([
        "--repo".into(),
        "s3://bk1/web-1".into(),
        "--agent-key".into(),
        env.agent_key.clone().into(),
        "--catalog".into(),
        env.catalog.clone().into(),
    ]);
    let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = run_on(&env, &server, &args, &[]);
    one_line(
        &out,
        &[
            "403 AccessDenied on PutObject",
            "the credentials lack s3:PutObject on s3://bk1/web-1/*",
        ],
    );
    assert!(!out.stderr.contains("gave up"), "{out}");
}

fn init_args<'a>(env: &'a TestEnv, url: &'a str) -> Vec<&'a OsStr> {
    vec![
        o("init"),
        o("--repo"),
        o(url),
        o("--recipient"),
        o(&env.recipient),
        o("--agent-key"),
        env.agent_key.as_os_str(),
    ]
}

/// A listener on 127.0.0.1 that accepts connections and closes them at
/// once, counting them: a server that is there but never answers.
fn dropping_server() -> (u16, Arc<AtomicU64>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, accepted)
}

/// One retry layer: a request that fails the same transient way every time
/// is sent exactly `max_attempts` times in all (before, the SDK's five
/// attempts sat inside coffer's five: 25). Only a backup says that its
/// next run resumes.
#[test]
fn a_lasting_outage_is_tried_max_attempts_times_in_all() {
    let env = TestEnv::with_repo();
    let (port, accepted) = dropping_server();
    let server = S3Server::start(&env.path("server"));
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"a\n");
    let p = profile(
        &env,
        "down",
        "s3://bk1/web-1",
        &src,
        &format!("endpoint = \"https://127.0.0.1:{port}\"\nmax_attempts = 3"),
    );
    let backup = run_on(
        &env,
        &server,
        &[o("backup"), o("--profile"), p.as_os_str()],
        &[],
    );
    one_line(
        &backup,
        &["gave up after 3 attempts", "the next backup resumes"],
    );
    assert_eq!(accepted.swap(0, Ordering::SeqCst), 3, "{backup}");

    let target = env.path("restore");
    let restore = run_on(
        &env,
        &server,
        &[
            o("restore"),
            o("latest"),
            o("--target"),
            target.as_os_str(),
            o("--profile"),
            p.as_os_str(),
            o("--identity"),
            env.identity.as_os_str(),
        ],
        &[],
    );
    one_line(&restore, &["gave up after 3 attempts"]);
    assert!(!restore.stderr.contains("next"), "{restore}");
    // The config and the keyring are read at once: two requests, three
    // attempts each.
    assert_eq!(accepted.load(Ordering::SeqCst), 6, "{restore}");
}

/// `init --create-bucket` in a region that `allowed_regions` forbids
/// refuses before it creates the bucket or writes anything.
#[test]
fn residency_is_checked_before_the_bucket_is_created() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = S3Server::start(&env.path("server"));
    let src = env.source_dir("src");
    let p = profile(
        &env,
        "eu",
        "s3://fresh-eu/web-1",
        &src,
        "region = \"eu-west-2\"\nallowed_regions = [\"eu-west-1\", \"eu-central-1\"]",
    );
    let out = run_on(
        &env,
        &server,
        &[
            o("init"),
            o("--profile"),
            p.as_os_str(),
            o("--recipient"),
            o(&env.recipient),
            o("--create-bucket"),
        ],
        &[],
    );
    one_line(
        &out,
        &[
            "refusing to create bucket fresh-eu in region eu-west-2",
            "allowed_regions",
        ],
    );
    assert!(!out.stderr.contains(": :"), "{out}");
    assert!(
        !server.root.join("fresh-eu").exists(),
        "no bucket was created"
    );
    assert!(!env.agent_key.exists());
}

/// `--repo s3:/acme/web-1` and `--repo file://srv/backup` are refused with
/// what was probably meant; no local folder is made.
#[test]
fn mistyped_repository_urls_are_refused() {
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let before: Vec<_> = std::fs::read_dir(&env.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for (url, meant) in [
        ("s3:/acme/web-1", "did you mean \"s3://acme/web-1\""),
        ("file://srv/backup", "did you mean \"file:///srv/backup\""),
    ] {
        let out = env.run([
            o("init"),
            o("--repo"),
            o(url),
            o("--recipient"),
            o(&env.recipient),
            o("--agent-key"),
            env.agent_key.as_os_str(),
        ]);
        one_line(&out, &[meant]);
    }
    let after: Vec<_> = std::fs::read_dir(&env.root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "no folder was made");
}

/// Multipart uploads with checksums on: the algorithm is named on create,
/// each part and each completed part, and the pack restores equal.
#[test]
fn multipart_uploads_with_checksums_on_restore_equal() {
    let mut env = TestEnv::new_on(crate::env::Backend::S3);
    env.recipient = env.generate_identity(&env.identity.clone());
    let server = env.s3.as_ref().unwrap();
    let src = env.source_dir("src");
    write_file(&src.join("big.bin"), &random_bytes(20 << 20, 7));
    let p = profile(
        &env,
        "parts",
        env.repo_url.to_str().unwrap(),
        &src,
        "multipart_threshold_mib = 5\nchecksums = \"when_supported\"",
    );
    let pa = p.as_os_str();
    run_on(
        &env,
        server,
        &[
            o("init"),
            o("--profile"),
            pa,
            o("--recipient"),
            o(&env.recipient),
        ],
        &[],
    )
    .expect_ok();
    run_on(&env, server, &[o("backup"), o("--profile"), pa], &[]).expect_ok();
    let target = env.path("restored");
    run_on(
        &env,
        server,
        &[
            o("restore"),
            o("latest"),
            o("--profile"),
            pa,
            o("--identity"),
            env.identity.as_os_str(),
            o("--target"),
            target.as_os_str(),
        ],
        &[],
    )
    .expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));
}
