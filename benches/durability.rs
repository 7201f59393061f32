//! Benchmark of persistence: what the store costs a client, and how long a
//! restart takes.
//!
//! - Acknowledged puts per second through HTTP against `keywheel serve`,
//!   with `--ephemeral` (the baseline, measured in the same run) and with a
//!   data directory, at 1, 16 and 256 concurrent clients. Every put has a
//!   new id, a 60-byte payload and an interval of one hour, so no alert
//!   runs during the window. The clients run in this process, on the same
//!   two cores as the server, for both modes alike.
//! - Restart: a million entries are stored through the library, then the
//!   time from `ManagerBuilder::open` to a ready manager is measured.
//!
//! ```text
//! cargo bench --bench durability                # full run, about 4 minutes
//! cargo bench --bench durability -- --quick     # harness check, under 30 s
//! cargo bench --bench durability -- --markdown PATH
//! ```

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keywheel::store::FjallStore;
use keywheel::{Codec, CodecError, EntryOptions, Handler, Manager, Outcome, Persistence};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");

struct Settings {
    quick: bool,
    reps: usize,
    window: Duration,
    clients: Vec<usize>,
    restart_keys: u64,
    markdown: Option<String>,
}

impl Settings {
    fn parse() -> Result<Settings, String> {
        let mut settings = Settings {
            quick: false,
            reps: 3,
            window: Duration::from_secs(5),
            clients: vec![1, 16, 256],
            restart_keys: 1_000_000,
            markdown: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    settings.quick = true;
                    settings.reps = 1;
                    settings.window = Duration::from_secs(1);
                    settings.clients = vec![1, 16];
                    settings.restart_keys = 20_000;
                }
                "--markdown" => {
                    settings.markdown = Some(args.next().ok_or("--markdown needs a path")?)
                }
                // cargo bench passes this to every bench target.
                "--bench" => {}
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(settings)
    }
}

/// A running `keywheel serve`.
struct Serve {
    child: Child,
    base: String,
}

