//! `keywheel serve`: a watchdog for expected callbacks, over HTTP.
//!
//! A client that sends a request to an external service registers an id
//! with `PUT /v1/keys/{id}` and an interval. If the callback has not
//! arrived (`POST /v1/keys/{id}/complete`) when the interval has passed,
//! the watchdog raises an overdue alert, and again every interval until
//! the callback arrives, the entry is deleted, or `max_alerts` is reached.
//!
//! | route | response |
//! |---|---|
//! | `PUT /v1/keys/{id}` | 201 created, 200 replaced (or unchanged with `?if_absent=true`) |
//! | `GET /v1/keys/{id}` | 200 with payload, interval, alerts, pending time, or 404 |
//! | `DELETE /v1/keys/{id}` | 204, or 404 |
//! | `POST /v1/keys/{id}/complete` | 200 with payload, pending time and alerts, or 404 |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz`, `GET /readyz` | 200, but `/readyz` is 503 while starting or draining |
//!
//! The body of a `PUT` is a JSON object: `every` (required, a duration
//! such as `"30s"` or `"250ms"`), `payload` (any JSON, default `null`),
//! `first_run` (`"immediately"` or a duration), `jitter` (a duration) and
//! `max_alerts` (at least 1, and without it alerts go on until completion).
//! Replacing an entry starts its schedule and alert count afresh.
//!
//! Rejected input changes nothing and gets a JSON error naming the field
//! and the rule: 400 for invalid input, 413 for a body or payload over its
//! limit, 415 for a content type other than JSON, 408 for a body that does
//! not arrive within the request timeout, 414 and 431 for a request line
//! or headers over hyper's limits. Ids are 1 to `max_id_bytes` characters
//! from `A-Z a-z 0-9 . _ : -`. Durations are whole milliseconds, and
//! `every` is from `min_interval` to `max_interval`.
//!
//! The server protects itself: with an [`AuthToken`], requests without it
//! get 401; a put of a new id beyond `max_entries` gets 507; a request
//! whose shard has a full command queue gets 503 with `Retry-After: 1`
//! instead of waiting. Open connections are capped at `max_connections`,
//! and a connection is closed after `idle_timeout` without traffic or when
//! a request head takes longer than `header_timeout`. Webhook deliveries
//! run outside the worker pool, at most `webhook_concurrency` at once.
//! [`ServeConfig`] lists every limit.
//!
//! # Example
//!
//! ```no_run
//! use keywheel::server::{ServeConfig, Server};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let server = Server::bind(ServeConfig::default()).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod cli;
mod config;
mod delivery;
mod errors;
mod input;
mod listener;
mod log_limit;
mod routes;
mod storage;
mod telemetry;
mod watchdog;
mod webhook;

#[doc(hidden)]
pub mod fuzzing;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::{AuthToken, TokenText, MAX_TOKEN_BYTES, MIN_TOKEN_BYTES};
pub use cli::{init_logging, LogFormat, Resolved, ServeArgs};
pub use config::{
    ServeConfig, SettingError, DEFAULT_CALL_TIMEOUT, DEFAULT_COMMAND_CAPACITY, DEFAULT_DATA_DIR,
    DEFAULT_DRAIN_DELAY, DEFAULT_DRAIN_GRACE, DEFAULT_FLUSH_INTERVAL, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_ID_BYTES, DEFAULT_MAX_INTERVAL, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MIN_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WEBHOOK_TIMEOUT,
};
pub use storage::WatchCodec;
pub use telemetry::{
    prometheus, BUILD_INFO, FALLBACK_SECONDS_BUCKETS, HTTP_DURATION_BUCKETS, HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
};
pub use watchdog::{
    alerts_total, Completion, Watch, WatchRequest, Watchdog, WebhookResponse, ALERTS_TOTAL,
    COMPLETED_TOTAL, EXPIRED_TOTAL, REGISTERED_TOTAL, WEBHOOK_TOTAL,
};

use crate::store::FjallStore;
use crate::{Manager, Persistence};
use delivery::Deliveries;
use listener::{ConnectionPhase, ConnectionTimeouts, LimitedListener};
use routes::AppState;
use watchdog::WatchdogMetrics;
use webhook::Webhook;

