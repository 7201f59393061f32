//! Settings of `keywheel serve`, their defaults and their allowed ranges.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::auth::AuthToken;
use crate::{DEFAULT_SHARDS, DEFAULT_WORKERS, MAX_INTERVAL, MAX_SHARDS, TICK};

/// Default listen address: loopback only, so a fresh install is not
/// reachable from other hosts until an operator chooses an address.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_LISTEN.to_string(), "127.0.0.1:7878");
/// ```
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7878);

/// Default limit of an id, in bytes. Ids are stored once per entry and
/// cloned for every callback, so they are meant to be short keys.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_ID_BYTES, 256);
/// ```
pub const DEFAULT_MAX_ID_BYTES: usize = 256;

/// Highest `max_id_bytes` accepted.
pub const MAX_ID_BYTES_LIMIT: usize = 4096;

/// Default limit of a request body: 64 KiB.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_BODY_BYTES, 65_536);
/// ```
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Lowest `max_body_bytes` accepted: room for a registration with a small payload.
pub const MIN_BODY_BYTES: usize = 256;

/// Highest `max_body_bytes` accepted: 16 MiB. Every request in flight may
/// buffer this much.
pub const MAX_BODY_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Default limit of a stored payload (its JSON text): 32 KiB. Payloads stay
/// in memory for as long as their entry lives.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_PAYLOAD_BYTES, 32_768);
/// ```
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 32 * 1024;

/// Default deadline of a `get` or `complete` that waits for a busy entry.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_CALL_TIMEOUT, Duration::from_secs(5));
/// ```
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Highest call timeout accepted.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Default time that open HTTP requests, and then in-flight alerts, get to
/// finish at shutdown.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_DRAIN_GRACE, Duration::from_secs(10));
/// ```
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Default limit on the whole handling of one HTTP request, body included.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_REQUEST_TIMEOUT, Duration::from_secs(15));
/// ```
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Default timeout of one webhook delivery.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_WEBHOOK_TIMEOUT, Duration::from_secs(2));
/// ```
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// Highest webhook timeout accepted.
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// Highest `webhook_concurrency` accepted. Each delivery in flight uses a
/// connection to the webhook and a task.
pub const MAX_WEBHOOK_CONCURRENCY: usize = 4096;

/// Highest drain grace, drain delay, request timeout, header timeout and
/// idle timeout accepted.
pub const MAX_GRACE: Duration = Duration::from_secs(3600);

/// Default time a client gets to send a whole request head (request line
/// and headers) once it has started, and a new connection gets to send its
/// first request head.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_HEADER_TIMEOUT, Duration::from_secs(10));
/// ```
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time between the start of a drain and the closing of the
/// listener, during which `/readyz` returns 503 and every route still works.
/// Zero closes the listener at once.
///
/// # Example
///
/// ```
/// assert!(keywheel::server::DEFAULT_DRAIN_DELAY.is_zero());
/// ```
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::ZERO;

/// Default shortest `every` a registration may have: the engine's 1 ms tick.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MIN_INTERVAL, keywheel::TICK);
/// ```
pub const DEFAULT_MIN_INTERVAL: Duration = TICK;

/// Default longest `every` a registration may have: the engine's maximum
/// interval of 365 days.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_INTERVAL, keywheel::MAX_INTERVAL);
/// ```
pub const DEFAULT_MAX_INTERVAL: Duration = MAX_INTERVAL;

/// Default limit on the number of entries. An entry with a small payload
/// takes a few hundred bytes, so the default stays within a few GB.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_ENTRIES, 10_000_000);
/// ```
pub const DEFAULT_MAX_ENTRIES: usize = 10_000_000;

/// Default limit on open HTTP connections. Each costs a task, buffers and a
/// file descriptor; clients over the limit wait in the accept backlog.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_MAX_CONNECTIONS, 1024);
/// ```
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Highest `max_connections` accepted.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// Default time after which a connection with no traffic in either
/// direction is closed.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// assert_eq!(keywheel::server::DEFAULT_IDLE_TIMEOUT, Duration::from_secs(60));
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default capacity of each shard's command queue, as in the library. A
/// request that finds its shard's queue full gets 503 at once.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_COMMAND_CAPACITY, 1024);
/// ```
pub const DEFAULT_COMMAND_CAPACITY: usize = 1024;

