//! Durable storage of entries: the [`Store`] trait and its fjall backend.
//!
//! keywheel writes each entry as one record of an ordered key-value store.
//! A single thread owns the store: it loads every record with
//! [`Store::scan`] at start-up and then writes changes in batches with
//! [`Store::commit`], each of which is on disk when it returns. The record
//! encoding belongs to the engine, so a store handles only bytes.
//!
//! [`FjallStore`] keeps the records in a [fjall](https://docs.rs/fjall/3)
//! database in one directory. It needs the cargo feature `store`, which the
//! default feature `server` turns on.
//!
//! # Example
//!
//! ```
//! use keywheel::store::{FjallStore, Store, StoreOp};
//!
//! # fn main() -> Result<(), keywheel::store::StoreError> {
//! let dir = std::env::temp_dir().join(format!("keywheel-store-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut store = FjallStore::open(&dir)?;
//! store.commit(&[
//!     StoreOp::Put { key: b"a".to_vec(), value: b"1".to_vec() },
//!     StoreOp::Put { key: b"b".to_vec(), value: b"2".to_vec() },
//!     StoreOp::Delete { key: b"a".to_vec() },
//! ])?;
//! drop(store);
//!
//! let mut store = FjallStore::open(&dir)?;
//! let mut records = Vec::new();
//! store.scan(&mut |key, value| {
//!     records.push((key.to_vec(), value.to_vec()));
//!     Ok(())
//! })?;
//! assert_eq!(records, vec![(b"b".to_vec(), b"2".to_vec())]);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "store")]
mod fjall;
#[cfg(feature = "store")]
mod marker;

use std::fmt::Write as _;
use std::path::PathBuf;

#[cfg(feature = "store")]
pub use self::fjall::FjallStore;

/// One change in a commit.
///
/// # Example
///
/// ```
/// use keywheel::store::StoreOp;
///
/// let batch = [
///     StoreOp::Put { key: b"id-1".to_vec(), value: b"payload".to_vec() },
///     StoreOp::Delete { key: b"id-2".to_vec() },
/// ];
/// assert_eq!(batch[1].key(), b"id-2");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Inserts the record `key`, or replaces its value.
    Put {
        /// Key of the record.
        key: Vec<u8>,
        /// New value of the record.
        value: Vec<u8>,
    },
    /// Removes the record `key`. Removing a missing record is no error.
    Delete {
        /// Key of the record.
        key: Vec<u8>,
    },
}

impl StoreOp {
    /// Returns the key that this op changes.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::store::StoreOp;
    ///
    /// let op = StoreOp::Put { key: b"k".to_vec(), value: Vec::new() };
    /// assert_eq!(op.key(), b"k");
    /// ```
    pub fn key(&self) -> &[u8] {
        match self {
            StoreOp::Put { key, .. } | StoreOp::Delete { key } => key,
        }
    }
}

/// A durable, ordered key-value store that keywheel writes its entries to.
/// Called from one dedicated thread at a time (blocking calls are fine).
///
/// # Example
///
/// A function that loads any store into memory:
///
/// ```
/// use keywheel::store::{Store, StoreError};
/// use std::collections::BTreeMap;
///
/// fn load(store: &mut dyn Store) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
///     let mut records = BTreeMap::new();
///     store.scan(&mut |key, value| {
///         records.insert(key.to_vec(), value.to_vec());
///         Ok(())
///     })?;
///     Ok(records)
/// }
/// ```
pub trait Store: Send + 'static {
    /// Calls `visit(key, value)` for every record in ascending key order. Stops and returns the first error `visit` returns.
    #[allow(
        clippy::type_complexity,
        reason = "implementations and callers spell out this closure type"
    )]
    fn scan(
        &mut self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Applies every op of `batch` atomically, in order (a later op on the same key wins), and returns only once the batch is durable on disk (a real data sync, not just OS buffers).
    fn commit(&mut self, batch: &[StoreOp]) -> Result<(), StoreError>;

    /// Number of records, for start-up logs (may be approximate; each implementation documents which).
    fn approximate_len(&self) -> u64;

    /// A short description for logs and errors, such as `fjall store at ./keywheel-data`.
    fn describe(&self) -> String;
}

