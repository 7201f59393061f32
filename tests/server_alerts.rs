//! Overdue alerts over real TCP: alerts while a callback is missing, none
//! when it arrives in time, expiry after max_alerts, and webhook steering.

#![cfg(feature = "server")]

mod server_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use axum::{Json, Router};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server_support::{test_config, TestServer};

/// Polls `GET /v1/keys/{id}` until `alerts` reaches `expected` or 5 s pass,
/// and returns the last body.
async fn wait_for_alerts(server: &TestServer, id: &str, expected: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = server.get(id).await.json();
        let alerts = body["alerts"].as_u64().unwrap_or(0);
        if alerts >= expected || tokio::time::Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `id` is gone (404) or 5 s pass; returns whether it is gone.
async fn wait_until_gone(server: &TestServer, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if server.get(id).await.status == StatusCode::NOT_FOUND {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_callback_raises_alerts() {
    let server = TestServer::start().await;
    let before = keywheel::server::alerts_total();
    server
        .put(
            "late-1",
            r#"{"payload": {"to": "billing"}, "every": "100ms"}"#,
        )
        .await;

    let body = wait_for_alerts(&server, "late-1", 2).await;
    let alerts = body["alerts"].as_u64().unwrap_or(0);
    assert!(alerts >= 2, "alerts after several intervals: {body}");
    assert_eq!(body["last_outcome"], "continue", "{body}");
    let pending = body["pending_for_ms"].as_u64().unwrap_or(0);
    assert!(
        pending >= 200,
        "pending_for_ms {pending} after two alerts of 100 ms"
    );

    let raised = keywheel::server::alerts_total() - before;
    assert!(
        raised >= alerts,
        "process-wide alerts {raised} cover the entry's {alerts}"
    );

    let completed = server.complete("late-1").await;
    assert_eq!(completed.status, StatusCode::OK, "{completed:?}");
    let reported = completed.json()["alerts"].as_u64().unwrap_or(0);
    assert!(
        reported >= alerts,
        "complete reports {reported} alerts, GET saw {alerts} before"
    );
    assert_eq!(completed.json()["payload"], json!({"to": "billing"}));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_in_time_raises_no_alert() {
    let server = TestServer::start().await;
    server.put("on-time", r#"{"every": "2s"}"#).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let completed = server.complete("on-time").await;
    assert_eq!(completed.status, StatusCode::OK, "{completed:?}");
    assert_eq!(
        completed.json()["alerts"],
        0,
        "completed before the due time"
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        server.get("on-time").await.status,
        StatusCode::NOT_FOUND,
        "no entry comes back after completion"
    );
    assert_eq!(server.manager.len(), 0, "entries after completion");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_immediately_alerts_at_once() {
    let server = TestServer::start().await;
    server
        .put("urgent", r#"{"every": "1h", "first_run": "immediately"}"#)
        .await;

    let body = wait_for_alerts(&server, "urgent", 1).await;
    assert_eq!(
        body["alerts"], 1,
        "one alert right away, the next in an hour: {body}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entry_expires_after_max_alerts() {
    let server = TestServer::start().await;
    server
        .put("gives-up", r#"{"every": "50ms", "max_alerts": 2}"#)
        .await;
    server.put("keeps-going", r#"{"every": "1h"}"#).await;

    assert!(
        wait_until_gone(&server, "gives-up").await,
        "the entry expires after two alerts"
    );
    assert_eq!(server.manager.len(), 1, "only the other entry remains");
    server
        .complete("gives-up")
        .await
        .assert_error(StatusCode::NOT_FOUND, "id");

    let metrics = server
        .send(reqwest::Method::GET, "/metrics", None)
        .await
        .text;
    let expired_line = metrics
        .lines()
        .find(|line| line.starts_with("keywheel_watchdog_expired_total{"))
        .unwrap_or_default();
    let expired: f64 = expired_line
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    assert!(expired >= 1.0, "expired counter line {expired_line:?}");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_resets_alert_count() {
    let server = TestServer::start().await;
    server.put("reset", r#"{"every": "50ms"}"#).await;
    let body = wait_for_alerts(&server, "reset", 1).await;
    assert!(body["alerts"].as_u64().unwrap_or(0) >= 1, "{body}");

    server.put("reset", r#"{"every": "1h"}"#).await;
    let body = server.get("reset").await.json();
    assert_eq!(body["alerts"], 0, "a replaced entry starts afresh: {body}");

    server.stop().await;
}

/// What the mock webhook received.
type Received = Arc<Mutex<Vec<Value>>>;

/// Starts a webhook on a loopback port that responds by id: `gone-*` gets
/// 410, `slower-*` gets a new interval of one hour, the rest 200.
async fn start_webhook() -> (String, Received) {
    let received: Received = Arc::default();
    let log = received.clone();
    let app = Router::new().route(
        "/alerts",
        post(move |Json(alert): Json<Value>| {
            let log = log.clone();
            async move {
                let id = alert["id"].as_str().unwrap_or_default().to_string();
                log.lock().expect("lock").push(alert);
                if id.starts_with("gone-") {
                    (AxumStatus::GONE, Json(json!({})))
                } else if id.starts_with("slower-") {
                    (AxumStatus::OK, Json(json!({"every": "1h"})))
                } else {
                    (AxumStatus::OK, Json(json!({"ok": true})))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("webhook binds");
    let url = format!("http://{}/alerts", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_steer_entries() {
    let (url, received) = start_webhook().await;
    let mut config = test_config();
    config.webhook = Some(url);
    let server = TestServer::start_with(config).await;

    let body = r#"{"payload": {"n": 5}, "every": "100ms", "first_run": "immediately"}"#;
    for id in ["plain-1", "gone-1", "slower-1"] {
        assert_eq!(
            server.put(id, body).await.status,
            StatusCode::CREATED,
            "put {id}"
        );
    }

    let plain = wait_for_alerts(&server, "plain-1", 3).await;
    assert!(
        plain["alerts"].as_u64().unwrap_or(0) >= 3,
        "2xx keeps alerting: {plain}"
    );
    assert!(
        wait_until_gone(&server, "gone-1").await,
        "410 halts the entry"
    );

    let slower = server.get("slower-1").await.json();
    assert_eq!(
        slower["every"], "1h",
        "a new interval in the answer: {slower}"
    );
    assert_eq!(
        slower["alerts"], 1,
        "one alert before the new interval: {slower}"
    );

    let alerts = received.lock().expect("lock").clone();
    let first_plain = alerts
        .iter()
        .find(|alert| alert["id"] == "plain-1")
        .expect("the webhook received plain-1");
    assert_eq!(first_plain["payload"], json!({"n": 5}), "{first_plain}");
    assert_eq!(first_plain["alerts"], 1, "{first_plain}");
    assert!(first_plain["pending_for_ms"].is_u64(), "{first_plain}");
    assert!(first_plain["pending_for"].is_string(), "{first_plain}");
    let gone_posts = alerts
        .iter()
        .filter(|alert| alert["id"] == "gone-1")
        .count();
    assert_eq!(gone_posts, 1, "no alert after 410");

    server.stop().await;
}
