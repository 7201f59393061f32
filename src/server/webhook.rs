//! Delivery of overdue alerts to a webhook, and how its response steers the entry.
//!
//! Each alert is a `POST` of `{id, payload, pending_for, pending_for_ms,
//! alerts}` with a timeout. The response decides what the entry does next:
//!
//! | response | outcome |
//! |---|---|
//! | 2xx with a JSON object holding `every` (a duration such as `"5m"`) | `Reschedule` to that interval |
//! | any other 2xx | `Continue` |
//! | 410 Gone | `Halt`: the entry is removed |
//! | any other status, a timeout or a connection error | `Continue`, counted and logged |
//!
//! The delivery runs inside the entry's perform, so a `GET` or `complete`
//! of that id waits for it. The server therefore requires the webhook
//! timeout to be shorter than the call timeout.
//!
//! A delivery that waits occupies a worker of the pool. A semaphore bounds the
//! deliveries in flight below the pool size, so a slow webhook never takes
//! every worker: an alert that finds no free slot is not sent, is counted
//! with result `skipped`, and goes out at the entry's next due time if a
//! slot is free then. It still counts towards `max_alerts`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use super::log_limit::LogLimiter;
use super::watchdog::{format_millis, Watch, WebhookCounters};
use crate::{Outcome, MAX_INTERVAL};

/// Maximum response body read for steering. A new interval fits in a few
/// bytes, so a larger body is not read further and changes nothing.
const MAX_RESPONSE_BYTES: usize = 4096;

/// Minimum time between two webhook failure lines.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The body of one alert.
#[derive(Serialize)]
struct Alert<'a> {
    id: &'a str,
    payload: &'a RawValue,
    pending_for: String,
    pending_for_ms: u64,
    alerts: u32,
}

/// A webhook client: the URL, a client with the delivery timeout, the
/// slots for deliveries in flight, and rate limits for log lines.
#[derive(Debug)]
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    in_flight: Semaphore,
    max_in_flight: usize,
    failure_log: LogLimiter,
    skipped_log: LogLimiter,
}

impl Webhook {
    /// Builds a client for `url` with `timeout` per delivery and at most
    /// `max_in_flight` deliveries at once.
    ///
    /// # Errors
    ///
    /// An invalid URL or a client that cannot be built. The URL was
    /// checked with the config, so the first should not happen.
    pub(crate) fn new(url: &str, timeout: Duration, max_in_flight: usize) -> anyhow::Result<Self> {
        let parsed = Url::parse(url)
            .with_context(|| format!("invalid --webhook {}", redacted_url_text(url)))?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("failed to build the webhook HTTP client")?;
        Ok(Webhook {
            client,
            url: parsed,
            timeout,
            in_flight: Semaphore::new(max_in_flight),
            max_in_flight,
            failure_log: LogLimiter::new(LOG_EVERY),
            skipped_log: LogLimiter::new(LOG_EVERY),
        })
    }

    /// Posts one alert and turns the response into the entry's outcome.
    pub(crate) async fn deliver(
        &self,
        id: &Arc<str>,
        watch: &Watch,
        pending_for: Duration,
        counters: &WebhookCounters,
    ) -> Outcome<Arc<str>> {
        let Ok(_slot) = self.in_flight.try_acquire() else {
            counters.skipped.increment(1);
            if let Some(suppressed) = self.skipped_log.allow() {
                tracing::warn!(
                    id = &**id,
                    url = %redacted_url(&self.url),
                    max_in_flight = self.max_in_flight,
                    suppressed,
                    "webhook: every delivery slot is taken, so this alert was not sent; it is retried at the entry's next due time"
                );
            }
            return Outcome::Continue;
        };

        let alert = Alert {
            id,
            payload: watch.payload(),
            pending_for: format_millis(pending_for).to_string(),
            pending_for_ms: u64::try_from(pending_for.as_millis()).unwrap_or(u64::MAX),
            alerts: watch.alerts(),
        };

        let response = match self.client.post(self.url.clone()).json(&alert).send().await {
            Ok(response) => response,
            Err(error) => {
                counters.failed.increment(1);
                let problem = if error.is_timeout() {
                    format!(
                        "delivery timed out after {}",
                        humantime::format_duration(self.timeout)
                    )
                } else {
                    format!("delivery failed: {}", error_chain(&error))
                };
                self.log_failure(id, &problem);
                return Outcome::Continue;
            }
        };

        let status = response.status();
        if status == StatusCode::GONE {
            counters.halted.increment(1);
            return Outcome::Halt;
        }
        if !status.is_success() {
            counters.rejected.increment(1);
            self.log_failure(
                id,
                &format!("webhook returned {status}, so the entry continues"),
            );
            return Outcome::Continue;
        }

        match read_new_interval(response).await {
            Ok(Some(every)) => {
                counters.rescheduled.increment(1);
                Outcome::Reschedule(every)
            }
            Ok(None) => {
                counters.continued.increment(1);
                Outcome::Continue
            }
            Err(problem) => {
                counters.rejected.increment(1);
                self.log_failure(id, &format!("{problem}, so the entry keeps its interval"));
                Outcome::Continue
            }
        }
    }

    fn log_failure(&self, id: &str, problem: &str) {
        if let Some(suppressed) = self.failure_log.allow() {
            tracing::warn!(id, url = %redacted_url(&self.url), suppressed, "webhook: {problem}");
        }
    }
}

/// Reads a 2xx response: `Ok(Some(interval))` for a JSON object with a valid
/// `every`, `Ok(None)` for any body without one, and an error for an
/// invalid `every` or an oversized body.
async fn read_new_interval(mut response: reqwest::Response) -> Result<Option<Duration>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_RESPONSE_BYTES {
                    return Err(format!(
                        "response body is over {MAX_RESPONSE_BYTES} bytes and was ignored"
                    ));
                }
            }
            Ok(None) => break,
            Err(error) => return Err(format!("reading the response failed: {error}")),
        }
    }

    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(&body) else {
        return Ok(None);
    };
    let Some(every) = fields.get("every") else {
        return Ok(None);
    };
    let text = every
        .as_str()
        .ok_or_else(|| format!("response has a non-string every {every}"))?;
    let interval = humantime::parse_duration(text)
        .map_err(|error| format!("response has an invalid every {text:?}: {error}"))?;
    if interval.is_zero() || interval > MAX_INTERVAL {
        return Err(format!(
            "response has an every {text:?} outside 1ms to {}days",
            MAX_INTERVAL.as_secs() / 86_400
        ));
    }
    Ok(Some(interval))
}

/// Returns the URL without user name, password and query, which may hold
/// credentials, for log lines and messages.
pub(crate) fn redacted_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Like [`redacted_url`] for a URL given as text, which may be invalid.
pub(crate) fn redacted_url_text(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => format!("{:?}", redacted_url(&parsed)),
        Err(_) => "(an invalid URL)".to_string(),
    }
}

/// Formats an error with its sources, because reqwest's own message leaves
/// out the cause, such as a refused connection.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
