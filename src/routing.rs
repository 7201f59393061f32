//! Routed calls: a consistent-hash ring over a manager's current ids.
//!
//! `call_routed(key, request)` sends a request to the entry that owns `key`
//! on the ring, like Tarearbol's hash-ring pickup: the same key reaches the
//! same entry while the ids stay the same, and adding or removing one id
//! moves only the keys next to its points (about 1/n of them).
//!
//! The ring is off unless [`ManagerBuilder::routing`](crate::ManagerBuilder::routing)
//! turns it on; when it is off, shards skip its upkeep with one branch.
//! Each id puts [`POINTS_PER_ID`] points on the ring, each with its own
//! clone of the id: about 1.8 KiB per `u64` id and 4 KiB per short
//! `String` id, so routing suits pools of up to some thousands of ids, not
//! millions.

use std::collections::BTreeMap;
use std::sync::RwLock;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::Id;

/// Points each id puts on the routing ring of
/// [`Manager::call_routed`](crate::Manager::call_routed).
///
/// More points spread keys more evenly and cost more memory. With 64
/// points, the busiest of 10 ids got 1.1 to 1.3 times its fair share of
/// 200,000 keys, over five sets of 10 consecutive `u64` ids.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Id = u64;
/// #     type Payload = ();
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Message = ();
/// #     async fn perform(&self, _id: &u64, _payload: &mut ()) -> Outcome<u64> {
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::{EntryOptions, Manager, POINTS_PER_ID};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// assert_eq!(POINTS_PER_ID, 64);
///
/// let manager = Manager::builder(Noop).routing(true).build()?;
/// manager.put_many((0..10).map(|id| (id, (), EntryOptions::never()))).await?;
///
/// let mut keys_per_id = [0u32; 10];
/// for key in 0..10_000u64 {
///     let owner = manager.route(&key).expect("the ring has ids");
///     keys_per_id[owner as usize] += 1;
/// }
/// assert!(keys_per_id.iter().all(|&keys| keys > 700 && keys < 1_400));
/// # Ok(())
/// # }
/// ```
pub const POINTS_PER_ID: u64 = 64;

/// The ring: point → id. Shards add and remove ids; callers look up keys.
pub(crate) struct Ring<I> {
    points: RwLock<BTreeMap<u64, I>>,
}

impl<I: Id> Ring<I> {
    pub(crate) fn new() -> Self {
        Ring {
            points: RwLock::new(BTreeMap::new()),
        }
    }

    /// Adds an id's points (a no-op for an id already on the ring).
    pub(crate) fn add(&self, id: &I) {
        let base = id.stable_hash().to_le_bytes();
        let mut points = self
            .points
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for replica in 0..POINTS_PER_ID {
            points.insert(xxh3_64_with_seed(&base, replica), id.clone());
        }
    }

    /// Removes an id's points. A point another id also hashed to is kept
    /// if that id owns it.
    pub(crate) fn remove(&self, id: &I) {
        let base = id.stable_hash().to_le_bytes();
        let mut points = self
            .points
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for replica in 0..POINTS_PER_ID {
            let point = xxh3_64_with_seed(&base, replica);
            if points.get(&point) == Some(id) {
                points.remove(&point);
            }
        }
    }

    /// Returns the id that owns `key`: the first point at or after the
    /// key's hash, wrapping around.
    pub(crate) fn owner<K: Id>(&self, key: &K) -> Option<I> {
        let hash = key.stable_hash();
        let points = self
            .points
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        points
            .range(hash..)
            .next()
            .or_else(|| points.iter().next())
            .map(|(_, id)| id.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_owner() {
        let ring = Ring::new();
        for id in 0u64..10 {
            ring.add(&id);
        }
        let first: Vec<_> = (0u64..1000).map(|key| ring.owner(&key)).collect();
        let again: Vec<_> = (0u64..1000).map(|key| ring.owner(&key)).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn adding_an_id_moves_few_keys() {
        let ring = Ring::new();
        for id in 0u64..10 {
            ring.add(&id);
        }
        let before: Vec<_> = (0u64..10_000)
            .map(|key| ring.owner(&key).unwrap())
            .collect();
        ring.add(&10);
        let after: Vec<_> = (0u64..10_000)
            .map(|key| ring.owner(&key).unwrap())
            .collect();

        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(
            after.iter().zip(&before).all(|(a, b)| a == b || *a == 10),
            "keys only move to the new id"
        );
        assert!(
            (400..1600).contains(&moved),
            "about 1/11 of 10,000 keys move, got {moved}"
        );

        ring.remove(&10);
        let back: Vec<_> = (0u64..10_000)
            .map(|key| ring.owner(&key).unwrap())
            .collect();
        assert_eq!(back, before, "removing the id restores every owner");
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let ring: Ring<u64> = Ring::new();
        assert_eq!(ring.owner(&1u64), None);
    }
}
