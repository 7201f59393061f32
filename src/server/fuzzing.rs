//! The request decoding of `PUT /v1/keys/{id}`, public for the fuzz tests.
//!
//! [`decode_put`] runs the same checks, in the same order, as the route
//! does after axum has percent-decoded the path and read the body. It is
//! not a stable API.

use std::num::NonZeroU32;

pub use super::input::Limits;
use super::input::{self, parse_id};
use crate::EntryOptions;

/// A registration the route would pass to the manager.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use keywheel::server::fuzzing::{decode_put, Limits};
///
/// let limits = Limits {
///     max_id_bytes: 256,
///     max_body_bytes: 65_536,
///     max_payload_bytes: 32_768,
///     min_interval: keywheel::TICK,
///     max_interval: keywheel::MAX_INTERVAL,
/// };
/// let body = br#"{"every": "30s", "payload": {"order": 7}, "max_alerts": 3}"#;
/// let accepted = decode_put("order-7", Some("if_absent=true"), Some(b"application/json"), body, &limits)
///     .expect("a valid registration");
///
/// assert_eq!(accepted.id, "order-7");
/// assert!(accepted.if_absent);
/// assert_eq!(accepted.payload, r#"{"order": 7}"#);
/// assert_eq!(accepted.max_alerts.map(|max| max.get()), Some(3));
/// ```
#[derive(Debug)]
pub struct Accepted {
    /// The checked id.
    pub id: String,
    /// True for `?if_absent=true`.
    pub if_absent: bool,
    /// The payload's JSON text, as stored.
    pub payload: String,
    /// Interval, first run and jitter.
    pub options: EntryOptions,
    /// The alert count at which the entry expires, if any.
    pub max_alerts: Option<NonZeroU32>,
}

/// A rejection: the status and the JSON body the route would send.
///
/// # Example
///
/// ```
/// use keywheel::server::fuzzing::decode_id;
///
/// let rejected = decode_id("order 7", 256).unwrap_err();
/// assert_eq!(rejected.status, 400);
/// assert!(rejected.body.contains(r#""field":"id""#));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// HTTP status code.
    pub status: u16,
    /// The response body, `{"error": ..., "field": ...}`.
    pub body: String,
}

/// Decodes a `PUT /v1/keys/{id}` from its percent-decoded id, raw query
/// string, `Content-Type` header value and body.
///
/// # Errors
///
/// The response the route would send for invalid input.
///
/// # Example
///
/// ```
/// use keywheel::server::fuzzing::{decode_put, Limits};
///
/// let limits = Limits {
///     max_id_bytes: 256,
///     max_body_bytes: 65_536,
///     max_payload_bytes: 32_768,
///     min_interval: keywheel::TICK,
///     max_interval: keywheel::MAX_INTERVAL,
/// };
/// let ok = decode_put("order-7", None, Some(b"application/json"), br#"{"every": "1s"}"#, &limits);
/// assert!(ok.is_ok());
///
/// let wrong_type = decode_put("order-7", None, Some(b"text/plain"), br#"{"every": "1s"}"#, &limits);
/// assert_eq!(wrong_type.unwrap_err().status, 415);
///
/// let no_interval = decode_put("order-7", None, Some(b"application/json"), b"{}", &limits);
/// assert_eq!(no_interval.unwrap_err().status, 400);
/// ```
pub fn decode_put(
    id: &str,
    query: Option<&str>,
    content_type: Option<&[u8]>,
    body: &[u8],
    limits: &Limits,
) -> Result<Accepted, Rejected> {
    let request = input::decode_put(id, query, content_type, Ok(body), limits).map_err(rejected)?;
    let registration = request.registration;
    Ok(Accepted {
        id: request.id.to_string(),
        if_absent: request.if_absent,
        payload: registration.payload.get().to_string(),
        options: registration.options,
        max_alerts: registration.max_alerts,
    })
}

/// Checks an id as `GET`, `DELETE` and `complete` do.
///
/// # Errors
///
/// The response the route would send for an invalid id.
///
/// # Example
///
/// ```
/// use keywheel::server::fuzzing::decode_id;
///
/// assert_eq!(decode_id("order-7", 256), Ok("order-7".to_string()));
/// assert_eq!(decode_id("order-7", 4).unwrap_err().status, 400);
/// assert_eq!(decode_id("", 256).unwrap_err().status, 400);
/// ```
pub fn decode_id(id: &str, max_id_bytes: usize) -> Result<String, Rejected> {
    parse_id(id, max_id_bytes)
        .map(|id| id.to_string())
        .map_err(rejected)
}

fn rejected(error: super::errors::ApiError) -> Rejected {
    Rejected {
        status: error.status.as_u16(),
        body: error.body_json(),
    }
}
