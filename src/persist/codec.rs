//! Turning ids and payloads into bytes for the store, and back.

use std::fmt;

/// Encodes ids and payloads for a [`Store`](crate::store::Store), and
/// decodes them when the manager recovers.
///
/// Id bytes become part of the record key, so equal ids must encode to
/// equal bytes, and the encoding of an id must never change between
/// releases of a program: a stored id that encodes differently after an
/// upgrade is a different key. Payload bytes may change format as long as
/// `decode_payload` still reads the old one.
///
/// With the `store` feature, [`JsonCodec`] encodes both with `serde_json`.
///
/// # Example
///
/// ```
/// use keywheel::{Codec, CodecError};
///
/// /// Ids are `u64`s stored big-endian; payloads are UTF-8 strings.
/// struct Plain;
///
/// impl Codec<u64, String> for Plain {
///     fn encode_id(&self, id: &u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
///         out.extend_from_slice(&id.to_be_bytes());
///         Ok(())
///     }
///     fn decode_id(&self, bytes: &[u8]) -> Result<u64, CodecError> {
///         let bytes: [u8; 8] = bytes
///             .try_into()
///             .map_err(|_| CodecError::new(format!("a u64 id takes 8 bytes, got {}", bytes.len())))?;
///         Ok(u64::from_be_bytes(bytes))
///     }
///     fn encode_payload(&self, payload: &String, out: &mut Vec<u8>) -> Result<(), CodecError> {
///         out.extend_from_slice(payload.as_bytes());
///         Ok(())
///     }
///     fn decode_payload(&self, bytes: &[u8]) -> Result<String, CodecError> {
///         String::from_utf8(bytes.to_vec()).map_err(CodecError::new)
///     }
/// }
///
/// let mut bytes = Vec::new();
/// Plain.encode_id(&7, &mut bytes).unwrap();
/// assert_eq!(Plain.decode_id(&bytes).unwrap(), 7);
/// ```
pub trait Codec<I, P>: Send + Sync + 'static {
    /// Appends the bytes of `id` to `out`.
    fn encode_id(&self, id: &I, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Reads an id written by [`encode_id`](Codec::encode_id).
    fn decode_id(&self, bytes: &[u8]) -> Result<I, CodecError>;

    /// Appends the bytes of `payload` to `out`.
    fn encode_payload(&self, payload: &P, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// Reads a payload written by [`encode_payload`](Codec::encode_payload).
    fn decode_payload(&self, bytes: &[u8]) -> Result<P, CodecError>;
}

/// A [`Codec`] failure: a value that cannot be encoded, or stored bytes
/// that do not decode.
///
/// # Example
///
/// ```
/// use keywheel::CodecError;
///
/// let error = CodecError::new("payload field `due` is not a number");
/// assert_eq!(error.to_string(), "payload field `due` is not a number");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    detail: String,
}

impl CodecError {
    /// Wraps the codec's own error or message.
    pub fn new(detail: impl fmt::Display) -> Self {
        CodecError {
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CodecError {}

/// A [`Codec`] that writes ids and payloads as JSON with `serde_json`.
///
/// Any id and payload types that implement `serde`'s `Serialize` and
/// `DeserializeOwned` work. JSON is self-describing, so fields can be added
/// to a payload type later (with `#[serde(default)]`) and old records still
/// decode.
///
/// # Example
///
/// ```
/// use keywheel::{Codec, JsonCodec};
///
/// let mut bytes = Vec::new();
/// Codec::<u64, Vec<u32>>::encode_payload(&JsonCodec, &vec![1, 2], &mut bytes).unwrap();
/// assert_eq!(bytes, b"[1,2]");
/// let back: Vec<u32> = Codec::<u64, Vec<u32>>::decode_payload(&JsonCodec, &bytes).unwrap();
/// assert_eq!(back, [1, 2]);
/// ```
#[cfg(feature = "store")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "store")]
impl<I, P> Codec<I, P> for JsonCodec
where
    I: serde::Serialize + serde::de::DeserializeOwned,
    P: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode_id(&self, id: &I, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, id).map_err(CodecError::new)
    }

    fn decode_id(&self, bytes: &[u8]) -> Result<I, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::new)
    }

    fn encode_payload(&self, payload: &P, out: &mut Vec<u8>) -> Result<(), CodecError> {
        serde_json::to_writer(out, payload).map_err(CodecError::new)
    }

    fn decode_payload(&self, bytes: &[u8]) -> Result<P, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::new)
    }
}
