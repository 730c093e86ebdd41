//! Every stored and printed form of a time, pinned as coffer wrote it when
//! it still used chrono: repositories, catalogs and state files written by
//! older and newer binaries must read each other, and scripts that read the
//! output must not see a change. The strings below were captured from that
//! code; the `old_*` inputs are what it wrote.

use coffer::agent::metrics::{ProfileView, render};
use coffer::agent::state::ProfileState;
use coffer::catalog::{Catalog, RunRecord, RunStatus};
use coffer::engine::job::JobReport;
use coffer::repo::RepoError;
use coffer::repo::audit::AuditEvent;
use coffer::repo::damage::DamageRecord;
use coffer::repo::snapshot::{Snapshot, Summary};
use serde_json::Value;

use crate::env::*;

/// The fractional forms the old writer chose between: none, 3, 6 or 9 digits.
const TIMES: [(&str, &str); 5] = [
    ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00Z"),
    ("2026-05-01T10:00:00.5Z", "2026-05-01T10:00:00.500Z"),
    ("2026-05-01T10:00:00.000123Z", "2026-05-01T10:00:00.000123Z"),
    (
        "2026-05-01T10:00:00.123456789Z",
        "2026-05-01T10:00:00.123456789Z",
    ),
    (
        "2026-05-01T12:00:00.1234+02:00",
        "2026-05-01T10:00:00.123400Z",
    ),
];

fn snapshot_at(time: &str) -> Snapshot {
    Snapshot {
        time: time.parse().unwrap(),
        host: "h".into(),
        profile: "p".into(),
        paths: vec!["/srv".into()],
        tree: vec![],
        refs: vec![],
        tree_index: None,
        summary: Summary::default(),
        stored: None,
    }
}

#[test]
fn snapshot_time_is_stored_with_0_3_6_or_9_fraction_digits_and_z() {
    for (input, stored) in TIMES {
        let json = serde_json::to_value(snapshot_at(input)).unwrap();
        assert_eq!(json["time"], stored, "{input}");
    }
}

/// JSON as the chrono-based writer stored it reads back, and is written again
/// byte for byte.
#[test]
fn old_snapshot_audit_and_damage_json_read_and_write_back_the_same() {
    let old_snapshot = r#"{"time":"2026-05-01T10:00:00.123456Z","host":"h","profile":"p","paths":["/srv"],"tree":[],"refs":[],"summary":{"files":0,"dirs":0,"bytes":0,"files_new":0,"files_changed":0,"files_unchanged":0,"data_added":0,"stored_added":0,"skipped":0,"seconds":0.0}}"#;
    let s: Snapshot = serde_json::from_str(old_snapshot).unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), old_snapshot);

    let old_audit =
        r#"{"time":"2026-05-01T10:00:00.500Z","actor":"op@h","action":"restore","detail":"x"}"#;
    let a: AuditEvent = serde_json::from_str(old_audit).unwrap();
    assert_eq!(serde_json::to_string(&a).unwrap(), old_audit);

    let old_damage = r#"{"time":"2026-05-01T10:00:00Z","found_by":"check","host":"h"}"#;
    let d: DamageRecord = serde_json::from_str(old_damage).unwrap();
    assert_eq!(serde_json::to_string(&d).unwrap(), old_damage);

    // Any fraction length and offset an old writer or a person may have used.
    for (input, stored) in TIMES {
        let json = old_audit.replace("2026-05-01T10:00:00.500Z", input);
        let a: AuditEvent = serde_json::from_str(&json).unwrap();
        let back: Value = serde_json::to_value(&a).unwrap();
        assert_eq!(back["time"], stored, "{input}");
    }
}

#[test]
fn catalog_stores_times_as_rfc3339_with_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let cat = Catalog::open(&path, "repo").unwrap();
    let id = coffer::repo::ids::SnapshotId([7; 32]);
    cat.put_snapshot(&id, &snapshot_at("2026-05-01T10:00:00.5Z"))
        .unwrap();
    let run = RunRecord {
        profile: "p".into(),
        started: "2026-05-01T10:00:00.000123Z".parse().unwrap(),
        seconds: 1.5,
        status: RunStatus::Ok,
        snapshot: None,
        files: 1,
        bytes: 2,
        added: 3,
        error: None,
    };
    cat.record_run(&run).unwrap();
    cat.audit("op@h", "restore", "x").unwrap();
    assert_eq!(cat.runs("p", 5).unwrap(), vec![run.clone()]);
    assert_eq!(
        serde_json::to_value(&run).unwrap()["started"],
        "2026-05-01T10:00:00.000123Z"
    );
    drop(cat);

    let db = rusqlite::Connection::open(&path).unwrap();
    let text = |sql: &str| db.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap();
    assert_eq!(
        text("SELECT time FROM snapshots"),
        "2026-05-01T10:00:00.500+00:00"
    );
    assert_eq!(
        text("SELECT started FROM runs"),
        "2026-05-01T10:00:00.000123+00:00"
    );
    let audit = text("SELECT time FROM audit");
    assert!(
        audit.ends_with("+00:00") && audit.len() == "2026-05-01T10:00:00.123456789+00:00".len(),
        "{audit}"
    );

    // Rows the old code wrote read back as the same instant.
    db.execute(
        "UPDATE runs SET started = '2026-05-01T10:00:00.123456789+00:00'",
        [],
    )
    .unwrap();
    drop(db);
    let cat = Catalog::open(&path, "repo").unwrap();
    let runs = cat.runs("p", 5).unwrap();
    assert_eq!(
        serde_json::to_value(&runs[0]).unwrap()["started"],
        "2026-05-01T10:00:00.123456789Z"
    );
}

