//! Webhook deliveries that fail, over real TCP on loopback: a receiver that
//! times out, a refused connection, an HTTP 500, a 2xx with invalid JSON, a
//! reply that is not HTTP, and a slow receiver that takes every delivery
//! slot. Each case checks `keywheel_watchdog_webhook_total{result=...}`
//! and the entry's state.
//!
//! The metrics recorder is shared by every server of this process, so the
//! tests of this file take turns (`SERIAL`) and compare counter deltas.

#![cfg(feature = "server")]

mod server_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use axum::{Json, Router};
use reqwest::StatusCode;
use serde_json::{json, Value};
use server_support::{test_config, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

const WEBHOOK_TOTAL: &str = "keywheel_watchdog_webhook_total";
const EXPIRED_TOTAL: &str = "keywheel_watchdog_expired_total";

/// Every webhook result label.
const RESULTS: [&str; 6] = [
    "continue",
    "reschedule",
    "halt",
    "rejected",
    "failed",
    "skipped",
];

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Counter values of every webhook result, and of expired entries.
#[derive(Debug, Clone, PartialEq)]
struct Counts {
    webhook: Vec<(&'static str, f64)>,
    expired: f64,
}

impl Counts {
    async fn read(server: &TestServer) -> Counts {
        let mut webhook = Vec::new();
        for result in RESULTS {
            let value = server
                .metric(
                    WEBHOOK_TOTAL,
                    &[("manager", "watchdog"), ("result", result)],
                )
                .await;
            webhook.push((result, value));
        }
        let expired = server
            .metric(EXPIRED_TOTAL, &[("manager", "watchdog")])
            .await;
        Counts { webhook, expired }
    }

    /// Returns how much each counter grew since `before`, leaving out zeros.
    fn since(&self, before: &Counts) -> (Vec<(&'static str, f64)>, f64) {
        let grown = self
            .webhook
            .iter()
            .zip(&before.webhook)
            .map(|((result, now), (_, then))| (*result, now - then))
            .filter(|(_, delta)| *delta != 0.0)
            .collect();
        (grown, self.expired - before.expired)
    }
}

/// Starts a server whose alerts go to `url`, with a short delivery timeout.
async fn start_server(url: String, webhook_timeout: Duration) -> TestServer {
    let mut config = test_config();
    config.webhook = Some(url);
    config.webhook_timeout = webhook_timeout;
    config.call_timeout = Duration::from_secs(3);
    TestServer::start_with(config).await
}

/// Serves `app` on a loopback port and returns the URL of `/alerts`.
async fn serve_receiver(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let url = format!("http://{}/alerts", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Polls until `id` is gone (404) or 10 s pass; returns whether it is gone.
async fn wait_until_gone(server: &TestServer, id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if server.get(id).await.status == StatusCode::NOT_FOUND {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Registers an entry that alerts at once, every 100 ms, three times.
const THREE_ALERTS: &str =
    r#"{"payload": {"order": 1}, "every": "100ms", "first_run": "immediately", "max_alerts": 3}"#;

/// Registers `id` with [`THREE_ALERTS`], checks that it alerts and then
/// expires, and returns the counter growth seen meanwhile.
async fn run_until_expired(server: &TestServer, id: &str) -> (Vec<(&'static str, f64)>, f64) {
    let before = Counts::read(server).await;
    let put = server.put(id, THREE_ALERTS).await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen_alert = false;
    while !seen_alert && tokio::time::Instant::now() < deadline {
        let answer = server.get(id).await;
        if answer.status != StatusCode::OK {
            break;
        }
        let body = answer.json();
        seen_alert = body["alerts"].as_u64().unwrap_or(0) >= 1;
        if seen_alert {
            assert_eq!(
                body["last_outcome"], "continue",
                "a failed delivery keeps the entry going: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert!(
        wait_until_gone(server, id).await,
        "{id} expires after max_alerts alerts"
    );
    let after = Counts::read(server).await;
    after.since(&before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_delivery_counts_as_failed() {
    let _turn = SERIAL.lock().await;
    let app = Router::new().route(
        "/alerts",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            AxumStatus::OK
        }),
    );
    let url = serve_receiver(app).await;
    let server = start_server(url, Duration::from_millis(200)).await;

    let (grown, expired) = run_until_expired(&server, "timeout-1").await;

    assert_eq!(grown, vec![("failed", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_counts_as_failed() {
    let _turn = SERIAL.lock().await;
    // A port that was just bound and closed: connecting to it is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port to close");
    let url = format!("http://{}/alerts", closed.local_addr().expect("address"));
    drop(closed);
    let server = start_server(url, Duration::from_millis(500)).await;

    let (grown, expired) = run_until_expired(&server, "refused-1").await;

    assert_eq!(grown, vec![("failed", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_500_counts_as_rejected() {
    let _turn = SERIAL.lock().await;
    let app = Router::new().route(
        "/alerts",
        post(|| async { (AxumStatus::INTERNAL_SERVER_ERROR, "database is down") }),
    );
    let url = serve_receiver(app).await;
    let server = start_server(url, Duration::from_millis(500)).await;

    let (grown, expired) = run_until_expired(&server, "status-500").await;

    assert_eq!(grown, vec![("rejected", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_reply_continues() {
    let _turn = SERIAL.lock().await;
    // A 2xx accepts the alert whatever its body; only a valid `every`
    // would change the interval.
    let app = Router::new().route(
        "/alerts",
        post(|| async {
            (
                [("content-type", "application/json")],
                "{\"every\": \"5m\", oops",
            )
        }),
    );
    let url = serve_receiver(app).await;
    let server = start_server(url, Duration::from_millis(500)).await;

    let (grown, expired) = run_until_expired(&server, "bad-json").await;

    assert_eq!(grown, vec![("continue", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_every_reply_counts_as_rejected() {
    let _turn = SERIAL.lock().await;
    let app = Router::new().route(
        "/alerts",
        post(|| async { Json(json!({"every": "whenever"})) }),
    );
    let url = serve_receiver(app).await;
    let server = start_server(url, Duration::from_millis(500)).await;

    let (grown, expired) = run_until_expired(&server, "bad-every").await;

    assert_eq!(grown, vec![("rejected", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_reply_counts_as_failed() {
    let _turn = SERIAL.lock().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let url = format!("http://{}/alerts", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"\x00\x01garbage, not HTTP\r\n\r\n").await;
            });
        }
    });
    let server = start_server(url, Duration::from_millis(500)).await;

    let (grown, expired) = run_until_expired(&server, "garbage-1").await;

    assert_eq!(grown, vec![("failed", 3.0)], "webhook results");
    assert_eq!(expired, 1.0, "expired entries");
    server.stop().await;
}

/// Polls `id` until its alert count reaches `expected` or `within` passes,
/// and returns the last count.
async fn wait_for_alerts(server: &TestServer, id: &str, expected: u64, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let alerts = server.get(id).await.json()["alerts"].as_u64().unwrap_or(0);
        if alerts >= expected || tokio::time::Instant::now() > deadline {
            return alerts;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_webhook_leaves_other_ids_alone() {
    let _turn = SERIAL.lock().await;
    // The receiver keeps every alert of `slow-*` ids waiting until the
    // delivery times out, and responds to the others at once.
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let app = Router::new().route(
        "/alerts",
        post(move |Json(alert): Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                if alert["id"].as_str().unwrap_or("").starts_with("slow-") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                AxumStatus::OK
            }
        }),
    );
    let url = serve_receiver(app).await;
    let mut config = test_config();
    config.webhook = Some(url);
    config.webhook_timeout = Duration::from_millis(1500);
    config.call_timeout = Duration::from_secs(3);
    config.workers = 4;
    config.webhook_concurrency = Some(1);
    let server = TestServer::start_with(config).await;
    let before = Counts::read(&server).await;

    // More slow entries than workers: without the bound on deliveries they
    // would occupy every worker for 1.5 s. With it, one takes the only slot.
    for n in 1..=6 {
        let id = format!("slow-{n}");
        let slow = server
            .put(&id, r#"{"every": "1h", "first_run": "immediately"}"#)
            .await;
        assert_eq!(slow.status, StatusCode::CREATED, "{id}: {slow:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        received.load(Ordering::Relaxed),
        1,
        "deliveries in flight with a limit of 1"
    );

    let started = tokio::time::Instant::now();
    let fast_body = r#"{"every": "100ms", "first_run": "immediately"}"#;
    for id in ["fast-1", "fast-2"] {
        assert_eq!(server.put(id, fast_body).await.status, StatusCode::CREATED);
    }
    let limited = server
        .put(
            "limited-1",
            r#"{"every": "100ms", "first_run": "immediately", "max_alerts": 2}"#,
        )
        .await;
    assert_eq!(limited.status, StatusCode::CREATED, "{limited:?}");

    let alerts = wait_for_alerts(&server, "fast-1", 3, Duration::from_secs(1)).await;
    assert!(
        alerts >= 3,
        "fast-1 alerts every 100 ms while the slot is taken, got {alerts}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "three alerts took {:?}, so they waited for the slow delivery",
        started.elapsed()
    );
    assert!(
        wait_until_gone(&server, "limited-1").await,
        "an entry whose alerts were all skipped still expires after max_alerts"
    );

    let completed = server.complete("fast-2").await;
    assert_eq!(completed.status, StatusCode::OK, "{completed:?}");
    let during = Counts::read(&server).await.since(&before);
    let skipped = during
        .0
        .iter()
        .find(|(result, _)| *result == "skipped")
        .map_or(0.0, |(_, delta)| *delta);
    assert!(
        skipped >= 8.0,
        "skipped deliveries (five slow entries, then fast ones) while the slot is taken: {during:?}"
    );
    assert!(during.1 >= 1.0, "limited-1 counted as expired: {during:?}");

    // Once the slow delivery has timed out, the next due alert of fast-1
    // is sent.
    let delivered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let now = Counts::read(&server).await.since(&before);
            let continued = now.0.iter().any(|(result, _)| *result == "continue");
            let failed = now.0.iter().any(|(result, _)| *result == "failed");
            if continued && failed {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        delivered.is_ok(),
        "after the slow delivery timed out (failed), fast-1's alerts go out again (continue)"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_webhook_never_delays_completion() {
    let _turn = SERIAL.lock().await;
    let received = Arc::new(AtomicU64::new(0));
    let seen = received.clone();
    let app = Router::new().route(
        "/alerts",
        post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(2)).await;
                AxumStatus::OK
            }
        }),
    );
    let url = serve_receiver(app).await;
    let mut config = test_config();
    config.webhook = Some(url);
    config.webhook_timeout = Duration::from_secs(3);
    config.call_timeout = Duration::from_secs(4);
    let server = TestServer::start_with(config).await;
    let before = Counts::read(&server).await;

    let put = server
        .put(
            "wait-1",
            r#"{"payload": {"order": 9}, "every": "1h", "first_run": "immediately"}"#,
        )
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        received.load(Ordering::Relaxed),
        1,
        "the alert's delivery is in flight"
    );

    let started = tokio::time::Instant::now();
    let got = server.get("wait-1").await;
    let completed = server.complete("wait-1").await;
    let took = started.elapsed();

    assert_eq!(got.status, StatusCode::OK, "{got:?}");
    assert_eq!(completed.status, StatusCode::OK, "{completed:?}");
    assert_eq!(completed.json()["alerts"], 1, "{completed:?}");
    assert!(
        took < Duration::from_millis(500),
        "a GET and a completion took {took:?} while the 2 s delivery was in flight"
    );

    // The delivery still finishes and is counted, and its response does not
    // bring the completed entry back.
    let counted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (grown, _) = Counts::read(&server).await.since(&before);
            if !grown.is_empty() {
                return grown;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the delivery is counted once the webhook responds");
    assert_eq!(counted, vec![("continue", 1.0)], "webhook results");
    assert_eq!(
        server.get("wait-1").await.status,
        StatusCode::NOT_FOUND,
        "completed"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_during_delivery_never_overlaps() {
    let _turn = SERIAL.lock().await;
    // The first alert waits 1.5 s and then requests a halt of the entry;
    // every later one gets a response at once.
    let received = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let app = {
        let (received, in_flight, max_in_flight) =
            (received.clone(), in_flight.clone(), max_in_flight.clone());
        Router::new().route(
            "/alerts",
            post(move || {
                let (received, in_flight, max_in_flight) =
                    (received.clone(), in_flight.clone(), max_in_flight.clone());
                async move {
                    let number = received.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    let status = if number == 0 {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        AxumStatus::GONE
                    } else {
                        AxumStatus::OK
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    status
                }
            }),
        )
    };
    let url = serve_receiver(app).await;
    let server = start_server(url, Duration::from_secs(2)).await;
    let before = Counts::read(&server).await;

    let first = server
        .put("swap-1", r#"{"every": "1h", "first_run": "immediately"}"#)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(received.load(Ordering::SeqCst), 1, "first alert in flight");

    let replaced = server
        .put(
            "swap-1",
            r#"{"every": "100ms", "first_run": "immediately"}"#,
        )
        .await;
    assert_eq!(replaced.status, StatusCode::OK, "{replaced:?}");
    let alerts = wait_for_alerts(&server, "swap-1", 2, Duration::from_secs(1)).await;
    assert!(
        alerts >= 2,
        "the new entry raises alerts while the old delivery is in flight, got {alerts}"
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "no delivery of the new entry while the old one's is in flight"
    );

    // After the old delivery's 410 response, the new entry is still there
    // and its alerts are delivered again.
    let delivered = tokio::time::timeout(Duration::from_secs(5), async {
        while received.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        delivered.is_ok(),
        "alerts of the new entry go out afterwards"
    );
    let entry = server.get("swap-1").await;
    assert_eq!(
        entry.status,
        StatusCode::OK,
        "a 410 for the replaced entry does not halt the new one: {entry:?}"
    );
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        1,
        "deliveries for one id never overlap"
    );

    let (grown, _) = Counts::read(&server).await.since(&before);
    let count = |result: &str| {
        grown
            .iter()
            .find(|(name, _)| *name == result)
            .map_or(0.0, |(_, delta)| *delta)
    };
    assert_eq!(count("halt"), 1.0, "the stale 410 is counted: {grown:?}");
    assert!(
        count("skipped") >= 1.0,
        "alerts of the new entry while the old delivery was in flight: {grown:?}"
    );
    assert!(count("continue") >= 2.0, "later deliveries: {grown:?}");
    server.stop().await;
}
