//! `coffer fleet` (docs/FLEET.md): 1,000 repositories of small servers in
//! one bucket on the in-process S3 server. One repository is made by a
//! real `init` and `backup` (its status object written by the backup
//! itself); the others are its objects copied under new prefixes, each with
//! a new config id and a status object made by the library's own writer
//! (`repo::status`). The listing's request count must grow with the
//! repositories, not with their snapshots.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;

use coffer::repo::keys::{AgentKey, Keys};
use coffer::repo::status::{self, Recent, Status};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::env::*;

/// Copies every object file of a repository folder (not the server's dot files).
fn copy_objects(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type().unwrap().is_dir() {
            copy_objects(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// What one simulated repository's status says.
struct Sim {
    last: Timestamp,
    damage_records: u64,
    host: String,
}

/// A status object as a backup writes one, through the library's types.
fn status_bytes(keys: &Keys, id: &str, sim: &Sim, snapshots: u64) -> Vec<u8> {
    Status {
        format: status::FORMAT.into(),
        version: status::VERSION,
        repository: id.into(),
        written: sim.last,
        snapshots,
        oldest: Some(sim.last - SignedDuration::from_hours(24 * 30)),
        last_snapshot: Some(sim.last),
        last_complete: Some(sim.last),
        damaged_snapshots: 0,
        damage_records: sim.damage_records,
        stored_bytes: 4096,
        recent: (0..30 * 6)
            .map(|i| Recent {
                time: sim.last - SignedDuration::from_hours(4 * i),
                damaged: false,
            })
            .rev()
            .collect(),
        hosts: status::seal_hosts(keys, std::slice::from_ref(&sim.host)),
    }
    .to_bytes()
}

/// Fills `bucket` with `n` copies of `template`, each with `snapshots`
/// snapshot objects; `sim(i)` says what each one's status claims. The
/// snapshot objects' storage times follow the claim (set as file times).
fn make_fleet(
    server_root: &Path,
    bucket: &str,
    template: &Path,
    keys: &Keys,
    n: usize,
    snapshots: usize,
    sim: impl Fn(usize) -> Sim,
) {
    let config: Value =
        serde_json::from_slice(&fs::read(template.join("config")).unwrap()).unwrap();
    let snapshot_file = fs::read_dir(template.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("the template has a snapshot");
    for i in 0..n {
        let dir = server_root.join(bucket).join(format!("site-{i:04}"));
        copy_objects(template, &dir);
        let id = format!("{:032x}", i as u128 + 1);
        let mut c = config.clone();
        c["id"] = id.clone().into();
        fs::write(dir.join("config"), serde_json::to_vec(&c).unwrap()).unwrap();
        let s = sim(i);
        for k in 1..snapshots {
            fs::copy(
                &snapshot_file,
                dir.join("snapshots").join(format!("{k:064x}")),
            )
            .unwrap();
        }
        let secs = s.last.as_second();
        for e in fs::read_dir(dir.join("snapshots")).unwrap() {
            set_mtime(&e.unwrap().path(), secs + 1, 0);
        }
        fs::write(
            dir.join("status"),
            status_bytes(keys, &id, &s, snapshots as u64),
        )
        .unwrap();
    }
}

fn fresh(i: usize) -> Sim {
    Sim {
        last: Timestamp::now() - SignedDuration::from_mins(50),
        damage_records: 0,
        host: format!("host-{i:04}"),
    }
}

/// The stale one of the 1,000 (three days since its last snapshot), and
/// a damaged one.
const STALE: usize = 421;
const DAMAGED: usize = 7;

fn thousand(i: usize) -> Sim {
    let mut s = fresh(i);
    if i == STALE {
        s.last = Timestamp::now() - SignedDuration::from_hours(72);
    }
    if i == DAMAGED {
        s.damage_records = 1;
    }
    s
}

fn fleet_cmd(env: &TestEnv, url: &str, extra: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec!["fleet".into(), url.into()];
    args.extend(extra.iter().map(OsString::from));
    env.run(args)
}

#[test]
fn fleet_lists_a_thousand_repositories_with_requests_growing_with_repositories_only() {
    let env = TestEnv::with_repo_on(Backend::S3);
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"hello fleet\n");
    env.backup(&[&src]);
    let server = env.s3.as_ref().unwrap();
    assert!(
        env.repo.join("status").is_file(),
        "a backup writes the status object"
    );
    let keys = Keys::from_agent_key(&AgentKey::load(&env.agent_key).unwrap());
    let requests = || server.requests.load(Ordering::SeqCst);

    // The real repository, as its operator, its agent and a key-less monitor see it.
    let bucket = format!("s3://{TEST_BUCKET}");
    let ident = env.identity.to_string_lossy().into_owned();
    let agent = env.agent_key.to_string_lossy().into_owned();
    let own = |extra: &[&str]| {
        let out = fleet_cmd(&env, &bucket, extra);
        out.expect_ok();
        out.json()["repositories"][0].clone()
    };
    let monitor = own(&["--json"]);
    assert_eq!(monitor["repository"], "repo");
    assert_eq!(monitor["state"], "ok", "{monitor}");
    assert_eq!(monitor["snapshots"], 1);
    assert_eq!(
        (monitor["hosts"].clone(), monitor["hosts_sealed"].clone()),
        (Value::Null, true.into())
    );
    let host = own(&["--json", "--identity", &ident])["hosts"][0].clone();
    assert!(host.as_str().is_some_and(|h| !h.is_empty()), "{host}");
    assert_eq!(own(&["--json", "--agent-key", &agent])["hosts"][0], host);

    // 100 and 1,000 repositories of one snapshot each, 100 of 50 snapshots each.
    let small = (100, "fleet-small", 1);
    let deep = (100, "fleet-deep", 50);
    let big = (1000, "fleet-big", 1);
    for (n, name, snaps) in [small, deep, big] {
        server.create_bucket(name);
        let sim = if n == 1000 { thousand } else { fresh };
        make_fleet(&server.root, name, &env.repo, &keys, n, snaps, sim);
    }
    let mut used = Vec::new();
    for (n, name, _) in [small, deep, big] {
        let before = requests();
        let out = fleet_cmd(&env, &format!("s3://{name}"), &["--json"]);
        used.push(requests() - before);
        out.expect_ok();
        assert_eq!(
            out.json()["repositories"].as_array().unwrap().len(),
            n,
            "{name}"
        );
    }
    eprintln!(
        "fleet requests: 100 repos {}, 100 repos of 50 snapshots {}, 1,000 repos {}",
        used[0], used[1], used[2]
    );
    // Snapshots cost nothing more; each repository a few requests
    // (its level, its status, its snapshots/ listing), not one per object.
    assert_eq!(used[0], used[1], "50 snapshots a repository add no request");
    let per_repo = (used[2] - used[0]) as f64 / 900.0;
    assert!(
        (2.5..=3.5).contains(&per_repo),
        "{per_repo} requests a repository"
    );
    assert!(
        used[2] <= 3 * 1000 + 20,
        "{} requests for 1,000 repositories",
        used[2]
    );

    // --stale: exit 1 naming the stale one; the table lists it first.
    let url = "s3://fleet-big";
    let out = fleet_cmd(&env, url, &["--stale", "36h"]);
    out.expect_code(1);
    out.expect_stderr_contains(&format!("stale: site-{STALE:04}"));
    assert_eq!(out.stderr.matches("stale: ").count(), 1, "{out}");
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with(' '))
        .collect();
    assert!(
        rows[0].starts_with("stale") && rows[0].contains(&format!("site-{STALE:04}")),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].starts_with("damaged") && rows[1].contains(&format!("site-{DAMAGED:04}")),
        "{}",
        rows[1]
    );
    assert!(rows[2].starts_with("ok"), "{}", rows[2]);
    fleet_cmd(&env, url, &["--stale", "4d"]).expect_ok();
    fleet_cmd(&env, url, &[]).expect_ok();

    // The picture: one page, stale row first, no console errors.
    let page = env.path("fleet.html");
    let html_arg = page.to_string_lossy().into_owned();
    fleet_cmd(&env, url, &["--html", &html_arg, "--stale", "36h"]).expect_code(1);
    check_page(&env, &page, &format!("site-{STALE:04}"), 1000);
}

/// The page is self-contained, and in headless Chromium it loads without
/// console errors, its script draws every strip, and the first row is
/// `first`.
fn check_page(env: &TestEnv, page: &Path, first: &str, rows: usize) {
    let html = fs::read_to_string(page).unwrap();
    let start = html.find("id=\"fleet-data\">").expect("embedded data");
    let end = start + html[start..].find("</script>").unwrap();
    let outside = format!("{}{}", &html[..start], &html[end..]);
    for url in ["http://", "https://", "src=", "href="] {
        assert!(!outside.contains(url), "the page refers to {url}");
    }
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        if std::env::var("COFFER_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!(
                "chromium not found, and COFFER_REQUIRE_CHROMIUM=1 (scripts/test.sh installs it)"
            );
        }
        eprintln!(
            "chromium not found: the HTML page was not loaded in a browser (apt-get install chromium)"
        );
        return;
    };
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            env.path("chromium-profile").display()
        ))
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .env("HOME", &env.home)
        .output()
        .expect("run chromium");
    let (dom, log) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "chromium failed: {log}");
    for bad in ["Uncaught", ":CONSOLE", "SyntaxError", "TypeError"] {
        assert!(!log.contains(bad), "console error ({bad}): {log}");
    }
    assert!(
        dom.contains(&format!("data-drawn=\"{rows}\"")),
        "the script drew every strip:\n{}",
        &dom[..dom.len().min(2000)]
    );
    let body = &dom[dom.find("<tbody>").expect("a table body")..];
    let row = &body[body.find("<tr").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains(&format!("data-repo=\"{first}\"")),
        "first row: {row}"
    );
}

