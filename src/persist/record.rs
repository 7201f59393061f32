//! The layout of stored keys and records.
//!
//! A key is the partition (2 bytes, big-endian) followed by the id's bytes
//! from the codec, so a scan returns one partition after another. The
//! partition is the id's stable hash modulo [`PARTITIONS`]; it does not
//! depend on the shard count, so a store opens under any shard setting.
//!
//! A record is a fixed 34-byte head followed by the payload's bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | format, [`FORMAT`] |
//! | 1..9 | version: grows with every write of any record (little-endian u64) |
//! | 9..17 | interval in ms, `u64::MAX` for [`Interval::Never`](crate::Interval::Never) |
//! | 17 | flags: bit 0 is fixed-rate cadence |
//! | 18..26 | next due time, ms since the Unix epoch; 0 for none |
//! | 26..34 | time of this write, ms since the Unix epoch |
//! | 34.. | payload |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::options::{Cadence, Interval};

/// The record format this release writes and reads.
pub(crate) const FORMAT: u8 = 1;

/// Partitions of the key space, for loading or handing over a slice of the
/// store later; fixed forever, since keys embed it.
pub(crate) const PARTITIONS: u64 = 1024;

const HEAD: usize = 34;
const NEVER: u64 = u64::MAX;
const FIXED_RATE: u8 = 1;

/// The fields of a record besides the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) version: u64,
    pub(crate) interval: Interval,
    pub(crate) cadence: Cadence,
    /// Milliseconds since the Unix epoch; `None` for an entry with no
    /// pending perform.
    pub(crate) next_due_ms: Option<u64>,
    pub(crate) written_ms: u64,
}

/// Appends the key of an id: its partition, then the codec's bytes.
pub(crate) fn key(stable_hash: u64, id_bytes: &[u8]) -> Vec<u8> {
    let partition = (stable_hash % PARTITIONS) as u16;
    let mut key = Vec::with_capacity(2 + id_bytes.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(id_bytes);
    key
}

/// Returns the id bytes of a key.
pub(crate) fn id_bytes(key: &[u8]) -> Result<&[u8], String> {
    key.get(2..).ok_or_else(|| {
        format!(
            "key is {} bytes, shorter than its 2-byte partition",
            key.len()
        )
    })
}

/// Encodes a record whose payload bytes are already in `payload`.
pub(crate) fn encode(head: &Head, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + payload.len());
    out.push(FORMAT);
    out.extend_from_slice(&head.version.to_le_bytes());
    let interval = match head.interval {
        Interval::Every(every) => u64::try_from(every.as_millis()).unwrap_or(NEVER - 1),
        Interval::Never => NEVER,
    };
    out.extend_from_slice(&interval.to_le_bytes());
    out.push(if head.cadence == Cadence::FixedRate {
        FIXED_RATE
    } else {
        0
    });
    out.extend_from_slice(&head.next_due_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&head.written_ms.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a record into its head and payload bytes.
pub(crate) fn decode(value: &[u8]) -> Result<(Head, &[u8]), String> {
    if value.len() < HEAD {
        return Err(format!(
            "record is {} bytes, shorter than the {HEAD}-byte head",
            value.len()
        ));
    }
    if value[0] != FORMAT {
        return Err(format!(
            "record format {} is not {FORMAT}, the only format this release reads",
            value[0]
        ));
    }
    let u64_at = |at: usize| u64::from_le_bytes(value[at..at + 8].try_into().expect("8 bytes"));
    let interval = match u64_at(9) {
        NEVER => Interval::Never,
        0 => return Err("record has a zero interval".to_string()),
        ms => Interval::Every(Duration::from_millis(ms)),
    };
    let cadence = if value[17] & FIXED_RATE != 0 {
        Cadence::FixedRate
    } else {
        Cadence::FixedDelay
    };
    let next_due_ms = match u64_at(18) {
        0 => None,
        ms => Some(ms),
    };
    let head = Head {
        version: u64_at(1),
        interval,
        cadence,
        next_due_ms,
        written_ms: u64_at(26),
    };
    Ok((head, &value[HEAD..]))
}

/// Milliseconds since the Unix epoch of a wall-clock time; 0 before it.
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Formats up to 32 bytes of a key as hex, for error messages.
pub(crate) fn key_hex(key: &[u8]) -> String {
    let mut hex: String = key
        .iter()
        .take(32)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    if key.len() > 32 {
        hex.push('…');
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let head = Head {
            version: 42,
            interval: Interval::Every(Duration::from_millis(1500)),
            cadence: Cadence::FixedRate,
            next_due_ms: Some(1_700_000_000_123),
            written_ms: 1_700_000_000_000,
        };
        let value = encode(&head, b"payload");

        let (back, payload) = decode(&value).unwrap();
        assert_eq!(back, head);
        assert_eq!(payload, b"payload");

        let never = Head {
            interval: Interval::Never,
            next_due_ms: None,
            cadence: Cadence::FixedDelay,
            ..head
        };
        assert_eq!(decode(&encode(&never, b"")).unwrap().0, never);
    }

    #[test]
    fn damaged_records_are_refused() {
        let head = Head {
            version: 1,
            interval: Interval::Never,
            cadence: Cadence::FixedDelay,
            next_due_ms: None,
            written_ms: 0,
        };
        let value = encode(&head, b"x");

        assert!(decode(&value[..10]).unwrap_err().contains("shorter"));
        let mut newer = value.clone();
        newer[0] = FORMAT + 1;
        assert!(decode(&newer).unwrap_err().contains("format"));
    }

    #[test]
    fn keys_start_with_the_partition() {
        let key = key(PARTITIONS + 5, b"abc");
        assert_eq!(key, [0, 5, b'a', b'b', b'c']);
        assert_eq!(id_bytes(&key).unwrap(), b"abc");
        assert!(id_bytes(&[1]).is_err());
    }
}
