//! Metrics in the Prometheus text format, rendered from the profiles' state,
//! served on a local address and/or written to a textfile for node_exporter.

use super::state::{ProfileState, RepositoryFigures};
use crate::engine::job::RunStatus;
use jiff::Timestamp;
use std::fmt::Write;

/// What the metrics show of one profile.
pub struct ProfileView<'a> {
    pub name: &'a str,
    /// The profile's repository URL: the storage figures are its, not the
    /// profile's (several hosts and profiles may write to one repository).
    pub repository: &'a str,
    pub state: &'a ProfileState,
    pub next_run: Option<Timestamp>,
    pub running: bool,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every status a run can end with, as `coffer_last_run_status` labels them.
const STATUSES: [RunStatus; 4] = [
    RunStatus::Ok,
    RunStatus::Partial,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

/// One series: its labels (without braces) and its value.
type Row = (String, f64);

// One family after the other, in the order docs/AGENT.md lists them; the
// length is the list of families, not logic.
pub fn render(profiles: &[ProfileView], broken: usize) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<Row>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let label = |p: &ProfileView| format!("profile=\"{}\"", escape(p.name));
    let each = |f: &dyn Fn(&ProfileView) -> Option<f64>| -> Vec<Row> {
        profiles
            .iter()
            .filter_map(|p| f(p).map(|v| (label(p), v)))
            .collect()
    };
    // Several series per profile, one per label value.
    let each_of = |values: &[&str], key: &str, f: &dyn Fn(&ProfileView, usize) -> Option<f64>| {
        let mut rows = Vec::new();
        for p in profiles {
            for (i, v) in values.iter().enumerate() {
                if let Some(x) = f(p, i) {
                    rows.push((format!("{},{key}=\"{v}\"", label(p)), x));
                }
            }
        }
        rows
    };
    let repo = |p: &ProfileView, v: Option<f64>| -> Option<Row> {
        v.map(|v| {
            let labels = format!("{},repository=\"{}\"", label(p), escape(p.repository));
            (labels, v)
        })
    };
    let each_repo = |f: &dyn Fn(&RepositoryFigures) -> f64| -> Vec<Row> {
        profiles
            .iter()
            .filter_map(|p| repo(p, p.state.repository_figures().map(|r| f(&r))))
            .collect()
    };
    let ts = |t: Timestamp| crate::time::unix_seconds(t) as f64;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let status_words: Vec<&str> = STATUSES.iter().map(|s| s.as_str()).collect();
    family(
        "coffer_last_run_timestamp_seconds",
        "gauge",
        "When the last run started.",
        each(&|p| p.state.last.as_ref().map(|l| ts(l.started))),
    );
    family(
        "coffer_last_run_status",
        "gauge",
        "1 for the status the last run ended with, 0 for the others.",
        each_of(&status_words, "status", &|p, i| {
            p.state.last.as_ref().map(|l| flag(l.status == STATUSES[i]))
        }),
    );
    family(
        "coffer_last_run_success",
        "gauge",
        "1 if the last run ended ok (not partial, failed or cancelled), else 0.",
        each(&|p| {
            p.state
                .last
                .as_ref()
                .map(|l| flag(l.status == RunStatus::Ok))
        }),
    );
    family(
        "coffer_last_run_skipped_files",
        "gauge",
        "Files the last run could not read (a partial run skipped them).",
        each(&|p| p.state.last.as_ref().map(|l| l.skipped.len() as f64)),
    );
    family(
        "coffer_last_success_timestamp_seconds",
        "gauge",
        "When the last run that ended ok started; 0 if none has.",
        each(&|p| Some(p.state.last_success.map_or(0.0, ts))),
    );
    family(
        "coffer_last_run_duration_seconds",
        "gauge",
        "How long the last run took.",
        each(&|p| p.state.last.as_ref().map(|l| l.seconds)),
    );
    family(
        "coffer_last_run_added_bytes",
        "gauge",
        "Bytes the last backup stored (after dedup and compression).",
        each(&|p| p.state.last.as_ref().map(|l| l.bytes_added as f64)),
    );
    family(
        "coffer_repository_snapshots",
        "gauge",
        "Snapshots in the whole repository (every host and profile), as last counted.",
        each_repo(&|r| r.snapshots as f64),
    );
    family(
        "coffer_repository_bytes",
        "gauge",
        "Bytes of packs in the whole repository, as last counted.",
        each_repo(&|r| r.storage_bytes as f64),
    );
    family(
        "coffer_repository_stats_timestamp_seconds",
        "gauge",
        "When the repository figures were counted (a failed run does not count them).",
        each_repo(&|r| ts(r.at)),
    );
    family(
        "coffer_next_run_timestamp_seconds",
        "gauge",
        "When the next run is due.",
        each(&|p| p.next_run.map(ts)),
    );
    family(
        "coffer_running",
        "gauge",
        "1 while a run of the profile is under way.",
        each(&|p| Some(flag(p.running))),
    );
    family(
        "coffer_runs_total",
        "counter",
        "Runs by result (failed counts cancelled runs too).",
        each_of(&["ok", "partial", "failed"], "result", &|p, i| {
            let st = p.state;
            Some([st.runs_ok, st.runs_partial, st.runs_failed][i] as f64)
        }),
    );
    let _ = writeln!(
        out,
        "# HELP coffer_profiles_broken Profiles that could not be loaded.\n# TYPE coffer_profiles_broken gauge\ncoffer_profiles_broken {broken}"
    );
    out
}

