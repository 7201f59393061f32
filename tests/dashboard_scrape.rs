//! A scrape of `keywheel serve` under load: `promtool check metrics`
//! accepts it, it contains every metric family of the catalogue with its
//! type and labels, and every series a dashboard panel or variable names
//! is in it.

#![cfg(feature = "server")]

mod dashboard_support;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use dashboard_support::dashboard::{self, label_values_variables, metric_name, panel_queries};
use dashboard_support::load::{self, WebhookReceiver};
use dashboard_support::processes::{require_tool, KeywheelProcess};
use dashboard_support::scrape::Scrape;

/// How long the load runs before the scrape is taken; it keeps running
/// while the scrape is read.
const LOAD_BEFORE_SCRAPE: Duration = Duration::from_secs(3);
const LOAD_TOTAL: Duration = Duration::from_secs(4);

/// Every metric family `keywheel serve` exports: name, type and label names.
const CATALOGUE: &[(&str, &str, &[&str])] = &[
    (
        "keywheel_performs_total",
        "counter",
        &["manager", "outcome"],
    ),
    (
        "keywheel_perform_lateness_seconds",
        "histogram",
        &["manager"],
    ),
    ("keywheel_calls_total", "counter", &["manager", "result"]),
    ("keywheel_casts_total", "counter", &["manager", "result"]),
    ("keywheel_puts_total", "counter", &["manager", "result"]),
    ("keywheel_deletes_total", "counter", &["manager"]),
    ("keywheel_panics_total", "counter", &["manager", "callback"]),
    (
        "keywheel_terminates_total",
        "counter",
        &["manager", "reason"],
    ),
    ("keywheel_overruns_total", "counter", &["manager"]),
    ("keywheel_rejected_total", "counter", &["manager", "reason"]),
    ("keywheel_clamped_intervals_total", "counter", &["manager"]),
    ("keywheel_entries", "gauge", &["manager"]),
    ("keywheel_shard_entries", "gauge", &["manager", "shard"]),
    ("keywheel_pool_busy", "gauge", &["manager"]),
    ("keywheel_pool_queued", "gauge", &["manager"]),
    ("keywheel_pool_workers", "gauge", &["manager"]),
    ("keywheel_due_not_started", "gauge", &["manager"]),
    ("keywheel_oldest_overdue_seconds", "gauge", &["manager"]),
    ("keywheel_shard_turn_max_seconds", "gauge", &["manager"]),
    ("keywheel_store_commits_total", "counter", &["manager"]),
    ("keywheel_store_writes_total", "counter", &["manager", "op"]),
    ("keywheel_store_errors_total", "counter", &["manager"]),
    ("keywheel_store_commit_seconds", "histogram", &["manager"]),
    ("keywheel_store_batch_ops", "histogram", &["manager"]),
    ("keywheel_store_queued_ops", "gauge", &["manager"]),
    ("keywheel_recovered_entries", "gauge", &["manager"]),
    ("keywheel_recovery_overdue_entries", "gauge", &["manager"]),
    ("keywheel_recovery_duration_seconds", "gauge", &["manager"]),
    (
        "keywheel_http_requests_total",
        "counter",
        &["route", "method", "status"],
    ),
    (
        "keywheel_http_request_duration_seconds",
        "histogram",
        &["route", "method", "status"],
    ),
    (
        "keywheel_watchdog_registered_total",
        "counter",
        &["manager"],
    ),
    ("keywheel_watchdog_completed_total", "counter", &["manager"]),
    ("keywheel_watchdog_alerts_total", "counter", &["manager"]),
    ("keywheel_watchdog_expired_total", "counter", &["manager"]),
    (
        "keywheel_watchdog_webhook_total",
        "counter",
        &["manager", "result"],
    ),
    ("keywheel_build_info", "gauge", &["version"]),
    ("process_cpu_seconds_total", "counter", &[]),
    ("process_open_fds", "gauge", &[]),
    ("process_max_fds", "gauge", &[]),
    ("process_virtual_memory_bytes", "gauge", &[]),
    ("process_virtual_memory_max_bytes", "gauge", &[]),
    ("process_resident_memory_bytes", "gauge", &[]),
    ("process_start_time_seconds", "gauge", &[]),
    ("process_threads", "gauge", &[]),
];

/// The values the `route` label may take: route templates and `unmatched`.
const ROUTES: [&str; 6] = [
    "/v1/keys/{id}",
    "/v1/keys/{id}/complete",
    "/metrics",
    "/healthz",
    "/readyz",
    "unmatched",
];

/// Labels Prometheus attaches to every scraped series itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_under_load() {
    let promtool = require_tool("promtool");
    let webhook = WebhookReceiver::start().await;
    let server = KeywheelProcess::start(&webhook.url()).await;

    let base_url = server.base_url();
    let load = tokio::spawn(async move { load::generate(&base_url, LOAD_TOTAL).await });
    tokio::time::sleep(LOAD_BEFORE_SCRAPE).await;
    let text = fetch_metrics(&server).await;
    let report = load.await.expect("the load task finishes");

    assert_eq!(
        report.transport_errors,
        0,
        "load requests failed: {:?}; server log:\n{}",
        report.first_error,
        server.recent_log()
    );
    assert!(
        report.count(201) > 50,
        "too few puts succeeded: {:?}",
        report.statuses
    );

    let promtool_problems = promtool_check(&promtool, &text);
    let scrape = Scrape::parse(&text);
    let catalogue_problems = catalogue_problems(&scrape);
    let label_problems = label_value_problems(&scrape);
    let dashboard_problems = dashboard_name_problems(&scrape);

    assert!(
        promtool_problems.is_empty(),
        "promtool check metrics: {promtool_problems:#?}"
    );
    assert!(
        catalogue_problems.is_empty(),
        "catalogue: {catalogue_problems:#?}"
    );
    assert!(label_problems.is_empty(), "labels: {label_problems:#?}");
    assert!(
        dashboard_problems.is_empty(),
        "dashboard names missing from the scrape: {dashboard_problems:#?}"
    );
    assert_eq!(
        scrape.sum(
            "keywheel_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "keywheel_build_info of this version"
    );
    assert!(
        webhook.received.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the webhook received no alert"
    );
}