/// An error of a [`Store`]. Each message names the path or key involved
/// and the next step to take.
///
/// # Example
///
/// ```
/// use keywheel::store::StoreError;
///
/// let error = StoreError::corrupt(b"\x00\x01id-7", "unknown record format 9");
/// assert!(error.to_string().contains("00016964"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another store, in this process or another one, holds the data directory.
    #[error(
        "the data directory {} is locked by another keywheel store, in this or another process; \
         stop the other process, or pass another --data-dir",
        path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// The data directory is damaged or truncated, or is not a keywheel store.
    #[error(
        "the data directory {} is damaged or is not a keywheel store: {detail}. \
         keywheel wrote no records to it and deleted nothing in it; restore it from a backup, \
         or move it aside to start with an empty store",
        path.display()
    )]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// Description of the damage, found by keywheel or reported by the backend.
        detail: String,
    },

    /// An I/O or backend failure.
    #[error(
        "failed to {operation} in {}: {source}; check that the disk is mounted, writable and not full",
        path.display()
    )]
    Io {
        /// The data directory, or the file within it.
        path: PathBuf,
        /// The failed operation, such as `commit a batch`.
        operation: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A record that keywheel cannot decode. Build it with [`StoreError::corrupt`].
    #[error(
        "the store holds a record that keywheel cannot decode (key {key}): {detail}; \
         run the keywheel version that wrote it, or restore the data directory from a backup"
    )]
    Corrupt {
        /// The record's key in hex, shortened to its first 32 bytes.
        key: String,
        /// The reason decoding failed.
        detail: String,
    },

    /// A record that the backend cannot hold, such as a key over its size
    /// limit. The store wrote nothing of the batch that contains it.
    #[error("the store rejected the record with key {key}: {detail}")]
    Rejected {
        /// The record's key in hex, shortened to its first 32 bytes.
        key: String,
        /// The exceeded limit and the change to make.
        detail: String,
    },
}

impl StoreError {
    /// Builds a [`StoreError::Corrupt`] for the record `key`, with the key
    /// in hex and shortened for the message.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::store::StoreError;
    ///
    /// let error = StoreError::corrupt(&[0xab; 40], "value ends after 3 of 17 bytes");
    /// let StoreError::Corrupt { key, .. } = &error else { unreachable!() };
    /// assert!(key.starts_with("abab"));
    /// assert!(key.ends_with("(40 bytes)"));
    /// ```
    pub fn corrupt(key: &[u8], detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            key: key_to_hex(key),
            detail: detail.into(),
        }
    }
}

/// Number of key bytes shown in messages. Longer keys are cut.
const SHOWN_KEY_BYTES: usize = 32;

/// Formats `key` as lowercase hex, cut after [`SHOWN_KEY_BYTES`] bytes with
/// its full length appended.
pub(crate) fn key_to_hex(key: &[u8]) -> String {
    let shown = &key[..key.len().min(SHOWN_KEY_BYTES)];
    let mut hex = String::with_capacity(shown.len() * 2 + 16);
    for byte in shown {
        let _ = write!(hex, "{byte:02x}");
    }
    if key.len() > SHOWN_KEY_BYTES {
        let _ = write!(hex, "... ({} bytes)", key.len());
    }
    if key.is_empty() {
        hex.push_str("(empty)");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_to_hex_short_key() {
        assert_eq!(key_to_hex(b"\x00\x01az"), "0001617a");
    }

    #[test]
    fn key_to_hex_cuts_long_key() {
        let hex = key_to_hex(&[0x11; 33]);
        assert_eq!(hex, format!("{}... (33 bytes)", "11".repeat(32)));
    }

    #[test]
    fn key_to_hex_empty_key() {
        assert_eq!(key_to_hex(b""), "(empty)");
    }

    #[test]
    fn store_trait_is_object_safe() {
        fn takes_dyn(_: Option<Box<dyn Store>>) {}
        takes_dyn(None);
    }
}
