//! No acknowledged write is lost across kill -9.
//!
//! A child `keywheel serve` with a data directory takes puts, deletes and
//! completions from concurrent clients. The parent records every answer,
//! kills the child with SIGKILL at a random moment, starts it again on the
//! same directory and checks every id against the record: an acknowledged
//! put is there with its payload, an acknowledged delete or completion did
//! not come back. Only the last request of each client, the one in flight
//! at the kill, may have gone either way. Twenty kills, seeded.

mod serve_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serve_support::{serve_command, ServeChild};
const KILLS: usize = 20;
const CLIENTS: usize = 16;
/// Ids per client; each client alone writes its ids, so the order of its
/// acknowledgements is the order of the changes.
const IDS_PER_CLIENT: u64 = 40;

/// The state of one id, as its acknowledgements show it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Acknowledged present with this payload.
    Present(String),
    /// Acknowledged absent (never put, deleted or completed).
    Absent,
    /// A request was in flight at the kill: either state is right.
    Either(Box<Known>, Box<Known>),
}

/// Starts `keywheel serve` on the data directory and waits until it is ready.
async fn start(dir: &Path, client: &Client) -> ServeChild {
    let serve =
        serve_support::start(serve_command(dir, &["--shards", "4", "--workers", "8"])).await;
    let ready = client
        .get(format!("{}/readyz", serve.base))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), StatusCode::OK, "ready once started");
    serve
}

/// A small deterministic generator (splitmix64), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn id_of(client: usize, index: u64) -> String {
    format!("c{client}-{index}")
}

/// Runs one client until the server dies, recording what it learns.
async fn run_client(
    client: Client,
    base: String,
    number: usize,
    seed: u64,
    known: Arc<Mutex<HashMap<String, Known>>>,
) {
    let mut rng = Rng(seed);
    let mut serial = 0u64;
    loop {
        let id = id_of(number, rng.below(IDS_PER_CLIENT));
        let before = known.lock().unwrap()[&id].clone();
        serial += 1;
        let choice = rng.below(10);
        let (request, after) = if choice < 6 {
            let payload = format!("{{\"client\":{number},\"serial\":{serial}}}");
            let body = format!("{{\"payload\":{payload},\"every\":\"1h\"}}");
            let request = client
                .put(format!("{base}/v1/keys/{id}"))
                .header("content-type", "application/json")
                .body(body);
            (request, Known::Present(payload))
        } else if choice < 8 {
            (client.delete(format!("{base}/v1/keys/{id}")), Known::Absent)
        } else {
            (
                client.post(format!("{base}/v1/keys/{id}/complete")),
                Known::Absent,
            )
        };

        // Until the answer arrives, either state may be in the store.
        known.lock().unwrap().insert(
            id.clone(),
            Known::Either(Box::new(before.clone()), Box::new(after.clone())),
        );
        let Ok(response) = request.send().await else {
            return; // the server died: the request stays in doubt
        };
        let status = response.status();
        if response.bytes().await.is_err() {
            return;
        }
        let settled = match status {
            StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT => after,
            // Deleting or completing an absent id changes nothing.
            StatusCode::NOT_FOUND => before,
            other => panic!("{id}: unexpected status {other}"),
        };
        known.lock().unwrap().insert(id, settled);
    }
}

/// Reads one id back and checks it against what the parent knows; returns
/// the state found, which settles an in-doubt id.
async fn check(client: &Client, base: &str, id: &str, known: &Known, round: usize) -> Known {
    let response = client
        .get(format!("{base}/v1/keys/{id}"))
        .send()
        .await
        .expect("get answers");
    let found = match response.status() {
        StatusCode::OK => {
            let body: serde_json::Value = response.json().await.expect("JSON body");
            Known::Present(body["payload"].to_string())
        }
        StatusCode::NOT_FOUND => Known::Absent,
        other => panic!("{id}: get answered {other}"),
    };
    let allowed = match known {
        Known::Either(before, after) => found == **before || found == **after,
        certain => found == *certain,
    };
    assert!(
        allowed,
        "after kill {round}: {id} is {found:?}, but the acknowledged state is {known:?}"
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");
    let mut ids = HashMap::new();
    for number in 0..CLIENTS {
        for index in 0..IDS_PER_CLIENT {
            ids.insert(id_of(number, index), Known::Absent);
        }
    }
    let known = Arc::new(Mutex::new(ids));
    let mut rng = Rng(0x6b65_7977_6865_656c);
    let mut acknowledged_total = 0usize;

    let mut serve = start(dir.path(), &http).await;
    for round in 1..=KILLS {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|number| {
                tokio::spawn(run_client(
                    http.clone(),
                    serve.base.clone(),
                    number,
                    rng.next(),
                    known.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + rng.below(600))).await;

        serve.child.start_kill().expect("SIGKILL is sent");
        let status = serve.child.wait().await.expect("the child is reaped");
        assert!(!status.success(), "the child was killed, not stopped");
        for task in clients {
            task.await.expect("client task");
        }

        serve = start(dir.path(), &http).await;
        let snapshot: Vec<(String, Known)> = known
            .lock()
            .unwrap()
            .iter()
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect();
        let mut settled = HashMap::new();
        for (id, state) in &snapshot {
            if !matches!(state, Known::Either(..)) {
                acknowledged_total += 1;
            }
            let found = check(&http, &serve.base, id, state, round).await;
            settled.insert(id.clone(), found);
        }
        *known.lock().unwrap() = settled;
    }

    let present = known
        .lock()
        .unwrap()
        .values()
        .filter(|state| matches!(state, Known::Present(_)))
        .count();
    assert!(
        present > 0 && present < known.lock().unwrap().len(),
        "the load both wrote and removed entries: {present} present"
    );
    assert!(acknowledged_total > 0);
    serve.child.start_kill().expect("SIGKILL is sent");
    let _ = serve.child.wait().await;
}