async fn start(data_dir: Option<&Path>) -> Serve {
    let mut command = Command::new(BINARY);
    command.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"]);
    match data_dir {
        Some(dir) => command.arg("--data-dir").arg(dir),
        None => command.arg("--ephemeral"),
    };
    let mut child = command
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("keywheel starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
    let listen = loop {
        let line = lines
            .next_line()
            .await
            .expect("stderr is readable")
            .expect("serve exited before it started");
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["message"] == "keywheel serve started" {
            break event["listen"].as_str().expect("listen").to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Serve {
        child,
        base: format!("http://{listen}"),
    }
}

/// Counts of one load window.
struct Load {
    acknowledged: u64,
    refused: u64,
    took: Duration,
}

/// Runs `clients` loops of `PUT` with new ids until the window closes.
async fn put_load(base: &str, clients: usize, window: Duration) -> Load {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client builds");
    let acknowledged = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (http, base) = (http.clone(), base.to_string());
            let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
            tokio::spawn(async move {
                let mut serial = 0u64;
                while Instant::now() < deadline {
                    serial += 1;
                    let body = json!({
                        "every": "1h",
                        "payload": {"client": client, "serial": serial, "note": "benchmark"},
                    });
                    let response = http
                        .put(format!("{base}/v1/keys/bench-{client}-{serial}"))
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(response) if response.status().is_success() => {
                            acknowledged.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    Load {
        acknowledged: acknowledged.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        took: started.elapsed(),
    }
}

/// A handler whose entries never need to run during the measurement.
struct Idle;

impl Handler for Idle {
    type Id = u64;
    type Payload = String;
    type Request = ();
    type Reply = ();
    type Message = ();

    async fn perform(&self, _id: &u64, _payload: &mut String) -> Outcome<u64> {
        Outcome::Continue
    }
}

/// Ids as 8 big-endian bytes, payloads as their UTF-8 bytes.
struct RawCodec;

impl Codec<u64, String> for RawCodec {
    fn encode_id(&self, id: &u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&id.to_be_bytes());
        Ok(())
    }
    fn decode_id(&self, bytes: &[u8]) -> Result<u64, CodecError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(CodecError::new)?;
        Ok(u64::from_be_bytes(bytes))
    }
    fn encode_payload(&self, payload: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(payload.as_bytes());
        Ok(())
    }
    fn decode_payload(&self, bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(CodecError::new)
    }
}

async fn open(dir: &Path) -> Manager<Idle> {
    let store = FjallStore::open(dir).expect("the store opens");
    Manager::builder(Idle)
        .persistence(Persistence::new(store, RawCodec))
        .open()
        .await
        .expect("the manager opens")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let settings = match Settings::parse() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime starts");
    runtime.block_on(run(settings));
}

async fn run(settings: Settings) {
    let mut markdown = String::new();
    markdown.push_str(&format!(
        "Acknowledged `PUT`s per second through HTTP, median of {} windows of {:?} (min–max):\n\n",
        settings.reps, settings.window
    ));
    markdown.push_str(
        "| clients | ephemeral | persistent | persistent / ephemeral |\n|---:|---:|---:|---:|\n",
    );

    for &clients in &settings.clients {
        let mut rates = [Vec::new(), Vec::new()];
        for rep in 0..settings.reps {
            // Alternate which mode goes first, so neither always runs on a
            // warmer machine.
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for mode in order {
                let dir = tempfile::tempdir().expect("temp dir");
                let mut serve = start((mode == 1).then_some(dir.path())).await;
                let load = put_load(&serve.base, clients, settings.window).await;
                serve.child.start_kill().expect("stop the server");
                let _ = serve.child.wait().await;
                let rate = load.acknowledged as f64 / load.took.as_secs_f64();
                println!(
                    "{}",
                    json!({
                        "bench": "http_puts",
                        "mode": if mode == 1 { "persistent" } else { "ephemeral" },
                        "clients": clients,
                        "rep": rep,
                        "acknowledged": load.acknowledged,
                        "refused": load.refused,
                        "seconds": load.took.as_secs_f64(),
                        "per_second": rate,
                    })
                );
                rates[mode].push(rate);
            }
        }
        let range = |values: &[f64]| {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(0.0, f64::max);
            format!("{min:.0}–{max:.0}")
        };
        let ephemeral_range = range(&rates[0]);
        let persistent_range = range(&rates[1]);
        let ephemeral = median(&mut rates[0]);
        let persistent = median(&mut rates[1]);
        markdown.push_str(&format!(
            "| {clients} | {ephemeral:.0} ({ephemeral_range}) | {persistent:.0} ({persistent_range}) | {:.2} |\n",
            persistent / ephemeral
        ));
    }

    // Restart: store the entries once, then open the store again and again.
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = settings.restart_keys;
    let manager = open(dir.path()).await;
    let every = EntryOptions::every(Duration::from_secs(3600));
    let loaded = Instant::now();
    let mut next = 0;
    while next < keys {
        let end = (next + 100_000).min(keys);
        let slice =
            (next..end).map(|id| (id, format!("payload of entry {id:>12} .........."), every));
        manager.put_many(slice).await.expect("bulk put");
        next = end;
    }
    let load_seconds = loaded.elapsed().as_secs_f64();
    manager.shutdown(Duration::from_secs(5)).await;
    drop(manager);

    let mut opens = Vec::new();
    for rep in 0..settings.reps {
        let started = Instant::now();
        let manager = open(dir.path()).await;
        let took = started.elapsed().as_secs_f64();
        assert_eq!(manager.len() as u64, keys, "every stored entry came back");
        println!(
            "{}",
            json!({"bench": "restart", "keys": keys, "rep": rep, "seconds": took, "load_seconds": load_seconds})
        );
        opens.push(took);
        manager.shutdown(Duration::from_secs(5)).await;
    }
    let min = opens.iter().copied().fold(f64::INFINITY, f64::min);
    let max = opens.iter().copied().fold(0.0, f64::max);
    markdown.push_str(&format!(
        "\nRestart with {keys} stored entries (60-byte payloads): open to ready in {:.2} s median ({min:.2}–{max:.2} s) over {} opens; storing them with `put_many` in slices of 100,000 took {load_seconds:.2} s.\n",
        median(&mut opens),
        settings.reps
    ));

    print!("\n{markdown}");
    if let Some(path) = &settings.markdown {
        std::fs::write(path, &markdown).expect("the Markdown file is writable");
    }
    if settings.quick {
        eprintln!("quick mode: checks the harness, not the timings");
    }
}