/// Highest `command_capacity` accepted, as in the library.
pub const MAX_COMMAND_CAPACITY: usize = 1 << 24;

/// Default data directory of `keywheel serve`, relative to the working
/// directory.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_DATA_DIR, "keywheel-data");
/// ```
pub const DEFAULT_DATA_DIR: &str = "keywheel-data";

/// Default time between writes of the changes alerts make to a watch (its
/// alert count): at most this much of them is lost in a crash.
///
/// # Example
///
/// ```
/// assert_eq!(keywheel::server::DEFAULT_FLUSH_INTERVAL.as_secs(), 1);
/// ```
pub const DEFAULT_FLUSH_INTERVAL: Duration = crate::persist::DEFAULT_FLUSH_INTERVAL;

/// The settings of a watchdog server.
///
/// # Example
///
/// ```
/// use keywheel::server::ServeConfig;
/// use std::net::SocketAddr;
///
/// let config = ServeConfig {
///     listen: SocketAddr::from(([127, 0, 0, 1], 0)),
///     shards: 4,
///     ..ServeConfig::default()
/// };
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address and port to listen on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Shards of the manager.
    pub shards: usize,
    /// Size of the worker pool.
    pub workers: usize,
    /// Deadline of a `get` or `complete` that waits for a busy entry.
    pub call_timeout: Duration,
    /// Time that open HTTP requests get to finish at shutdown, and then
    /// again the time in-flight alerts and webhook deliveries get.
    pub drain_grace: Duration,
    /// Time between the start of a drain and the closing of the listener.
    /// `/readyz` returns 503 from the start of the drain, so a load
    /// balancer that checks it stops sending requests before the listener
    /// closes.
    pub drain_delay: Duration,
    /// Limit on the whole handling of one HTTP request. A request over it
    /// gets a 503 response. Must be longer than `call_timeout`.
    pub request_timeout: Duration,
    /// Maximum id length, in bytes.
    pub max_id_bytes: usize,
    /// Maximum request body size, in bytes. Larger bodies get 413.
    pub max_body_bytes: usize,
    /// Maximum payload size (its JSON text), in bytes. Larger payloads get 413.
    pub max_payload_bytes: usize,
    /// URL that every alert is posted to, if any.
    pub webhook: Option<String>,
    /// Timeout of one webhook delivery.
    pub webhook_timeout: Duration,
    /// Maximum webhook deliveries in flight at once; `None` is half of
    /// `workers`. An alert that finds every slot taken is not delivered
    /// (counted with result `skipped`) and is retried at the entry's next
    /// due time. Deliveries run outside the worker pool, so this bounds
    /// connections to the webhook, not workers.
    pub webhook_concurrency: Option<usize>,
    /// Bearer token that every `/v1` request must carry, if any.
    pub auth_token: Option<AuthToken>,
    /// Whether `/metrics`, `/healthz` and `/readyz` require the token too.
    pub protect_metrics: bool,
    /// Whether a non-loopback `listen` address is allowed without a token.
    pub insecure_no_auth: bool,
    /// Maximum number of entries. A put of a new id beyond it gets 507 and
    /// changes nothing.
    pub max_entries: usize,
    /// Maximum open HTTP connections. Further clients wait to be accepted.
    pub max_connections: usize,
    /// Time after which a connection with no traffic in either direction is
    /// closed. Must be longer than `request_timeout`.
    pub idle_timeout: Duration,
    /// Time a request head (request line and headers) may take from its
    /// first byte, and a new connection may take to send its first head.
    /// A connection over it is closed without a response.
    pub header_timeout: Duration,
    /// Shortest `every` a registration may have. Must be at least the
    /// engine's 1 ms tick.
    pub min_interval: Duration,
    /// Longest `every` a registration may have, and a webhook may set.
    /// Must be at most the engine's [`MAX_INTERVAL`].
    pub max_interval: Duration,
    /// Capacity of each shard's command queue. A request that finds its
    /// shard's queue full gets 503 with `Retry-After: 1`.
    pub command_capacity: usize,
    /// Directory of the store that keeps the watches across restarts, or
    /// `None` to keep them in memory only. One process at a time can use a
    /// directory.
    pub data_dir: Option<std::path::PathBuf>,
    /// Time between writes of the changes alerts make to watches (10 ms to
    /// 1 hour).
    pub flush_interval: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN,
            shards: DEFAULT_SHARDS,
            workers: DEFAULT_WORKERS,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            drain_grace: DEFAULT_DRAIN_GRACE,
            drain_delay: DEFAULT_DRAIN_DELAY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            webhook: None,
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            webhook_concurrency: None,
            auth_token: None,
            protect_metrics: false,
            insecure_no_auth: false,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            min_interval: DEFAULT_MIN_INTERVAL,
            max_interval: DEFAULT_MAX_INTERVAL,
            data_dir: Some(std::path::PathBuf::from(DEFAULT_DATA_DIR)),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
        }
    }
}

