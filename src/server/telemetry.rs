//! The Prometheus recorder of the process, and the HTTP request metrics and
//! timeout around every route.
//!
//! Every histogram of the process is exported with explicit buckets, never
//! as a summary: the library's and the server's histograms get their own
//! bounds, and any other histogram gets [`FALLBACK_SECONDS_BUCKETS`]. The
//! recorder's upkeep runs on a thread of its own, so buffered histogram
//! samples are folded into their buckets whether or not anyone scrapes.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::errors::{ApiError, ValidationRejection};
use super::listener::ConnectionPhase;
use super::routes::{AppState, BodyReading};

/// HTTP requests, by `route` (the route template) and `status`.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::HTTP_REQUESTS_TOTAL, "keywheel_http_requests_total");
/// ```
pub const HTTP_REQUESTS_TOTAL: &str = "keywheel_http_requests_total";
/// Time from receiving a request to its response, by `route`, in seconds.
///
/// # Example
///
/// ```
/// assert_eq!(
///     keywheel::server::HTTP_REQUEST_DURATION_SECONDS,
///     "keywheel_http_request_duration_seconds"
/// );
/// ```
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "keywheel_http_request_duration_seconds";

/// Build metadata of the binary, by `version`. The value is always 1.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::BUILD_INFO, "keywheel_build_info");
/// ```
pub const BUILD_INFO: &str = "keywheel_build_info";

/// Upper bounds (seconds) of the HTTP duration histogram. A put or get
/// on loopback typically takes well under a millisecond, and the slowest
/// responses are bounded by the call timeout (5 s by default).
///
/// # Example
///
/// ```
/// use keywheel::server::HTTP_DURATION_BUCKETS;
///
/// assert_eq!(HTTP_DURATION_BUCKETS.len(), 16);
/// assert_eq!(HTTP_DURATION_BUCKETS.first(), Some(&0.0001));
/// assert_eq!(HTTP_DURATION_BUCKETS.last(), Some(&10.0));
/// assert!(HTTP_DURATION_BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
/// ```
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds (seconds) of any histogram without bounds of its own. The
/// exporter would otherwise render it as a summary, which Prometheus cannot
/// aggregate across instances nor feed to `histogram_quantile`.
///
/// # Example
///
/// ```
/// use keywheel::server::FALLBACK_SECONDS_BUCKETS;
///
/// assert_eq!(FALLBACK_SECONDS_BUCKETS.len(), 15);
/// assert_eq!(FALLBACK_SECONDS_BUCKETS.first(), Some(&0.0005));
/// assert_eq!(FALLBACK_SECONDS_BUCKETS.last(), Some(&30.0));
/// assert!(FALLBACK_SECONDS_BUCKETS.windows(2).all(|pair| pair[0] < pair[1]));
/// ```
pub const FALLBACK_SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often buffered histogram samples are folded into their buckets.
/// The exporter keeps every sample until then (about 24 bytes each, and a
/// manager hands over one per perform, once a second), so memory grows with
/// the perform rate times this period: 1 s keeps it near 48 MB at 2 million
/// performs per second. Folding costs a few nanoseconds per sample.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The `route` label of requests that matched no route. Raw paths never
/// become labels, since each distinct value would be a new series.
const UNMATCHED_ROUTE: &str = "unmatched";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// Returns the handle of the process's Prometheus recorder, installing the
/// recorder and its upkeep thread on the first call.
///
/// Several servers in one process (tests, the demo) share this one
/// recorder, because a process can have only one global recorder.
///
/// # Errors
///
/// Another recorder was installed in this process first.
///
/// # Example
///
/// ```no_run
/// use keywheel::server::{prometheus, BUILD_INFO};
///
/// # fn main() -> anyhow::Result<()> {
/// let handle = prometheus()?;
/// let text = handle.render();
/// assert!(text.contains(BUILD_INFO));
/// # Ok(())
/// # }
/// ```
pub fn prometheus() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let _guard = INSTALL.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }

    let handle = PrometheusBuilder::new()
        .set_buckets(FALLBACK_SECONDS_BUCKETS)
        .and_then(|builder| builder.set_buckets_for_metric(
            Matcher::Full(crate::metrics::PERFORM_LATENESS_SECONDS.to_string()),
            crate::metrics::LATENESS_BUCKETS,
        ))
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(HTTP_REQUEST_DURATION_SECONDS.to_string()),
                HTTP_DURATION_BUCKETS,
            )
        })
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(crate::metrics::STORE_COMMIT_SECONDS.to_string()),
                crate::metrics::STORE_COMMIT_BUCKETS,
            )
        })
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(crate::metrics::STORE_BATCH_OPS.to_string()),
                crate::metrics::STORE_BATCH_BUCKETS,
            )
        })
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("failed to install the Prometheus recorder; another metrics recorder is already installed in this process")?;

    describe();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    spawn_upkeep(handle.clone())?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Runs the exporter's upkeep on a thread of its own, so it outlives any
/// one tokio runtime of the process.
fn spawn_upkeep(handle: PrometheusHandle) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("keywheel-metrics-upkeep".to_string())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        })
        .context("failed to start the metrics upkeep thread")?;
    Ok(())
}

/// Describes the metrics of the binary and of the library.
fn describe() {
    crate::metrics::describe();
    super::watchdog::describe();
    describe_gauge!(
        BUILD_INFO,
        "Build metadata of the keywheel binary, by version; always 1."
    );
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests, by route, method and status."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from receiving an HTTP request to its response, by route, method and status."
    );
}

/// Counts and times every request by route template, method and status,
/// counts validation rejections, marks the connection's request cycle for
/// its header timeout, and responds to a request over the request timeout:
/// 408 if its body was still arriving, 503 otherwise.
pub(crate) async fn observe(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let phase = request
        .extensions()
        .get::<ConnectInfo<ConnectionPhase>>()
        .map(|ConnectInfo(phase)| phase.clone());
    if let Some(phase) = &phase {
        phase.request_started();
    }
    let body_reading = BodyReading::default();
    request.extensions_mut().insert(body_reading.clone());

    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_string(), |path| {
            path.as_str().to_string()
        });
    let timeout = state.request_timeout();

    // NOTE: the handler of a timed-out request is dropped mid-way. A put or
    // delete that already reached its shard still takes effect, unacknowledged.
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) if body_reading.is_reading() => ApiError::body_timeout(timeout).into_response(),
        Err(_) => ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            field: None,
            message: format!(
                "request timed out after {}: the server is overloaded",
                humantime::format_duration(timeout)
            ),
        }
        .into_response(),
    };

    if let Some(ValidationRejection(reason)) = response.extensions().get() {
        state.metrics().count_rejected(reason);
    }
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route),
        ("method", method.to_string()),
        ("status", status),
    ];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels).record(started.elapsed());
    if let Some(phase) = &phase {
        phase.request_finished();
    }
    response
}

/// Returns the `method` label: the methods the API serves, or `other`, so
/// a client cannot add label values.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}
