//! The id index of a shard: a hash table of slab slots.
//!
//! The table stores only the 4-byte slot; the id itself lives once, in the
//! slab entry, and lookups compare through the slab. An index of
//! `HashMap<Id, slot>` would store every id twice and cost about 30 bytes
//! more per key.

use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use hashbrown::DefaultHashBuilder;
use slab::Slab;

use crate::shard::entry::Entry;
use crate::Id;

/// Maps ids to slab slots for one shard.
pub(crate) struct IdIndex {
    table: HashTable<u32>,
    /// Seeded per process, so clients that choose ids cannot aim collisions.
    hasher: DefaultHashBuilder,
}

impl IdIndex {
    pub(crate) fn new(hasher: DefaultHashBuilder) -> Self {
        IdIndex {
            table: HashTable::new(),
            hasher,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn hash<I: Id>(&self, id: &I) -> u64 {
        self.hasher.hash_one(id)
    }

    pub(crate) fn find<I: Id, P>(&self, slab: &Slab<Entry<I, P>>, id: &I) -> Option<u32> {
        let hash = self.hash(id);
        self.table
            .find(hash, |&slot| slab[slot as usize].id == *id)
            .copied()
    }

    /// Points `id` at `slot`; returns the slot it pointed at before, if any.
    pub(crate) fn insert<I: Id, P>(
        &mut self,
        slab: &Slab<Entry<I, P>>,
        id: &I,
        slot: u32,
    ) -> Option<u32> {
        let hash = self.hash(id);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |&existing| slab[existing as usize].id == *id,
            |&existing| hasher.hash_one(&slab[existing as usize].id),
        );
        match entry {
            TableEntry::Occupied(mut occupied) => Some(std::mem::replace(occupied.get_mut(), slot)),
            TableEntry::Vacant(vacant) => {
                vacant.insert(slot);
                None
            }
        }
    }

    /// Removes `id`; returns its slot.
    pub(crate) fn remove<I: Id, P>(&mut self, slab: &Slab<Entry<I, P>>, id: &I) -> Option<u32> {
        let hash = self.hash(id);
        match self
            .table
            .find_entry(hash, |&slot| slab[slot as usize].id == *id)
        {
            Ok(occupied) => Some(occupied.remove().0),
            Err(_) => None,
        }
    }

    /// Makes room for `additional` more ids without growing during a bulk load.
    pub(crate) fn reserve<I: Id, P>(&mut self, slab: &Slab<Entry<I, P>>, additional: usize) {
        let hasher = &self.hasher;
        self.table
            .reserve(additional, |&slot| hasher.hash_one(&slab[slot as usize].id));
    }

    /// Returns every slot, in no particular order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().copied()
    }
}
