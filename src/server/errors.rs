//! JSON error responses: `{"error": "...", "field": "..."}` for every
//! rejected request, including axum's own rejections, unknown routes and
//! unsupported methods.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::log_limit::LogLimiter;
use crate::Error;

/// Maximum length of a client value quoted in an error message, in characters.
const EXCERPT_CHARS: usize = 64;

/// The `Retry-After` value of every 503 response, in seconds. A full
/// command queue drains within milliseconds, so one second is enough for
/// the retry to find room while spreading retries out.
const RETRY_AFTER_SECONDS: &str = "1";

/// Minimum time between two lines about requests that failed in the
/// manager. Under overload every request may fail the same way.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// A rejected request: the status, the field at fault (if one is) and a
/// message naming the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) field: Option<Cow<'static, str>>,
    pub(crate) message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    field: Option<&'a str>,
}

/// The reason label of a request rejected by input validation, attached
/// to its response so that the request middleware can count it in
/// `keywheel_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValidationRejection(pub(crate) &'static str);

/// Every `reason` the server counts in `keywheel_rejected_total`: the
/// library's three (`interval` for `every`, `first_run`, `jitter`) and the
/// parts of a request only the server checks.
pub(crate) const REJECTION_REASONS: [&str; 9] = [
    "interval",
    "first_run",
    "jitter",
    "max_alerts",
    "id",
    "payload",
    "body",
    "query",
    "content_type",
];

impl IntoResponse for ApiError {
    /// Sends the JSON body of [`ApiError::body_json`]; a 503 also carries
    /// `Retry-After`, and a 408 `Connection: close`.
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body_json(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive; closing is cheaper
            // than reading it to find the next request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(reason) = self.rejection_reason() {
            response
                .extensions_mut()
                .insert(ValidationRejection(reason));
        }
        response
    }
}

impl ApiError {
    /// Returns the response body: `{"error": message, "field": field}`.
    pub(crate) fn body_json(&self) -> String {
        let body = ErrorBody {
            error: &self.message,
            field: self.field.as_deref(),
        };
        serde_json::to_string(&body).unwrap_or_else(|_| {
            // Serializing two strings cannot fail; this keeps the response JSON regardless.
            r#"{"error":"internal error","field":null}"#.to_string()
        })
    }

    /// Returns the `reason` label of a validation rejection (400, 413 or
    /// 415), or `None` for every other error. Field names that a client
    /// chose, such as an unknown field, count as `body`, so a client cannot
    /// add label values.
    pub(crate) fn rejection_reason(&self) -> Option<&'static str> {
        let validation = [
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ];
        if !validation.contains(&self.status) {
            return None;
        }
        let reason = match self.field.as_deref() {
            Some("every") => "interval",
            Some("first_run") => "first_run",
            Some("jitter") => "jitter",
            Some("max_alerts") => "max_alerts",
            Some("id") => "id",
            Some("payload") => "payload",
            Some("if_absent") => "query",
            Some("content-type") => "content_type",
            _ => "body",
        };
        Some(reason)
    }

    /// Builds the 408 response for a body that did not arrive within the
    /// request timeout.
    pub(crate) fn body_timeout(timeout: Duration) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            field: Some(Cow::Borrowed("body")),
            message: format!(
                "request timed out: the body did not arrive within the request timeout of {} (--request-timeout); send the whole body at once",
                humantime::format_duration(timeout)
            ),
        }
    }

    /// Builds a 400 response about `field`.
    pub(crate) fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// Builds a 413 response about `field`.
    pub(crate) fn too_large(field: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            field: Some(Cow::Borrowed(field)),
            message: message.into(),
        }
    }

    /// Builds the 404 response for an id with no entry.
    pub(crate) fn no_entry(id: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            field: Some(Cow::Borrowed("id")),
            message: format!(
                "entry not found: no entry has id {}. It was never registered, or it was completed, deleted or expired",
                excerpt(id)
            ),
        }
    }

    /// Builds the 507 response for a new id when the server has
    /// `max_entries` entries.
    pub(crate) fn entry_limit(id: &str, max_entries: usize) -> Self {
        ApiError {
            status: StatusCode::INSUFFICIENT_STORAGE,
            field: Some(Cow::Borrowed("id")),
            message: format!(
                "entry limit reached: the server holds its maximum of {max_entries} entries (--max-entries), so the new id {} was not stored. Complete or delete entries, or raise --max-entries",
                excerpt(id)
            ),
        }
    }

    /// Builds the 503 response for a request that could not be queued in time.
    pub(crate) fn overloaded(detail: &str) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            field: None,
            message: format!("server is overloaded: {detail}; retry after 1 second"),
        }
    }

    /// Maps a manager error on `id` to a response. Bad input never reaches
    /// here (it is checked first), so these are the server's conditions.
    pub(crate) fn from_engine(error: &Error, id: &str) -> Self {
        let status = match error {
            Error::NotFound { .. } => return ApiError::no_entry(id),
            Error::InvalidOptions(_) => StatusCode::BAD_REQUEST,
            Error::Timeout { .. } | Error::Overloaded { .. } | Error::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Panicked { .. } | Error::RoutingOff | Error::NoRoute | Error::Codec { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            // The write may not be durable; the store takes no more writes.
            Error::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            static ENGINE_LOG: OnceLock<LogLimiter> = OnceLock::new();
            let limiter = ENGINE_LOG.get_or_init(|| LogLimiter::new(LOG_EVERY));
            if let Some(suppressed) = limiter.allow() {
                tracing::warn!(id, %error, suppressed, "request failed in the manager");
            }
        }
        let message = match error {
            Error::Overloaded { shard } => {
                return ApiError::overloaded(&format!("the command queue of shard {shard} is full"))
            }
            _ => error.to_string(),
        };
        ApiError {
            status,
            field: None,
            message,
        }
    }

    /// Builds the 413 response for a body over `limit` bytes.
    pub(crate) fn body_too_large(limit: usize) -> Self {
        ApiError::too_large(
            "body",
            format!("request body is over the limit of {limit} bytes; send a smaller payload"),
        )
    }

    /// Maps a failure to read the body: over the limit is 413, the rest 400.
    pub(crate) fn from_body(rejection: &BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::body_too_large(limit);
        }
        ApiError::invalid(
            "body",
            format!("failed to read the request body: {rejection}"),
        )
    }

    /// Maps an id that does not fit a path segment, such as invalid percent-encoding.
    pub(crate) fn from_path(rejection: &PathRejection) -> Self {
        ApiError::invalid(
            "id",
            format!("invalid id in the path: {}", rejection.body_text()),
        )
    }
}

