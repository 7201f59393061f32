//! Webhook deliveries in tasks of their own, outside the worker pool.
//!
//! A perform only starts a delivery and returns, so a `GET` or `complete`
//! of the entry never waits for the webhook. The webhook's response reaches
//! the entry later as a cast ([`WebhookResponse`]), which carries the
//! registration of the alert: a response for an entry that was replaced in
//! the meantime is ignored, and one for an entry that was completed,
//! deleted or expired finds no entry.
//!
//! Two bounds apply, and an alert that meets either is not sent, is
//! counted with result `skipped`, and goes out at the entry's next due time:
//!
//! - at most `max_in_flight` deliveries are in flight at once;
//! - an id has at most one delivery in flight, so an alert of an entry
//!   that replaced another while that one's delivery was in flight waits.
//!
//! While an entry's own previous alert is still being delivered, its due
//! performs raise no new alert (see [`Claim::Delivering`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::log_limit::LogLimiter;
use super::watchdog::{Watchdog, WatchdogMetrics, WebhookResponse};
use super::webhook::{Alert, Steer, Webhook};
use crate::{Error, Manager};

/// Minimum time between two lines about skipped alerts, and between two
/// about responses that could not be applied.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The deliveries of one server: the webhook, the slots for deliveries in
/// flight, the ids being delivered and the manager that responses go to.
pub(crate) struct Deliveries {
    webhook: Webhook,
    metrics: Arc<WatchdogMetrics>,
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// Ids with a delivery in flight, with the registration of the watch
    /// the alert was about.
    in_flight: Mutex<HashMap<Arc<str>, u64>>,
    /// The manager that responses are cast to. The server sets it after
    /// building the manager and clears it when it stops, because the
    /// manager owns the handler that owns this: a handle kept here for
    /// good would keep both alive.
    manager: Mutex<Option<Manager<Watchdog>>>,
    tasks: TaskTracker,
    /// Set when the server stops: no new delivery starts, so the ones in
    /// flight can finish and have their responses applied before the
    /// manager stops taking casts.
    closing: std::sync::atomic::AtomicBool,
    skipped_log: LogLimiter,
    apply_log: LogLimiter,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("url", &self.webhook.shown_url())
            .field("max_in_flight", &self.max_in_flight)
            .field("in_flight", &self.lock_in_flight().len())
            .finish_non_exhaustive()
    }
}

/// The result of [`Deliveries::claim`].
#[derive(Debug)]
pub(crate) enum Claim {
    /// The previous alert of this same registration is still in flight.
    /// The perform raises no alert, so one entry never has two deliveries
    /// in flight and a slow webhook slows its alerts down instead.
    Delivering,
    /// An earlier registration of this id still has a delivery in flight.
    PreviousInFlight,
    /// Every delivery slot is taken.
    NoSlot,
    /// The delivery may start: [`Deliveries::send`] takes the ticket.
    Granted(Ticket),
}

/// A claimed slot and in-flight mark for one delivery. Dropping it
/// releases both, also when the delivery task ends early.
#[derive(Debug)]
pub(crate) struct Ticket {
    slot: OwnedSemaphorePermit,
    mark: InFlightMark,
}

/// The in-flight mark of one id, removed on drop.
#[derive(Debug)]
struct InFlightMark {
    deliveries: Arc<Deliveries>,
    id: Arc<str>,
    registration: u64,
}

impl Drop for InFlightMark {
    fn drop(&mut self) {
        let mut in_flight = self.deliveries.lock_in_flight();
        if in_flight.get(&self.id) == Some(&self.registration) {
            in_flight.remove(&self.id);
        }
    }
}

impl Deliveries {
    /// Builds the deliveries to `webhook`, with at most `max_in_flight` at once.
    pub(crate) fn new(
        webhook: Webhook,
        max_in_flight: usize,
        metrics: Arc<WatchdogMetrics>,
    ) -> Arc<Self> {
        Arc::new(Deliveries {
            webhook,
            metrics,
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            in_flight: Mutex::new(HashMap::new()),
            manager: Mutex::new(None),
            tasks: TaskTracker::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            skipped_log: LogLimiter::new(LOG_EVERY),
            apply_log: LogLimiter::new(LOG_EVERY),
        })
    }

