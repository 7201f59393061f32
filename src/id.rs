//! Entry ids and the stable hash that maps an id to its shard.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

/// A type that can name an entry.
///
/// The shard of an id is `stable_hash(id) % shards`. The hash must give the
/// same value for the same id in every process and every Rust release,
/// because persisted shard layouts and other nodes rely on it. That is why
/// this trait exists instead of `std::hash::Hash`: std's hashers and the
/// `Hash` impls of std types promise no stable output.
///
/// The built-in impls return xxh3-64 of the id's bytes: the little-endian
/// bytes for integers, the UTF-8 bytes for `String`, `&'static str`,
/// `Arc<str>` and `Box<str>` (so all four agree), and the bytes of a
/// `Vec<u8>`.
///
/// The in-memory id index uses `Hash` with a randomly seeded hasher, so a
/// client that picks ids cannot force collisions there.
///
/// Ids are cloned once for every callback (the worker pool needs an owned
/// id), so prefer ids that are cheap to clone: integers, `Arc<str>`, or
/// short strings.
///
/// # Example
///
/// A newtype id hashes like the value it wraps:
///
/// ```
/// use keywheel::Id;
///
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// struct OrderId(u64);
///
/// impl Id for OrderId {
///     fn stable_hash(&self) -> u64 {
///         self.0.stable_hash()
///     }
/// }
///
/// assert_eq!(OrderId(42).stable_hash(), 42u64.stable_hash());
/// assert_eq!("a".stable_hash(), String::from("a").stable_hash());
/// assert_ne!("a".stable_hash(), "b".stable_hash());
/// ```
pub trait Id: Hash + Eq + Clone + Debug + Send + Sync + 'static {
    /// Returns a hash of the id that never changes between processes,
    /// platforms or releases.
    ///
    /// Equal ids must return equal hashes; otherwise they land on different
    /// shards and become two entries.
    fn stable_hash(&self) -> u64;
}

macro_rules! impl_id_for_integer {
    ($($t:ty),*) => {$(
        impl Id for $t {
            fn stable_hash(&self) -> u64 {
                xxh3_64(&self.to_le_bytes())
            }
        }
    )*};
}

impl_id_for_integer!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize);

impl Id for String {
    fn stable_hash(&self) -> u64 {
        xxh3_64(self.as_bytes())
    }
}

impl Id for &'static str {
    fn stable_hash(&self) -> u64 {
        xxh3_64(self.as_bytes())
    }
}

impl Id for Arc<str> {
    fn stable_hash(&self) -> u64 {
        xxh3_64(self.as_bytes())
    }
}

impl Id for Box<str> {
    fn stable_hash(&self) -> u64 {
        xxh3_64(self.as_bytes())
    }
}

impl Id for Vec<u8> {
    fn stable_hash(&self) -> u64 {
        xxh3_64(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_hash_alike() {
        let owned = String::from("order-17");
        let shared: Arc<str> = Arc::from("order-17");

        assert_eq!(owned.stable_hash(), shared.stable_hash());
        assert_eq!(owned.stable_hash(), "order-17".stable_hash());
    }

    #[test]
    fn integer_hash_is_pinned() {
        // The value is xxh3-64 of the little-endian bytes; if this changes,
        // every persisted shard layout changes with it.
        assert_eq!(0u64.stable_hash(), xxh3_64(&[0u8; 8]));
    }
}