/// Writes the textfile atomically, so node_exporter never reads half of it.
pub fn write_textfile(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Serves `/metrics` from `current` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    current: std::sync::Arc<std::sync::Mutex<String>>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let current = current.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = current.lock().map(|s| s.clone()).unwrap_or_default();
                    async move {
                        if req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(body)))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from("try /metrics\n")))
                        }
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::job::JobReport;

    /// The value of the series written exactly `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn view<'a>(name: &'a str, state: &'a ProfileState) -> ProfileView<'a> {
        ProfileView {
            name,
            repository: "s3://bucket/coffer",
            state,
            next_run: None,
            running: false,
        }
    }

    #[test]
    fn a_partial_run_is_not_a_success_and_its_skipped_files_are_counted() {
        let t0: Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        let mut st = ProfileState::default();
        st.finished(&JobReport {
            status: RunStatus::Partial,
            skipped: vec!["/srv/a: permission denied".into(), "/srv/b: gone".into()],
            snapshots: 4,
            storage_bytes: 100,
            ..JobReport::new("web", t0)
        });
        let text = render(&[view("web", &st)], 0);
        let p = "{profile=\"web\"}";
        assert_eq!(
            value(&text, &format!("coffer_last_run_success{p}")),
            Some(0.0)
        );
        assert_eq!(
            value(&text, &format!("coffer_last_run_skipped_files{p}")),
            Some(2.0)
        );
        assert_eq!(
            value(&text, &format!("coffer_last_success_timestamp_seconds{p}")),
            Some(0.0),
            "never ok: the series is there, at 0\n{text}"
        );
        for (status, v) in [
            ("ok", 0.0),
            ("partial", 1.0),
            ("failed", 0.0),
            ("cancelled", 0.0),
        ] {
            let s = format!("coffer_last_run_status{{profile=\"web\",status=\"{status}\"}}");
            assert_eq!(value(&text, &s), Some(v), "{s}\n{text}");
        }
        for (result, v) in [("ok", 0.0), ("partial", 1.0), ("failed", 0.0)] {
            let s = format!("coffer_runs_total{{profile=\"web\",result=\"{result}\"}}");
            assert_eq!(value(&text, &s), Some(v), "{s}\n{text}");
        }
        let r = "{profile=\"web\",repository=\"s3://bucket/coffer\"}";
        assert_eq!(
            value(&text, &format!("coffer_repository_snapshots{r}")),
            Some(4.0)
        );
        assert_eq!(
            value(&text, &format!("coffer_repository_bytes{r}")),
            Some(100.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("coffer_repository_stats_timestamp_seconds{r}")
            ),
            Some(crate::time::unix_seconds(t0) as f64)
        );
    }

    #[test]
    fn a_profile_that_never_ran_exports_a_zero_last_success_and_no_figures() {
        let st = ProfileState::default();
        let text = render(&[view("new", &st)], 1);
        assert_eq!(
            value(
                &text,
                "coffer_last_success_timestamp_seconds{profile=\"new\"}"
            ),
            Some(0.0)
        );
        assert!(!text.contains("coffer_repository_bytes{"), "{text}");
        assert!(!text.contains("coffer_last_run_status{"), "{text}");
        assert_eq!(value(&text, "coffer_profiles_broken"), Some(1.0));
    }

    #[test]
    fn a_failed_run_keeps_the_last_known_storage_figures() {
        let t0: Timestamp = "2026-05-01T10:00:00Z".parse().unwrap();
        let mut st = ProfileState::default();
        st.finished(&JobReport {
            status: RunStatus::Ok,
            snapshots: 9,
            storage_bytes: 700,
            ..JobReport::new("web", t0)
        });
        let t1 = t0 + jiff::SignedDuration::from_hours(4);
        st.finished(&JobReport::failed("web", t1, "down".into()));
        let text = render(&[view("web", &st)], 0);
        let r = "{profile=\"web\",repository=\"s3://bucket/coffer\"}";
        assert_eq!(
            value(&text, &format!("coffer_repository_snapshots{r}")),
            Some(9.0)
        );
        assert_eq!(
            value(&text, &format!("coffer_repository_bytes{r}")),
            Some(700.0)
        );
        assert_eq!(
            value(
                &text,
                &format!("coffer_repository_stats_timestamp_seconds{r}")
            ),
            Some(crate::time::unix_seconds(t0) as f64)
        );
        assert_eq!(
            value(
                &text,
                "coffer_last_run_status{profile=\"web\",status=\"failed\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "coffer_last_success_timestamp_seconds{profile=\"web\"}"
            ),
            Some(crate::time::unix_seconds(t0) as f64)
        );
    }
}
