//! `keywheel serve` as a child process on a loopback port, for tests that
//! need a real process: kill -9, restarts, a data directory.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");

/// A running `keywheel serve` and the figures its start-up log reported.
pub struct ServeChild {
    pub child: Child,
    /// `http://ADDR:PORT`.
    pub base: String,
    /// `records` of the "recovered entries from the store" line, if any.
    pub recovered: Option<u64>,
}

impl ServeChild {
    /// Kills the child with SIGKILL and reaps it.
    pub async fn kill_9(&mut self) {
        self.child.start_kill().expect("SIGKILL is sent");
        let _ = self.child.wait().await;
    }
}

/// Returns the command for `keywheel serve` on an ephemeral loopback port
/// with JSON logs, on the data directory `dir`, followed by `extra` flags.
pub fn serve_command(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data-dir")
        .arg(dir)
        .args(extra.iter().map(OsStr::new))
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Spawns `command` and waits (at most 60 s) for the start line; an
/// `ERROR` line before it fails the test. stderr keeps being read, so the
/// child never blocks on a full pipe.
pub async fn start(mut command: Command) -> ServeChild {
    let mut child = command.spawn().expect("keywheel starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut recovered = None;

    let listen = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("stderr is readable") {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if event["message"] == "recovered entries from the store" {
                recovered = event["records"].as_u64();
            }
            if event["message"] == "keywheel serve started" {
                return event["listen"].as_str().expect("listen").to_string();
            }
            assert_ne!(event["level"], "ERROR", "serve failed to start: {line}");
        }
        panic!("serve exited before it started");
    })
    .await
    .expect("serve starts within 60 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    ServeChild {
        child,
        base: format!("http://{listen}"),
        recovered,
    }
}
