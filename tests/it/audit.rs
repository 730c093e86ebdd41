//! `coffer audit`: restores, erasures and key exports are recorded (who,
//! when, what) in the repository and the catalog; the repository's record
//! survives the catalog, needs the identity to read, and outlives forget and
//! prune.

use crate::env::{Backend, TestEnv, on_both_backends, str_field, write_file};
use coffer::catalog::Catalog;
use serde_json::Value;

on_both_backends!(operator_actions_are_recorded_in_the_repository);

fn events(env: &TestEnv, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    let out = env.operator(args);
    out.expect_ok();
    out.json().as_array().cloned().unwrap_or_default()
}

fn with_action<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| str_field(e, "action") == action)
        .collect()
}

fn audit_objects(env: &TestEnv) -> usize {
    std::fs::read_dir(env.repo.join("audit"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

fn operator_actions_are_recorded_in_the_repository(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.source_dir("src");
    write_file(&src.join("report.txt"), b"quarterly numbers\n");
    write_file(&src.join("private/customer-7.txt"), b"Jane Roe\n");
    env.backup(&[&src]);

    // Restore.
    let target = env.restore("latest");
    assert!(target.exists());

    // Erase.
    let stored = crate::env::stored_form(&src).to_string_lossy().into_owned();
    let glob = format!("{stored}/private/**");
    env.operator(["erase", "--path", &glob]).expect_ok();

    // Key export.
    let exported = env.path("agent-copy.key");
    env.operator([
        "key",
        "export-agent",
        "--output",
        exported.to_str().unwrap(),
    ])
    .expect_ok();

    let all = events(&env, &[]);
    for action in ["restore", "erase", "key-export"] {
        let found: Vec<&Value> = with_action(&all, action)
            .into_iter()
            .filter(|e| str_field(e, "source") == "repository")
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {action} event from the repository\n{all:#?}"
        );
        let e = found[0];
        assert!(
            str_field(e, "actor").contains('@'),
            "actor is user@host: {e}"
        );
        assert!(
            coffer::time::parse(str_field(e, "time")).is_ok(),
            "time is RFC 3339: {e}"
        );
    }
    let erase = with_action(&all, "erase")[0];
    assert!(str_field(erase, "detail").contains(&glob), "{erase}");
    assert!(
        str_field(with_action(&all, "key-export")[0], "detail").contains("agent-copy.key"),
        "{all:#?}"
    );
    // The catalog's copies of these events are not listed twice.
    assert_eq!(with_action(&all, "erase").len(), 1, "{all:#?}");
    assert_eq!(with_action(&all, "key-export").len(), 1, "{all:#?}");
    let times: Vec<&str> = all.iter().map(|e| str_field(e, "time")).collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| coffer::time::parse(t).unwrap());
    assert_eq!(times, sorted, "oldest first");

    // --since; and the text form.
    assert!(events(&env, &["--since", "2099-01-01"]).is_empty());
    assert_eq!(events(&env, &["--since", "1 hour ago"]).len(), all.len());
    let text = env.operator(["audit"]);
    text.expect_ok();
    assert!(text.stdout.contains("key-export"), "{text}");

    // The agent can not read it.
    let agent = env.agent(["audit"]);
    agent.expect_failure();
    agent.expect_stderr_contains("identity");

    // Forget and prune leave the audit objects alone.
    let objects = audit_objects(&env);
    assert!(objects >= 3, "one object per event");
    env.agent(["forget", "--keep-within", "0s", "--keep-last", "1"])
        .expect_ok();
    env.agent(["prune", "--grace", "0s", "--max-unused", "0"])
        .expect_ok();
    assert_eq!(audit_objects(&env), objects, "forget and prune keep audit/");

    // A fresh machine: no catalog, the repository's events remain.
    Catalog::remove_files(&env.catalog);
    let fresh = events(&env, &[]);
    for action in ["restore", "erase", "key-export"] {
        assert!(
            with_action(&fresh, action)
                .iter()
                .any(|e| str_field(e, "source") == "repository"),
            "{action} is still listed without the catalog\n{fresh:#?}"
        );
    }
    assert!(
        fresh.iter().all(|e| str_field(e, "source") == "repository"),
        "nothing comes from the new, empty catalog\n{fresh:#?}"
    );
}