#[test]
fn agent_state_file_and_metrics_keep_their_forms() {
    let old = r#"{
  "profile": "p",
  "starts": [
    "2026-05-01T10:00:00Z",
    "2026-05-01T14:00:00.250Z"
  ],
  "running_since": "2026-05-01T14:00:00.250Z",
  "last": null,
  "last_success": "2026-05-01T10:00:00Z",
  "runs_ok": 1,
  "runs_failed": 0
}"#;
    let state: ProfileState = serde_json::from_str(old).unwrap();
    assert_eq!(serde_json::to_string_pretty(&state).unwrap(), old);

    let mut report = JobReport::new("p", "2026-05-01T10:00:00.5Z".parse().unwrap());
    report.host = "h".into();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["started"], "2026-05-01T10:00:00.500Z");

    let view = ProfileView {
        name: "p",
        repository: "",
        state: &state,
        next_run: Some("2026-05-01T18:00:00.9Z".parse().unwrap()),
        running: false,
    };
    let text = render(&[view], 0);
    assert!(
        text.contains("coffer_last_success_timestamp_seconds{profile=\"p\"} 1777629600\n"),
        "{text}"
    );
    assert!(
        text.contains("coffer_next_run_timestamp_seconds{profile=\"p\"} 1777658400\n"),
        "{text}"
    );
}

/// Times for people were in five forms; now one: local time with the zone's
/// name, whole seconds, in every table and message; `--utc` shows UTC.
#[test]
fn people_see_one_time_form_in_every_output_and_utc_on_request() {
    let env = two_backdated_snapshots();
    let run = |args: &[&str], tz: &str| {
        let mut all: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
        all.extend(env.operator_flags());
        env.run_with_env(all, &[("TZ", std::ffi::OsStr::new(tz))])
    };
    let berlin = "Europe/Berlin";
    let no_machine_form = |text: &str| {
        assert!(
            !text.contains("T10:00:00") && !text.contains(".500") && !text.contains("+0"),
            "{text}"
        );
    };
    let snaps = run(&["snapshots"], berlin);
    snaps.expect_ok();
    assert!(snaps.stdout.contains("2026-03-01 11:00:00 CET"), "{snaps}");
    let find = run(&["find", "f"], berlin);
    find.expect_ok();
    assert!(find.stdout.contains("2026-03-01 11:00:00 CET"), "{find}");
    no_machine_form(&find.stdout);
    let forget = run(
        &[
            "forget",
            "--keep-within",
            "0s",
            "--keep-last",
            "1",
            "--dry-run",
        ],
        berlin,
    );
    forget.expect_ok();
    assert!(
        forget.stdout.contains(" 2026-03-01 11:00:00 CET ") && !forget.stdout.contains("(UTC)"),
        "{forget}"
    );
    let ls = run(&["ls", "latest"], berlin);
    ls.expect_ok();
    assert!(
        ls.stdout.contains(" CET  /") || ls.stdout.contains(" CEST  /"),
        "{ls}"
    );
    let early = run(&["ls", "--at", "2020-01-01"], berlin);
    early.expect_code(1);
    early.expect_stderr_contains("no snapshot at or before 2020-01-01 23:59:59 CET");
    no_machine_form(&early.stderr);
    let diff = run(&["diff", "--at", "2026-03-01 12:00", "--at", "now"], berlin);
    diff.expect_ok();
    assert!(diff.stdout.contains("(2026-03-01 11:00:00 CET)"), "{diff}");

    // --utc: the same form in UTC, everywhere.
    for args in [&["snapshots", "--utc"][..], &["--utc", "find", "f"]] {
        let out = run(args, berlin);
        out.expect_ok();
        assert!(out.stdout.contains("2026-03-01 10:00:00 UTC"), "{out}");
        assert!(!out.stdout.contains("CET"), "{out}");
    }
    let forget = run(
        &[
            "forget",
            "--utc",
            "--keep-within",
            "0s",
            "--keep-last",
            "1",
            "--dry-run",
        ],
        berlin,
    );
    forget.expect_ok();
    assert!(
        forget.stdout.contains(" 2026-03-01 10:00:00 UTC "),
        "{forget}"
    );
    // JSON stays RFC 3339 in UTC whatever the zone.
    let json = run(&["snapshots", "--json"], berlin);
    assert_eq!(json.json()[0]["time"], "2026-03-01T10:00:00Z");
}

