//! Bad input over real TCP: every rejection is a 4xx JSON error naming the
//! field, and the store is unchanged afterwards.

#![cfg(feature = "server")]

mod server_support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use server_support::{test_config, TestServer};

/// The entry that every bad request below tries to replace.
const KEPT: &str = "kept";
const KEPT_BODY: &str = r#"{"payload": {"version": 1}, "every": "1h"}"#;

/// Checks that only the entry `KEPT` exists, with its original payload
/// and interval, and that `fresh` was not created.
async fn assert_store_unchanged(server: &TestServer, fresh: &str, case: &str) {
    assert_eq!(server.manager.len(), 1, "entries after {case}");

    let kept = server.get(KEPT).await;
    assert_eq!(
        kept.status,
        StatusCode::OK,
        "kept entry after {case}: {kept:?}"
    );
    let body = kept.json();
    assert_eq!(
        body["payload"],
        json!({"version": 1}),
        "kept payload after {case}"
    );
    assert_eq!(body["every"], "1h", "kept interval after {case}");

    let absent = server.get(fresh).await;
    assert_eq!(
        absent.status,
        StatusCode::NOT_FOUND,
        "{fresh} after {case}: {absent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_and_change_nothing() {
    let server = TestServer::start().await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    let cases = [
        ("invalid JSON", "{\"every\": ", "body"),
        ("not an object", "[\"every\", \"1s\"]", "body"),
        ("trailing garbage", r#"{"every": "1s"} {}"#, "body"),
        ("empty body", "", "body"),
        (
            "unknown field",
            r#"{"every": "1s", "colour": "red"}"#,
            "colour",
        ),
        ("missing every", r#"{"payload": 1}"#, "every"),
        ("every of wrong type", r#"{"every": 30}"#, "every"),
        ("zero interval", r#"{"every": "0s"}"#, "every"),
        ("unparseable every", r#"{"every": "soon"}"#, "every"),
        ("every without unit", r#"{"every": "30"}"#, "every"),
        ("every over the maximum", r#"{"every": "366days"}"#, "every"),
        ("negative every", r#"{"every": "-1s"}"#, "every"),
        (
            "bad first_run",
            r#"{"every": "1s", "first_run": "later"}"#,
            "first_run",
        ),
        (
            "first_run over the maximum",
            r#"{"every": "1s", "first_run": "400days"}"#,
            "first_run",
        ),
        ("bad jitter", r#"{"every": "1s", "jitter": true}"#, "jitter"),
        (
            "zero max_alerts",
            r#"{"every": "1s", "max_alerts": 0}"#,
            "max_alerts",
        ),
        (
            "negative max_alerts",
            r#"{"every": "1s", "max_alerts": -1}"#,
            "max_alerts",
        ),
        (
            "huge max_alerts",
            r#"{"every": "1s", "max_alerts": 99999999999}"#,
            "max_alerts",
        ),
    ];
    for (case, body, field) in cases {
        for id in [KEPT, "fresh"] {
            let answer = server.put(id, body).await;
            assert!(
                answer.status == StatusCode::BAD_REQUEST,
                "{case} on {id}: expected 400, got {answer:?}"
            );
            answer.assert_error(StatusCode::BAD_REQUEST, field);
        }
        assert_store_unchanged(&server, "fresh", case).await;
    }

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_message_names_value_and_rule() {
    let server = TestServer::start().await;

    let answer = server.put("x", r#"{"every": "soon"}"#).await;
    let message = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("every"), "names the field: {message}");
    assert!(message.contains("\"soon\""), "quotes the value: {message}");
    assert!(
        message.contains("30s"),
        "shows the expected form: {message}"
    );

    let answer = server.put("x", r#"{"every": "0ms"}"#).await;
    let message = answer.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("1ms to 365days"),
        "states the range: {message}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_400_and_change_nothing() {
    let server = TestServer::start().await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    let too_long = "k".repeat(257);
    let cases = [
        ("id over 256 bytes", too_long.as_str()),
        ("space", "a%20b"),
        ("encoded slash", "a%2Fb"),
        ("non-ASCII", "caf%C3%A9"),
        ("invalid UTF-8", "a%FF"),
    ];
    for (case, id) in cases {
        let path = format!("/v1/keys/{id}");
        for method in [Method::PUT, Method::GET, Method::DELETE] {
            let answer = server
                .send(method.clone(), &path, Some(r#"{"every": "1s"}"#))
                .await;
            assert!(
                answer.status == StatusCode::BAD_REQUEST,
                "{case} with {method}: expected 400, got {answer:?}"
            );
            answer.assert_error(StatusCode::BAD_REQUEST, "id");
        }
        let completed = server
            .send(Method::POST, &format!("{path}/complete"), None)
            .await;
        completed.assert_error(StatusCode::BAD_REQUEST, "id");
        assert_store_unchanged(&server, "fresh", case).await;
    }

    let longest = "k".repeat(256);
    let accepted = server.put(&longest, r#"{"every": "1h"}"#).await;
    assert_eq!(
        accepted.status,
        StatusCode::CREATED,
        "an id of exactly 256 bytes: {accepted:?}"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_and_changes_nothing() {
    let server = TestServer::start().await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    let filler = "x".repeat(100 * 1024);
    let body = format!(r#"{{"every": "1s", "payload": "{filler}"}}"#);
    for id in [KEPT, "fresh"] {
        server
            .put(id, &body)
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body");
    }
    assert_store_unchanged(&server, "fresh", "a 100 KiB body").await;

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_413_and_changes_nothing() {
    let mut config = test_config();
    config.max_payload_bytes = 1024;
    let server = TestServer::start_with(config).await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    let body = format!(r#"{{"every": "1s", "payload": "{}"}}"#, "x".repeat(2000));
    for id in [KEPT, "fresh"] {
        server
            .put(id, &body)
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload");
    }
    assert_store_unchanged(&server, "fresh", "a 2 KB payload").await;

    let fits = format!(r#"{{"every": "1s", "payload": "{}"}}"#, "x".repeat(1000));
    assert_eq!(
        server.put("small", &fits).await.status,
        StatusCode::CREATED,
        "a payload under the limit"
    );

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_and_content_type_change_nothing() {
    let server = TestServer::start().await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    for query in ["if_absent=yes", "force=true"] {
        let path = format!("/v1/keys/{KEPT}?{query}");
        server
            .send(Method::PUT, &path, Some(r#"{"every": "1s"}"#))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "if_absent");
    }

    let form = server
        .client
        .put(server.url("/v1/keys/fresh"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"every": "1s"}"#)
        .send()
        .await
        .expect("request is answered");
    server_support::read(form)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type");

    assert_store_unchanged(&server, "fresh", "bad query and content type").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_times_out_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = test_config();
    config.call_timeout = std::time::Duration::from_millis(100);
    config.request_timeout = std::time::Duration::from_millis(300);
    let server = TestServer::start_with(config).await;

    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("server accepts");
    let head = "PUT /v1/keys/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"every\"";
    stream
        .write_all(head.as_bytes())
        .await
        .expect("request head is sent");

    let started = std::time::Instant::now();
    let mut response = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        loop {
            let count = stream.read(&mut chunk).await.unwrap_or(0);
            if count == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..count]);
            if response.windows(4).any(|window| window == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&response);

    assert!(
        read.is_ok(),
        "no answer within 5 s to a stalled body: {text:?}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "status line of {text:?}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/json\r\n"),
        "JSON content type in {text:?}"
    );
    assert!(
        lower.contains("connection: close\r\n"),
        "the connection closes after a stalled body: {text:?}"
    );
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let error: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|problem| panic!("body is not JSON ({problem}): {text:?}"));
    assert_eq!(error["field"], "body", "{text:?}");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--request-timeout"),
        "names the limit: {text:?}"
    );
    assert!(
        elapsed >= std::time::Duration::from_millis(250),
        "answered after {elapsed:?}, before the 300 ms request timeout"
    );
    assert_eq!(server.manager.len(), 0, "a timed-out put changes nothing");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outside_interval_flags_is_400() {
    let mut config = test_config();
    config.min_interval = std::time::Duration::from_secs(1);
    config.max_interval = std::time::Duration::from_secs(3600);
    let server = TestServer::start_with(config).await;
    assert_eq!(
        server.put(KEPT, KEPT_BODY).await.status,
        StatusCode::CREATED
    );

    let cases = [
        (r#"{"every": "999ms"}"#, "--min-interval", "1s"),
        (r#"{"every": "1ms"}"#, "--min-interval", "1s"),
        (r#"{"every": "1h 1ms"}"#, "--max-interval", "1h"),
        (r#"{"every": "365days"}"#, "--max-interval", "1h"),
    ];
    for (body, flag, limit) in cases {
        for id in [KEPT, "fresh"] {
            let answer = server.put(id, body).await;
            answer.assert_error(StatusCode::BAD_REQUEST, "every");
            let message = answer.json()["error"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(message.contains(flag), "{body}: names the flag: {message}");
            assert!(
                message.contains(&format!("interval of {limit}")),
                "{body}: names the limit: {message}"
            );
        }
        assert_store_unchanged(&server, "fresh", body).await;
    }

    for (id, body) in [
        ("at-min", r#"{"every": "1s"}"#),
        ("at-max", r#"{"every": "1h"}"#),
    ] {
        let answer = server.put(id, body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{id}: {answer:?}");
        server.delete(id).await;
    }

    server.stop().await;
}

/// Reads `keywheel_rejected_total{manager="watchdog",reason=...}` for every reason given.
async fn rejected_counts(server: &TestServer, reasons: &[&str]) -> Vec<f64> {
    let text = server.send(Method::GET, "/metrics", None).await.text;
    reasons
        .iter()
        .map(|reason| {
            server_support::metric_value(
                &text,
                "keywheel_rejected_total",
                &[("manager", "watchdog"), ("reason", reason)],
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted_by_reason() {
    let server = TestServer::start().await;
    // Other tests of this file share the process's recorder and may add
    // rejections meanwhile, so the checks are lower bounds on the growth.
    let cases: [(&str, Method, &str, Option<&str>); 6] = [
        (
            "interval",
            Method::PUT,
            "/v1/keys/a",
            Some(r#"{"every": "0s"}"#),
        ),
        (
            "first_run",
            Method::PUT,
            "/v1/keys/a",
            Some(r#"{"every": "1s", "first_run": "later"}"#),
        ),
        ("id", Method::GET, "/v1/keys/a%20b", None),
        (
            "body",
            Method::PUT,
            "/v1/keys/a",
            Some(r#"{"every": "1s", "colour": "red"}"#),
        ),
        (
            "query",
            Method::PUT,
            "/v1/keys/a?force=1",
            Some(r#"{"every": "1s"}"#),
        ),
        (
            "max_alerts",
            Method::PUT,
            "/v1/keys/a",
            Some(r#"{"every": "1s", "max_alerts": 0}"#),
        ),
    ];
    let mut reasons: Vec<&str> = cases.iter().map(|(reason, ..)| *reason).collect();
    reasons.push("content_type");
    let before = rejected_counts(&server, &reasons).await;

    for (reason, method, path, body) in &cases {
        let answer = server.send(method.clone(), path, *body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{reason}: {answer:?}"
        );
    }
    let unsupported = server
        .client
        .put(server.url("/v1/keys/a"))
        .header("content-type", "text/plain")
        .body("every=1s")
        .send()
        .await
        .expect("request is answered");
    assert_eq!(unsupported.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let after = rejected_counts(&server, &reasons).await;
    for ((reason, then), now) in reasons.iter().zip(&before).zip(&after) {
        assert!(
            now - then >= 1.0,
            "keywheel_rejected_total{{reason=\"{reason}\"}} went from {then} to {now}"
        );
    }
    let unknown_field = server.send(Method::GET, "/metrics", None).await.text;
    assert!(
        !unknown_field.contains("reason=\"colour\""),
        "a client's field name never becomes a label value"
    );
    assert_eq!(server.manager.len(), 0, "rejected requests change nothing");

    server.stop().await;
}
