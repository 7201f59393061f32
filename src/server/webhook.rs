//! Delivery of overdue alerts to a webhook, and how its response steers the entry.
//!
//! Each alert is a `POST` of `{id, payload, pending_for, pending_for_ms,
//! alerts}` with a timeout. The response decides what the entry does next:
//!
//! | response | steer |
//! |---|---|
//! | 2xx with a JSON object holding `every` (a duration such as `"5m"`) | `Reschedule` to that interval |
//! | any other 2xx | `Continue` |
//! | 410 Gone | `Halt`: the entry is removed |
//! | any other status, a timeout or a connection error | `Continue`, counted and logged |
//!
//! This module only posts and reads the response. The deliveries run in
//! tasks of their own, outside the worker pool, and their responses reach
//! the entry later as casts (see `delivery`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::value::RawValue;

use super::config::show_interval;
use super::log_limit::LogLimiter;
use super::watchdog::{format_millis, WebhookCounters};

/// Maximum response body read for steering. A new interval fits in a few
/// bytes, so a larger body is not read further and changes nothing.
const MAX_RESPONSE_BYTES: usize = 4096;

/// Minimum time between two webhook failure lines.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// What a webhook's response requests of the entry the alert was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Steer {
    /// Keep the entry and its interval.
    Continue,
    /// Keep the entry with a new interval, starting now.
    Reschedule(Duration),
    /// Remove the entry.
    Halt,
}

/// The body of one alert.
#[derive(Debug, Serialize)]
pub(crate) struct Alert {
    pub(crate) id: Arc<str>,
    pub(crate) payload: Arc<RawValue>,
    pub(crate) pending_for: String,
    pub(crate) pending_for_ms: u64,
    pub(crate) alerts: u32,
}

impl Alert {
    pub(crate) fn new(
        id: Arc<str>,
        payload: Arc<RawValue>,
        pending_for: Duration,
        alerts: u32,
    ) -> Self {
        Alert {
            id,
            payload,
            pending_for: format_millis(pending_for).to_string(),
            pending_for_ms: u64::try_from(pending_for.as_millis()).unwrap_or(u64::MAX),
            alerts,
        }
    }
}

/// A webhook client: the URL, a client with the delivery timeout, the
/// range a new interval must fall in, and a rate limit for failure lines.
#[derive(Debug)]
pub(crate) struct Webhook {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    min_interval: Duration,
    max_interval: Duration,
    failure_log: LogLimiter,
}

impl Webhook {
    /// Builds a client for `url` with `timeout` per delivery. A response
    /// may set a new interval from `min_interval` to `max_interval`.
    ///
    /// # Errors
    ///
    /// An invalid URL or a client that cannot be built. The URL was
    /// checked with the config, so the first should not happen.
    pub(crate) fn new(
        url: &str,
        timeout: Duration,
        min_interval: Duration,
        max_interval: Duration,
    ) -> anyhow::Result<Self> {
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
            min_interval,
            max_interval,
            failure_log: LogLimiter::new(LOG_EVERY),
        })
    }

    /// Returns the URL without credentials, for log lines.
    pub(crate) fn shown_url(&self) -> String {
        redacted_url(&self.url)
    }

    /// Posts one alert, counts the result and returns what the response
    /// requests of the entry.
    pub(crate) async fn post(&self, alert: &Alert, counters: &WebhookCounters) -> Steer {
        let response = match self.client.post(self.url.clone()).json(alert).send().await {
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
                self.log_failure(&alert.id, &problem);
                return Steer::Continue;
            }
        };

        let status = response.status();
        if status == StatusCode::GONE {
            counters.halted.increment(1);
            return Steer::Halt;
        }
        if !status.is_success() {
            counters.rejected.increment(1);
            self.log_failure(
                &alert.id,
                &format!("webhook returned {status}, so the entry continues"),
            );
            return Steer::Continue;
        }

        match self.read_new_interval(response).await {
            Ok(Some(every)) => {
                counters.rescheduled.increment(1);
                Steer::Reschedule(every)
            }
            Ok(None) => {
                counters.continued.increment(1);
                Steer::Continue
            }
            Err(problem) => {
                counters.rejected.increment(1);
                self.log_failure(
                    &alert.id,
                    &format!("{problem}, so the entry keeps its interval"),
                );
                Steer::Continue
            }
        }
    }

    fn log_failure(&self, id: &str, problem: &str) {
        if let Some(suppressed) = self.failure_log.allow() {
            tracing::warn!(id, url = %redacted_url(&self.url), suppressed, "webhook: {problem}");
        }
    }

    /// Reads a 2xx response: `Ok(Some(interval))` for a JSON object with a
    /// valid `every`, `Ok(None)` for any body without one, and an error for
    /// an invalid `every`, one outside the server's interval range, or an
    /// oversized body.
    async fn read_new_interval(
        &self,
        mut response: reqwest::Response,
    ) -> Result<Option<Duration>, String> {
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
        // As for registrations: the wheel counts whole milliseconds.
        if !interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(format!(
                "response has an every {text:?} that is not a whole number of milliseconds"
            ));
        }
        if interval < self.min_interval || interval > self.max_interval {
            return Err(format!(
                "response has an every {text:?} outside the server's range of {} to {} (--min-interval, --max-interval)",
                show_interval(self.min_interval),
                show_interval(self.max_interval)
            ));
        }
        Ok(Some(interval))
    }
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
