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

    /// A run ended: ping success or failure; webhook on failure (and success if asked).
    pub async fn finished(&self, n: &Notify, report: &JobReport) -> Vec<NotifyError> {
        let failed = !report.status.succeeded();
        let body = serde_json::json!({
            "event": if failed { "failure" } else { "success" },
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
            && (failed || n.on_success)
            && let Err(e) = self.send("POST", w, Some(body)).await
        {
            errors.push(e);
        }
        errors
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
