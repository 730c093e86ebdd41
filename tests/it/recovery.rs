//! The documented disaster procedure: recover files with the stock `age`,
//! `zstd` and `jq` tools and no coffer at all (scripts/recover-file.sh,
//! docs/FORMAT.md). CI installs those tools; a missing tool fails the test.

use crate::env::{TestEnv, random_bytes, write_file};
use std::path::Path;
use std::process::Command;

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is required for this test: apt-get install age zstd jq (.ci/run does)"
    );
}

#[test]
fn stock_age_and_zstd_recover_files_byte_for_byte() {
    for tool in ["age", "zstd", "jq", "dd"] {
        require(tool);
    }
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    let big = random_bytes(5 * 1024 * 1024 + 123, 7); // several chunks
    write_file(&src.join("big.bin"), &big);
    write_file(
        &src.join("small.txt"),
        b"a small file, bundled with its neighbours\n",
    );
    write_file(&src.join("other.txt"), b"another one\n");
    write_file(&src.join("empty"), b"");
    let snap = env.backup(&[&src]);
    let id = snap["snapshot"].as_str().unwrap()[..8].to_string();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/recover-file.sh");
    for (name, want) in [
        ("big.bin", big.as_slice()),
        (
            "small.txt",
            b"a small file, bundled with its neighbours\n".as_slice(),
        ),
        ("other.txt", b"another one\n".as_slice()),
        ("empty", b"".as_slice()),
    ] {
        let stored = src.join(name).display().to_string();
        let out = Command::new("bash")
            .arg(&script)
            .args([
                env.repo.to_str().unwrap(),
                env.identity.to_str().unwrap(),
                &id,
                &stored,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "recover-file.sh {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == want,
            "{name}: recovered {} bytes, expected {}",
            out.stdout.len(),
            want.len()
        );
    }
}

#[test]
fn passphrase_protected_identity_restores_with_coffer_passphrase() {
    let env = TestEnv::new();
    let identity = env.path("protected.key");
    let pass = std::ffi::OsString::from("correct horse battery staple");
    let out = env.run_with_env(
        [
            "key",
            "generate",
            "--passphrase",
            "--output",
            identity.to_str().unwrap(),
        ],
        &[("COFFER_PASSPHRASE", pass.as_os_str())],
    );
    out.expect_ok();
    let recipient = out.stdout.trim().to_string();
    assert!(
        std::fs::read(&identity)
            .unwrap()
            .starts_with(b"age-encryption.org/v1")
    );
    env.run([
        "init",
        "--repo",
        env.repo.to_str().unwrap(),
        "--recipient",
        &recipient,
        "--agent-key",
        env.agent_key.to_str().unwrap(),
    ])
    .expect_ok();
    let src = env.source_dir("src");
    write_file(&src.join("f"), b"secret\n");
    env.backup(&[&src]);
    let target = env.path("out");
    let restore = |pw: &str| {
        env.run_with_env(
            [
                "restore",
                "latest",
                "--target",
                target.to_str().unwrap(),
                "--repo",
                env.repo.to_str().unwrap(),
                "--identity",
                identity.to_str().unwrap(),
                "--catalog",
                env.catalog.to_str().unwrap(),
            ],
            &[("COFFER_PASSPHRASE", std::ffi::OsStr::new(pw))],
        )
    };
    let wrong = restore("wrong");
    wrong.expect_failure();
    wrong.expect_stderr_contains("passphrase");
    restore("correct horse battery staple").expect_ok();
    let restored = target.join(src.strip_prefix("/").unwrap()).join("f");
    assert_eq!(std::fs::read(restored).unwrap(), b"secret\n");
}
