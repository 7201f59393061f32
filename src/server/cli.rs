//! The command line of `keywheel serve`: flags, environment variables, the
//! TOML config file, and logging.
//!
//! Each setting comes from the first source that has it: a flag, then its
//! `KEYWHEEL_*` environment variable, then the config file, then the
//! default in [`ServeConfig::default`].

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Deserializer};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use super::auth::{AuthToken, TokenText};
use super::config::ServeConfig;

/// How much longer than the call timeout the default request timeout is.
const REQUEST_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// Flags of `keywheel serve`. Every flag can also be set by the
/// environment variable named in its help.
///
/// # Example
///
/// ```
/// use clap::Parser;
/// use keywheel::server::ServeArgs;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     serve: ServeArgs,
/// }
///
/// let cli = Cli::try_parse_from(["keywheel", "--shards", "4", "--max-id-bytes", "64"]).unwrap();
/// assert_eq!(cli.serve.shards, Some(4));
/// assert_eq!(cli.serve.max_id_bytes, Some(64));
/// assert_eq!(cli.serve.workers, None);
/// ```
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:7878]
    #[arg(long, env = "KEYWHEEL_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Shards of the timer wheel, 1 to 4096 [default: 32]
    #[arg(long, env = "KEYWHEEL_SHARDS", value_name = "N")]
    pub shards: Option<usize>,

    /// Workers that run alerts and calls at once, 1 to 4096 [default: 64]
    #[arg(long, env = "KEYWHEEL_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Deadline of a GET or complete that waits for a busy entry, such as "5s" [default: 5s]
    #[arg(long, env = "KEYWHEEL_CALL_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub call_timeout: Option<Duration>,

    /// Time that open requests, and then running alerts and webhook deliveries, get to finish at shutdown [default: 10s]
    #[arg(long, env = "KEYWHEEL_DRAIN_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_grace: Option<Duration>,

    /// Time between the start of a drain, when /readyz turns 503, and the closing of the listener [default: 0s]
    #[arg(long, env = "KEYWHEEL_DRAIN_DELAY", value_name = "DURATION", value_parser = parse_duration)]
    pub drain_delay: Option<Duration>,

    /// Limit on the handling of one HTTP request, longer than the call timeout [default: 15s, or the call timeout plus 10s if longer]
    #[arg(long, env = "KEYWHEEL_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub request_timeout: Option<Duration>,

    /// Maximum id length in bytes, 1 to 4096 [default: 256]
    #[arg(long, env = "KEYWHEEL_MAX_ID_BYTES", value_name = "BYTES")]
    pub max_id_bytes: Option<usize>,

    /// Maximum request body size in bytes, 256 to 16777216 [default: 65536]
    #[arg(long, env = "KEYWHEEL_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Maximum payload size (its JSON text) in bytes, at most the body limit [default: 32768]
    #[arg(long, env = "KEYWHEEL_MAX_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,

    /// URL (http only) that every overdue alert is posted to
    #[arg(long, env = "KEYWHEEL_WEBHOOK", value_name = "URL")]
    pub webhook: Option<String>,

    /// Timeout of one webhook delivery, at most 10m [default: 2s]
    #[arg(long, env = "KEYWHEEL_WEBHOOK_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub webhook_timeout: Option<Duration>,

    /// Maximum webhook deliveries in flight, 1 to 4096; an alert over it is retried at its next due time [default: half of --workers]
    #[arg(long, env = "KEYWHEEL_WEBHOOK_CONCURRENCY", value_name = "N")]
    pub webhook_concurrency: Option<usize>,

    /// Bearer token that every /v1 request must send as "Authorization: Bearer TOKEN", 16 to 4096 characters
    #[arg(
        long,
        env = "KEYWHEEL_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    pub auth_token: Option<TokenText>,

    /// File whose first line is the bearer token (a trailing newline is removed)
    #[arg(long, env = "KEYWHEEL_AUTH_TOKEN_FILE", value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,

    /// Require the token on /metrics, /healthz and /readyz too (they are open by default)
    #[arg(long, env = "KEYWHEEL_PROTECT_METRICS", value_parser = clap::builder::BoolishValueParser::new())]
    pub protect_metrics: bool,

    /// Allow a non-loopback --listen address without a token
    #[arg(long, env = "KEYWHEEL_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,

    /// Maximum number of entries; a put of a new id over it gets 507 [default: 10000000]
    #[arg(long, env = "KEYWHEEL_MAX_ENTRIES", value_name = "N")]
    pub max_entries: Option<usize>,

    /// Maximum open HTTP connections; more clients wait to be accepted [default: 1024]
    #[arg(long, env = "KEYWHEEL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Time after which a connection without traffic is closed, longer than the request timeout [default: 60s, or the request timeout plus 10s if longer]
    #[arg(long, env = "KEYWHEEL_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Capacity of each shard's command queue, 1 to 16777216; a request that finds it full gets 503 [default: 1024]
    #[arg(long, env = "KEYWHEEL_COMMAND_CAPACITY", value_name = "N")]
    pub command_capacity: Option<usize>,

    /// Time a request head may take from its first byte (and from the accept for the first head) before the connection is closed [default: 10s]
    #[arg(long, env = "KEYWHEEL_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,

    /// Shortest "every" a registration may have, at least 1ms [default: 1ms]
    #[arg(long, env = "KEYWHEEL_MIN_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub min_interval: Option<Duration>,

    /// Longest "every" a registration or a webhook response may set, at most 365days [default: 365days]
    #[arg(long, env = "KEYWHEEL_MAX_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub max_interval: Option<Duration>,

    /// Log line format (the level comes from RUST_LOG) [default: text]
    #[arg(long, env = "KEYWHEEL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Directory that keeps the watches across restarts and crashes; one process at a time [default: keywheel-data]
    #[arg(long, env = "KEYWHEEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keep the watches in memory only: a restart or crash forgets them
    #[arg(long, env = "KEYWHEEL_EPHEMERAL", value_parser = clap::builder::BoolishValueParser::new())]
    pub ephemeral: bool,

    /// Time between writes of the alert counts of watches; a crash loses at most this much of them [default: 1s]
    #[arg(long, env = "KEYWHEEL_FLUSH_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub flush_interval: Option<Duration>,

    /// TOML file with any of the settings above, keyed by the flag name
    /// with underscores, such as `max_body_bytes = 65536`
    #[arg(long, env = "KEYWHEEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Format of log lines on stderr.
