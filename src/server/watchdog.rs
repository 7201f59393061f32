//! The watchdog handler: one entry per expected callback, one alert per
//! overdue perform.
//!
//! A client registers an id when it sends a request to an external service
//! and completes it when the callback arrives. Until then every due perform
//! of the entry is an overdue alert: a rate-limited `warn` line, a counter
//! and, with a webhook configured, a POST that can steer the entry. After
//! `max_alerts` alerts the entry expires.
//!
//! The POST runs outside the worker pool, and its response comes back as a
//! cast (see `delivery`). While it is in flight, due performs of the same
//! entry raise no new alert.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::{describe_counter, Counter, Label};
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::delivery::{Claim, Deliveries};
use super::errors::REJECTION_REASONS;
use super::log_limit::LogLimiter;
use super::webhook::{Alert, Steer};
use crate::{Handler, Outcome, TerminateReason};

/// Overdue alerts, by `manager`.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::ALERTS_TOTAL, "keywheel_watchdog_alerts_total");
/// ```
pub const ALERTS_TOTAL: &str = "keywheel_watchdog_alerts_total";
/// Entries removed after `max_alerts` alerts, by `manager`.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::EXPIRED_TOTAL, "keywheel_watchdog_expired_total");
/// ```
pub const EXPIRED_TOTAL: &str = "keywheel_watchdog_expired_total";
/// Entries created or replaced through `PUT /v1/keys/{id}`, by `manager`.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::REGISTERED_TOTAL, "keywheel_watchdog_registered_total");
/// ```
pub const REGISTERED_TOTAL: &str = "keywheel_watchdog_registered_total";
/// Entries completed through `POST /v1/keys/{id}/complete`, by `manager`.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::COMPLETED_TOTAL, "keywheel_watchdog_completed_total");
/// ```
pub const COMPLETED_TOTAL: &str = "keywheel_watchdog_completed_total";
/// Webhook deliveries, by `manager` and `result` (continue, reschedule,
/// halt, rejected, failed, skipped). A result is counted when the
/// delivery ends, also if the entry is gone by then.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::WEBHOOK_TOTAL, "keywheel_watchdog_webhook_total");
/// ```
pub const WEBHOOK_TOTAL: &str = "keywheel_watchdog_webhook_total";

/// Minimum time between two log lines of one kind (overdue, expired,
/// webhook failure). One line per alert would flood the log when many
/// callbacks are late together.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Every alert of every watchdog in this process.
static ALERTS: AtomicU64 = AtomicU64::new(0);

/// The last registration number handed out; see [`Watch::new`].
static REGISTRATIONS: AtomicU64 = AtomicU64::new(0);

/// Returns how many overdue alerts all watchdogs of this process have
/// raised so far.
///
/// # Example
///
/// ```
/// let before = keywheel::server::alerts_total();
/// assert!(keywheel::server::alerts_total() >= before);
/// ```
pub fn alerts_total() -> u64 {
    ALERTS.load(Ordering::Relaxed)
}

/// Describes the watchdog metrics, so `# HELP` lines appear before the first sample.
pub(crate) fn describe() {
    describe_counter!(ALERTS_TOTAL, "Overdue alerts raised by the watchdog.");
    describe_counter!(
        EXPIRED_TOTAL,
        "Watchdog entries removed after reaching max_alerts."
    );
    describe_counter!(REGISTERED_TOTAL, "Watchdog entries created or replaced.");
    describe_counter!(
        COMPLETED_TOTAL,
        "Watchdog entries completed before they expired."
    );
    describe_counter!(WEBHOOK_TOTAL, "Webhook deliveries of alerts, by result.");
}

/// The state of one expected callback: the client's payload and the alert count.
///
/// # Example
///
/// ```
/// use std::num::NonZeroU32;
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use keywheel::server::Watch;
/// use serde_json::value::RawValue;
///
/// let payload: Arc<RawValue> = RawValue::from_string(r#"{"order":7}"#.to_string()).unwrap().into();
/// let watch = Watch::new(payload, NonZeroU32::new(3));
///
/// assert_eq!(watch.payload().get(), r#"{"order":7}"#);
/// assert_eq!(watch.alerts(), 0);
/// assert_eq!(watch.max_alerts(), NonZeroU32::new(3));
/// assert!(watch.registered_at() <= SystemTime::now());
/// assert!(watch.pending_for() < std::time::Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
pub struct Watch {
    payload: Arc<RawValue>,
    registered: Instant,
    registered_at: SystemTime,
    alerts: u32,
    max_alerts: Option<NonZeroU32>,
    /// A number unique to this watch in the process, so that a webhook
    /// response meant for an earlier watch of the same id is recognized.
    registration: u64,
}

