//! Telling people: a JSON webhook and a healthchecks-style ping URL
//! (`<url>/start` when a run starts, `<url>` on success, `<url>/fail` on
//! failure). Sent by the agent; a notification that cannot be delivered is
//! logged and never fails or delays the backups.

use crate::config::Notify;
use crate::engine::job::JobReport;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Notifier {
    /// None when the system has no trusted root certificates.
    https: Option<Client<Https, Full<Bytes>>>,
    http: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug, thiserror::Error)]
#[error("notification to {url} failed: {reason}")]
pub struct NotifyError {
    pub url: String,
    pub reason: String,
}

impl Notifier {
    pub fn new() -> Notifier {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .ok()
            .map(|b| b.https_or_http().enable_http1().build())
            .map(|c| Client::builder(TokioExecutor::new()).build(c));
        Notifier {
            https,
            http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    async fn request(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        if req.uri().scheme_str() == Some("http") {
            return self.http.request(req).await.map_err(|e| e.to_string());
        }
        match &self.https {
            Some(c) => c.request(req).await.map_err(|e| e.to_string()),
            None => {
                Err("no trusted root certificates on this system; install ca-certificates".into())
            }
        }
    }

    async fn send(&self, method: &str, url: &str, body: Option<String>) -> Result<(), NotifyError> {
        let fail = |reason: String| NotifyError {
            url: url.to_string(),
            reason,
        };
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            let req = hyper::Request::builder()
                .method(method)
                .uri(url)
                .header("user-agent", concat!("coffer/", env!("CARGO_PKG_VERSION")))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .map_err(|e| fail(e.to_string()))?;
            match tokio::time::timeout(Duration::from_secs(10), self.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
                Ok(Ok(resp)) => last = format!("HTTP {}", resp.status()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer in 10s".into(),
            }
        }
        Err(fail(last))
    }

    /// A run is starting (ping URL only).
    pub async fn start(&self, n: &Notify) -> Result<(), NotifyError> {
        match &n.ping {
            Some(p) => self.send("GET", &format!("{p}/start"), None).await,
            None => Ok(()),
        }
    }

    /// A run ended: ping success or failure; webhook on failure or a
    /// partial run (files left out), and on success if asked.
    pub async fn finished(&self, n: &Notify, report: &JobReport) -> Vec<NotifyError> {
        let failed = !report.status.succeeded();
        let body = serde_json::json!({
            "event": event(report.status),
            "report": report,
        })
        .to_string();
        let mut errors = Vec::new();
        if let Some(p) = &n.ping {
            let url = if failed {
                format!("{p}/fail")
            } else {
                p.clone()
            };
            if let Err(e) = self.send("POST", &url, Some(body.clone())).await {
                errors.push(e);
            }
        }
        if let Some(w) = &n.webhook
            && webhook_due(report.status, n.on_success)
            && let Err(e) = self.send("POST", w, Some(body)).await
        {
            errors.push(e);
        }
        errors
    }
}

/// The webhook's `event` for a run that ended so.
fn event(status: crate::catalog::RunStatus) -> &'static str {
    use crate::catalog::RunStatus::*;
    match status {
        Ok => "success",
        // The snapshot was saved, but without some files: not a success
        // to report as one.
        Partial => "partial",
        Failed | Cancelled => "failure",
    }
}

/// Whether the webhook hears of a run that ended so: unless it simply
/// succeeded, always; then only if asked.
fn webhook_due(status: crate::catalog::RunStatus, on_success: bool) -> bool {
    status != crate::catalog::RunStatus::Ok || on_success
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::RunStatus;

    #[test]
    fn a_partial_run_is_reported_as_partial_and_always_to_the_webhook() {
        assert_eq!(event(RunStatus::Ok), "success");
        assert_eq!(event(RunStatus::Partial), "partial");
        assert_eq!(event(RunStatus::Failed), "failure");
        assert_eq!(event(RunStatus::Cancelled), "failure");
        assert!(!webhook_due(RunStatus::Ok, false));
        assert!(webhook_due(RunStatus::Ok, true));
        assert!(webhook_due(RunStatus::Partial, false));
        assert!(webhook_due(RunStatus::Failed, false));
    }
}
