//! Child processes of the dashboard tests: `keywheel serve` and Debian's
//! Prometheus, both on loopback, both stopped when their guard drops.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The binary under test.
pub const KEYWHEEL: &str = env!("CARGO_BIN_EXE_keywheel");

/// How to install the Prometheus tools on Debian, quoted by the failure messages.
pub const INSTALL_HINT: &str =
    "install Debian's Prometheus (promtool comes with it): apt-get update && apt-get install -y prometheus";

/// Log lines of `keywheel serve` kept for failure messages.
const LOG_LINES_KEPT: usize = 40;

/// Returns the path of `name` on `PATH`.
///
/// # Panics
///
/// `name` is not on `PATH`. The dashboard tests fail rather than skip
/// without the Prometheus tools, so a CI machine that lacks them is noticed.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` was not found on PATH, and the dashboard tests need it; {INSTALL_HINT}"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Returns a loopback port that was free a moment ago.
///
/// The port is released before it is returned, so another process could
/// take it first. Prometheus then fails to start and logs the bind error.
pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener
        .local_addr()
        .expect("read the ephemeral port")
        .port()
}

/// A `keywheel serve` child process on an ephemeral loopback port. Dropping
/// it kills the process.
pub struct KeywheelProcess {
    child: tokio::process::Child,
    /// The data directory, removed when the process is dropped.
    _data: tempfile::TempDir,
    pub addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl KeywheelProcess {
    /// Starts `keywheel serve` with small shard and worker counts, alerting
    /// to `webhook`, and waits for its start line.
    pub async fn start(webhook: &str) -> KeywheelProcess {
        let data = tempfile::tempdir().expect("temp data dir");
        let mut child = tokio::process::Command::new(KEYWHEEL)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--shards",
                "4",
                "--workers",
                "4",
                "--webhook",
                webhook,
                "--webhook-timeout",
                "1s",
                "--data-dir",
            ])
            .arg(data.path())
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {KEYWHEEL}: {error}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();

        let started = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("stderr is readable") {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
                if event["message"] == "keywheel serve started" {
                    return event;
                }
            }
            panic!("keywheel serve exited before its start line");
        })
        .await
        .expect("keywheel serve logs its start line within 20 s");
        let addr: SocketAddr = started["listen"]
            .as_str()
            .and_then(|listen| listen.parse().ok())
            .unwrap_or_else(|| panic!("start line without a listen address: {started}"));

        // The pipe must keep draining, or the child blocks on a full stderr.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut tail = tail.lock().unwrap_or_else(|poison| poison.into_inner());
                if tail.len() == LOG_LINES_KEPT {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });

        KeywheelProcess {
            child,
            _data: data,
            addr,
            log,
        }
    }

    /// Returns `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the last log lines, for failure messages.
    pub fn recent_log(&self) -> String {
        let tail = self.log.lock().unwrap_or_else(|poison| poison.into_inner());
        tail.iter().fold(String::new(), |mut text, line| {
            let _ = writeln!(text, "{line}");
            text
        })
    }
}

impl Drop for KeywheelProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A Prometheus server on a loopback port that scrapes one target every
/// second into a temporary directory. Dropping it stops the process by its
/// pid (SIGTERM, then SIGKILL after 10 s) and removes the directory.
pub struct PrometheusServer {
    child: Child,
    pub base_url: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts `prometheus` with a config that scrapes `target` as job `keywheel`.
    ///
    /// # Panics
    ///
    /// `prometheus` is not on `PATH`, or it cannot be started.
    pub fn start(target: SocketAddr) -> PrometheusServer {
        let binary = require_tool("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("keywheel-prometheus-")
            .tempdir()
            .expect("create a temporary directory for Prometheus");
        let config_path = dir.path().join("prometheus.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: keywheel\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(&config_path, config).expect("write prometheus.yml");

        let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("create the Prometheus log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("share the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {}: {error}", binary.display()));

        PrometheusServer {
            child,
            base_url: format!("http://{listen}"),
            log_path,
            _dir: dir,
        }
    }

    /// Waits until `/-/ready` returns 200.
    ///
    /// # Panics
    ///
    /// Prometheus exited, or it was not ready within `limit`.
    pub async fn wait_ready(&mut self, client: &reqwest::Client, limit: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}; log:\n{}", self.log());
            }
            let ready = client
                .get(format!("{}/-/ready", self.base_url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "prometheus was not ready within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Returns the Prometheus log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops Prometheus by its pid: SIGTERM, then SIGKILL if it still runs
    /// after 10 s. Calling it again does nothing.
    pub fn stop(&mut self) {
        if self.has_exited() {
            return;
        }
        let pid = i32::try_from(self.child.id()).expect("a pid fits in i32");
        // SAFETY: kill(2) on the pid of our own child with a valid signal
        // number touches no memory of this process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.has_exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusServer {
    /// Returns true once the process has exited (and was reaped).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}
