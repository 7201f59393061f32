//! Every panel expression of `dashboards/keywheel.json` returns data from a
//! real Prometheus that scraped `keywheel serve` under load.
//!
//! The test starts the built `keywheel` binary and Debian's `prometheus` on
//! loopback ports. Prometheus scrapes every second into a temporary storage
//! directory while a load generator sends puts, gets, completes and deletes
//! for about 25 s. Then each expression, with Grafana's variables
//! substituted, runs through `/api/v1/query_range`. An empty result, or one with only NaN
//! values, fails the test. Prometheus is stopped by its pid at the end, and
//! also when the test fails.

#![cfg(feature = "server")]

mod dashboard_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashboard_support::dashboard::{self, label_values_variables, panel_queries};
use dashboard_support::load::{self, WebhookReceiver};
use dashboard_support::processes::{require_tool, KeywheelProcess, PrometheusServer};
use reqwest::{Client, Url};
use serde_json::Value;

/// Length of the load. With a 1 s scrape interval that gives about 25
/// samples per series, enough for `rate()` over the 1 m window that
/// replaces `$__rate_interval`, and keeps the test under a minute.
const LOAD: Duration = Duration::from_secs(25);

/// Counters the load must move, so the panels show traffic and not only zeros.
const MOVING_COUNTERS: [&str; 9] = [
    "keywheel_performs_total",
    "keywheel_perform_lateness_seconds_count",
    "keywheel_http_requests_total",
    "keywheel_http_request_duration_seconds_count",
    "keywheel_watchdog_registered_total",
    "keywheel_watchdog_completed_total",
    "keywheel_watchdog_alerts_total",
    "keywheel_watchdog_expired_total",
    "keywheel_watchdog_webhook_total",
];

/// Resolution of the range queries, as Grafana would ask for a short range.
const STEP_SECONDS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_returns_data() {
    require_tool("prometheus");
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the client");
    let webhook = WebhookReceiver::start().await;
    let server = KeywheelProcess::start(&webhook.url()).await;
    let mut prometheus = PrometheusServer::start(server.addr);
    prometheus
        .wait_ready(&client, Duration::from_secs(20))
        .await;

    let start = unix_seconds();
    let report = load::generate(&server.base_url(), LOAD).await;
    // One more scrape after the load, so the last requests are stored.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let end = unix_seconds();

    assert_eq!(
        report.transport_errors,
        0,
        "load requests failed: {:?}; server log:\n{}",
        report.first_error,
        server.recent_log()
    );
    assert_target_up(&client, &prometheus).await;

    let dashboard = dashboard::load();
    let queries = panel_queries(&dashboard);
    let mut problems = Vec::new();
    for query in &queries {
        let answer = query_range(&client, &prometheus, &query.expr, start, end).await;
        if let Err(problem) = check_has_data(&answer) {
            problems.push(format!("{}: {problem}\n    {}", query.label(), query.expr));
        }
    }

    for counter in MOVING_COUNTERS {
        let expr = format!("sum(increase({counter}[1m]))");
        let params = [("query", expr.clone()), ("time", end.to_string())];
        let increase = api_get(&client, &prometheus, "/api/v1/query", &params)
            .await
            .ok()
            .and_then(|data| data["result"][0]["value"][1].as_str().map(str::to_string))
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0);
        if increase <= 0.0 {
            problems.push(format!("{expr} is {increase}: the load did not move it"));
        }
    }

    let variables = label_values_variables(&dashboard);
    for variable in &variables {
        let values = label_values(&client, &prometheus, variable, start, end).await;
        if values.is_empty() {
            problems.push(format!(
                "variable {}: label_values({}, {}) is empty",
                variable.name, variable.selector, variable.label
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{} problems in {} panel queries and {} variables:\n{}\nPrometheus log:\n{}",
        problems.len(),
        queries.len(),
        variables.len(),
        problems.join("\n"),
        prometheus.log()
    );
    prometheus.stop();
    assert!(prometheus.has_exited(), "prometheus still runs after stop");
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Sends a GET to the Prometheus HTTP API and returns its `data`.
async fn api_get(
    client: &Client,
    prometheus: &PrometheusServer,
    path: &str,
    params: &[(&str, String)],
) -> Result<Value, String> {
    let url = Url::parse_with_params(&format!("{}{path}", prometheus.base_url), params)
        .map_err(|error| format!("invalid URL for {path}: {error}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("{path}: request failed: {error}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|error| format!("{path}: response is not JSON: {error}"))?;
    if !status.is_success() || body["status"] != "success" {
        return Err(format!(
            "{path}: {status} {}: {}",
            body["errorType"], body["error"]
        ));
    }
    Ok(body["data"].clone())
}

async fn assert_target_up(client: &Client, prometheus: &PrometheusServer) {
    let data = api_get(client, prometheus, "/api/v1/targets", &[])
        .await
        .unwrap_or_else(|problem| panic!("{problem}"));
    let targets = data["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(targets.len(), 1, "active targets: {data}");
    assert_eq!(
        targets[0]["health"], "up",
        "the keywheel target is not up: {}",
        targets[0]["lastError"]
    );
}

async fn query_range(
    client: &Client,
    prometheus: &PrometheusServer,
    expr: &str,
    start: u64,
    end: u64,
) -> Result<Value, String> {
    let params = [
        ("query", expr.to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", STEP_SECONDS.to_string()),
    ];
    api_get(client, prometheus, "/api/v1/query_range", &params).await
}

/// Accepts a matrix with at least one series holding a value other than NaN.
fn check_has_data(answer: &Result<Value, String>) -> Result<(), String> {
    let data = answer.as_ref().map_err(Clone::clone)?;
    let series = data["result"].as_array().cloned().unwrap_or_default();
    if series.is_empty() {
        return Err("empty result".to_string());
    }
    let has_number = series.iter().any(|one| {
        one["values"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|point| point[1].as_str().is_some_and(|value| value != "NaN"))
    });
    if !has_number {
        return Err(format!("{} series, all values NaN", series.len()));
    }
    Ok(())
}

async fn label_values(
    client: &Client,
    prometheus: &PrometheusServer,
    variable: &dashboard::LabelValuesVariable,
    start: u64,
    end: u64,
) -> Vec<Value> {
    let params = [
        ("match[]", variable.selector.clone()),
        ("start", start.to_string()),
        ("end", end.to_string()),
    ];
    let path = format!("/api/v1/label/{}/values", variable.label);
    api_get(client, prometheus, &path, &params)
        .await
        .map(|data| data.as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}
