//! Checks of client input: ids, query strings, content types and
//! registration bodies.
//!
//! Every check runs before the manager is touched, so a rejected request
//! changes nothing.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::show_interval;
use super::errors::{excerpt, ApiError};
use crate::{EntryOptions, FirstRun, OptionsError, MAX_INTERVAL};

/// The limits of client input: sizes in bytes, and the range of `every`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use keywheel::server::fuzzing::{decode_put, Limits};
///
/// let limits = Limits {
///     max_id_bytes: 8,
///     max_body_bytes: 1024,
///     max_payload_bytes: 512,
///     min_interval: Duration::from_secs(1),
///     max_interval: Duration::from_secs(3600),
/// };
/// let body = br#"{"every": "30s"}"#;
/// assert!(decode_put("order-7", None, Some(b"application/json"), body, &limits).is_ok());
/// assert!(decode_put("order-777", None, Some(b"application/json"), body, &limits).is_err());
/// let fast = br#"{"every": "500ms"}"#;
/// assert!(decode_put("order-7", None, Some(b"application/json"), fast, &limits).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum id length.
    pub max_id_bytes: usize,
    /// Maximum request body size.
    pub max_body_bytes: usize,
    /// Maximum payload size (its JSON text).
    pub max_payload_bytes: usize,
    /// Shortest `every` accepted (`--min-interval`).
    pub min_interval: Duration,
    /// Longest `every` accepted (`--max-interval`).
    pub max_interval: Duration,
}

/// A checked `PUT /v1/keys/{id}`.
#[derive(Debug)]
pub(crate) struct PutRequest {
    pub(crate) id: Arc<str>,
    pub(crate) if_absent: bool,
    pub(crate) registration: Registration,
}

/// The query string of a `PUT`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    #[serde(default)]
    if_absent: bool,
}

/// Checks every part of a `PUT /v1/keys/{id}` in the order a client would
/// fix them: the id (already percent-decoded), the query string, the
/// content type, then the body. `body` is an error when reading it failed,
/// such as for a body over the limit.
pub(crate) fn decode_put(
    id: &str,
    query: Option<&str>,
    content_type: Option<&[u8]>,
    body: Result<&[u8], ApiError>,
    limits: &Limits,
) -> Result<PutRequest, ApiError> {
    let id = parse_id(id, limits.max_id_bytes)?;
    let if_absent = parse_put_query(query.unwrap_or(""))?;
    check_content_type(content_type)?;
    let body = body?;
    if body.len() > limits.max_body_bytes {
        return Err(ApiError::body_too_large(limits.max_body_bytes));
    }
    let registration = parse_registration(body, limits)?;
    Ok(PutRequest {
        id,
        if_absent,
        registration,
    })
}

/// Parses the query string of a `PUT`: empty, or `if_absent=true|false`.
fn parse_put_query(query: &str) -> Result<bool, ApiError> {
    serde_urlencoded::from_str::<PutQuery>(query)
        .map(|parsed| parsed.if_absent)
        .map_err(|error| {
            ApiError::invalid(
                "if_absent",
                format!(
                    "invalid query string {}: {error}. The only parameter is if_absent=true or if_absent=false",
                    excerpt(query)
                ),
            )
        })
}

/// Accepts a missing content type or a JSON one. Anything else is 415.
fn check_content_type(value: Option<&[u8]>) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value);
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        field: Some(Cow::Borrowed("content-type")),
        message: format!(
            "unsupported content type {}: send application/json",
            excerpt(&text)
        ),
    })
}

/// The characters allowed in an id besides ASCII letters and digits. The
/// set is safe in a URL path segment without percent-encoding, in log lines
/// and in file names, so ids never need escaping on their way through.
const ID_PUNCTUATION: &[u8] = b"._:-";

/// The shape of a registration body, quoted in errors about it.
const BODY_RULE: &str =
    "The body must be a JSON object with the fields every (required), payload, first_run, jitter and max_alerts.";

