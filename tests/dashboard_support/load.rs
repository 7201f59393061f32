//! A webhook receiver and a small load generator for `keywheel serve`, so
//! that every metric the dashboard shows has moving data.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use reqwest::{Client, Method};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Pause between two registrations. About 80 puts per second, with gets,
/// completes and deletes in between, keeps the alerts and the HTTP
/// histograms busy on two cores without starving Prometheus.
const STEP_PAUSE: Duration = Duration::from_millis(10);

/// A webhook endpoint on a loopback port that responds to alerts in turn with
/// 2xx, 2xx with a new interval, 410 and 500, so every delivery result
/// except `failed` occurs.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Binds an ephemeral loopback port and serves `POST /alert`.
    pub async fn start() -> WebhookReceiver {
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        let app = Router::new().route(
            "/alert",
            post(move || {
                let counter = Arc::clone(&counter);
                async move { answer_alert(counter.fetch_add(1, Ordering::Relaxed)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook receiver on loopback");
        let addr = listener.local_addr().expect("read the webhook address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            addr,
            received,
            task,
        }
    }

    /// Returns the URL to pass as `--webhook`.
    pub fn url(&self) -> String {
        format!("http://{}/alert", self.addr)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer_alert(sequence: u64) -> Response {
    match sequence % 10 {
        0 => StatusCode::GONE.into_response(),
        1 => (StatusCode::OK, r#"{"every": "150ms"}"#).into_response(),
        2 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// Responses of one load run, by status, and the transport errors.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Returns the responses with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

/// Sends puts, gets, completes and deletes to `base_url` for `duration`.
///
/// Every id gets a 100 ms interval and at most 3 alerts. A quarter of them
/// is completed before the first alert, a quarter after two alerts, and the
/// rest alert until they expire, unless the webhook halts or reschedules
/// them. Some requests are invalid or go to an unknown route, so 4xx
/// statuses show up too.
pub async fn generate(base_url: &str, duration: Duration) -> LoadReport {
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the load client");
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let mut completions = JoinSet::new();
    let deadline = Instant::now() + duration;

    let mut step: u64 = 0;
    while Instant::now() < deadline {
        let key_url = |n: u64| format!("{base_url}/v1/keys/load-{n}");
        send(
            &client,
            Method::PUT,
            &key_url(step),
            Some(registration(step)),
            &report,
        )
        .await;

        let complete_after = match step % 4 {
            0 => Some(Duration::from_millis(30)),
            1 => Some(Duration::from_millis(250)),
            _ => None,
        };
        if let Some(delay) = complete_after {
            let client = client.clone();
            let report = Arc::clone(&report);
            let url = format!("{}/complete", key_url(step));
            completions.spawn(async move {
                tokio::time::sleep(delay).await;
                send(&client, Method::POST, &url, None, &report).await;
            });
        }

        if step.is_multiple_of(3) && step >= 1 {
            send(&client, Method::GET, &key_url(step - 1), None, &report).await;
        }
        if step.is_multiple_of(7) && step >= 2 {
            send(&client, Method::DELETE, &key_url(step - 2), None, &report).await;
        }
        if step.is_multiple_of(50) {
            let invalid = r#"{"every": "0s"}"#.to_string();
            send(
                &client,
                Method::PUT,
                &key_url(step + 1_000_000),
                Some(invalid),
                &report,
            )
            .await;
        }
        if step.is_multiple_of(100) {
            let unknown = format!("{base_url}/v1/unknown");
            send(&client, Method::GET, &unknown, None, &report).await;
        }

        step += 1;
        tokio::time::sleep(STEP_PAUSE).await;
    }

    while completions.join_next().await.is_some() {}
    let report = report.lock().unwrap_or_else(|poison| poison.into_inner());
    report.clone()
}

/// Returns the body of the put of step `step`.
fn registration(step: u64) -> String {
    let first_run = if step.is_multiple_of(5) {
        r#", "first_run": "immediately""#
    } else {
        ""
    };
    format!(r#"{{"payload": {{"n": {step}}}, "every": "100ms", "max_alerts": 3{first_run}}}"#)
}

async fn send(
    client: &Client,
    method: Method,
    url: &str,
    body: Option<String>,
    report: &Mutex<LoadReport>,
) {
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let outcome = request.send().await;

    let mut report = report.lock().unwrap_or_else(|poison| poison.into_inner());
    match outcome {
        Ok(response) => {
            *report
                .statuses
                .entry(response.status().as_u16())
                .or_default() += 1
        }
        Err(error) => {
            report.transport_errors += 1;
            if report.first_error.is_none() {
                report.first_error = Some(format!("{method} {url}: {error}"));
            }
        }
    }
}
