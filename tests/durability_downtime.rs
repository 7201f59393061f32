//! Entries that fell due while `keywheel serve` was down.
//!
//! Fifty watches with a 1 s interval and one with 60 s are stored, and the
//! server stops for 10 s. After the restart the fifty alert within their
//! jitter window (at most their 1 s interval), and the lateness histogram
//! shows the 10 s they waited. The 60 s watch alerts 60 s after it was
//! put, neither at the restart nor 60 s after it. Runs on the real clock,
//! about 65 s.

mod serve_support;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serve_support::{serve_command, ServeChild};
const SHORT: usize = 50;

async fn start(dir: &Path, client: &Client) -> ServeChild {
    let serve = serve_support::start(serve_command(dir, &["--shards", "4"])).await;
    let ready = client
        .get(format!("{}/readyz", serve.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    serve
}

async fn put(client: &Client, base: &str, id: &str, every: &str) {
    let response = client
        .put(format!("{base}/v1/keys/{id}"))
        .json(&serde_json::json!({ "every": every }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "put {id}");
}

async fn alerts_of(client: &Client, base: &str, id: &str) -> u64 {
    let body: serde_json::Value = client
        .get(format!("{base}/v1/keys/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["alerts"].as_u64().expect("alerts field")
}

/// Returns the value of a sample line of the scrape, 0 if absent.
async fn metric(client: &Client, base: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn stop(serve: &mut ServeChild) {
    let pid = serve.child.id().expect("running") as i32;
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = serve.child.wait().await.expect("the child is reaped");
    assert!(status.success(), "serve drained and exited: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_entries_run_after_a_restart_and_long_ones_keep_their_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = Client::builder().no_proxy().build().unwrap();

    let mut serve = start(dir.path(), &client).await;
    put(&client, &serve.base, "long", "60s").await;
    let long_put_at = Instant::now();
    for n in 0..SHORT {
        put(&client, &serve.base, &format!("short-{n}"), "1s").await;
    }
    stop(&mut serve).await;

    // Down for 10 s: each short watch misses about ten due times.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut serve = start(dir.path(), &client).await;
    let restarted = Instant::now();
    let series = "keywheel_watchdog_alerts_total{manager=\"watchdog\"}";
    loop {
        if metric(&client, &serve.base, series).await >= SHORT as f64 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(3),
            "the overdue watches alert within their 1 s jitter window"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..SHORT {
        let alerts = alerts_of(&client, &serve.base, &format!("short-{n}")).await;
        assert!(alerts >= 1, "short-{n} alerted after the restart");
    }

    // The lateness histogram (published every second) shows the downtime:
    // at least one late start per short watch, each more than 5 s late.
    let bucket = "keywheel_perform_lateness_seconds_bucket{manager=\"watchdog\",le=\"5\"}";
    let count = "keywheel_perform_lateness_seconds_count{manager=\"watchdog\"}";
    let late = loop {
        let bucket = metric(&client, &serve.base, bucket).await;
        let count = metric(&client, &serve.base, count).await;
        if count - bucket >= SHORT as f64 || restarted.elapsed() > Duration::from_secs(10) {
            break count - bucket;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        late >= SHORT as f64,
        "{late} performs were over 5 s late; expected one per short watch"
    );
    assert_eq!(
        alerts_of(&client, &serve.base, "long").await,
        0,
        "the 60 s watch did not run at the restart"
    );

    // Down again until 20 s after the put: the 60 s watch is not overdue
    // yet and must keep its due time instead of starting a new interval.
    serve.child.start_kill().unwrap();
    let _ = serve.child.wait().await;
    let until = long_put_at + Duration::from_secs(20);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    let serve = start(dir.path(), &client).await;

    let first_alert = loop {
        if alerts_of(&client, &serve.base, "long").await >= 1 {
            break long_put_at.elapsed();
        }
        assert!(
            long_put_at.elapsed() < Duration::from_secs(66),
            "the 60 s watch never alerted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        first_alert >= Duration::from_secs(59) && first_alert <= Duration::from_secs(63),
        "the 60 s watch alerted {first_alert:?} after its put; expected about 60 s"
    );
}
