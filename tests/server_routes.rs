//! The success path and the 404s of every route, over real TCP.

#![cfg(feature = "server")]

mod server_support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server_support::TestServer;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_then_replaces() {
    let server = TestServer::start().await;

    let created = server
        .put("order-1", r#"{"payload": {"n": 1}, "every": "30s"}"#)
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "first put: {created:?}"
    );
    assert_eq!(
        created.json(),
        json!({"id": "order-1", "result": "created"})
    );

    let replaced = server
        .put("order-1", r#"{"payload": {"n": 2}, "every": "1m"}"#)
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "second put: {replaced:?}");
    assert_eq!(replaced.json()["result"], "replaced");

    let got = server.get("order-1").await;
    assert_eq!(got.status, StatusCode::OK, "get: {got:?}");
    assert_eq!(
        got.json()["payload"],
        json!({"n": 2}),
        "the replacing payload"
    );
    assert_eq!(got.json()["every"], "1m", "the replacing interval");
    assert_eq!(server.manager.len(), 1, "one entry after a replace");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_leaves_existing_entry() {
    let server = TestServer::start().await;
    server
        .put("job:7", r#"{"payload": "first", "every": "30s"}"#)
        .await;

    let unchanged = server
        .send(
            Method::PUT,
            "/v1/keys/job:7?if_absent=true",
            Some(r#"{"payload": "second", "every": "5s"}"#),
        )
        .await;
    assert_eq!(unchanged.status, StatusCode::OK, "{unchanged:?}");
    assert_eq!(unchanged.json()["result"], "unchanged");

    let got = server.get("job:7").await.json();
    assert_eq!(got["payload"], "first", "put_new must not replace");
    assert_eq!(got["every"], "30s", "put_new must not change the interval");

    let created = server
        .send(
            Method::PUT,
            "/v1/keys/job:8?if_absent=true",
            Some(r#"{"every": "5s"}"#),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_returns_payload_and_metadata() {
    let server = TestServer::start().await;
    server
        .put(
            "A.b_c-9",
            r#"{"payload": {"callback": "https://example.test/cb", "tries": [1, 2]}, "every": "1h", "max_alerts": 3}"#,
        )
        .await;

    let got = server.get("A.b_c-9").await;
    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert!(
        got.content_type.starts_with("application/json"),
        "content type {:?}",
        got.content_type
    );
    let body = got.json();
    assert_eq!(body["id"], "A.b_c-9");
    assert_eq!(
        body["payload"],
        json!({"callback": "https://example.test/cb", "tries": [1, 2]})
    );
    assert_eq!(body["every"], "1h");
    assert_eq!(body["alerts"], 0);
    assert_eq!(body["max_alerts"], 3);
    assert_eq!(body["last_outcome"], json!(null), "no perform ran yet");

    let pending = body["pending_for_ms"]
        .as_u64()
        .expect("pending_for_ms is a number");
    assert!(
        pending < 5_000,
        "pending_for_ms {pending} right after the put"
    );
    let next_due = body["next_due_in_ms"]
        .as_u64()
        .expect("next_due_in_ms is a number");
    assert!(
        (3_590_000..=3_600_000).contains(&next_due),
        "next_due_in_ms {next_due} for an interval of one hour"
    );
    let registered_at = body["registered_at"].as_str().unwrap_or_default();
    assert!(
        registered_at.ends_with('Z'),
        "registered_at {registered_at:?}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_then_404() {
    let server = TestServer::start().await;
    server.put("gone", r#"{"every": "30s"}"#).await;

    let deleted = server.delete("gone").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    assert!(deleted.text.is_empty(), "204 has no body: {deleted:?}");
    assert_eq!(server.manager.len(), 0, "entries after delete");

    server
        .delete("gone")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");
    server
        .get("gone")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_returns_payload_then_404() {
    let server = TestServer::start().await;
    server
        .put("cb-1", r#"{"payload": {"order": 17}, "every": "10s"}"#)
        .await;

    let completed = server.complete("cb-1").await;
    assert_eq!(completed.status, StatusCode::OK, "{completed:?}");
    let body = completed.json();
    assert_eq!(body["id"], "cb-1");
    assert_eq!(body["payload"], json!({"order": 17}));
    assert_eq!(body["alerts"], 0, "completed before the first due time");
    let pending = body["pending_for_ms"]
        .as_u64()
        .expect("pending_for_ms is a number");
    assert!(pending < 5_000, "pending_for_ms {pending}");
    assert_eq!(server.manager.len(), 0, "a completed entry is removed");

    server
        .complete("cb-1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");
    server
        .get("cb-1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");
    server
        .complete("never-registered")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_200() {
    let server = TestServer::start().await;

    let health = server.send(Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");

    let ready = server.send(Method::GET, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{ready:?}");
    assert_eq!(ready.json()["status"], "ready");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_help_and_routes() {
    let server = TestServer::start().await;
    server
        .put("metrics-probe-4711", r#"{"every": "30s"}"#)
        .await;
    server.get("metrics-probe-4711").await;

    let answer = server.send(Method::GET, "/metrics", None).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert!(
        answer.content_type.starts_with("text/plain"),
        "content type {:?}",
        answer.content_type
    );
    let text = &answer.text;
    for expected in [
        "# HELP keywheel_performs_total",
        "# HELP keywheel_perform_lateness_seconds",
        "# HELP keywheel_watchdog_alerts_total",
        "# HELP keywheel_watchdog_registered_total",
        "# HELP keywheel_watchdog_completed_total",
        "# HELP keywheel_watchdog_expired_total",
        "# HELP keywheel_http_requests_total",
        "keywheel_http_requests_total{route=\"/v1/keys/{id}\",method=\"PUT\",status=\"201\"}",
        "keywheel_http_request_duration_seconds_bucket{route=\"/v1/keys/{id}\",method=\"PUT\",status=\"201\",le=\"0.001\"}",
        "keywheel_watchdog_registered_total{manager=\"watchdog\"}",
    ] {
        assert!(text.contains(expected), "/metrics lacks {expected:?}");
    }
    assert!(
        !text.contains("metrics-probe-4711"),
        "an id must never appear in /metrics"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_route_and_method_are_json() {
    let server = TestServer::start().await;

    server
        .send(Method::GET, "/v2/keys/a", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "path");
    server
        .send(Method::GET, "/v1/keys/", None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "path");
    server
        .send(Method::PATCH, "/v1/keys/a", Some("{}"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method");
    server
        .send(Method::GET, "/v1/keys/a/complete", None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method");

    let metrics = server.send(Method::GET, "/metrics", None).await.text;
    assert!(
        metrics.contains(
            "keywheel_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
        ),
        "unmatched requests are counted under one label"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_and_closes_listener() {
    let server = TestServer::start().await;
    server.put("drain-me", r#"{"every": "30s"}"#).await;
    let addr = server.addr;

    server.stop().await;

    let connect = tokio::net::TcpStream::connect(addr).await;
    assert!(connect.is_err(), "the listener is closed after stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_listener_drains() {
    let mut config = server_support::test_config();
    config.drain_delay = Duration::from_millis(1500);
    let mut server = TestServer::start_with(config).await;
    let addr = server.addr;

    server.begin_drain();
    let started = std::time::Instant::now();
    let mut readiness = None;
    while started.elapsed() < Duration::from_secs(1) {
        // A new connection each time, as a load balancer's health check
        // may open: the listener must still accept it.
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client builds");
        let answer = server_support::read(
            client
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .expect("the listener accepts during the drain delay"),
        )
        .await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            readiness = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let readiness = readiness.expect("/readyz turns 503 once the drain begins");
    assert_eq!(readiness.json()["status"], "draining", "{readiness:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "/readyz turned 503 only after {:?}",
        started.elapsed()
    );

    let put = server.put("late-1", r#"{"every": "1h"}"#).await;
    assert_eq!(
        put.status,
        StatusCode::CREATED,
        "other routes keep serving during the drain delay: {put:?}"
    );

    server.stop().await;
    let connect = tokio::net::TcpStream::connect(addr).await;
    assert!(connect.is_err(), "the listener is closed after the drain");
}