///
/// # Example
///
/// ```
/// use clap::ValueEnum;
/// use keywheel::server::LogFormat;
///
/// assert_eq!(LogFormat::default(), LogFormat::Text);
/// assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// The config file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    workers: Option<usize>,
    #[serde(default, deserialize_with = "duration_text")]
    call_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_text")]
    drain_grace: Option<Duration>,
    #[serde(default, deserialize_with = "duration_text")]
    drain_delay: Option<Duration>,
    #[serde(default, deserialize_with = "duration_text")]
    request_timeout: Option<Duration>,
    max_id_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_payload_bytes: Option<usize>,
    webhook: Option<String>,
    #[serde(default, deserialize_with = "duration_text")]
    webhook_timeout: Option<Duration>,
    webhook_concurrency: Option<usize>,
    auth_token_file: Option<PathBuf>,
    protect_metrics: Option<bool>,
    insecure_no_auth: Option<bool>,
    max_entries: Option<usize>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "duration_text")]
    idle_timeout: Option<Duration>,
    command_capacity: Option<usize>,
    #[serde(default, deserialize_with = "duration_text")]
    header_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_text")]
    min_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration_text")]
    max_interval: Option<Duration>,
    log_format: Option<LogFormat>,
    data_dir: Option<PathBuf>,
    ephemeral: Option<bool>,
    #[serde(default, deserialize_with = "duration_text")]
    flush_interval: Option<Duration>,
}