/// The `manager` label of the watchdog's metrics.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::MANAGER_NAME, "watchdog");
/// ```
pub const MANAGER_NAME: &str = "watchdog";

/// A bound watchdog server: the listener is open and the manager runs;
/// [`run`](Server::run) serves requests.
///
/// # Example
///
/// ```no_run
/// use std::net::SocketAddr;
/// use keywheel::server::{ServeConfig, Server};
///
/// # async fn run() -> anyhow::Result<()> {
/// let config = ServeConfig {
///     listen: SocketAddr::from(([127, 0, 0, 1], 0)),
///     data_dir: None, // in memory only
///     ..ServeConfig::default()
/// };
/// let server = Server::bind(config).await?;
/// assert_ne!(server.local_addr().port(), 0);
/// assert_eq!(server.manager().len(), 0);
///
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let serving = tokio::spawn(server.run(async {
///     let _ = stopped.await;
/// }));
/// stop.send(()).ok();
/// serving.await??;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    manager: Manager<Watchdog>,
    state: AppState,
    config: ServeConfig,
    deliveries: Option<DeliveriesLink>,
}

/// The server's link from its webhook deliveries to its manager. Dropping
/// it, when the server stops or is dropped unused, unlinks them, because
/// the manager owns the deliveries through its handler.
struct DeliveriesLink(Arc<Deliveries>);

impl Drop for DeliveriesLink {
    fn drop(&mut self) {
        self.0.detach();
    }
}

impl Server {
    /// Checks the config, installs the process's Prometheus recorder (once
    /// per process), opens the data directory and reads every stored watch
    /// back (unless `data_dir` is `None`), starts the manager and binds the
    /// TCP listener.
    ///
    /// # Errors
    ///
    /// An invalid setting, an invalid webhook URL, a data directory that
    /// another process holds or that is damaged (the error names it and
    /// what to do; nothing in it is changed), a listen address that cannot
    /// be bound, or another metrics recorder already installed.
    ///
    /// # Example
    ///
    /// See the example on [`Server`].
    pub async fn bind(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let prometheus = telemetry::prometheus()?;
        let metrics = Arc::new(WatchdogMetrics::new(MANAGER_NAME));
        let deliveries = config
            .webhook
            .as_deref()
            .map(|url| {
                let webhook = Webhook::new(
                    url,
                    config.webhook_timeout,
                    config.min_interval,
                    config.max_interval,
                )?;
                let max_in_flight = config.effective_webhook_concurrency();
                anyhow::Ok(Deliveries::new(webhook, max_in_flight, metrics.clone()))
            })
            .transpose()?;

        let builder = Manager::builder(Watchdog::new(metrics.clone(), deliveries.clone()))
            .name(MANAGER_NAME)
            .shards(config.shards)
            .workers(config.workers)
            .call_timeout(config.call_timeout)
            .command_capacity(config.command_capacity);
        let manager = match &config.data_dir {
            Some(dir) => {
                // The store is opened first, so a locked or damaged
                // directory stops the start before the port is taken.
                let store = FjallStore::open(dir)?;
                let persistence =
                    Persistence::new(store, WatchCodec).flush_interval(config.flush_interval);
                builder.persistence(persistence).open().await?
            }
            None => builder.build().context("invalid manager settings")?,
        };

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        let local_addr = listener
            .local_addr()
            .context("failed to read the listen address")?;
        let deliveries = deliveries.map(|deliveries| {
            deliveries.attach(manager.clone());
            DeliveriesLink(deliveries)
        });
        let state = AppState::new(manager.clone(), metrics, prometheus, &config);

        Ok(Server {
            listener,
            local_addr,
            manager,
            state,
            config,
            deliveries,
        })
    }

    /// Returns the address the server listens on (with the real port when
    /// port 0 was requested).
    ///
    /// # Example
    ///
    /// See the example on [`Server`].
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the manager of the watches, for in-process figures such as
    /// `len()`, `performs()` and `lateness()`.
    ///
    /// # Example
    ///
    /// See the example on [`Server`], and the one on [`Watchdog`] for a put and a call.
    pub fn manager(&self) -> &Manager<Watchdog> {
        &self.manager
    }

    /// Serves requests until `shutdown` resolves, then drains.
    ///
    /// Draining: `/readyz` turns 503 at once, every route keeps serving for
    /// the drain delay, then the listener closes, open requests get the
    /// drain grace to finish, and then the manager stops, while webhook
    /// deliveries in flight get the same grace.
    ///
    /// # Errors
    ///
    /// The HTTP server failed while accepting connections.
    ///
    /// # Example
    ///
    /// See the example on [`Server`].
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Server {
            listener,
            local_addr,
            manager,
            state,
            config,
            deliveries,
        } = self;
        log_start(&config, local_addr);

        let stopping = CancellationToken::new();
        let graceful = {
            let stopping = stopping.clone();
            let state = state.clone();
            let delay = config.drain_delay;
            async move {
                shutdown.await;
                state.start_draining();
                tracing::info!(
                    drain_delay = %humantime::format_duration(delay),
                    "shutdown requested, draining: /readyz returns 503, and the listener closes after the drain delay"
                );
                tokio::time::sleep(delay).await;
                stopping.cancel();
            }
        };
        let app = routes::router(state).into_make_service_with_connect_info::<ConnectionPhase>();
        let timeouts = ConnectionTimeouts {
            idle: config.idle_timeout,
            header: config.header_timeout,
        };
        let listener = LimitedListener::new(listener, config.max_connections, timeouts);
        let serving = axum::serve(listener, app).with_graceful_shutdown(graceful);

        let served = tokio::select! {
            served = serving.into_future() => served.context("the HTTP server failed"),
            () = http_drain_deadline(&stopping, config.drain_grace) => {
                tracing::warn!(
                    grace = %humantime::format_duration(config.drain_grace),
                    "HTTP requests still open after the drain grace, closing them"
                );
                Ok(())
            }
        };

        // Deliveries finish first, while the manager still takes the casts
        // that apply their responses: a 410 answered during the drain
        // still halts its entry, also in the store.
        let deliveries_unfinished = match &deliveries {
            Some(link) => link.0.finish(config.drain_grace).await,
            None => 0,
        };
        let report = manager.shutdown(config.drain_grace).await;
        drop(deliveries);
        tracing::info!(
            entries_terminated = report.terminated,
            alerts_in_flight = report.in_flight,
            alerts_cancelled = report.cancelled,
            webhook_deliveries_unfinished = deliveries_unfinished,
            "keywheel serve stopped"
        );
        served
    }
}

/// Logs the start line with the effective settings, never the token.
fn log_start(config: &ServeConfig, local_addr: SocketAddr) {
    let webhook = config
        .webhook
        .as_deref()
        .and_then(|url| reqwest::Url::parse(url).ok())
        .map_or_else(|| "none".to_string(), |url| webhook::redacted_url(&url));
    let auth = match (&config.auth_token, config.protect_metrics) {
        (None, _) => "none",
        (Some(_), false) => "bearer token on /v1",
        (Some(_), true) => "bearer token on every route",
    };
    tracing::info!(
        listen = %local_addr,
        shards = config.shards,
        workers = config.workers,
        webhook,
        webhook_concurrency = config.effective_webhook_concurrency(),
        auth,
        max_entries = config.max_entries,
        max_connections = config.max_connections,
        command_capacity = config.command_capacity,
        header_timeout = %humantime::format_duration(config.header_timeout),
        min_interval = %config::show_interval(config.min_interval),
        max_interval = %config::show_interval(config.max_interval),
        drain_delay = %humantime::format_duration(config.drain_delay),
        "keywheel serve started"
    );
    if config.auth_token.is_none() && !config.listen.ip().to_canonical().is_loopback() {
        tracing::warn!(
            listen = %local_addr,
            "serving without authentication on an address other hosts can reach (--insecure-no-auth)"
        );
    }
}

/// Resolves once the drain grace has passed after shutdown began.
async fn http_drain_deadline(stopping: &CancellationToken, grace: Duration) {
    stopping.cancelled().await;
    tokio::time::sleep(grace).await;
}