/// Checks an id from the path: 1 to `max_bytes` bytes of `[A-Za-z0-9._:-]`.
pub(crate) fn parse_id(id: &str, max_bytes: usize) -> Result<Arc<str>, ApiError> {
    let rule = format!("an id is 1 to {max_bytes} characters from A-Z, a-z, 0-9 and . _ : -");
    if id.is_empty() {
        return Err(ApiError::invalid("id", format!("invalid id \"\": {rule}")));
    }
    if id.len() > max_bytes {
        return Err(ApiError::invalid(
            "id",
            format!(
                "invalid id {}: it is {} bytes long, but {rule}",
                excerpt(id),
                id.len()
            ),
        ));
    }
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(byte);
    if let Some(position) = id.bytes().position(|byte| !allowed(&byte)) {
        let bad = id[position..].chars().next().unwrap_or_default();
        return Err(ApiError::invalid(
            "id",
            format!(
                "invalid id {}: character {bad:?} is not allowed, because {rule}",
                excerpt(id)
            ),
        ));
    }
    if id.bytes().all(|byte| byte == b'.') {
        // `.` and `..` are path segments that HTTP clients normalize away.
        return Err(ApiError::invalid(
            "id",
            format!(
                "invalid id {}: an id made only of dots is not allowed, because clients rewrite it as a path step",
                excerpt(id)
            ),
        ));
    }
    Ok(Arc::from(id))
}

/// The body of `PUT /v1/keys/{id}`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    every: String,
    #[serde(default)]
    first_run: Option<String>,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    max_alerts: Option<u32>,
}

/// A checked registration.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) payload: Arc<RawValue>,
    pub(crate) options: EntryOptions,
    pub(crate) max_alerts: Option<NonZeroU32>,
}

/// Parses and checks a registration body.
pub(crate) fn parse_registration(body: &[u8], limits: &Limits) -> Result<Registration, ApiError> {
    let max_payload_bytes = limits.max_payload_bytes;
    // A derived Deserialize also accepts a JSON array, filling the fields
    // by position, so anything but an object is rejected here first.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|&byte| byte != b'{') {
        return Err(ApiError::invalid(
            "body",
            format!("invalid body: expected a JSON object. {BODY_RULE}"),
        ));
    }

    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: PutBody =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| json_error(&error))?;
    deserializer
        .end()
        .map_err(|error| ApiError::invalid("body", format!("invalid JSON body: {error}")))?;

    let payload: Arc<RawValue> = match parsed.payload {
        Some(raw) => Arc::from(raw),
        None => Arc::from(RawValue::NULL.to_owned()),
    };
    let payload_bytes = payload.get().len();
    if payload_bytes > max_payload_bytes {
        return Err(ApiError::too_large(
            "payload",
            format!(
                "payload is {payload_bytes} bytes of JSON, over the limit of {max_payload_bytes} bytes. Store a reference to large data instead"
            ),
        ));
    }
    // The payload is stored as sent and handed back in GET, complete and
    // webhook bodies, so it must be JSON that every client can read back:
    // nested at most 128 deep, no lone surrogate escapes, numbers in the
    // range of a double. A full parse checks all three.
    if let Err(error) = serde_json::from_str::<serde_json::Value>(payload.get()) {
        return Err(ApiError::invalid(
            "payload",
            format!(
                "invalid payload: {error}; it must be JSON nested at most 128 levels deep, with valid string escapes and numbers a double can hold"
            ),
        ));
    }

    let every = parse_every(&parsed.every, limits)?;
    let mut options = EntryOptions::every(every);
    if let Some(first_run) = &parsed.first_run {
        options = options.first_run(parse_first_run(first_run)?);
    }
    if let Some(jitter) = &parsed.jitter {
        options = options.jitter(parse_interval(
            "jitter",
            jitter,
            Duration::ZERO,
            MAX_INTERVAL,
        )?);
    }

    // The checks above match the manager's; this keeps the two in step, so
    // an accepted body never fails later without a field to blame.
    options.validate().map_err(|error| {
        let field = match error {
            OptionsError::ZeroInterval
            | OptionsError::TooLong {
                field: "interval", ..
            } => "every",
            OptionsError::TooLong { field, .. } => field,
        };
        ApiError::invalid(field, format!("invalid {field}: {error}"))
    })?;

    let max_alerts = match parsed.max_alerts {
        None => None,
        Some(count) => Some(NonZeroU32::new(count).ok_or_else(|| {
            ApiError::invalid(
                "max_alerts",
                "invalid max_alerts 0: it must be at least 1. Omit it to alert until the entry is completed or deleted",
            )
        })?),
    };

    Ok(Registration {
        payload,
        options,
        max_alerts,
    })
}

/// Maps a JSON error to the field it concerns: the path of the value that
/// failed, or the field named by a missing or unknown field error, or
/// `body` for a syntax error or a body that is not an object.
fn json_error(error: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = error.inner();
    let message = inner.to_string();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::invalid("body", format!("invalid JSON body: {message}"));
    }

    let path = error.path().to_string();
    let field = match field_in_message(&message) {
        Some(name) if !name.is_empty() => name.to_string(),
        // An unknown field named "" has nothing to point at but the body.
        Some(_) => "body".to_string(),
        None if path == "." => "body".to_string(),
        None => path,
    };

    if field == "body" {
        return ApiError::invalid(field, format!("invalid body: {message}. {BODY_RULE}"));
    }
    ApiError::invalid(
        excerpt_field(&field),
        format!("invalid field {}: {message}. {BODY_RULE}", excerpt(&field)),
    )
}