async fn fetch_metrics(server: &KeywheelProcess) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build the client");
    let response = client
        .get(format!("{}/metrics", server.base_url()))
        .send()
        .await
        .expect("GET /metrics is answered");
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "GET /metrics status"
    );
    response.text().await.expect("the /metrics body is text")
}

/// Runs `promtool check metrics` on `text`; returns its complaints.
fn promtool_check(promtool: &std::path::Path, text: &str) -> Vec<String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("write the scrape to promtool");
    let output = child.wait_with_output().expect("promtool finishes");

    let mut problems = Vec::new();
    if !output.status.success() {
        problems.push(format!("promtool exited with {}", output.status));
    }
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        problems.extend(
            text.lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_string),
        );
    }
    problems
}

/// Compares the scrape with [`CATALOGUE`] and the naming rules.
fn catalogue_problems(scrape: &Scrape) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, kind, labels) in CATALOGUE {
        let Some(family) = scrape.families.get(*name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        if family.kind != *kind {
            problems.push(format!("{name}: type {}, expected {kind}", family.kind));
        }
        if family.samples == 0 {
            problems.push(format!("{name}: no samples"));
        }
        let sample_name = if *kind == "histogram" {
            format!("{name}_bucket")
        } else {
            (*name).to_string()
        };
        let mut found = scrape.label_names(&sample_name);
        found.remove("le");
        let expected: BTreeSet<String> = labels.iter().map(|label| (*label).to_string()).collect();
        if found != expected {
            problems.push(format!("{name}: labels {found:?}, expected {expected:?}"));
        }
    }

    let known: BTreeSet<&str> = CATALOGUE.iter().map(|(name, _, _)| *name).collect();
    for (name, family) in &scrape.families {
        if family.samples > 0 && !known.contains(name.as_str()) {
            problems.push(format!("{name}: exported but not in the catalogue"));
        }
        if !name.starts_with("keywheel_") && !name.starts_with("process_") {
            problems.push(format!("{name}: not a keywheel_ or process_ name"));
        }
        if family.kind == "counter" && !name.ends_with("_total") {
            problems.push(format!("{name}: a counter without _total"));
        }
        if family.kind == "summary" {
            problems.push(format!("{name}: a summary; configure histogram buckets"));
        }
        if family.help.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{name}: no # HELP"));
        }
        if family.sample_before_help {
            problems.push(format!("{name}: a sample comes before # HELP"));
        }
    }
    problems
}

/// Checks that label values come from small fixed sets and never carry an id.
fn label_value_problems(scrape: &Scrape) -> Vec<String> {
    let mut problems = Vec::new();
    for sample in &scrape.samples {
        for (label, value) in &sample.labels {
            if value.contains("load-") {
                problems.push(format!("{}: id {value:?} in label {label}", sample.name));
            }
            if label == "route" && !ROUTES.contains(&value.as_str()) {
                problems.push(format!("{}: unexpected route {value:?}", sample.name));
            }
            let bounded = match label.as_str() {
                "status" => value.len() == 3 && value.bytes().all(|b| b.is_ascii_digit()),
                "shard" => value.parse::<u32>().is_ok(),
                "method" => {
                    ["GET", "PUT", "POST", "DELETE", "HEAD", "other"].contains(&value.as_str())
                }
                _ => true,
            };
            if !bounded {
                problems.push(format!(
                    "{}: label {label}={value:?} is not from a fixed set",
                    sample.name
                ));
            }
        }
    }
    problems
}

/// Returns the metric names used by the dashboard that the scrape lacks.
fn dashboard_name_problems(scrape: &Scrape) -> Vec<String> {
    let dashboard = dashboard::load();
    let series = scrape.series_names();
    let mut problems = Vec::new();

    for query in panel_queries(&dashboard) {
        let expr = match dashboard::parse(&query.expr) {
            Ok(expr) => expr,
            Err(error) => {
                problems.push(format!("{}: does not parse: {error}", query.label()));
                continue;
            }
        };
        for selector in dashboard::selectors(&expr) {
            match metric_name(selector) {
                Some(name) if series.contains(&name) => {}
                Some(name) => problems.push(format!("{}: {name}", query.label())),
                None => problems.push(format!("{}: a selector without a name", query.label())),
            }
        }
    }

    for variable in label_values_variables(&dashboard) {
        let expr = match dashboard::parse(&variable.selector) {
            Ok(expr) => expr,
            Err(error) => {
                problems.push(format!("variable {}: {error}", variable.name));
                continue;
            }
        };
        for selector in dashboard::selectors(&expr) {
            let name = metric_name(selector).unwrap_or_default();
            if !series.contains(&name) {
                problems.push(format!("variable {}: {name}", variable.name));
                continue;
            }
            let has_label = TARGET_LABELS.contains(&variable.label.as_str())
                || scrape.label_names(&name).contains(&variable.label);
            if !has_label {
                problems.push(format!(
                    "variable {}: {name} has no label {}",
                    variable.name, variable.label
                ));
            }
        }
    }
    problems
}