/// A setting outside its allowed range.
///
/// The message names the flag, the environment variable and the config
/// file key that set it, because the value may have come from any of them.
///
/// # Example
///
/// ```
/// use keywheel::server::ServeConfig;
///
/// let config = ServeConfig { shards: 0, ..ServeConfig::default() };
/// let error = config.validate().unwrap_err();
///
/// assert_eq!(error.key, "shards");
/// assert_eq!(error.value, "0");
/// assert_eq!(error.rule, "must be between 1 and 4096");
/// assert_eq!(error.flag(), "--shards");
/// assert_eq!(error.env(), "KEYWHEEL_SHARDS");
/// assert_eq!(
///     error.to_string(),
///     "invalid --shards value 0: must be between 1 and 4096 \
///      (set by --shards, KEYWHEEL_SHARDS or `shards` in the config file)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The config file key, such as `max_body_bytes`.
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// The allowed range.
    pub rule: String,
}

impl SettingError {
    fn new(key: &'static str, value: impl fmt::Display, rule: impl Into<String>) -> Self {
        SettingError {
            key,
            value: value.to_string(),
            rule: rule.into(),
        }
    }

    /// Returns the command-line flag of the setting, such as `--max-body-bytes`.
    ///
    /// # Example
    ///
    /// See the example on [`SettingError`].
    pub fn flag(&self) -> String {
        format!("--{}", self.key.replace('_', "-"))
    }

    /// Returns the environment variable of the setting, such as `KEYWHEEL_MAX_BODY_BYTES`.
    ///
    /// # Example
    ///
    /// See the example on [`SettingError`].
    pub fn env(&self) -> String {
        format!("KEYWHEEL_{}", self.key.to_ascii_uppercase())
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} value {}: {} (set by {}, {} or `{}` in the config file)",
            self.flag(),
            self.value,
            self.rule,
            self.flag(),
            self.env(),
            self.key
        )
    }
}

impl std::error::Error for SettingError {}