impl Watch {
    /// Starts a watch of `payload` (any JSON text) at the current time;
    /// `max_alerts` of `None` alerts until the entry is completed or deleted.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn new(payload: Arc<RawValue>, max_alerts: Option<NonZeroU32>) -> Self {
        Watch {
            payload,
            registered: Instant::now(),
            registered_at: SystemTime::now(),
            alerts: 0,
            max_alerts,
            registration: REGISTRATIONS.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// Rebuilds a watch read back from the store: registered at
    /// `registered_at` (wall clock), with `alerts` raised so far.
    pub(crate) fn restored(
        payload: Arc<RawValue>,
        registered_at: SystemTime,
        alerts: u32,
        max_alerts: Option<NonZeroU32>,
    ) -> Self {
        // The monotonic registration time is as far back as the wall clock
        // says, so `pending_for` includes the time the process was down.
        let ago = SystemTime::now()
            .duration_since(registered_at)
            .unwrap_or_default();
        let now = Instant::now();
        let mut watch = Watch::new(payload, max_alerts);
        watch.registered = now.checked_sub(ago).unwrap_or(now);
        watch.registered_at = registered_at;
        watch.alerts = alerts;
        watch
    }

    /// Returns the client's payload, as the JSON text it sent.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn payload(&self) -> &Arc<RawValue> {
        &self.payload
    }

    /// Overdue alerts raised so far.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn alerts(&self) -> u32 {
        self.alerts
    }

    /// Returns the alert count at which the entry expires, if any.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn max_alerts(&self) -> Option<NonZeroU32> {
        self.max_alerts
    }

    /// Returns how long the callback has been pending, on the monotonic clock.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn pending_for(&self) -> Duration {
        self.registered.elapsed()
    }

    /// Returns the wall-clock time of the registration, for display only.
    ///
    /// # Example
    ///
    /// See the example on [`Watch`].
    pub fn registered_at(&self) -> SystemTime {
        self.registered_at
    }

    fn has_expired(&self) -> bool {
        self.max_alerts.is_some_and(|max| self.alerts >= max.get())
    }
}

/// The request of a watchdog `call`.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use keywheel::server::{Completion, WatchRequest, Watchdog};
/// use keywheel::Manager;
///
/// /// Completes the watch of `id`, or returns `None` when it has no entry.
/// async fn complete(manager: &Manager<Watchdog>, id: &str) -> Option<Completion> {
///     let id: Arc<str> = Arc::from(id);
///     manager.call(&id, WatchRequest::Complete).await.ok().flatten()
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchRequest {
    /// The callback arrived: reply with the watch and remove the entry.
    Complete,
}

/// The reply to [`WatchRequest::Complete`].
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use keywheel::server::{Completion, WatchRequest, Watchdog};
/// use keywheel::Manager;
///
/// /// Completes the watch of `id`, or returns `None` when it has no entry.
/// async fn complete(manager: &Manager<Watchdog>, id: &str) -> Option<Completion> {
///     let id: Arc<str> = Arc::from(id);
///     manager.call(&id, WatchRequest::Complete).await.ok().flatten()
/// }
///
/// /// Prints how long the callback of `id` was pending.
/// async fn report(manager: &Manager<Watchdog>, id: &str) {
///     if let Some(completion) = complete(manager, id).await {
///         println!(
///             "{id} completed after {:?} and {} alerts, payload {}",
///             completion.pending_for,
///             completion.alerts,
///             completion.payload.get()
///         );
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Completion {
    /// The client's payload.
    pub payload: Arc<RawValue>,
    /// How long the callback was pending.
    pub pending_for: Duration,
    /// Overdue alerts raised before the callback arrived.
    pub alerts: u32,
    /// The wall-clock time of the registration.
    pub registered_at: SystemTime,
}

/// The message of a watchdog `cast`: what a webhook's response to one
/// alert requests of the entry.
///
/// Only the server creates these. A delivery task casts one to the entry
/// when the webhook responds with a new interval or with 410 Gone, and
/// after any response to the entry's last alert before `max_alerts`. The
/// watchdog applies it only to the watch the alert was about: a response
/// that reaches an entry registered again in the meantime changes nothing.
///
/// # Example
///
/// ```
/// use keywheel::server::{Watchdog, WebhookResponse};
/// use keywheel::Handler;
///
/// fn is_cast_message(_: <Watchdog as Handler>::Message) {}
/// let _check: fn(WebhookResponse) = is_cast_message;
/// ```
#[derive(Debug, Clone)]
pub struct WebhookResponse {
    pub(crate) registration: u64,
    pub(crate) steer: Steer,
}