#[test]
fn locked_error_names_the_time_as_before() {
    let e = RepoError::Locked {
        host: "h".into(),
        pid: 7,
        since: "2026-05-01T10:00:00.5Z".parse().unwrap(),
        object: "lock".into(),
    };
    // Whole seconds, in the zone people read (it showed nanoseconds).
    assert_eq!(
        e.to_string(),
        format!(
            "repository is locked by h (pid 7) since {}; wait for that backup to finish, or delete the `lock` object if it is certainly dead",
            coffer::time::human("2026-05-01T10:00:00Z".parse().unwrap())
        )
    );
    assert!(!e.to_string().contains(".500"));
}

/// A repository with two snapshots of one file, dated 2026-03-01
/// 10:00:00.5 UTC and 2026-03-02 09:30 +01:00 (`backup --time`).
fn two_backdated_snapshots() -> TestEnv {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    env.backup_raw(&[&src], &["--time", "2026-03-01T10:00:00.5Z"])
        .expect_ok();
    env.backup_raw(&[&src], &["--time", "2026-03-02T09:30:00+01:00"])
        .expect_ok();
    env
}

/// The human and JSON forms the CLI prints for a snapshot's time.
#[test]
fn cli_prints_snapshot_times_as_before() {
    let env = two_backdated_snapshots();
    let tz = [("TZ", std::ffi::OsStr::new("UTC"))];

    let json = env.operator(["snapshots", "--json"]);
    json.expect_ok();
    let times: Vec<String> = json
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "time").to_string())
        .collect();
    assert_eq!(times, ["2026-03-01T10:00:00Z", "2026-03-02T08:30:00Z"]);

    let mut args = env.operator_flags();
    args.insert(0, "snapshots".into());
    let table = env.run_with_env(args, &tz);
    table.expect_ok();
    assert!(
        table.stdout.contains("2026-03-01 10:00:00 UTC"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("2026-03-02 08:30:00 UTC"),
        "{}",
        table.stdout
    );

    let find = env.operator(["find", "f"]);
    find.expect_ok();
    assert!(find.stdout.contains("2026-03-01"), "{}", find.stdout);
}

/// Restore, forget and audit name times in their own human forms.
#[test]
fn cli_restore_forget_and_audit_print_times_as_before() {
    let env = two_backdated_snapshots();
    let target = env.path("out");
    let t = target.to_str().unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["restore".into(), "latest".into()];
    args.extend(["--target".into(), t.into()]);
    args.extend(env.operator_flags());
    let restore = env.run_with_env(args, &[("TZ", std::ffi::OsStr::new("UTC"))]);
    restore.expect_ok();
    assert!(
        restore.stdout.contains("(2026-03-02 08:30:00 UTC)"),
        "{}",
        restore.stdout
    );

    let forget = env.agent([
        "forget",
        "--keep-within",
        "0s",
        "--keep-last",
        "1",
        "--dry-run",
    ]);
    forget.expect_ok();
    assert!(
        forget.stdout.contains(" 2026-03-01 10:00:00 ")
            && forget.stdout.contains(" 2026-03-02 08:30:00 "),
        "{}",
        forget.stdout
    );

    let mut args: Vec<std::ffi::OsString> = vec!["audit".into()];
    args.extend(env.operator_flags());
    let audit = env.run_with_env(args, &[("TZ", std::ffi::OsStr::new("Asia/Kolkata"))]);
    audit.expect_ok();
    let line = audit
        .stdout
        .lines()
        .find(|l| l.contains("restore"))
        .unwrap_or_default();
    // `YYYY-MM-DD HH:MM:SS IST  actor ...`: the one form for people (it
    // was `+0530`, unlike every other table).
    assert_eq!(&line[19..25], " IST  ", "{line}");
    let json = env.operator(["audit", "--json"]);
    json.expect_ok();
    let time = json.json()[0]["time"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(time.ends_with('Z') && !time.contains('+'), "{time}");
}
