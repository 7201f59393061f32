//! How `keywheel serve` stores its watches: the codec of ids and payloads.
//!
//! An id is stored as its UTF-8 text. A watch is stored as a small binary
//! head and the client's JSON payload text:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format, 1 |
//! | 1..9 | registration time, ms since the Unix epoch (little-endian u64) |
//! | 9..13 | alerts raised so far (u32) |
//! | 13..17 | `max_alerts`, 0 for none (u32) |
//! | 17.. | the payload's JSON text, as the client sent it |

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::value::RawValue;

use super::watchdog::Watch;
use crate::{Codec, CodecError};

const FORMAT: u8 = 1;
const HEAD: usize = 17;

/// The [`Codec`] of `keywheel serve`: ids as UTF-8, watches as a binary
/// head and the payload's JSON text.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use keywheel::Codec;
/// use keywheel::server::{Watch, WatchCodec};
/// use serde_json::value::RawValue;
///
/// let payload: Arc<RawValue> = RawValue::from_string(r#"{"order":7}"#.to_string()).unwrap().into();
/// let watch = Watch::new(payload, None);
///
/// let mut bytes = Vec::new();
/// WatchCodec.encode_payload(&watch, &mut bytes).unwrap();
/// let back = WatchCodec.decode_payload(&bytes).unwrap();
/// assert_eq!(back.payload().get(), r#"{"order":7}"#);
/// assert_eq!(back.alerts(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchCodec;

impl Codec<Arc<str>, Watch> for WatchCodec {
    fn encode_id(&self, id: &Arc<str>, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(id.as_bytes());
        Ok(())
    }

    fn decode_id(&self, bytes: &[u8]) -> Result<Arc<str>, CodecError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|error| CodecError::new(format!("the id is not UTF-8: {error}")))?;
        Ok(Arc::from(text))
    }

    fn encode_payload(&self, watch: &Watch, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let registered_ms = watch
            .registered_at()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        out.push(FORMAT);
        out.extend_from_slice(&registered_ms.to_le_bytes());
        out.extend_from_slice(&watch.alerts().to_le_bytes());
        let max_alerts = watch.max_alerts().map_or(0, NonZeroU32::get);
        out.extend_from_slice(&max_alerts.to_le_bytes());
        out.extend_from_slice(watch.payload().get().as_bytes());
        Ok(())
    }

    fn decode_payload(&self, bytes: &[u8]) -> Result<Watch, CodecError> {
        if bytes.len() < HEAD {
            return Err(CodecError::new(format!(
                "a stored watch is at least {HEAD} bytes, got {}",
                bytes.len()
            )));
        }
        if bytes[0] != FORMAT {
            return Err(CodecError::new(format!(
                "stored watch format {} is not {FORMAT}, the only one this release reads",
                bytes[0]
            )));
        }
        let registered_ms = u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let alerts = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
        let max_alerts = NonZeroU32::new(u32::from_le_bytes(
            bytes[13..17].try_into().expect("4 bytes"),
        ));
        let text = std::str::from_utf8(&bytes[HEAD..])
            .map_err(|error| CodecError::new(format!("the payload is not UTF-8: {error}")))?;
        let payload: Arc<RawValue> = RawValue::from_string(text.to_string())
            .map_err(|error| CodecError::new(format!("the payload is not JSON: {error}")))?
            .into();
        let registered_at = UNIX_EPOCH + Duration::from_millis(registered_ms);
        Ok(Watch::restored(payload, registered_at, alerts, max_alerts))
    }
}

/// Checks that the registration time survives a round trip.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_round_trip() {
        let payload: Arc<RawValue> = RawValue::from_string("[1,2]".to_string()).unwrap().into();
        let watch = Watch::new(payload, NonZeroU32::new(4));
        let mut bytes = Vec::new();
        WatchCodec.encode_payload(&watch, &mut bytes).unwrap();

        let back = WatchCodec.decode_payload(&bytes).unwrap();
        assert_eq!(back.payload().get(), "[1,2]");
        assert_eq!(back.max_alerts(), NonZeroU32::new(4));
        let drift = watch
            .registered_at()
            .duration_since(back.registered_at())
            .unwrap_or_default();
        assert!(
            drift < Duration::from_millis(1),
            "kept to the ms: {drift:?}"
        );
        assert!(back.pending_for() < Duration::from_secs(5));

        assert!(WatchCodec.decode_payload(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[HEAD] = b'{';
        bad.truncate(HEAD + 1);
        assert!(
            WatchCodec.decode_payload(&bad).is_err(),
            "bad JSON is refused"
        );
    }
}