/// Counter handles of one watchdog, registered once with its `manager` label.
#[derive(Debug)]
pub(crate) struct WatchdogMetrics {
    pub(crate) alerts: Counter,
    pub(crate) expired: Counter,
    pub(crate) registered: Counter,
    pub(crate) completed: Counter,
    pub(crate) webhook: WebhookCounters,
    /// `keywheel_rejected_total` by reason, for requests that failed
    /// input validation; see [`REJECTION_REASONS`].
    rejected: Vec<(&'static str, Counter)>,
}

/// Webhook deliveries by result.
#[derive(Debug)]
pub(crate) struct WebhookCounters {
    /// A 2xx response without a new interval.
    pub(crate) continued: Counter,
    /// A 2xx response with a new interval.
    pub(crate) rescheduled: Counter,
    /// A 410 response.
    pub(crate) halted: Counter,
    /// Any other status, or a 2xx body that was not understood.
    pub(crate) rejected: Counter,
    /// No response: a connection error or a timeout.
    pub(crate) failed: Counter,
    /// Not sent, because the maximum number of deliveries was in flight or
    /// an earlier watch of the id still had one in flight.
    pub(crate) skipped: Counter,
}

impl WatchdogMetrics {
    /// Registers the counters of the manager named `manager`.
    pub(crate) fn new(manager: &str) -> Self {
        let plain = |name: &'static str| {
            metrics::counter!(name, vec![Label::new("manager", manager.to_string())])
        };
        let webhook = |result: &'static str| {
            metrics::counter!(
                WEBHOOK_TOTAL,
                vec![
                    Label::new("manager", manager.to_string()),
                    Label::new("result", result),
                ]
            )
        };
        WatchdogMetrics {
            alerts: plain(ALERTS_TOTAL),
            expired: plain(EXPIRED_TOTAL),
            registered: plain(REGISTERED_TOTAL),
            completed: plain(COMPLETED_TOTAL),
            webhook: WebhookCounters {
                continued: webhook("continue"),
                rescheduled: webhook("reschedule"),
                halted: webhook("halt"),
                rejected: webhook("rejected"),
                failed: webhook("failed"),
                skipped: webhook("skipped"),
            },
            rejected: REJECTION_REASONS
                .iter()
                .map(|&reason| {
                    let counter = metrics::counter!(
                        crate::metrics::REJECTED_TOTAL,
                        vec![
                            Label::new("manager", manager.to_string()),
                            Label::new("reason", reason),
                        ]
                    );
                    (reason, counter)
                })
                .collect(),
        }
    }

    /// Counts a request rejected by input validation, by `reason`, one
    /// of [`REJECTION_REASONS`].
    pub(crate) fn count_rejected(&self, reason: &str) {
        if let Some((_, counter)) = self.rejected.iter().find(|(known, _)| *known == reason) {
            counter.increment(1);
        }
    }
}

/// The [`Handler`] of `keywheel serve`: each perform is one overdue alert.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use keywheel::server::{ServeConfig, Server, Watch, WatchRequest};
/// use keywheel::EntryOptions;
/// use serde_json::value::RawValue;
///
/// # async fn run() -> anyhow::Result<()> {
/// let server = Server::bind(ServeConfig::default()).await?;
/// let manager = server.manager();
///
/// let id: Arc<str> = Arc::from("order-7");
/// let payload: Arc<RawValue> = RawValue::from_string(r#"{"order":7}"#.to_string())?.into();
/// let every = EntryOptions::every(Duration::from_secs(30));
/// manager.put(id.clone(), Watch::new(payload, None), every).await?;
///
/// let completion = manager.call(&id, WatchRequest::Complete).await?;
/// assert_eq!(completion.map(|done| done.alerts), Some(0));
/// assert_eq!(manager.len(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Watchdog {
    metrics: Arc<WatchdogMetrics>,
    deliveries: Option<Arc<Deliveries>>,
    overdue_log: LogLimiter,
    expired_log: LogLimiter,
}

