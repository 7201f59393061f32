//! Bearer token access control over real TCP on 127.0.0.1. Requests get 401
//! without a token or with a wrong one, and 200 with the right one. Metrics
//! and health are open by default and protected with `protect_metrics`.
//! The server rejects a non-loopback listen address without a token, and
//! the token never shows in logs, errors, metrics or `Debug` output.

#![cfg(feature = "server")]

mod server_support;

use std::process::Stdio;
use std::time::Duration;

use keywheel::server::AuthToken;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use server_support::{test_config, Answer, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");
const TOKEN: &str = "kw-test-token-5f0c9a2e41b7d3c8";
/// Same length as `TOKEN`, last character different.
const WRONG_SAME_LENGTH: &str = "kw-test-token-5f0c9a2e41b7d3c9";
const BODY: &str = r#"{"payload": {"n": 1}, "every": "1h"}"#;

async fn start(protect_metrics: bool) -> TestServer {
    let mut config = test_config();
    config.auth_token = Some(AuthToken::new(TOKEN).expect("valid token"));
    config.protect_metrics = protect_metrics;
    TestServer::start_with(config).await
}

/// Checks a 401 with a JSON error about the Authorization header and a
/// Bearer challenge.
fn assert_unauthorized(answer: &Answer, case: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {answer:?}"
    );
    answer.assert_error(StatusCode::UNAUTHORIZED, "authorization");
    let challenge = answer
        .headers
        .get("www-authenticate")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{case}: WWW-Authenticate {challenge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_routes_need_the_token() {
    let server = start(false).await;
    let requests = [
        (Method::PUT, "/v1/keys/a", Some(BODY)),
        (Method::GET, "/v1/keys/a", None),
        (Method::POST, "/v1/keys/a/complete", None),
        (Method::DELETE, "/v1/keys/a", None),
        (Method::GET, "/v1/unknown", None),
        (Method::PATCH, "/v1/keys/a", None),
    ];

    for (method, path, body) in requests {
        let case = format!("{method} {path}");
        for token in [None, Some("wrong"), Some(WRONG_SAME_LENGTH), Some("")] {
            let answer = server.send_as(token, method.clone(), path, body).await;
            assert_unauthorized(&answer, &format!("{case} with token {token:?}"));
        }
    }
    assert_eq!(server.manager.len(), 0, "no rejected put stored an entry");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_token_is_served() {
    let server = start(false).await;
    let token = Some(TOKEN);

    let put = server
        .send_as(token, Method::PUT, "/v1/keys/a", Some(BODY))
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    let get = server.send_as(token, Method::GET, "/v1/keys/a", None).await;
    assert_eq!(get.status, StatusCode::OK, "{get:?}");
    assert_eq!(get.json()["payload"]["n"], 1, "{get:?}");

    // The scheme is case-insensitive.
    let lower = server
        .client
        .get(server.url("/v1/keys/a"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("request is answered");
    assert_eq!(lower.status(), StatusCode::OK, "lowercase scheme");

    let complete = server
        .send_as(token, Method::POST, "/v1/keys/a/complete", None)
        .await;
    assert_eq!(complete.status, StatusCode::OK, "{complete:?}");
    let missing = server
        .send_as(token, Method::DELETE, "/v1/keys/a", None)
        .await;
    missing.assert_error(StatusCode::NOT_FOUND, "id");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_open_by_default() {
    let server = start(false).await;

    for path in ["/metrics", "/healthz", "/readyz"] {
        let answer = server.send_as(None, Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
    }
    let refused = server.send_as(None, Method::GET, "/v1/keys/a", None).await;
    assert_unauthorized(&refused, "GET without a token");
    let metrics = server.send_as(None, Method::GET, "/metrics", None).await;
    assert!(
        metrics.text.contains("status=\"401\""),
        "401 responses are counted: {}",
        metrics.text
    );
    assert!(!metrics.text.contains(TOKEN), "the token is in /metrics");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_metrics_covers_metrics_and_health() {
    let server = start(true).await;

    for path in ["/metrics", "/healthz", "/readyz"] {
        let open = server.send_as(None, Method::GET, path, None).await;
        assert_unauthorized(&open, path);
        let wrong = server
            .send_as(Some(WRONG_SAME_LENGTH), Method::GET, path, None)
            .await;
        assert_unauthorized(&wrong, path);
        let right = server.send_as(Some(TOKEN), Method::GET, path, None).await;
        assert_eq!(right.status, StatusCode::OK, "{path} with the token");
    }

    server.stop().await;
}

#[test]
fn debug_output_redacts_token() {
    let mut config = test_config();
    config.auth_token = Some(AuthToken::new(TOKEN).expect("valid token"));

    let shown = format!("{config:?}");

    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// Runs `keywheel` with `args` and `env` only, and returns the exit code
/// and stderr.
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("keywheel exits within 20 s")
        .expect("keywheel starts");
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    (output.status.code(), text)
}

#[tokio::test]
async fn non_loopback_listen_without_token_exits_2() {
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let (code, stderr) = run_to_exit(&["serve", "--listen", listen], &[]).await;

        assert_eq!(code, Some(2), "exit code for {listen}; stderr: {stderr}");
        assert!(
            stderr.contains("requires an auth token"),
            "states the rule: {stderr}"
        );
        assert!(stderr.contains("--auth-token"), "names the fix: {stderr}");
        assert!(
            stderr.contains("--insecure-no-auth"),
            "names the opt-out: {stderr}"
        );
        assert!(
            !stderr.contains("failed to listen"),
            "rejected before binding: {stderr}"
        );
    }
}

#[tokio::test]
async fn token_errors_never_quote_token() {
    let bad = "has a space but is long enough";
    let (code, stderr) = run_to_exit(&["serve"], &[("KEYWHEEL_AUTH_TOKEN", bad)]).await;
    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains("--auth-token"), "names the flag: {stderr}");
    assert!(!stderr.contains(bad), "quotes the token: {stderr}");

    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("write the token file");
    let path = empty.to_string_lossy().into_owned();
    let (code, stderr) = run_to_exit(&["serve", "--auth-token-file", &path], &[]).await;
    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains("is empty"), "states the problem: {stderr}");
    assert!(stderr.contains(&path), "names the file: {stderr}");

    let (code, help) = run_to_exit(&["serve", "--help"], &[("KEYWHEEL_AUTH_TOKEN", TOKEN)]).await;
    assert_eq!(code, Some(0), "exit code of --help");
    assert!(
        help.contains("KEYWHEEL_AUTH_TOKEN"),
        "help names the variable"
    );
    assert!(!help.contains(TOKEN), "help shows the token: {help}");
}

/// Starts `keywheel serve` on a loopback port with the token in a file and
/// RUST_LOG=debug, and returns the child, its stderr lines and its address.
async fn start_child(
    token_file: &std::path::Path,
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    Vec<String>,
    String,
) {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--shards", "2", "--workers", "4"])
        .arg("--auth-token-file")
        .arg(token_file)
        .env_clear()
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keywheel starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();

    let mut seen = Vec::new();
    let listen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr is readable") {
            seen.push(line.clone());
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "keywheel serve started" {
                return event["listen"].as_str().unwrap_or_default().to_string();
            }
        }
        panic!("stderr closed before the start line: {seen:?}");
    })
    .await
    .expect("start line within 20 s");
    (child, lines, seen, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_never_appears_in_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token file");
    let (mut child, mut lines, mut log, listen) = start_child(&token_file).await;

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds");
    let url = format!("http://{listen}/v1/keys/logged");
    let refused = client
        .put(&url)
        .bearer_auth(WRONG_SAME_LENGTH)
        .json(&serde_json::json!({"every": "1h"}))
        .send()
        .await
        .expect("put is answered");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "wrong token");
    let accepted = client
        .put(&url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"every": "1h"}))
        .send()
        .await
        .expect("put is answered");
    assert_eq!(accepted.status(), StatusCode::CREATED, "right token");
    let metrics = client
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .expect("metrics are answered")
        .text()
        .await
        .expect("metrics body");
    assert!(!metrics.contains(TOKEN), "the token is in /metrics");

    let pid = i32::try_from(child.id().expect("child runs")).expect("pid fits i32");
    // SAFETY: kill(2) with a pid of our own child and a valid signal number
    // touches no memory of this process.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM delivered");
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        let mut rest = String::new();
        let _ = lines.get_mut().read_to_string(&mut rest).await;
        child.wait().await.expect("child exit status")
    })
    .await
    .expect("keywheel exits within 20 s of SIGTERM");

    let log = log.join("\n");
    assert!(
        log.contains("keywheel serve stopped"),
        "the whole log was read: {log}"
    );
    assert!(
        log.contains("DEBUG") || log.contains("\"level\":\"DEBUG\""),
        "debug lines are on: {log}"
    );
    assert!(!log.contains(TOKEN), "the token is in the log: {log}");
    assert!(
        !log.contains(WRONG_SAME_LENGTH),
        "a presented token is in the log: {log}"
    );
}