/// Returns the field name of serde's "unknown field `NAME`, expected ..."
/// and "missing field `NAME`" messages. A client's field name may itself
/// contain backquotes, so the name ends at the last backquote before the
/// rest of the message.
fn field_in_message(message: &str) -> Option<&str> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let end = rest
            .rfind("`, expected")
            .or_else(|| rest.rfind("`, there are no fields"))?;
        return Some(&rest[..end]);
    }
    let rest = message.strip_prefix("missing field `")?;
    rest.rfind('`').map(|end| &rest[..end])
}

/// Cuts a client-chosen field name to the excerpt length, without quotes.
fn excerpt_field(field: &str) -> String {
    field.chars().take(64).collect()
}

/// Parses a duration field from `min` to `max`. `every` goes through
/// [`parse_every`] instead, which names the flags of its range.
fn parse_interval(
    field: &'static str,
    text: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ApiError> {
    let range = format!("{} to {}", show_interval(min), show_interval(max));
    let duration = parse_duration_text(field, text, &range)?;
    if duration < min || duration > max {
        return Err(ApiError::invalid(
            field,
            format!("invalid {field} {}: it must be from {range}", excerpt(text)),
        ));
    }
    check_whole_millis(field, text, duration, &range)?;
    Ok(duration)
}

/// Parses `every`: a duration from `--min-interval` to `--max-interval`
/// (by default the engine's 1ms to 365days), in whole milliseconds.
fn parse_every(text: &str, limits: &Limits) -> Result<Duration, ApiError> {
    let range = format!(
        "{} to {}",
        show_interval(limits.min_interval),
        show_interval(limits.max_interval)
    );
    let every = parse_duration_text("every", text, &range)?;
    check_whole_millis("every", text, every, &range)?;
    let limit = if every < limits.min_interval {
        Some((
            "shorter than the minimum",
            limits.min_interval,
            "--min-interval",
        ))
    } else if every > limits.max_interval {
        Some((
            "longer than the maximum",
            limits.max_interval,
            "--max-interval",
        ))
    } else {
        None
    };
    if let Some((relation, bound, flag)) = limit {
        return Err(ApiError::invalid(
            "every",
            format!(
                "invalid every {}: it is {relation} interval of {} ({flag}). The server accepts an every from {range}",
                excerpt(text),
                show_interval(bound)
            ),
        ));
    }
    Ok(every)
}

/// Parses a duration such as `"250ms"`; `range` goes into the error.
fn parse_duration_text(field: &'static str, text: &str, range: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text).map_err(|error| {
        ApiError::invalid(
            field,
            format!(
                "invalid {field} {}: {error}. Expected a duration such as \"250ms\", \"30s\" or \"1h 30m\", from {range}",
                excerpt(text)
            ),
        )
    })
}

/// Rejects a duration with a fraction of a millisecond. Entries are
/// scheduled in whole milliseconds: accepting "1ns" would store 1ms, and a
/// GET would show another value than the one sent.
fn check_whole_millis(
    field: &'static str,
    text: &str,
    duration: Duration,
    range: &str,
) -> Result<(), ApiError> {
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(ApiError::invalid(
            field,
            format!(
                "invalid {field} {}: it must be a whole number of milliseconds, from {range}",
                excerpt(text)
            ),
        ));
    }
    Ok(())
}

