//! Metrics in the Prometheus text format, rendered from the profiles' state,
//! served on a local address and/or written to a textfile for node_exporter.

use super::state::ProfileState;
use jiff::Timestamp;
use std::fmt::Write;

/// What the metrics show of one profile.
pub struct ProfileView<'a> {
    pub name: &'a str,
    pub state: &'a ProfileState,
    pub next_run: Option<Timestamp>,
    pub running: bool,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(profiles: &[ProfileView], broken: usize) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    let label = |p: &ProfileView| format!("profile=\"{}\"", escape(p.name));
    let each = |f: &dyn Fn(&ProfileView) -> Option<f64>| -> Vec<(String, f64)> {
        profiles
            .iter()
            .filter_map(|p| f(p).map(|v| (label(p), v)))
            .collect()
    };
    let ts = |t: Timestamp| crate::time::unix_seconds(t) as f64;
    family(
        "coffer_last_run_timestamp_seconds",
        "gauge",
        "When the last run started.",
        each(&|p| p.state.last.as_ref().map(|l| ts(l.started))),
    );
    family(
        "coffer_last_run_success",
        "gauge",
        "1 if the last run succeeded (ok or partial), else 0.",
        each(&|p| {
            p.state
                .last
                .as_ref()
                .map(|l| if l.status.succeeded() { 1.0 } else { 0.0 })
        }),
    );
    family(
        "coffer_last_success_timestamp_seconds",
        "gauge",
        "When the last successful run started.",
        each(&|p| p.state.last_success.map(ts)),
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
        "coffer_snapshots",
        "gauge",
        "Snapshots in the repository after the last run.",
        each(&|p| p.state.last.as_ref().map(|l| l.snapshots as f64)),
    );
    family(
        "coffer_repository_bytes",
        "gauge",
        "Bytes of packs in the repository after the last run.",
        each(&|p| p.state.last.as_ref().map(|l| l.storage_bytes as f64)),
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
        each(&|p| Some(if p.running { 1.0 } else { 0.0 })),
    );
    let mut runs = Vec::new();
    for p in profiles {
        runs.push((
            format!("{},result=\"ok\"", label(p)),
            p.state.runs_ok as f64,
        ));
        runs.push((
            format!("{},result=\"failed\"", label(p)),
            p.state.runs_failed as f64,
        ));
    }
    family("coffer_runs_total", "counter", "Runs by result.", runs);
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