impl ServeConfig {
    /// Checks every setting against its range.
    ///
    /// # Errors
    ///
    /// [`SettingError`] for the first setting out of range.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::server::ServeConfig;
    ///
    /// assert_eq!(ServeConfig::default().validate(), Ok(()));
    ///
    /// let config = ServeConfig {
    ///     listen: "0.0.0.0:7878".parse().unwrap(),
    ///     ..ServeConfig::default()
    /// };
    /// assert_eq!(config.validate().unwrap_err().key, "listen");
    /// ```
    pub fn validate(&self) -> Result<(), SettingError> {
        check_count("shards", self.shards, 1, MAX_SHARDS)?;
        check_count("workers", self.workers, 1, crate::MAX_WORKERS)?;
        check_count("max_id_bytes", self.max_id_bytes, 1, MAX_ID_BYTES_LIMIT)?;
        check_count(
            "max_body_bytes",
            self.max_body_bytes,
            MIN_BODY_BYTES,
            MAX_BODY_BYTES_LIMIT,
        )?;
        check_count(
            "max_payload_bytes",
            self.max_payload_bytes,
            1,
            self.max_body_bytes,
        )
        .map_err(|error| SettingError {
            rule: format!("{} (the payload travels inside the body)", error.rule),
            ..error
        })?;

        if self.call_timeout.is_zero() || self.call_timeout > MAX_CALL_TIMEOUT {
            return Err(SettingError::new(
                "call_timeout",
                show(self.call_timeout),
                format!("must be more than 0 and at most {}", show(MAX_CALL_TIMEOUT)),
            ));
        }
        if self.flush_interval < Duration::from_millis(10)
            || self.flush_interval > Duration::from_secs(3600)
        {
            return Err(SettingError::new(
                "flush_interval",
                show(self.flush_interval),
                "must be between 10ms and 1h".to_string(),
            ));
        }
        for (key, value) in [
            ("drain_grace", self.drain_grace),
            ("drain_delay", self.drain_delay),
        ] {
            if value > MAX_GRACE {
                return Err(SettingError::new(
                    key,
                    show(value),
                    format!("must be at most {}", show(MAX_GRACE)),
                ));
            }
        }
        if self.request_timeout <= self.call_timeout || self.request_timeout > MAX_GRACE {
            return Err(SettingError::new(
                "request_timeout",
                show(self.request_timeout),
                format!(
                    "must be longer than the call timeout ({}) and at most {}",
                    show(self.call_timeout),
                    show(MAX_GRACE)
                ),
            ));
        }
        let webhook_timeout_invalid =
            self.webhook_timeout.is_zero() || self.webhook_timeout > MAX_WEBHOOK_TIMEOUT;
        if self.webhook.is_some() && webhook_timeout_invalid {
            return Err(SettingError::new(
                "webhook_timeout",
                show(self.webhook_timeout),
                format!(
                    "must be more than 0 and at most {}",
                    show(MAX_WEBHOOK_TIMEOUT)
                ),
            ));
        }
        if let Some(url) = &self.webhook {
            check_webhook_url(url)?;
            self.check_webhook_concurrency()?;
        }
        self.check_connections()?;
        self.check_interval_range()?;
        self.check_exposure()
    }

    /// Returns the maximum webhook deliveries in flight: the setting, or
    /// half of the workers (at least 1).
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::server::ServeConfig;
    ///
    /// let mut config = ServeConfig { workers: 8, ..ServeConfig::default() };
    /// assert_eq!(config.effective_webhook_concurrency(), 4);
    ///
    /// config.workers = 1;
    /// assert_eq!(config.effective_webhook_concurrency(), 1);
    ///
    /// config.webhook_concurrency = Some(3);
    /// assert_eq!(config.effective_webhook_concurrency(), 3);
    /// ```
    pub fn effective_webhook_concurrency(&self) -> usize {
        self.webhook_concurrency
            .unwrap_or((self.workers / 2).max(1))
    }

    fn check_webhook_concurrency(&self) -> Result<(), SettingError> {
        check_count(
            "webhook_concurrency",
            self.effective_webhook_concurrency(),
            1,
            MAX_WEBHOOK_CONCURRENCY,
        )
    }

    /// Checks that `min_interval..=max_interval` is a range within the
    /// engine's limits, 1 ms to [`MAX_INTERVAL`].
    fn check_interval_range(&self) -> Result<(), SettingError> {
        let engine_range = format!(
            "must be from {} to {}, the engine's limits",
            show_interval(TICK),
            show_interval(MAX_INTERVAL)
        );
        for (key, value) in [
            ("min_interval", self.min_interval),
            ("max_interval", self.max_interval),
        ] {
            if value < TICK || value > MAX_INTERVAL {
                return Err(SettingError::new(key, show_interval(value), engine_range));
            }
        }
        if self.min_interval > self.max_interval {
            return Err(SettingError::new(
                "min_interval",
                show_interval(self.min_interval),
                format!(
                    "must not be longer than --max-interval ({})",
                    show_interval(self.max_interval)
                ),
            ));
        }
        Ok(())
    }

    fn check_connections(&self) -> Result<(), SettingError> {
        if self.max_entries == 0 {
            return Err(SettingError::new(
                "max_entries",
                self.max_entries,
                "must be at least 1",
            ));
        }
        check_count(
            "max_connections",
            self.max_connections,
            1,
            MAX_CONNECTIONS_LIMIT,
        )?;
        check_count(
            "command_capacity",
            self.command_capacity,
            1,
            MAX_COMMAND_CAPACITY,
        )?;
        if self.idle_timeout <= self.request_timeout || self.idle_timeout > MAX_GRACE {
            return Err(SettingError::new(
                "idle_timeout",
                show(self.idle_timeout),
                format!(
                    "must be longer than the request timeout ({}) and at most {}",
                    show(self.request_timeout),
                    show(MAX_GRACE)
                ),
            ));
        }
        if self.header_timeout.is_zero() || self.header_timeout > MAX_GRACE {
            return Err(SettingError::new(
                "header_timeout",
                show(self.header_timeout),
                format!("must be more than 0 and at most {}", show(MAX_GRACE)),
            ));
        }
        Ok(())
    }