/// The settings of one run: the server's and the log format.
///
/// # Example
///
/// ```
/// use keywheel::server::{LogFormat, Resolved, ServeArgs, ServeConfig};
///
/// let Resolved { config, log_format } = ServeArgs::default().resolve().unwrap();
/// assert_eq!(config, ServeConfig::default());
/// assert_eq!(log_format, LogFormat::Text);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Settings of the server.
    pub config: ServeConfig,
    /// Format of log lines.
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Merges flags and environment (already in `self`), the config file and
    /// the defaults, then checks the result.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid config file (naming the file and the key),
    /// or a setting out of range ([`SettingError`](super::SettingError)).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use keywheel::server::{LogFormat, ServeArgs};
    ///
    /// let args = ServeArgs {
    ///     shards: Some(4),
    ///     call_timeout: Some(Duration::from_secs(60)),
    ///     log_format: Some(LogFormat::Json),
    ///     ..ServeArgs::default()
    /// };
    /// let resolved = args.resolve().unwrap();
    ///
    /// assert_eq!(resolved.config.shards, 4);
    /// // The request and idle timeouts default to 10 s more than the timeout
    /// // they must outlast, when that is longer than their own default.
    /// assert_eq!(resolved.config.request_timeout, Duration::from_secs(70));
    /// assert_eq!(resolved.config.idle_timeout, Duration::from_secs(80));
    /// assert_eq!(resolved.log_format, LogFormat::Json);
    ///
    /// let invalid = ServeArgs { shards: Some(0), ..ServeArgs::default() };
    /// assert!(invalid.resolve().unwrap_err().to_string().contains("--shards"));
    /// ```
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(path) => read_config_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = ServeConfig::default();
        let call_timeout = self
            .call_timeout
            .or(file.call_timeout)
            .unwrap_or(defaults.call_timeout);
        // A longer call timeout moves the default request timeout along,
        // because a request must be able to outlast the call it waits for.
        let request_timeout = self
            .request_timeout
            .or(file.request_timeout)
            .unwrap_or_else(|| {
                defaults
                    .request_timeout
                    .max(call_timeout.saturating_add(REQUEST_TIMEOUT_MARGIN))
            });
        // Likewise, a connection must be able to stay quiet for as long as
        // its request may take.
        let idle_timeout = self.idle_timeout.or(file.idle_timeout).unwrap_or_else(|| {
            defaults
                .idle_timeout
                .max(request_timeout.saturating_add(REQUEST_TIMEOUT_MARGIN))
        });
        let auth_token = self.auth_token(&file)?;
        let data_dir = self.data_dir(&file, defaults.data_dir.clone())?;

        let config = ServeConfig {
            listen: self.listen.or(file.listen).unwrap_or(defaults.listen),
            shards: self.shards.or(file.shards).unwrap_or(defaults.shards),
            workers: self.workers.or(file.workers).unwrap_or(defaults.workers),
            call_timeout,
            drain_grace: self
                .drain_grace
                .or(file.drain_grace)
                .unwrap_or(defaults.drain_grace),
            drain_delay: self
                .drain_delay
                .or(file.drain_delay)
                .unwrap_or(defaults.drain_delay),
            request_timeout,
            max_id_bytes: self
                .max_id_bytes
                .or(file.max_id_bytes)
                .unwrap_or(defaults.max_id_bytes),
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(defaults.max_body_bytes),
            max_payload_bytes: self
                .max_payload_bytes
                .or(file.max_payload_bytes)
                .unwrap_or(defaults.max_payload_bytes),
            webhook: self.webhook.clone().or(file.webhook),
            webhook_timeout: self
                .webhook_timeout
                .or(file.webhook_timeout)
                .unwrap_or(defaults.webhook_timeout),
            webhook_concurrency: self.webhook_concurrency.or(file.webhook_concurrency),
            auth_token,
            protect_metrics: self.protect_metrics || file.protect_metrics.unwrap_or(false),
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            max_entries: self
                .max_entries
                .or(file.max_entries)
                .unwrap_or(defaults.max_entries),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            idle_timeout,
            command_capacity: self
                .command_capacity
                .or(file.command_capacity)
                .unwrap_or(defaults.command_capacity),
            header_timeout: self
                .header_timeout
                .or(file.header_timeout)
                .unwrap_or(defaults.header_timeout),
            min_interval: self
                .min_interval
                .or(file.min_interval)
                .unwrap_or(defaults.min_interval),
            max_interval: self
                .max_interval
                .or(file.max_interval)
                .unwrap_or(defaults.max_interval),
            data_dir,
            flush_interval: self
                .flush_interval
                .or(file.flush_interval)
                .unwrap_or(defaults.flush_interval),
        };
        config.validate()?;

        let log_format = self.log_format.or(file.log_format).unwrap_or_default();
        Ok(Resolved { config, log_format })
    }
}

impl ServeArgs {
    /// Picks the data directory. Flags and `KEYWHEEL_*` variables win over
    /// the config file; within one of the two, `ephemeral` and a data
    /// directory together are an error.
    fn data_dir(
        &self,
        file: &FileConfig,
        default: Option<PathBuf>,
    ) -> anyhow::Result<Option<PathBuf>> {
        let pick = |ephemeral: bool, dir: Option<PathBuf>, source: &str| match (ephemeral, dir) {
            (true, Some(dir)) => Err(anyhow::anyhow!(
                "ephemeral and data_dir {} are both set in {source}: keep one",
                dir.display()
            )),
            (true, None) => Ok(Some(None)),
            (false, Some(dir)) => Ok(Some(Some(dir))),
            (false, None) => Ok(None),
        };
        let from_flags = pick(
            self.ephemeral,
            self.data_dir.clone(),
            "the flags and KEYWHEEL_* variables (--ephemeral, --data-dir)",
        )?;
        if let Some(choice) = from_flags {
            return Ok(choice);
        }
        let from_file = pick(
            file.ephemeral.unwrap_or(false),
            file.data_dir.clone(),
            "the config file",
        )?;
        Ok(from_file.unwrap_or(default))
    }