/// Returns the 404 response for a path that has no route.
pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        field: Some(Cow::Borrowed("path")),
        message: format!(
            "no route for {method} {}. The routes are /v1/keys/{{id}}, /v1/keys/{{id}}/complete, /metrics, /healthz and /readyz",
            excerpt(uri.path())
        ),
    }
}

/// Returns the 405 response for a method that the matched path does not support.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        field: Some(Cow::Borrowed("method")),
        message: format!(
            "method {method} is not allowed on {}. /v1/keys/{{id}} takes PUT, GET and DELETE, /v1/keys/{{id}}/complete takes POST, the others GET",
            excerpt(uri.path())
        ),
    }
}

/// Quotes a client value for a message, cut to [`EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(value: &str) -> String {
    match value.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &value[..end], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_reasons_are_a_fixed_set() {
        let cases = [
            (StatusCode::BAD_REQUEST, "every", Some("interval")),
            (StatusCode::BAD_REQUEST, "if_absent", Some("query")),
            (StatusCode::BAD_REQUEST, "colour", Some("body")),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload", Some("payload")),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-type",
                Some("content_type"),
            ),
            (StatusCode::NOT_FOUND, "id", None),
            (StatusCode::INSUFFICIENT_STORAGE, "id", None),
            (StatusCode::UNAUTHORIZED, "authorization", None),
            (StatusCode::REQUEST_TIMEOUT, "body", None),
        ];
        for (status, field, expected) in cases {
            let error = ApiError {
                status,
                field: Some(Cow::Borrowed(field)),
                message: "message".to_string(),
            };
            assert_eq!(error.rejection_reason(), expected, "{status} on {field}");
            if let Some(reason) = expected {
                assert!(REJECTION_REASONS.contains(&reason), "{reason}");
            }
        }
    }

    #[test]
    fn excerpt_quotes_short_values_whole() {
        assert_eq!(excerpt("a b"), "\"a b\"");
    }

    #[test]
    fn excerpt_cuts_long_values_on_char_boundary() {
        let long = "é".repeat(100);
        let quoted = excerpt(&long);

        assert!(
            quoted.starts_with(&format!("\"{}\"", "é".repeat(64))),
            "{quoted}"
        );
        assert!(quoted.ends_with("(200 bytes)"), "{quoted}");
    }
}