#[test]
fn fleet_refuses_bad_locations_and_says_when_it_finds_no_repository() {
    let env = TestEnv::new_on(Backend::S3);
    let out = fleet_cmd(&env, "s3://no-such-bucket", &[]);
    out.expect_code(1)
        .expect_stderr_contains("no-such-bucket does not exist");
    let out = fleet_cmd(&env, &format!("s3://{TEST_BUCKET}"), &[]);
    out.expect_code(1)
        .expect_stderr_contains("no coffer repositories under");
    fleet_cmd(&env, "s3:/acme", &[])
        .expect_code(1)
        .expect_stderr_contains("did you mean");
    fleet_cmd(&env, "ftp://host/x", &[]).expect_code(1);
    let empty = env.path("empty");
    fs::create_dir_all(empty.join("a/b")).unwrap();
    fleet_cmd(&env, &empty.to_string_lossy(), &[])
        .expect_code(1)
        .expect_stderr_contains("looked 3 folders deep");
    fleet_cmd(&env, "/no/such/folder", &[])
        .expect_code(1)
        .expect_stderr_contains("does not exist");
    fleet_cmd(
        &env,
        &format!("s3://{TEST_BUCKET}"),
        &["--stale", "3 months"],
    )
    .expect_code(2);
}

/// A folder of repositories works as a bucket does; one made by an older
/// coffer (no status object) is listed from its listing alone.
#[test]
fn fleet_reads_a_local_folder_and_lists_a_repository_without_status() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"one\n");
    env.backup(&[&src]);
    let fleet = env.path("fleet");
    copy_objects(&env.repo, &fleet.join("team-a/web-1"));
    copy_objects(&env.repo, &fleet.join("old"));
    fs::remove_file(fleet.join("old/status")).unwrap();
    let out = fleet_cmd(&env, &fleet.to_string_lossy(), &["--json"]);
    out.expect_ok();
    let v = out.json();
    let rows = v["repositories"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["repository"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["old", "team-a/web-1"]);
    assert_eq!(rows[0]["state"], "unknown");
    assert!(
        rows[0]["notes"][0]
            .as_str()
            .unwrap()
            .contains("no status object")
    );
    assert_eq!(rows[0]["snapshots"], 1);
    assert!(
        rows[0]["last_complete"].is_string(),
        "from the listing: {}",
        rows[0]
    );
    assert_eq!(rows[1]["state"], "ok");
    assert!(rows[1]["stored_bytes"].as_u64().unwrap() > 0);
    // The repository itself is a fleet of one.
    let out = fleet_cmd(&env, &env.repo.to_string_lossy(), &["--json"]);
    out.expect_ok();
    assert_eq!(out.json()["repositories"][0]["repository"], ".");
}

/// A forget that removes snapshots writes the status again: the fleet
/// view's counts follow at once, not at the next backup or prune.
#[test]
fn forget_rewrites_the_status_object() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    for n in 0..3 {
        write_file(&src.join("f"), format!("version {n}").as_bytes());
        env.backup(&[&src]);
    }
    let counted = || {
        let bytes = fs::read(env.repo.join("status")).unwrap();
        Status::parse(&bytes, "status").unwrap().snapshots
    };
    assert_eq!(counted(), 3);
    let out = env.agent(["forget", "--keep-last", "1", "--keep-within", "0s"]);
    out.expect_ok();
    assert_eq!(env.snapshots().len(), 1, "{out}");
    assert_eq!(counted(), 1, "the status counts what forget left");
}