impl Watchdog {
    pub(crate) fn new(metrics: Arc<WatchdogMetrics>, deliveries: Option<Arc<Deliveries>>) -> Self {
        Watchdog {
            metrics,
            deliveries,
            overdue_log: LogLimiter::new(LOG_EVERY),
            expired_log: LogLimiter::new(LOG_EVERY),
        }
    }

    fn log_overdue(&self, id: &str, watch: &Watch, pending_for: Duration) {
        if let Some(suppressed) = self.overdue_log.allow() {
            tracing::warn!(
                id,
                pending_for = %format_millis(pending_for),
                alerts = watch.alerts,
                suppressed,
                "callback overdue"
            );
        }
    }

    /// Counts and logs the expiry of an entry that reached `max_alerts`.
    fn expire(&self, id: &str, watch: &Watch) -> Outcome<Arc<str>> {
        self.metrics.expired.increment(1);
        self.log_expired(id, watch, watch.pending_for());
        Outcome::Halt
    }

    fn log_expired(&self, id: &str, watch: &Watch, pending_for: Duration) {
        if let Some(suppressed) = self.expired_log.allow() {
            tracing::warn!(
                id,
                pending_for = %format_millis(pending_for),
                alerts = watch.alerts,
                suppressed,
                "callback never arrived, so the entry expired after max_alerts alerts"
            );
        }
    }
}

impl Handler for Watchdog {
    type Id = Arc<str>;
    type Payload = Watch;
    type Request = WatchRequest;
    type Reply = Option<Completion>;
    type Message = WebhookResponse;

    async fn perform(&self, id: &Arc<str>, watch: &mut Watch) -> Outcome<Arc<str>> {
        let claim = self
            .deliveries
            .as_ref()
            .map(|deliveries| deliveries.claim(id, watch.registration));
        if matches!(claim, Some(Claim::Delivering)) {
            return Outcome::Continue;
        }

        watch.alerts = watch.alerts.saturating_add(1);
        ALERTS.fetch_add(1, Ordering::Relaxed);
        self.metrics.alerts.increment(1);

        let pending_for = watch.pending_for();
        self.log_overdue(id, watch, pending_for);

        let mut delivering = false;
        if let (Some(deliveries), Some(claim)) = (&self.deliveries, claim) {
            match claim {
                Claim::Granted(ticket) => {
                    let alert =
                        Alert::new(id.clone(), watch.payload.clone(), pending_for, watch.alerts);
                    deliveries.send(ticket, alert, watch.has_expired());
                    delivering = true;
                }
                other => deliveries.skip(id, &other),
            }
        }

        if watch.has_expired() {
            if delivering {
                // The entry expires once the webhook has responded to its
                // last alert (see `cast`), because a 410 to it still counts.
                return Outcome::Continue;
            }
            return self.expire(id, watch);
        }
        Outcome::Continue
    }

    async fn call(
        &self,
        _id: &Arc<str>,
        watch: &mut Watch,
        request: WatchRequest,
    ) -> (Option<Completion>, Outcome<Arc<str>>) {
        match request {
            WatchRequest::Complete => {
                self.metrics.completed.increment(1);
                let completion = Completion {
                    payload: watch.payload.clone(),
                    pending_for: watch.pending_for(),
                    alerts: watch.alerts,
                    registered_at: watch.registered_at,
                };
                (Some(completion), Outcome::Halt)
            }
        }
    }

    /// Applies a webhook's response, unless it was meant for an earlier
    /// watch of this id.
    async fn cast(
        &self,
        id: &Arc<str>,
        watch: &mut Watch,
        response: WebhookResponse,
    ) -> Outcome<Arc<str>> {
        if response.registration != watch.registration {
            tracing::debug!(
                id = &**id,
                "webhook response ignored, because the entry was registered again since the alert"
            );
            return Outcome::Continue;
        }
        match response.steer {
            Steer::Halt => Outcome::Halt,
            _ if watch.has_expired() => self.expire(id, watch),
            Steer::Continue => Outcome::Continue,
            Steer::Reschedule(every) => Outcome::Reschedule(every),
        }
    }

    async fn terminate(&self, id: &Arc<str>, watch: Watch, reason: TerminateReason) {
        tracing::debug!(
            id = &**id,
            alerts = watch.alerts,
            reason = reason.as_str(),
            "watch ended"
        );
    }
}

/// Formats a duration rounded to whole milliseconds, such as `1m 30s 250ms`.
pub(crate) fn format_millis(duration: Duration) -> humantime::FormattedDuration {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    humantime::format_duration(Duration::from_millis(millis))
}