    /// Sets the manager that responses are cast to.
    pub(crate) fn attach(&self, manager: Manager<Watchdog>) {
        *self.manager.lock().unwrap_or_else(PoisonError::into_inner) = Some(manager);
    }

    /// Forgets the manager. Responses that arrive later are dropped.
    pub(crate) fn detach(&self) {
        self.manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u64>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the right to deliver an alert of `id` for the watch
    /// registered as `registration`.
    pub(crate) fn claim(self: &Arc<Self>, id: &Arc<str>, registration: u64) -> Claim {
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return Claim::NoSlot;
        }
        let mut in_flight = self.lock_in_flight();
        match in_flight.get(id) {
            Some(&delivering) if delivering == registration => return Claim::Delivering,
            Some(_) => return Claim::PreviousInFlight,
            None => {}
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Claim::NoSlot;
        };
        in_flight.insert(id.clone(), registration);
        Claim::Granted(Ticket {
            slot,
            mark: InFlightMark {
                deliveries: self.clone(),
                id: id.clone(),
                registration,
            },
        })
    }

    /// Counts and logs (rate-limited) an alert that was not sent.
    pub(crate) fn skip(&self, id: &str, claim: &Claim) {
        self.metrics.webhook.skipped.increment(1);
        let Some(suppressed) = self.skipped_log.allow() else {
            return;
        };
        let url = self.webhook.shown_url();
        if matches!(claim, Claim::PreviousInFlight) {
            tracing::warn!(
                id,
                url,
                suppressed,
                "webhook: the alert of a replaced entry with this id is still being delivered, so this alert was not sent; it is retried at the entry's next due time"
            );
        } else {
            tracing::warn!(
                id,
                url,
                max_in_flight = self.max_in_flight,
                suppressed,
                "webhook: every delivery slot is taken, so this alert was not sent; it is retried at the entry's next due time"
            );
        }
    }

    /// Starts the delivery of `alert` in a task of its own. The task posts
    /// it, casts the response to the entry, and then releases the ticket.
    /// A response that continues the entry changes nothing and is not cast,
    /// except for the entry's last alert (`last`), because the entry
    /// expires only once that alert has a response.
    pub(crate) fn send(self: &Arc<Self>, ticket: Ticket, alert: Alert, last: bool) {
        let deliveries = self.clone();
        self.tasks.spawn(async move {
            let Ticket { slot, mark } = ticket;
            let steer = deliveries
                .webhook
                .post(&alert, &deliveries.metrics.webhook)
                .await;
            drop(slot);
            if steer != Steer::Continue || last {
                deliveries.apply(&alert.id, mark.registration, steer).await;
            }
            // The mark goes only now: a later perform of this id comes
            // after the response in the entry's queue.
            drop(mark);
        });
    }

    /// Casts a webhook's response to the entry.
    async fn apply(&self, id: &Arc<str>, registration: u64, steer: Steer) {
        let manager = self
            .manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(manager) = manager else {
            return;
        };
        let response = WebhookResponse {
            registration,
            steer,
        };
        match manager.cast(id, response).await {
            Ok(()) | Err(Error::NotFound { .. } | Error::ShuttingDown) => {}
            Err(error) => {
                if let Some(suppressed) = self.apply_log.allow() {
                    tracing::warn!(
                        id = &**id,
                        %error,
                        suppressed,
                        "webhook: failed to apply the response to the entry, so it keeps its interval"
                    );
                }
            }
        }
    }

    /// Stops new deliveries, waits up to `grace` for those in flight (their
    /// responses are applied meanwhile), and returns how many were still
    /// running after it. Alerts from now on are counted as skipped and
    /// retried at their next due time, after a restart when the watches
    /// are stored.
    pub(crate) async fn finish(&self, grace: Duration) -> usize {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.tasks.close();
        match tokio::time::timeout(grace, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }
}
