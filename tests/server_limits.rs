//! Server limits over real TCP on 127.0.0.1: the entry limit (507), full
//! command queues (503 with Retry-After, and no acknowledged write lost),
//! the connection limit (503 and close), the idle timeout, the header
//! timeout, and JSON bodies on 414 and 431.

#![cfg(feature = "server")]

mod server_support;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use server_support::{test_config, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const BODY: &str = r#"{"payload": {"n": 1}, "every": "1h"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_over_entry_limit_is_507() {
    let mut config = test_config();
    config.max_entries = 3;
    let server = TestServer::start_with(config).await;
    for id in ["a", "b", "c"] {
        assert_eq!(
            server.put(id, BODY).await.status,
            StatusCode::CREATED,
            "put {id}"
        );
    }

    let over = server.put("d", BODY).await;
    over.assert_error(StatusCode::INSUFFICIENT_STORAGE, "id");
    let message = over.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("--max-entries"),
        "names the limit: {message}"
    );
    assert!(
        message.contains("maximum of 3 entries"),
        "states the limit: {message}"
    );
    assert_eq!(server.manager.len(), 3, "entries after the rejected put");
    assert_eq!(
        server.get("d").await.status,
        StatusCode::NOT_FOUND,
        "d was not stored"
    );

    let replaced = server.put("a", r#"{"every": "2h"}"#).await;
    assert_eq!(
        replaced.status,
        StatusCode::OK,
        "replacing at the limit: {replaced:?}"
    );
    assert_eq!(
        server.get("a").await.json()["every"],
        "2h",
        "a was replaced"
    );
    let unchanged = server
        .send(
            reqwest::Method::PUT,
            "/v1/keys/b?if_absent=true",
            Some(BODY),
        )
        .await;
    assert_eq!(unchanged.status, StatusCode::OK, "{unchanged:?}");
    assert_eq!(unchanged.json()["result"], "unchanged");

    assert_eq!(server.delete("c").await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.put("d", BODY).await.status,
        StatusCode::CREATED,
        "a freed slot takes a new id"
    );
    assert_eq!(server.manager.len(), 3, "entries at the end");

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_new_ids_never_pass_entry_limit() {
    let mut config = test_config();
    config.max_entries = 50;
    let server = Arc::new(TestServer::start_with(config).await);

    let mut tasks = JoinSet::new();
    for task in 0..20 {
        let server = server.clone();
        tasks.spawn(async move {
            let mut created = 0;
            for n in 0..10 {
                let status = server.put(&format!("race-{task}-{n}"), BODY).await.status;
                if status == StatusCode::CREATED {
                    created += 1;
                } else {
                    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "status of a put");
                }
            }
            created
        });
    }
    let created: usize = tasks.join_all().await.into_iter().sum();

    assert_eq!(created, 50, "puts created exactly the limit");
    assert_eq!(server.manager.len(), 50, "entries");
    Arc::into_inner(server)
        .expect("tasks are done")
        .stop()
        .await;
}

/// What one put of the overload test got.
struct PutStatus {
    id: String,
    status: StatusCode,
    retry_after: Option<String>,
}

/// Sends `clients` × `per_client` puts of distinct ids at once.
async fn put_burst(
    server: &Arc<TestServer>,
    round: usize,
    clients: usize,
    per_client: usize,
) -> Vec<PutStatus> {
    let mut tasks = JoinSet::new();
    for client in 0..clients {
        let server = server.clone();
        tasks.spawn(async move {
            let mut statuses = Vec::with_capacity(per_client);
            for n in 0..per_client {
                let id = format!("burst-{round}-{client}-{n}");
                let answer = server.put(&id, BODY).await;
                if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                    let error = answer.json()["error"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    assert!(
                        error.starts_with("server is overloaded"),
                        "503 body of {id}: {answer:?}"
                    );
                }
                let retry_after = answer
                    .headers
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                statuses.push(PutStatus {
                    id,
                    status: answer.status,
                    retry_after,
                });
            }
            statuses
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_503_and_keeps_acknowledged_puts() {
    let mut config = test_config();
    config.shards = 1;
    config.command_capacity = 1;
    let server = Arc::new(TestServer::start_with(config).await);

    // Whether a queue of one fills depends on scheduling, so bursts repeat
    // until one of them gets a 503, at most five times.
    let mut statuses = Vec::new();
    for round in 0..5 {
        statuses.extend(put_burst(&server, round, 64, 20).await);
        if statuses
            .iter()
            .any(|put| put.status == StatusCode::SERVICE_UNAVAILABLE)
        {
            break;
        }
    }

    let overloaded: Vec<&PutStatus> = statuses
        .iter()
        .filter(|put| put.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    let created: Vec<&PutStatus> = statuses
        .iter()
        .filter(|put| put.status == StatusCode::CREATED)
        .collect();
    println!(
        "{} puts: {} created, {} overloaded",
        statuses.len(),
        created.len(),
        overloaded.len()
    );
    assert!(!overloaded.is_empty(), "no put found the queue full");
    assert_eq!(
        created.len() + overloaded.len(),
        statuses.len(),
        "every put got 201 or 503"
    );
    for put in &overloaded {
        assert_eq!(
            put.retry_after.as_deref(),
            Some("1"),
            "Retry-After of {}",
            put.id
        );
    }

    for put in &created {
        let answer = server.get(&put.id).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "acknowledged put of {} is stored",
            put.id
        );
    }
    for put in &overloaded {
        let answer = server.get(&put.id).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "overloaded put of {} changed nothing",
            put.id
        );
    }
    assert_eq!(server.manager.len(), created.len(), "entries");

    Arc::into_inner(server)
        .expect("tasks are done")
        .stop()
        .await;
}

/// Sends one GET /healthz on `stream` and returns whether a response
/// arrived within `within`.
async fn answered_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request is sent");
    let mut buffer = [0u8; 1024];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buffer)).await,
        Ok(Ok(count)) if count > 0 && buffer.starts_with(b"HTTP/1.1 200")
    )
}

