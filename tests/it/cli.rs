//! The command line as a user meets it: usage errors exit 2 whatever their
//! kind (docs/CLI.md, "Exit codes"), `--help` shows examples, and the
//! generated extras (completions, man pages) come out of the real binary.

use std::fs;

use crate::env::TestEnv;

/// A usage error: exit 2, one short message on stderr, nothing on stdout.
fn expect_usage_error(env: &TestEnv, args: &[&str], says: &str) {
    let out = env.run(args);
    out.expect_code(2).expect_stderr_contains(says);
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout:\n{out}");
}

#[test]
fn a_missing_required_option_exits_2() {
    let env = TestEnv::new();
    // Required by the parser itself.
    expect_usage_error(&env, &["key", "generate"], "--output");
    expect_usage_error(&env, &["copy"], "--to");
    expect_usage_error(&env, &["policy"], "--role");
    expect_usage_error(&env, &["restore", "latest"], "--target");
    // Required by the command, because a profile or the environment could
    // also give it: the issue's reproduction was `init` exiting 1.
    let key = env.path("new.agent.key");
    let key = key.to_str().unwrap();
    expect_usage_error(
        &env,
        &["init", "--repo", "r", "--agent-key", key],
        "--recipient",
    );
    expect_usage_error(
        &env,
        &["init", "--repo", "r", "-r", &env_recipient()],
        "--agent-key",
    );
    expect_usage_error(&env, &["policy", "--role", "agent"], "--repo");
    expect_usage_error(
        &env,
        &["init", "-r", &env_recipient(), "--agent-key", key],
        "--repo",
    );
    expect_usage_error(&env, &["snapshots", "--repo", "r"], "--agent-key");
    expect_usage_error(&env, &["ls", "--repo", "r"], "--identity");
    expect_usage_error(&env, &["key", "recipient"], "--identity");
    expect_usage_error(&env, &["run"], "--profile");
    assert!(!env.path("r").exists(), "a usage error created something");
    assert!(!env.path("new.agent.key").exists());
}

/// A recipient that parses (the key of no one in these tests).
fn env_recipient() -> String {
    "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p".into()
}

#[test]
fn an_unknown_flag_or_command_exits_2() {
    let env = TestEnv::new();
    expect_usage_error(&env, &["backup", "--no-such-flag"], "--no-such-flag");
    expect_usage_error(&env, &["bakcup"], "bakcup");
    expect_usage_error(&env, &["repair"], "Usage");
}

#[test]
fn a_bad_value_exits_2() {
    let env = TestEnv::new();
    expect_usage_error(&env, &["forget", "--keep-last", "x"], "--keep-last");
    expect_usage_error(&env, &["backup", "--compression", "30"], "--compression");
    expect_usage_error(&env, &["prune", "--grace", "soon"], "--grace");
    expect_usage_error(&env, &["completions", "tcsh"], "tcsh");
    expect_usage_error(&env, &["snapshots", "--since", "whenever"], "--since");
}

#[test]
fn conflicting_flags_exit_2() {
    let env = TestEnv::new();
    expect_usage_error(
        &env,
        &["restore", "--target", "t", "--in-place"],
        "--in-place",
    );
    expect_usage_error(
        &env,
        &["policy", "--role", "agent", "--lifecycle"],
        "--lifecycle",
    );
    expect_usage_error(&env, &["forget", "--all", "--host", "h"], "--all");
    expect_usage_error(&env, &["backup", "--as-of", "now"], "--as-of");
    // Found by the command, not the parser: --json describes what goes to
    // stdout, where the archive already goes.
    expect_usage_error(
        &env,
        &["export", "--json", "--repo", "r", "--identity", "i"],
        "--json needs --output",
    );
}

#[test]
fn help_shows_examples_and_the_global_flags_apart() {
    let env = TestEnv::new();
    for args in [
        &["--help"][..],
        &["backup", "--help"],
        &["key", "generate", "-h"],
    ] {
        let out = env.run(args);
        out.expect_ok();
        assert!(
            out.stdout.contains("Examples:\n  coffer "),
            "{args:?}:\n{out}"
        );
        assert!(out.stdout.contains("Global options:"), "{args:?}:\n{out}");
    }
    let out = env.run(["--help"]);
    assert!(out.stdout.contains("s3://bucket/prefix"), "{out}");
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(["completions", shell]);
        out.expect_ok();
        for name in [
            "backup",
            "restore",
            "snapshots",
            "export-agent",
            "keep-daily",
        ] {
            assert!(out.stdout.contains(name), "{shell}: no {name}");
        }
    }
    // Bash can load it.
    let out = env.run(["completions", "bash"]);
    let script = env.path("coffer.bash");
    fs::write(&script, &out.stdout).unwrap();
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(". {} && complete -p coffer", script.display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

#[test]
fn man_writes_a_page_per_command() {
    let env = TestEnv::new();
    let dir = env.path("man/man1");
    env.run(["man".as_ref(), dir.as_os_str()]).expect_ok();
    for page in [
        "coffer.1",
        "coffer-backup.1",
        "coffer-key-generate.1",
        "coffer-repair-index.1",
        "coffer-completions.1",
    ] {
        let text = fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".SH NAME"), "{page}");
    }
    let top = fs::read_to_string(dir.join("coffer.1")).unwrap();
    assert!(
        top.contains("coffer\\-backup(1)"),
        "no reference to the command pages"
    );
    // A profile that does not load is no reason to refuse: nothing is read.
    let out = env.run_with_env(
        ["man".as_ref(), env.path("man2").as_os_str()],
        &[("COFFER_PROFILE", "/nonexistent.toml".as_ref())],
    );
    out.expect_ok();
}
