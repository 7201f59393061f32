//! A bounded load test of a `keywheel serve` child process on 127.0.0.1.
//!
//! Many clients send puts, gets and completes past the point where the
//! server keeps up, for `LOAD_FOR`. The server runs with small command
//! queues, so part of the requests get 503. Afterwards the test checks
//! that the process is still up and that its peak resident memory (VmHWM)
//! stayed under `MAX_PEAK_RSS`. It checks that every acknowledged put is
//! stored, that every acknowledged complete removed its entry, and that a
//! normal request succeeds quickly once the load stops. It prints requests
//! per second, the share of 503 responses and the peak RSS.
//!
//! Linux only: the peak RSS comes from /proc/PID/status.

#![cfg(all(feature = "server", target_os = "linux"))]

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");

/// How long the clients send requests.
const LOAD_FOR: Duration = Duration::from_secs(15);

/// Clients sending at once, each one request at a time. Well over what two
/// cores serve without queueing, and under the server's connection limit,
/// so every client has a connection.
const CLIENTS: usize = 192;

/// Upper bound of the server's peak RSS. The run stores a few hundred
/// thousand entries at most, of about a kilobyte each with the index and
/// the HTTP buffers, so even a debug build stays far below it.
const MAX_PEAK_RSS: u64 = 1024 * 1024 * 1024;

/// Maximum time a request may take once the load has stopped.
const RECOVERED_WITHIN: Duration = Duration::from_secs(1);

const BODY: &str = r#"{"payload": {"service": "load"}, "every": "1h"}"#;

/// Statuses and acknowledged writes seen by one client.
#[derive(Default)]
struct Tally {
    requests: u64,
    overloaded: u64,
    unexpected: Vec<String>,
    /// Ids whose put got 201 and that were not completed.
    kept: Vec<String>,
    /// Ids whose complete got 200.
    completed: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.overloaded += other.overloaded;
        self.unexpected.extend(other.unexpected);
        self.kept.extend(other.kept);
        self.completed.extend(other.completed);
    }

    /// Counts a response, and keeps its description if it is neither
    /// `expected` nor 503.
    fn count(
        &mut self,
        what: &str,
        status: Result<StatusCode, reqwest::Error>,
        expected: StatusCode,
    ) -> bool {
        self.requests += 1;
        match status {
            Ok(status) if status == expected => true,
            Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                self.overloaded += 1;
                false
            }
            Ok(status) => {
                self.unexpected.push(format!("{what}: {status}"));
                false
            }
            Err(error) => {
                let mut text = format!("{what}: {error}");
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                self.unexpected.push(text);
                false
            }
        }
    }
}

/// Starts the server with small queues and returns it with its address.
async fn start_server() -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--shards", "2", "--workers", "4", "--command-capacity", "4"])
        .args(["--max-connections", "256"])
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keywheel starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();

    let listen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr is readable") {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "keywheel serve started" {
                return event["listen"].as_str().unwrap_or_default().to_string();
            }
        }
        panic!("keywheel serve exited before its start line");
    })
    .await
    .expect("start line within 20 s");
    // The pipe must keep draining, or the server blocks on a full stderr.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, listen)
}