    /// Rejects a listen address that other hosts can reach when no token
    /// protects the API, unless the operator opted out.
    fn check_exposure(&self) -> Result<(), SettingError> {
        let loopback = self.listen.ip().to_canonical().is_loopback();
        if loopback || self.auth_token.is_some() || self.insecure_no_auth {
            return Ok(());
        }
        Err(SettingError::new(
            "listen",
            self.listen,
            "a non-loopback address requires an auth token: set --auth-token (KEYWHEEL_AUTH_TOKEN) or --auth-token-file, or pass --insecure-no-auth to serve without authentication",
        ))
    }
}

/// Checks that a webhook URL is absolute and uses `http`, the only scheme
/// this build can send to because it has no TLS.
fn check_webhook_url(url: &str) -> Result<(), SettingError> {
    let rule = "must be an absolute http:// URL such as http://127.0.0.1:9000/alerts (this build has no TLS)";
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "http" && parsed.has_host() => Ok(()),
        Ok(_) => Err(SettingError::new("webhook", format!("{url:?}"), rule)),
        Err(error) => Err(SettingError::new(
            "webhook",
            format!("{url:?}"),
            format!("{error}; it {rule}"),
        )),
    }
}

fn check_count(
    key: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), SettingError> {
    if value < min || value > max {
        return Err(SettingError::new(
            key,
            value,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

fn show(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// Formats an interval for messages: whole days as `365days`, because
/// humantime would show 365 days as months and hours, and anything else
/// as humantime does, such as `1ms` or `1h 30m`.
pub(crate) fn show_interval(duration: Duration) -> String {
    const DAY: u64 = 86_400;
    let seconds = duration.as_secs();
    if seconds >= DAY && seconds.is_multiple_of(DAY) && duration.subsec_nanos() == 0 {
        return format!("{}days", seconds / DAY);
    }
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(ServeConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_shards_names_flag_env_and_key() {
        let config = ServeConfig {
            shards: 0,
            ..ServeConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();

        assert!(message.contains("--shards"), "message: {message}");
        assert!(message.contains("KEYWHEEL_SHARDS"), "message: {message}");
        assert!(message.contains("between 1 and 4096"), "message: {message}");
    }

    #[test]
    fn payload_limit_over_body_limit_is_rejected() {
        let config = ServeConfig {
            max_body_bytes: 1024,
            max_payload_bytes: 2048,
            ..ServeConfig::default()
        };
        let error = config.validate().unwrap_err();

        assert_eq!(error.key, "max_payload_bytes");
    }

    #[test]
    fn webhook_timeout_must_be_positive_and_bounded() {
        let mut config = ServeConfig {
            webhook_timeout: Duration::ZERO,
            ..ServeConfig::default()
        };
        assert_eq!(
            config.validate(),
            Ok(()),
            "without a webhook the timeout is unused"
        );

        config.webhook = Some("http://127.0.0.1:9/alerts".to_string());
        assert_eq!(config.validate().unwrap_err().key, "webhook_timeout");

        config.webhook_timeout = config.call_timeout * 2;
        assert_eq!(
            config.validate(),
            Ok(()),
            "deliveries run outside the worker pool, so they may outlast the call timeout"
        );

        config.webhook_timeout = MAX_WEBHOOK_TIMEOUT + Duration::from_millis(1);
        assert_eq!(config.validate().unwrap_err().key, "webhook_timeout");
    }

    #[test]
    fn non_loopback_listen_needs_token_or_opt_out() {
        let mut config = ServeConfig {
            listen: "0.0.0.0:7878".parse().expect("address"),
            ..ServeConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(error.key, "listen");
        assert!(error.to_string().contains("--insecure-no-auth"), "{error}");

        config.insecure_no_auth = true;
        assert_eq!(config.validate(), Ok(()));

        config.insecure_no_auth = false;
        config.auth_token = AuthToken::new("token-for-the-test-0123").ok();
        assert_eq!(config.validate(), Ok(()));

        for loopback in ["127.0.0.2:7878", "[::1]:7878", "[::ffff:127.0.0.1]:7878"] {
            let config = ServeConfig {
                listen: loopback.parse().expect("address"),
                ..ServeConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{loopback}");
        }
    }

    #[test]
    fn webhook_concurrency_is_bounded() {
        let mut config = ServeConfig {
            workers: 8,
            webhook: Some("http://127.0.0.1:9/alerts".to_string()),
            ..ServeConfig::default()
        };
        assert_eq!(
            config.effective_webhook_concurrency(),
            4,
            "half the workers"
        );
        assert_eq!(config.validate(), Ok(()));

        config.webhook_concurrency = Some(8);
        assert_eq!(
            config.validate(),
            Ok(()),
            "deliveries do not hold workers, so the bound may reach the worker count"
        );

        config.webhook_concurrency = Some(0);
        assert_eq!(config.validate().unwrap_err().key, "webhook_concurrency");

        config.webhook_concurrency = Some(MAX_WEBHOOK_CONCURRENCY + 1);
        assert_eq!(config.validate().unwrap_err().key, "webhook_concurrency");

        config.webhook_concurrency = None;
        config.workers = 1;
        assert_eq!(
            config.validate(),
            Ok(()),
            "one worker and one delivery slot"
        );
    }

    #[test]
    fn interval_range_stays_within_engine_limits() {
        let cases = [
            (Duration::ZERO, MAX_INTERVAL, "min_interval"),
            (Duration::from_micros(999), MAX_INTERVAL, "min_interval"),
            (
                TICK,
                MAX_INTERVAL + Duration::from_millis(1),
                "max_interval",
            ),
            (TICK, Duration::ZERO, "max_interval"),
            (
                Duration::from_secs(60),
                Duration::from_secs(59),
                "min_interval",
            ),
        ];
        for (min_interval, max_interval, key) in cases {
            let config = ServeConfig {
                min_interval,
                max_interval,
                ..ServeConfig::default()
            };
            let error = config
                .validate()
                .expect_err("an interval range outside the engine's limits");
            assert_eq!(
                error.key, key,
                "{min_interval:?}..={max_interval:?}: {error}"
            );
        }

        let error = ServeConfig {
            min_interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(59),
            ..ServeConfig::default()
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("--max-interval"), "{error}");
        assert!(error.to_string().contains("--min-interval"), "{error}");

        let narrow = ServeConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(1),
            ..ServeConfig::default()
        };
        assert_eq!(narrow.validate(), Ok(()), "a range of one value");
    }

    #[test]
    fn show_interval_writes_whole_days() {
        assert_eq!(show_interval(MAX_INTERVAL), "365days");
        assert_eq!(show_interval(TICK), "1ms");
        assert_eq!(show_interval(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn header_timeout_and_drain_delay_are_bounded() {
        let zero_header = ServeConfig {
            header_timeout: Duration::ZERO,
            ..ServeConfig::default()
        };
        assert_eq!(zero_header.validate().unwrap_err().key, "header_timeout");

        let long_delay = ServeConfig {
            drain_delay: MAX_GRACE + Duration::from_secs(1),
            ..ServeConfig::default()
        };
        assert_eq!(long_delay.validate().unwrap_err().key, "drain_delay");
    }

    #[test]
    fn idle_timeout_must_outlast_request_timeout() {
        let config = ServeConfig {
            idle_timeout: DEFAULT_REQUEST_TIMEOUT,
            ..ServeConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "idle_timeout");
    }

    #[test]
    fn webhook_must_be_absolute_http_url() {
        for url in [
            "https://127.0.0.1/alerts",
            "127.0.0.1:9000",
            "/alerts",
            "http://",
        ] {
            let config = ServeConfig {
                webhook: Some(url.to_string()),
                ..ServeConfig::default()
            };
            let error = config.validate().expect_err(url);

            assert_eq!(error.key, "webhook", "url {url:?}");
        }
    }
}
