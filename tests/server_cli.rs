//! The `keywheel serve` command line: invalid settings exit 2 with a
//! message naming the flag, and a real process starts, serves over TCP
//! and drains on SIGTERM.

#![cfg(feature = "server")]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");

/// Runs `keywheel` with `args` and `env` only, and returns the exit code and stderr.
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
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn out_of_range_flag_exits_2() {
    let (code, stderr) = run_to_exit(&["serve", "--shards", "0"], &[]).await;

    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains("--shards"), "names the flag: {stderr}");
    assert!(
        stderr.contains("between 1 and 4096"),
        "states the rule: {stderr}"
    );
}

#[tokio::test]
async fn unparseable_flag_exits_2() {
    let (code, stderr) = run_to_exit(&["serve", "--call-timeout", "soon"], &[]).await;

    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("--call-timeout"),
        "names the flag: {stderr}"
    );
}

#[tokio::test]
async fn bad_environment_value_exits_2() {
    let (code, stderr) = run_to_exit(&["serve"], &[("KEYWHEEL_LISTEN", "not-an-address")]).await;

    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains("--listen"), "names the flag: {stderr}");
}

#[tokio::test]
async fn inconsistent_limits_exit_2() {
    let (code, stderr) = run_to_exit(
        &[
            "serve",
            "--max-body-bytes",
            "1024",
            "--max-payload-bytes",
            "4096",
        ],
        &[],
    )
    .await;

    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("--max-payload-bytes"),
        "names the flag: {stderr}"
    );
}

#[tokio::test]
async fn interval_range_outside_engine_limits_exits_2() {
    let cases: [(&[&str], &str); 3] = [
        (&["serve", "--max-interval", "366days"], "--max-interval"),
        (&["serve", "--min-interval", "500us"], "--min-interval"),
        (
            &["serve", "--min-interval", "2m", "--max-interval", "1m"],
            "--min-interval",
        ),
    ];
    for (args, flag) in cases {
        let (code, stderr) = run_to_exit(args, &[]).await;

        assert_eq!(code, Some(2), "exit code of {args:?}; stderr: {stderr}");
        assert!(stderr.contains(flag), "{args:?} names {flag}: {stderr}");
    }
    let (_, stderr) = run_to_exit(&["serve", "--max-interval", "366days"], &[]).await;
    assert!(
        stderr.contains("1ms to 365days"),
        "states the engine's limits: {stderr}"
    );
}

#[tokio::test]
async fn unknown_config_key_exits_2() {
    let path = std::env::temp_dir().join(format!("keywheel-cli-test-{}.toml", std::process::id()));
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nshard = 4\n").expect("temp dir is writable");

    let config = path.to_string_lossy().into_owned();
    let (code, stderr) = run_to_exit(&["serve"], &[("KEYWHEEL_CONFIG", &config)]).await;
    std::fs::remove_file(&path).ok();

    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("unknown field `shard`"),
        "names the key: {stderr}"
    );
    assert!(stderr.contains(&config), "names the file: {stderr}");
}

#[tokio::test]
async fn help_lists_every_flag() {
    let output = Command::new(BINARY)
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .await
        .expect("keywheel starts");
    let help = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(0), "exit code of --help");
    for flag in [
        "--listen",
        "--shards",
        "--workers",
        "--call-timeout",
        "--drain-grace",
        "--request-timeout",
        "--max-id-bytes",
        "--max-body-bytes",
        "--max-payload-bytes",
        "--webhook",
        "--webhook-timeout",
        "--webhook-concurrency",
        "--auth-token",
        "--auth-token-file",
        "--protect-metrics",
        "--insecure-no-auth",
        "--max-entries",
        "--max-connections",
        "--idle-timeout",
        "--command-capacity",
        "--header-timeout",
        "--min-interval",
        "--max-interval",
        "--drain-delay",
        "--log-format",
        "--config",
        "KEYWHEEL_LISTEN",
        "KEYWHEEL_LOG_FORMAT",
        "KEYWHEEL_CONFIG",
    ] {
        assert!(help.contains(flag), "help lacks {flag}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_then_drains_on_sigterm() {
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--shards",
            "2",
        ])
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keywheel starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();

    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("stderr is readable") {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                panic!("log line is not JSON: {line}");
            };
            if event["message"] == "keywheel serve started" {
                return event;
            }
        }
        panic!("stderr closed before the start line");
    })
    .await
    .expect("start line within 20 s");
    let listen = started["listen"]
        .as_str()
        .expect("start line has listen")
        .to_string();
    assert!(listen.starts_with("127.0.0.1:"), "listen address {listen}");

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds");
    let health = client
        .get(format!("http://{listen}/healthz"))
        .send()
        .await
        .expect("healthz is answered");
    assert_eq!(health.status(), reqwest::StatusCode::OK, "healthz status");
    let put = client
        .put(format!("http://{listen}/v1/keys/cli-1"))
        .json(&serde_json::json!({"every": "1h"}))
        .send()
        .await
        .expect("put is answered");
    assert_eq!(put.status(), reqwest::StatusCode::CREATED, "put status");

    let pid = i32::try_from(child.id().expect("child runs")).expect("pid fits i32");
    // SAFETY: kill(2) with a pid of our own child and a valid signal number
    // touches no memory of this process.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0, "SIGTERM delivered");

    let mut rest = Vec::new();
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        child.wait().await.expect("child exit status")
    })
    .await
    .expect("keywheel exits within 20 s of SIGTERM");
    let rest = rest.join("\n");

    assert_eq!(
        status.code(),
        Some(0),
        "exit code after SIGTERM; stderr: {rest}"
    );
    assert!(
        rest.contains("shutdown requested"),
        "drain is logged: {rest}"
    );
    assert!(
        rest.contains("keywheel serve stopped"),
        "stop is logged: {rest}"
    );
}
