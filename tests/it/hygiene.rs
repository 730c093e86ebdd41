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