/// Reads from `stream` until it closes or 2 s pass, and returns the text.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_over_limit_gets_503() {
    let mut config = test_config();
    config.max_connections = 2;
    let server = TestServer::start_with(config).await;

    let mut first = TcpStream::connect(server.addr).await.expect("connects");
    let mut second = TcpStream::connect(server.addr).await.expect("connects");
    assert!(
        answered_within(&mut first, Duration::from_secs(2)).await,
        "first connection"
    );
    assert!(
        answered_within(&mut second, Duration::from_secs(2)).await,
        "second connection"
    );

    let mut third = TcpStream::connect(server.addr).await.expect("connects");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request is sent");
    let response = read_to_close(&mut third).await;
    assert!(
        response.starts_with("HTTP/1.1 503"),
        "a third connection while two are open: {response:?}"
    );
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1\r\n"), "{response:?}");
    assert!(lower.contains("connection: close\r\n"), "{response:?}");
    assert!(
        response.contains("--max-connections"),
        "names the limit: {response:?}"
    );

    drop(first);
    drop(second);
    // The server frees the slots when it reads the end of the closed
    // connections, so the next one may still find them taken for a moment.
    let mut health = String::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connects");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("request is sent");
        health = read_to_close(&mut stream).await;
        if health.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "a new connection is served once the others closed: {health:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    let mut config = test_config();
    config.call_timeout = Duration::from_millis(100);
    config.request_timeout = Duration::from_millis(200);
    config.idle_timeout = Duration::from_millis(400);
    let server = TestServer::start_with(config).await;

    let mut idle = TcpStream::connect(server.addr).await.expect("connects");
    assert!(
        answered_within(&mut idle, Duration::from_secs(2)).await,
        "first request"
    );

    let started = std::time::Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await;
    let waited = started.elapsed();

    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closes an idle connection: {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(300),
        "closed after {waited:?}, before the idle timeout"
    );
    server.stop().await;
}

/// Waits up to `within` for `stream` to be closed by the server, and
/// returns what it sent before, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(count) => received.extend_from_slice(&chunk[..count]),
            }
        }
    })
    .await;
    closed
        .is_ok()
        .then(|| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_disconnected() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;

    // One byte every 100 ms keeps the connection from ever being idle; the
    // whole head would take about 4 s.
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let started = std::time::Instant::now();
    let mut closed_after = None;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(count)) => panic!(
                "a response to a head sent byte by byte: {:?}",
                String::from_utf8_lossy(&buffer[..count])
            ),
        }
    }

    let closed_after = closed_after.expect("the server closes a connection whose head is too slow");
    assert!(
        closed_after >= Duration::from_millis(400),
        "closed after {closed_after:?}, before the 500 ms header timeout"
    );
    assert!(
        closed_after < Duration::from_millis(2000),
        "closed after {closed_after:?}, long after the 500 ms header timeout"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connection_is_closed_after_header_timeout() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;

    let mut silent = TcpStream::connect(server.addr).await.expect("connects");
    let started = std::time::Instant::now();
    let received = closed_within(&mut silent, Duration::from_secs(5)).await;
    let waited = started.elapsed();

    assert_eq!(
        received.as_deref(),
        Some(""),
        "a connection that never sends a head is closed without a response"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the header timeout"
    );
    assert!(
        waited < Duration::from_secs(3),
        "closed after {waited:?}: the header timeout, not the 60 s idle timeout"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_outlives_header_timeout() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(200);
    let server = TestServer::start_with(config).await;

    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    assert!(
        answered_within(&mut stream, Duration::from_secs(2)).await,
        "first request"
    );
    // Between requests only the idle timeout applies.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        answered_within(&mut stream, Duration::from_secs(2)).await,
        "a request on a keep-alive connection quiet for longer than the header timeout"
    );
    server.stop().await;
}

/// Sends `request` on a new connection and returns the response, read until
/// the server closes the connection.
async fn raw_exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.expect("connects");
    // The server may respond and close before it has read everything.
    let _ = stream.write_all(request).await;
    closed_within(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server closes the connection after its error")
}

/// Checks that `response` has `status`, a JSON content type and a JSON
/// error body naming `field`.
fn assert_json_error(response: &str, status: &str, field: &str) {
    assert!(
        response.starts_with(&format!("HTTP/1.1 {status} ")),
        "status line of {response:.200}"
    );
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {response:.200}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let error: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|problem| panic!("body is not JSON ({problem}): {body:?}"));
    assert_eq!(error["field"], field, "{body}");
    assert!(
        !error["error"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_uri_is_414_with_json_error() {
    let server = TestServer::start().await;
    let request = format!(
        "GET /v1/keys/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );

    let response = raw_exchange(&server, request.as_bytes()).await;

    assert_json_error(&response, "414", "uri");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_headers_are_431_with_json_error() {
    let server = TestServer::start().await;
    let many: String = (0..120).map(|n| format!("x-filler-{n}: {n}\r\n")).collect();
    let huge = format!("x-filler: {}\r\n", "b".repeat(500_000));

    for (case, headers) in [("120 headers", many), ("500 KB header", huge)] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
        let response = raw_exchange(&server, request.as_bytes()).await;
        assert!(!response.is_empty(), "{case}: no response");
        assert_json_error(&response, "431", "headers");
    }

    let health = server.send(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(health.status, StatusCode::OK, "the server still serves");
    server.stop().await;
}
