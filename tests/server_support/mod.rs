//! A watchdog server on a loopback port, and a client for it.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::net::SocketAddr;
use std::time::Duration;

use keywheel::server::{ServeConfig, Server, Watchdog};
use keywheel::{Manager, State};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Returns a config for tests: an ephemeral loopback port and a small manager.
pub fn test_config() -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        shards: 2,
        workers: 4,
        drain_grace: Duration::from_secs(2),
        data_dir: None,
        ..ServeConfig::default()
    }
}

/// A running server and a client that talks to it over TCP.
pub struct TestServer {
    pub addr: SocketAddr,
    pub manager: Manager<Watchdog>,
    pub client: Client,
    /// Bearer token that [`TestServer::send`] adds to every request, if any.
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A response: status, content type, headers and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    /// Parses the body as JSON, failing the test with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {:?}", self.text))
    }

    /// Checks that this is a JSON error with the status and field given.
    pub fn assert_error(&self, status: StatusCode, field: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        assert!(
            self.content_type.starts_with("application/json"),
            "error content type {:?} in {self:?}",
            self.content_type
        );
        let body = self.json();
        assert_eq!(body["field"], field, "field of {self:?}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "empty error message in {self:?}");
    }
}

impl TestServer {
    /// Starts a server with [`test_config`].
    pub async fn start() -> TestServer {
        TestServer::start_with(test_config()).await
    }

    /// Starts a server with `config` and waits until its manager is ready.
    pub async fn start_with(config: ServeConfig) -> TestServer {
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr();
        let manager = server.manager().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        manager.ready().await;

        let client = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client builds");
        TestServer {
            addr,
            manager,
            client,
            token: None,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with an optional raw body and JSON content type,
    /// and the server's token if it has one.
    pub async fn send(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        self.send_as(self.token.as_deref(), method, path, body)
            .await
    }

    /// Sends a request with `token` as the bearer token, or none.
    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request is answered");
        read(response).await
    }

    pub async fn put(&self, id: &str, body: &str) -> Answer {
        self.send(Method::PUT, &format!("/v1/keys/{id}"), Some(body))
            .await
    }

    pub async fn get(&self, id: &str) -> Answer {
        self.send(Method::GET, &format!("/v1/keys/{id}"), None)
            .await
    }

    pub async fn complete(&self, id: &str) -> Answer {
        self.send(Method::POST, &format!("/v1/keys/{id}/complete"), None)
            .await
    }

    pub async fn delete(&self, id: &str) -> Answer {
        self.send(Method::DELETE, &format!("/v1/keys/{id}"), None)
            .await
    }

    /// Returns the value of the sample of `name` whose labels include every
    /// `key="value"` of `labels`, or 0 if there is none.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.send(Method::GET, "/metrics", None).await.text;
        metric_value(&text, name, labels)
    }

    /// Starts the drain, as SIGTERM does, without waiting for it.
    pub fn begin_drain(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and checks that it drained cleanly.
    pub async fn stop(mut self) {
        self.begin_drain();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10 s")
            .expect("server task does not panic");
        assert!(result.is_ok(), "server run failed: {result:?}");
        assert_eq!(
            self.manager.state(),
            State::Stopped,
            "manager state after stop"
        );
    }
}

/// Reads status, content type, headers and body of a response.
pub async fn read(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.text().await.expect("body is readable");
    Answer {
        status,
        content_type,
        headers,
        text,
    }
}

/// Returns the value of the sample of `name` in Prometheus text whose
/// labels include every `key="value"` of `labels`, or 0 if there is none.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let with_labels = format!("{name}{{");
    let without_labels = format!("{name} ");
    text.lines()
        .filter(|line| line.starts_with(&with_labels) || line.starts_with(&without_labels))
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
