//! Newer coffer must read older formats: a repository written by format
//! version 1 is checked in (tests/fixtures/golden-v1) and must list, check
//! and restore to the known content.

use crate::env::TestEnv;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/golden-v1"
    ))
}

#[test]
fn format_v1_repository_still_restores_exactly() {
    let env = TestEnv::new();
    // Git does not keep mode 0600, which coffer insists on for an identity.
    let identity = env.path("operator.key");
    fs::copy(fixture().join("operator.key"), &identity).unwrap();
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o600)).unwrap();
    // A copy: reading commands leave the fixture alone, but a restore
    // records itself in the repository's audit log.
    let repo = env.path("repo");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture().join("repo"))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(cp.success(), "copying the fixture");
    let common = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend([
            "--repo".into(),
            repo.display().to_string(),
            "--identity".into(),
            identity.display().to_string(),
            "--catalog".into(),
            env.path("catalog.sqlite").display().to_string(),
        ]);
        v
    };

    let out = env.run(common(&["snapshots", "--json"]));
    out.expect_ok();
    let snaps = out.json();
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 1, "{out}");
    assert_eq!(snaps[0]["host"], "golden");
    assert_eq!(snaps[0]["files"], 4);

    env.run(common(&["check", "--read-data"])).expect_ok();

    let target = env.path("restored");
    env.run(common(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ]))
    .expect_ok();
    let root = target.join("tmp/coffer-golden-src");
    assert_eq!(fs::read(root.join("a.txt")).unwrap(), b"golden v1\n");
    let big: Vec<u8> = (0..300_000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    assert_eq!(fs::read(root.join("big.bin")).unwrap(), big);
    let log: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        fs::read_to_string(root.join("sub/deep/log.txt")).unwrap(),
        log
    );
    assert_eq!(fs::read(root.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(root.join("link")).unwrap(),
        Path::new("a.txt")
    );
    let meta = fs::metadata(root.join("a.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mtime(), 1_704_164_645, "2024-01-02T03:04:05Z");
}
