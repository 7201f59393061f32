//! The HTTP routes of the watchdog and their handlers.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::auth::{require_token, Access};
use super::config::ServeConfig;
use super::errors::{self, ApiError};
use super::input::{decode_put, parse_id, Limits};
use super::telemetry::observe;
use super::watchdog::{Watch, WatchRequest, WatchdogMetrics};
use crate::{Interval, Manager, PutResult, State as ManagerState};

use super::Watchdog;

/// State shared by every handler: the manager, the limits and the metrics.
#[derive(Clone)]
pub(crate) struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    manager: Manager<Watchdog>,
    metrics: Arc<WatchdogMetrics>,
    prometheus: PrometheusHandle,
    process: metrics_process::Collector,
    limits: Limits,
    max_entries: usize,
    /// Puts in flight: each may add an entry that `manager.len()` does not
    /// count yet.
    puts_in_flight: AtomicUsize,
    call_timeout: Duration,
    request_timeout: Duration,
    access: Access,
    draining: AtomicBool,
}

impl AppState {
    pub(crate) fn new(
        manager: Manager<Watchdog>,
        metrics: Arc<WatchdogMetrics>,
        prometheus: PrometheusHandle,
        config: &ServeConfig,
    ) -> Self {
        let process = metrics_process::Collector::default();
        process.describe();
        AppState {
            inner: Arc::new(Shared {
                manager,
                metrics,
                prometheus,
                process,
                limits: Limits {
                    max_id_bytes: config.max_id_bytes,
                    max_body_bytes: config.max_body_bytes,
                    max_payload_bytes: config.max_payload_bytes,
                    min_interval: config.min_interval,
                    max_interval: config.max_interval,
                },
                max_entries: config.max_entries,
                puts_in_flight: AtomicUsize::new(0),
                call_timeout: config.call_timeout,
                request_timeout: config.request_timeout,
                access: Access {
                    token: config.auth_token.clone(),
                    protect_metrics: config.protect_metrics,
                },
                draining: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(crate) fn access(&self) -> &Access {
        &self.inner.access
    }

    pub(crate) fn metrics(&self) -> &WatchdogMetrics {
        &self.inner.metrics
    }

    /// Marks the server as draining, so `/readyz` returns 503 from now on.
    pub(crate) fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    fn id(&self, path: Result<Path<String>, PathRejection>) -> Result<Arc<str>, ApiError> {
        let Path(id) = path.map_err(|rejection| ApiError::from_path(&rejection))?;
        parse_id(&id, self.inner.limits.max_id_bytes)
    }

    /// Claims room for one more entry before a put of `id`.
    ///
    /// Below the limit any put may go ahead. At the limit only a put whose
    /// id exists may, because it replaces an entry instead of adding one.
    /// Every put in flight has a claim, so concurrent puts of new ids
    /// cannot together pass the limit.
    async fn claim_room(&self, id: &Arc<str>) -> Result<RoomClaim<'_>, ApiError> {
        let shared = &self.inner;
        let others = shared.puts_in_flight.fetch_add(1, Ordering::AcqRel);
        let claim = RoomClaim {
            puts_in_flight: &shared.puts_in_flight,
        };
        // Read after the claim: a put that released its claim has been
        // applied, so `len()` counts its entry from here on.
        if shared.manager.len().saturating_add(others) < shared.max_entries {
            return Ok(claim);
        }

        // NOTE: the manager has no non-waiting `contains`, so a full queue
        // is bounded here by the call timeout instead of rejected at once.
        let exists = tokio::time::timeout(shared.call_timeout, shared.manager.contains(id))
            .await
            .map_err(|_| ApiError::overloaded("the id's shard did not take the request in time"))?
            .map_err(|error| ApiError::from_engine(&error, id))?;
        if exists {
            Ok(claim)
        } else {
            Err(ApiError::entry_limit(id, shared.max_entries))
        }
    }
}

/// A put's claim on room for one more entry, released when the put has
/// its result.
///
/// NOTE: a put whose request timed out releases its claim when its handler
/// is dropped, which can be before its shard applies it. The limit can then
/// be passed by the number of such puts.
struct RoomClaim<'a> {
    puts_in_flight: &'a AtomicUsize,
}

impl Drop for RoomClaim<'_> {
    fn drop(&mut self) {
        self.puts_in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// Builds the router: the key routes, metrics and health, JSON responses
/// for unknown routes and methods, the body limit, the token check and the
/// request metrics (which count the 401 responses too).
pub(crate) fn router(state: AppState) -> Router {
    let body_limit = state.inner.limits.max_body_bytes;
    Router::new()
        .route(
            "/v1/keys/{id}",
            put(put_key).get(get_key).delete(delete_key),
        )
        .route("/v1/keys/{id}/complete", post(complete_key))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(errors::no_route)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(from_fn_with_state(state.clone(), require_token))
        .layer(from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Whether a route is reading the request body, shared by the request
/// middleware and [`TimedBody`]: a request that times out while its body
/// is being read gets 408 instead of 503.
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyReading(Arc<AtomicBool>);

impl BodyReading {
    pub(crate) fn is_reading(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The request body, read whole like [`Bytes`], while [`BodyReading`]
/// marks the read.
struct TimedBody(Result<Bytes, BytesRejection>);

impl FromRequest<AppState> for TimedBody {
    type Rejection = Infallible;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Infallible> {
        let reading = request.extensions().get::<BodyReading>().cloned();
        if let Some(reading) = &reading {
            reading.0.store(true, Ordering::Relaxed);
        }
        let body = Bytes::from_request(request, state).await;
        if let Some(reading) = &reading {
            reading.0.store(false, Ordering::Relaxed);
        }
        Ok(TimedBody(body))
    }
}

#[derive(Serialize)]
struct PutReply<'a> {
    id: &'a str,
    result: &'static str,
}

/// `PUT /v1/keys/{id}`: registers an expected callback.
///
/// A full command queue gets 503 at once; a 2xx is sent only after the
/// shard has applied the put.
async fn put_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    TimedBody(body): TimedBody,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|rejection| ApiError::from_path(&rejection))?;
    let limits = &state.inner.limits;
    let body = body
        .as_deref()
        .map_err(|rejection| ApiError::from_body(rejection, limits.max_body_bytes));
    let request = decode_put(
        &id,
        query.as_deref(),
        headers
            .get(header::CONTENT_TYPE)
            .map(|value| value.as_bytes()),
        body,
        limits,
    )?;
    let id = request.id;
    let registration = request.registration;

    let _claim = state.claim_room(&id).await?;
    let watch = Watch::new(registration.payload, registration.max_alerts);
    let manager = &state.inner.manager;
    let put = if request.if_absent {
        manager
            .try_put_new(id.clone(), watch, registration.options)
            .await
    } else {
        manager
            .try_put(id.clone(), watch, registration.options)
            .await
    };
    let result = put.map_err(|failure| ApiError::from_engine(&failure.error, &id))?;

    let (status, result) = match result {
        PutResult::Inserted => (StatusCode::CREATED, "created"),
        PutResult::Replaced => (StatusCode::OK, "replaced"),
        PutResult::Exists => (StatusCode::OK, "unchanged"),
    };
    if status == StatusCode::CREATED || result == "replaced" {
        state.inner.metrics.registered.increment(1);
    }
    Ok((status, Json(PutReply { id: &id, result })).into_response())
}

#[derive(Serialize)]
struct KeyReply<'a> {
    id: &'a str,
    payload: &'a RawValue,
    every: Option<String>,
    alerts: u32,
    max_alerts: Option<u32>,
    pending_for_ms: u64,
    next_due_in_ms: Option<u64>,
    last_outcome: Option<&'static str>,
    registered_at: String,
}

/// `GET /v1/keys/{id}`: the payload and state of one watch.
///
/// NOTE: the manager has no non-waiting `get`, so on a full command queue
/// this waits for room, for at most the call timeout, and then gets 503.
async fn get_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = state.id(path)?;
    let snapshot = state
        .inner
        .manager
        .get(&id)
        .await
        .map_err(|error| ApiError::from_engine(&error, &id))?
        .ok_or_else(|| ApiError::no_entry(&id))?;

    let watch = &snapshot.payload;
    let now = Instant::now();
    let reply = KeyReply {
        id: &id,
        payload: watch.payload(),
        every: match snapshot.interval {
            Interval::Every(every) => Some(humantime::format_duration(every).to_string()),
            Interval::Never => None,
        },
        alerts: watch.alerts(),
        max_alerts: watch.max_alerts().map(|max| max.get()),
        pending_for_ms: millis(watch.pending_for()),
        next_due_in_ms: snapshot
            .next_due
            .map(|due| millis(due.saturating_duration_since(now))),
        last_outcome: snapshot.last_outcome.map(|outcome| outcome.as_str()),
        registered_at: rfc3339(watch.registered_at()),
    };
    Ok(Json(reply).into_response())
}

/// `DELETE /v1/keys/{id}`: removes a watch. Returns 204, or 404 if there was none.
async fn delete_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = state.id(path)?;
    let existed = state
        .inner
        .manager
        .try_del(&id)
        .await
        .map_err(|error| ApiError::from_engine(&error, &id))?;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::no_entry(&id))
    }
}