    /// Reads the token from `--auth-token` or else from the token file of
    /// the flag or the config file. Errors name the flag, never the token.
    fn auth_token(&self, file: &FileConfig) -> anyhow::Result<Option<AuthToken>> {
        if let Some(text) = &self.auth_token {
            let token = AuthToken::new(text.expose()).map_err(|rule| {
                anyhow::anyhow!(
                    "invalid --auth-token value (set by --auth-token or KEYWHEEL_AUTH_TOKEN): {rule}"
                )
            })?;
            return Ok(Some(token));
        }
        match self
            .auth_token_file
            .as_ref()
            .or(file.auth_token_file.as_ref())
        {
            Some(path) => AuthToken::from_file(path).map(Some),
            None => Ok(None),
        }
    }
}

fn read_config_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "invalid config file {}: keys are the serve flags with underscores, such as max_body_bytes",
            path.display()
        )
    })
}

/// Parses a duration such as `"250ms"`, `"30s"` or `"1h 30m"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("{error}; expected a duration such as \"250ms\", \"30s\" or \"2m\"")
    })
}

/// Reads a duration written as a string, such as `drain_grace = "5s"`.
fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    deserializer.deserialize_str(DurationVisitor).map(Some)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a duration string such as \"250ms\", \"30s\" or \"2m\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text)
            .map_err(|error| E::custom(format!("invalid duration {text:?}: {error}")))
    }
}

/// Installs the global tracing subscriber: stderr, the level filter from
/// `RUST_LOG` (default `default_level`), colours only on a terminal.
///
/// # Errors
///
/// A subscriber is already installed.
///
/// # Example
///
/// ```no_run
/// use keywheel::server::{init_logging, LogFormat};
/// use tracing_subscriber::filter::LevelFilter;
///
/// # fn main() -> anyhow::Result<()> {
/// init_logging(LogFormat::Json, LevelFilter::INFO)?;
/// tracing::info!(port = 7878, "logged as one JSON object on stderr");
/// # Ok(())
/// # }
/// ```
pub fn init_logging(format: LogFormat, default_level: LevelFilter) -> anyhow::Result<()> {
    let filter = EnvFilter::builder()
        .with_default_directive(default_level.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);

    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("failed to install the log subscriber: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("keywheel-cli-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("temp dir is writable");
        path
    }

    #[test]
    fn file_values_fill_unset_flags() {
        let path = write_file(
            "fill",
            "shards = 8\nworkers = 3\ncall_timeout = \"2s\"\nlog_format = \"json\"\n",
        );
        let args = ServeArgs {
            workers: Some(5),
            config: Some(path.clone()),
            ..ServeArgs::default()
        };

        let resolved = args.resolve().expect("valid file");
        std::fs::remove_file(path).ok();

        assert_eq!(resolved.config.shards, 8, "from the file");
        assert_eq!(resolved.config.workers, 5, "the flag wins over the file");
        assert_eq!(resolved.config.call_timeout, Duration::from_secs(2));
        assert_eq!(resolved.log_format, LogFormat::Json);
        assert_eq!(resolved.config.listen, ServeConfig::default().listen);
    }

    #[test]
    fn long_call_timeout_raises_default_request_timeout() {
        let args = ServeArgs {
            call_timeout: Some(Duration::from_secs(30)),
            ..ServeArgs::default()
        };

        let resolved = args.resolve().expect("a long call timeout alone is valid");

        assert_eq!(resolved.config.request_timeout, Duration::from_secs(40));
    }

    #[test]
    fn file_duration_must_be_string() {
        let path = write_file("integer", "drain_grace = 5\n");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };

        let error = args.resolve().unwrap_err();
        std::fs::remove_file(path).ok();
        let message = format!("{error:#}");

        assert!(
            message.contains("expected a duration string"),
            "message: {message}"
        );
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let path = write_file("unknown", "shard = 8\n");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };

        let error = args.resolve().unwrap_err();
        std::fs::remove_file(path).ok();
        let message = format!("{error:#}");

        assert!(
            message.contains("unknown field `shard`"),
            "message: {message}"
        );
    }

    #[test]
    fn bad_file_duration_names_value() {
        let path = write_file("duration", "drain_grace = \"soon\"\n");
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };

        let error = args.resolve().unwrap_err();
        std::fs::remove_file(path).ok();
        let message = format!("{error:#}");

        assert!(message.contains("\"soon\""), "message: {message}");
        assert!(message.contains("drain_grace"), "message: {message}");
    }
}