/// Sends a request and reads the whole response, so that its connection
/// goes back to the client's pool, and returns the status.
async fn status_of(request: reqwest::RequestBuilder) -> Result<StatusCode, reqwest::Error> {
    let response = request.send().await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

/// One client: put a new id, read it back, and complete every other one,
/// until `until`.
async fn run_client(client: Client, base: Arc<String>, number: usize, until: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut sequence = 0u64;
    while Instant::now() < until {
        sequence += 1;
        let id = format!("load-{number}-{sequence}");
        let url = format!("{base}/v1/keys/{id}");

        let put = status_of(
            client
                .put(&url)
                .header("content-type", "application/json")
                .body(BODY),
        )
        .await;
        if !tally.count("PUT", put, StatusCode::CREATED) {
            continue;
        }

        let get = status_of(client.get(&url)).await;
        tally.count("GET", get, StatusCode::OK);

        if sequence.is_multiple_of(2) {
            tally.kept.push(id);
            continue;
        }
        let complete = status_of(client.post(format!("{url}/complete"))).await;
        if tally.count("complete", complete, StatusCode::OK) {
            tally.completed.push(id);
        } else {
            // Not completed (503): the entry stays, like a kept one.
            tally.kept.push(id);
        }
    }
    tally
}

/// Returns the peak resident set size of `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("failed to read /proc/{pid}/status: {error}"));
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap_or_else(|| panic!("no VmHWM line in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("unreadable VmHWM line {line:?}"));
    kib * 1024
}

/// Checks with `parallel` requests at once that every id in `ids` gets
/// `expected`, and returns the ids that did not.
async fn check_ids(
    client: &Client,
    base: &str,
    ids: Vec<String>,
    expected: StatusCode,
) -> Vec<String> {
    let ids = Arc::new(ids);
    let parallel = 32;
    let mut tasks = JoinSet::new();
    for start in 0..parallel {
        let (client, base, ids) = (client.clone(), base.to_string(), ids.clone());
        tasks.spawn(async move {
            let mut wrong = Vec::new();
            for id in ids.iter().skip(start).step_by(parallel) {
                let status = status_of(client.get(format!("{base}/v1/keys/{id}"))).await;
                if !matches!(status, Ok(status) if status == expected) {
                    wrong.push(format!("{id}: {status:?}"));
                }
            }
            wrong
        });
    }
    tasks.join_all().await.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_saturation() {
    let (mut child, listen) = start_server().await;
    let pid = child.id().expect("the server runs");
    let base = Arc::new(format!("http://{listen}"));
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds");

    let started = Instant::now();
    let until = started + LOAD_FOR;
    let mut clients = JoinSet::new();
    for number in 0..CLIENTS {
        clients.spawn(run_client(client.clone(), base.clone(), number, until));
    }
    let mut tally = Tally::default();
    for client_tally in clients.join_all().await {
        tally.merge(client_tally);
    }
    let elapsed = started.elapsed();

    assert!(
        child.try_wait().expect("child status").is_none(),
        "the server exited under load"
    );

    let recovery = Instant::now();
    let health = status_of(client.get(format!("{base}/healthz"))).await;
    let put = status_of(
        client
            .put(format!("{base}/v1/keys/after-load"))
            .header("content-type", "application/json")
            .body(BODY),
    )
    .await;
    let recovered_in = recovery.elapsed();

    let peak = peak_rss(pid);
    let per_second = tally.requests as f64 / elapsed.as_secs_f64();
    let share_503 = tally.overloaded as f64 / tally.requests.max(1) as f64;
    println!(
        "load: {} requests in {:.1} s = {per_second:.0} requests/s from {CLIENTS} clients, {:.1}% 503, peak RSS {:.1} MiB, {} entries kept, {} completed, recovery {recovered_in:?}",
        tally.requests,
        elapsed.as_secs_f64(),
        share_503 * 100.0,
        peak as f64 / (1024.0 * 1024.0),
        tally.kept.len(),
        tally.completed.len(),
    );

    assert!(
        tally.unexpected.is_empty(),
        "{} responses other than the expected status or 503, first: {:?}",
        tally.unexpected.len(),
        &tally.unexpected[..tally.unexpected.len().min(5)]
    );
    assert!(
        matches!(health, Ok(StatusCode::OK)),
        "healthz after the load: {health:?}"
    );
    assert!(
        matches!(put, Ok(StatusCode::CREATED)),
        "put after the load: {put:?}"
    );
    assert!(
        recovered_in < RECOVERED_WITHIN,
        "two requests after the load took {recovered_in:?}"
    );
    assert!(
        peak < MAX_PEAK_RSS,
        "peak RSS {peak} bytes over {MAX_PEAK_RSS}"
    );

    let missing = check_ids(&client, &base, tally.kept, StatusCode::OK).await;
    assert!(
        missing.is_empty(),
        "{} acknowledged puts are not stored, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let remaining = check_ids(&client, &base, tally.completed, StatusCode::NOT_FOUND).await;
    assert!(
        remaining.is_empty(),
        "{} acknowledged completes left their entry, first: {:?}",
        remaining.len(),
        &remaining[..remaining.len().min(5)]
    );

    child.kill().await.expect("the server stops");
}
