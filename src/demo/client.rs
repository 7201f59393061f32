//! The demo's HTTP client: one pooled reqwest client whose requests share a
//! fixed number of in-flight slots, with one method per watchdog route.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Maximum wait for one response. The server normally responds within
/// milliseconds, so a request that takes this long is reported as failed
/// instead of stalling the demo.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum length, in characters, of a response body quoted in an error.
const QUOTED_BODY_CHARS: usize = 200;

/// A client of one watchdog server.
pub(super) struct WatchdogClient {
    http: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base_url: String,
    /// One permit per request allowed in flight.
    slots: Semaphore,
    requests: AtomicU64,
}

/// The parts of a `POST /v1/keys/{id}/complete` response the demo checks.
pub(super) struct Completion {
    /// Alerts fired for the id before it was completed.
    pub alerts: u64,
    /// The payload stored at registration.
    pub payload: Value,
}

impl WatchdogClient {
    /// Builds a client of the server at `address` with at most
    /// `concurrency` requests in flight.
    pub(super) fn new(address: SocketAddr, concurrency: usize) -> anyhow::Result<Self> {
        // The server is on loopback, so no proxy from the environment may
        // see the traffic.
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(concurrency)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("failed to build the HTTP client")?;

        Ok(WatchdogClient {
            http,
            base_url: format!("http://{address}"),
            slots: Semaphore::new(concurrency),
            requests: AtomicU64::new(0),
        })
    }

    /// Returns how many requests were sent so far, failed ones included.
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Registers `id` with `PUT /v1/keys/{id}` and returns when the request
    /// was sent. Anything but 201 is an error.
    pub(super) async fn register(&self, id: &str, body: &Value) -> anyhow::Result<Instant> {
        let path = format!("/v1/keys/{id}");
        let exchange = self.send(Method::PUT, &path, Some(body)).await?;
        exchange.expect_status(&Method::PUT, &path, StatusCode::CREATED)?;
        Ok(exchange.sent_at)
    }

    /// Completes `id` with `POST /v1/keys/{id}/complete`; anything but 200
    /// with an `alerts` count is an error.
    pub(super) async fn complete(&self, id: &str) -> anyhow::Result<Completion> {
        let path = format!("/v1/keys/{id}/complete");
        let exchange = self.send(Method::POST, &path, None).await?;
        exchange.expect_status(&Method::POST, &path, StatusCode::OK)?;

        let text = exchange.text;
        let mut body = parse_json(&Method::POST, &path, &text)?;
        let alerts = read_alerts(&Method::POST, &path, &body)?;
        let payload = body
            .get_mut("payload")
            .map(Value::take)
            .ok_or_else(|| anyhow!("POST {path} returned no `payload` field: {}", quote(&text)))?;
        Ok(Completion { alerts, payload })
    }

    /// Reads the alert count of `id` with `GET /v1/keys/{id}`: `None` for a
    /// 404, an error for any other status but 200.
    pub(super) async fn alerts(&self, id: &str) -> anyhow::Result<Option<u64>> {
        let path = format!("/v1/keys/{id}");
        let exchange = self.send(Method::GET, &path, None).await?;
        if exchange.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        exchange.expect_status(&Method::GET, &path, StatusCode::OK)?;

        let body = parse_json(&Method::GET, &path, &exchange.text)?;
        read_alerts(&Method::GET, &path, &body).map(Some)
    }

    /// Reads `GET /metrics`: the Prometheus text format.
    pub(super) async fn metrics(&self) -> anyhow::Result<String> {
        let path = "/metrics";
        let exchange = self.send(Method::GET, path, None).await?;
        exchange.expect_status(&Method::GET, path, StatusCode::OK)?;
        Ok(exchange.text)
    }

    /// Sends one request once a slot is free and returns its status and body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Exchange> {
        let _slot = self
            .slots
            .acquire()
            .await
            .context("the request slots were closed")?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent_at = Instant::now();

        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path} failed"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {path} failed while reading the response body"))?;
        Ok(Exchange {
            sent_at,
            status,
            text,
        })
    }
}

/// One request and its response.
struct Exchange {
    /// When the request left the queue of free slots.
    sent_at: Instant,
    status: StatusCode,
    text: String,
}

impl Exchange {
    fn expect_status(
        &self,
        method: &Method,
        path: &str,
        expected: StatusCode,
    ) -> anyhow::Result<()> {
        if self.status != expected {
            bail!(
                "{method} {path} returned {}, expected {expected}: {}",
                self.status,
                quote(&self.text)
            );
        }
        Ok(())
    }
}

fn parse_json(method: &Method, path: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text)
        .with_context(|| format!("{method} {path} returned invalid JSON: {}", quote(text)))
}

fn read_alerts(method: &Method, path: &str, body: &Value) -> anyhow::Result<u64> {
    body.get("alerts")
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("{method} {path} returned no numeric `alerts` field: {body}"))
}

/// Quotes a response body for an error message, cut to a readable length.
fn quote(text: &str) -> String {
    if text.chars().count() <= QUOTED_BODY_CHARS {
        return format!("{text:?}");
    }
    let cut: String = text.chars().take(QUOTED_BODY_CHARS).collect();
    format!("{cut:?}...")
}