fn parse_first_run(text: &str) -> Result<FirstRun, ApiError> {
    if text == "immediately" {
        return Ok(FirstRun::Immediately);
    }
    parse_interval("first_run", text, Duration::ZERO, MAX_INTERVAL)
        .map(FirstRun::After)
        .map_err(|error| ApiError {
            message: format!("{} (or \"immediately\")", error.message),
            ..error
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interval, TICK};

    /// Returns the server's default limits with a payload limit of `max_payload_bytes`.
    fn limits(max_payload_bytes: usize) -> Limits {
        Limits {
            max_id_bytes: 256,
            max_body_bytes: 1 << 20,
            max_payload_bytes,
            min_interval: TICK,
            max_interval: MAX_INTERVAL,
        }
    }

    #[test]
    fn id_rule_accepts_allowed_characters() {
        let id = parse_id("order-17.retry_2:eu", 256).expect("allowed characters");
        assert_eq!(&*id, "order-17.retry_2:eu");
    }

    #[test]
    fn id_rule_rejects_slash_space_and_length() {
        for (id, max) in [
            ("a/b", 256),
            ("a b", 256),
            ("é", 256),
            ("", 256),
            ("abcd", 3),
        ] {
            let error = parse_id(id, max).expect_err(id);
            assert_eq!(error.field.as_deref(), Some("id"), "id {id:?}");
        }
    }

    #[test]
    fn registration_reads_every_field() {
        let body = br#"{"payload": {"order": 17}, "every": "250ms", "first_run": "immediately", "jitter": "1s", "max_alerts": 3}"#;
        let registration = parse_registration(body, &limits(1024)).expect("valid body");

        assert_eq!(registration.payload.get(), r#"{"order": 17}"#);
        assert_eq!(
            registration.options.interval,
            Interval::Every(Duration::from_millis(250))
        );
        assert_eq!(registration.options.first_run, FirstRun::Immediately);
        assert_eq!(registration.options.jitter, Duration::from_secs(1));
        assert_eq!(registration.max_alerts, NonZeroU32::new(3));
    }

    #[test]
    fn registration_defaults_payload_to_null() {
        let registration =
            parse_registration(br#"{"every": "30s"}"#, &limits(1024)).expect("valid body");

        assert_eq!(registration.payload.get(), "null");
        assert_eq!(registration.max_alerts, None);
    }

    #[test]
    fn registration_errors_name_the_field() {
        let cases: [(&[u8], &str); 14] = [
            (b"{", "body"),
            (b"[1]", "body"),
            (br#"{"every": "30s"} x"#, "body"),
            (br#"{"payload": 1}"#, "every"),
            (br#"{"every": "30s", "colour": 1}"#, "colour"),
            (br#"{"every": 30}"#, "every"),
            (br#"{"every": "0s"}"#, "every"),
            (br#"{"every": "soon"}"#, "every"),
            (br#"{"every": "400days"}"#, "every"),
            (br#"{"every": "1s", "first_run": "later"}"#, "first_run"),
            (br#"{"every": "1s", "max_alerts": 0}"#, "max_alerts"),
            (br#"{"every": "1s", "`first_run": 1}"#, "`first_run"),
            (
                br#"{"every": "1s", "a`, expected `b": 1}"#,
                "a`, expected `b",
            ),
            (br#"{"every": "1s", "": 1}"#, "body"),
        ];
        for (body, field) in cases {
            let error = parse_registration(body, &limits(1024)).expect_err(field);
            assert_eq!(
                error.field.as_deref(),
                Some(field),
                "body {} gave {error:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn unreadable_payloads_are_rejected() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for payload in [deep.as_str(), r#""\ud800""#, "1e999999"] {
            let body = format!(r#"{{"every": "1s", "payload": {payload}}}"#);
            let error = parse_registration(body.as_bytes(), &limits(1 << 20))
                .expect_err("a payload other clients cannot read back");
            assert_eq!(
                error.field.as_deref(),
                Some("payload"),
                "payload {payload:.40}"
            );
        }
    }

    #[test]
    fn dot_ids_are_rejected() {
        for id in [".", "..", "..."] {
            let error = parse_id(id, 256).expect_err("an id of dots");
            assert_eq!(error.field.as_deref(), Some("id"), "id {id}");
        }
        assert!(parse_id("a.b", 256).is_ok(), "dots inside an id are fine");
    }

    #[test]
    fn every_outside_configured_range_names_limit_and_flag() {
        let narrow = Limits {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            ..limits(1024)
        };
        let cases = [
            (&br#"{"every": "999ms"}"#[..], "--min-interval", "1s"),
            (br#"{"every": "61m"}"#, "--max-interval", "1h"),
        ];
        for (body, flag, limit) in cases {
            let error = parse_registration(body, &narrow).expect_err(flag);
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{error:?}");
            assert_eq!(error.field.as_deref(), Some("every"), "{error:?}");
            assert!(error.message.contains(flag), "{}", error.message);
            assert!(error.message.contains(limit), "{}", error.message);
        }
        for edge in [&br#"{"every": "1s"}"#[..], br#"{"every": "1h"}"#] {
            assert!(
                parse_registration(edge, &narrow).is_ok(),
                "{}",
                String::from_utf8_lossy(edge)
            );
        }
    }

    #[test]
    fn oversized_payload_is_413() {
        let body = format!(r#"{{"every": "1s", "payload": "{}"}}"#, "x".repeat(100));
        let error =
            parse_registration(body.as_bytes(), &limits(50)).expect_err("payload over the limit");

        assert_eq!(error.status, axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.field.as_deref(), Some("payload"));
    }
}