#[derive(Serialize)]
struct CompleteReply<'a> {
    id: &'a str,
    payload: &'a RawValue,
    pending_for_ms: u64,
    alerts: u32,
    registered_at: String,
}

/// `POST /v1/keys/{id}/complete`: the callback arrived. The entry's
/// payload is read and the entry removed in one call, so a concurrent
/// alert or second completion can never see it half-done.
async fn complete_key(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = state.id(path)?;
    let completion = state
        .inner
        .manager
        .try_call(&id, WatchRequest::Complete)
        .await
        .map_err(|error| ApiError::from_engine(&error, &id))?
        .ok_or_else(|| ApiError::no_entry(&id))?;

    let reply = CompleteReply {
        id: &id,
        payload: &completion.payload,
        pending_for_ms: millis(completion.pending_for),
        alerts: completion.alerts,
        registered_at: rfc3339(completion.registered_at),
    };
    Ok(Json(reply).into_response())
}

/// `GET /metrics`: the Prometheus text format.
async fn render_metrics(State(state): State<AppState>) -> Response {
    state.inner.process.collect();
    let body = state.inner.prometheus.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /healthz`: 200 whenever the process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 while the manager serves, 503 while it starts, after
/// the store failed a write (a restart is needed), and from the moment a
/// drain begins, also while the listener is still open.
async fn readyz(State(state): State<AppState>) -> Response {
    let manager_state = state.inner.manager.state();
    let draining = state.inner.draining.load(Ordering::Relaxed);
    let store_failed = state.inner.manager.store_failure().is_some();
    let (status, text) = match manager_state {
        ManagerState::Ready if store_failed => (StatusCode::SERVICE_UNAVAILABLE, "store_failed"),
        ManagerState::Ready if !draining => (StatusCode::OK, "ready"),
        ManagerState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    (status, Json(serde_json::json!({ "status": text }))).into_response()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
