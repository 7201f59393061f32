//! Persistence: every entry written to a [`Store`], and read back when the
//! manager opens.
//!
//! # What is written, and when
//!
//! - `put`, `put_new`, `put_many`, `del` and `del_many` answer only after
//!   the commit that holds their write, so an acknowledged write survives a
//!   crash of the process.
//! - Outcomes that change an entry's fate or schedule (`Halt`, `Move`,
//!   `Reschedule`, and a removal by the panic policy) are written at once;
//!   a `call` that returns one of them answers after its commit.
//! - A callback gets the payload as `&mut`, so any callback may change it.
//!   Those changes are coalesced per entry and written every
//!   [`flush_interval`](Persistence::flush_interval) (1 s by default), and
//!   once more when the manager shuts down.
//!
//! # What a crash can lose
//!
//! A crash (kill -9, a panic that aborts, a machine that stops) loses
//! payload changes made by callbacks in the last flush interval, and
//! perform outcomes (`Halt`, `Move`, `Reschedule`) whose commit had not
//! finished, so such an entry comes back as it was before that perform.
//! It loses no acknowledged `put` or `del`. A reader may see a write
//! before it is acknowledged; if the process dies before the commit, that
//! write can be gone after the restart.
//!
//! # Closing the store
//!
//! [`Manager::shutdown`](crate::Manager::shutdown) writes the last payload
//! changes, commits everything and closes the store before it returns, so
//! the directory can be opened again at once. Dropping the last handle
//! without a shutdown also commits what was sent and closes the store, but
//! on the store's own thread after the drop returns: an open of the same
//! directory right after it can fail with
//! [`StoreError::Locked`](crate::store::StoreError::Locked).
//!
//! # Recovery
//!
//! [`ManagerBuilder::open`](crate::ManagerBuilder::open) reads every record
//! before it returns. An entry whose due time passed while the process was
//! down runs soon after, at a random delay of up to its interval or the
//! [`recovery_spread`](Persistence::recovery_spread) (5 s by default),
//! whichever is shorter, so a restart is not a thundering herd; its
//! lateness counts from the due time it missed. Other entries keep their
//! due time, capped at one interval from now. Initial entries are loaded
//! only into an empty store.

pub(crate) mod codec;
pub(crate) mod committer;
pub(crate) mod record;

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "store")]
pub use codec::JsonCodec;
pub use codec::{Codec, CodecError};

use crate::store::{Store, StoreError};

/// The default for [`Persistence::flush_interval`].
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The default for [`Persistence::recovery_spread`].
pub const DEFAULT_RECOVERY_SPREAD: Duration = Duration::from_secs(5);

/// Where a manager keeps its entries across restarts, and how.
///
/// Give it to [`ManagerBuilder::persistence`](crate::ManagerBuilder::persistence)
/// and start the manager with [`ManagerBuilder::open`](crate::ManagerBuilder::open).
/// The [module docs](crate::persist) say what is written when and what a
/// crash can lose.
///
/// # Example
///
/// ```
/// # use keywheel::{Handler, Outcome};
/// # struct Noop;
/// # impl Handler for Noop {
/// #     type Id = u64;
/// #     type Payload = String;
/// #     type Request = ();
/// #     type Reply = ();
/// #     type Message = ();
/// #     async fn perform(&self, _id: &u64, _payload: &mut String) -> Outcome<u64> {
/// #         Outcome::Continue
/// #     }
/// # }
/// use keywheel::store::FjallStore;
/// use keywheel::{EntryOptions, JsonCodec, Manager, Persistence};
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("keywheel-doc-{}", std::process::id()));
/// let every = EntryOptions::every(Duration::from_secs(60));
///
/// let manager = Manager::builder(Noop)
///     .persistence(Persistence::new(FjallStore::open(&dir)?, JsonCodec))
///     .open()
///     .await?;
/// manager.put(1, "order 1".to_string(), every).await?;
/// manager.shutdown(Duration::from_secs(1)).await;
///
/// // A new manager on the same directory finds the entry.
/// let manager = Manager::builder(Noop)
///     .persistence(Persistence::new(FjallStore::open(&dir)?, JsonCodec))
///     .open()
///     .await?;
/// assert_eq!(manager.get(&1).await?.unwrap().payload, "order 1");
/// manager.shutdown(Duration::from_secs(1)).await;
/// # drop(manager);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct Persistence<I, P> {
    pub(crate) store: Box<dyn Store>,
    pub(crate) codec: Arc<dyn Codec<I, P>>,
    pub(crate) flush_interval: Duration,
    pub(crate) recovery_spread: Duration,
    pub(crate) perform_changes: bool,
}

impl<I, P> Persistence<I, P> {
    /// Keeps entries in `store`, with ids and payloads encoded by `codec`.
    pub fn new(store: impl Store, codec: impl Codec<I, P>) -> Self {
        Persistence {
            store: Box::new(store),
            codec: Arc::new(codec),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            recovery_spread: DEFAULT_RECOVERY_SPREAD,
            perform_changes: true,
        }
    }

    /// Sets how often payload changes made by callbacks are written
    /// (default 1 s, between 10 ms and 1 hour). A crash loses at most the
    /// changes of one interval; a longer one writes less often when the
    /// same entries change again and again.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Sets the longest random delay given to entries that were overdue at
    /// recovery (default 5 s, at most 1 hour). An entry's delay is also at
    /// most its interval.
    pub fn recovery_spread(mut self, spread: Duration) -> Self {
        self.recovery_spread = spread;
        self
    }

    /// Sets whether payload changes made by `perform` are written (default
    /// on). Turn it off when `perform` keeps nothing in its payload worth a
    /// write: a million entries that perform every second would otherwise
    /// write a million records a second. Entries with an interval of 60 s
    /// or more, or none, still have their next due time written after
    /// each perform.
    /// Changes made by `call` and `cast` are always written.
    pub fn perform_changes(mut self, enabled: bool) -> Self {
        self.perform_changes = enabled;
        self
    }

    /// Returns a description of the store, for logs.
    pub fn describe(&self) -> String {
        self.store.describe()
    }
}

impl<I, P> std::fmt::Debug for Persistence<I, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("store", &self.store.describe())
            .field("flush_interval", &self.flush_interval)
            .field("recovery_spread", &self.recovery_spread)
            .field("perform_changes", &self.perform_changes)
            .finish()
    }
}

/// Counts of a recovery scan: records read and the highest version seen.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Scanned {
    pub(crate) records: u64,
    pub(crate) max_version: u64,
}

/// Reads every record, decodes it and hands the entries to `send`, in
/// slices per shard of at most `slice` entries.
pub(crate) fn scan<I: crate::Id, P: 'static>(
    store: &mut dyn Store,
    codec: &dyn Codec<I, P>,
    shards: usize,
    slice: usize,
    send: &mut dyn FnMut(usize, Vec<(I, P, record::Head)>) -> bool,
) -> Result<Scanned, StoreError> {
    let mut scanned = Scanned::default();
    let mut pending: Vec<Vec<(I, P, record::Head)>> = (0..shards).map(|_| Vec::new()).collect();
    let mut stopped = false;

    store.scan(&mut |key, value| {
        let corrupt = |detail: String| StoreError::Corrupt {
            key: record::key_hex(key),
            detail,
        };
        let id_bytes = record::id_bytes(key).map_err(corrupt)?;
        let id = codec
            .decode_id(id_bytes)
            .map_err(|error| corrupt(format!("the id does not decode: {error}")))?;
        let (head, payload) = record::decode(value).map_err(corrupt)?;
        let payload = codec
            .decode_payload(payload)
            .map_err(|error| corrupt(format!("the payload does not decode: {error}")))?;

        scanned.records += 1;
        scanned.max_version = scanned.max_version.max(head.version);
        let shard = (id.stable_hash() % shards as u64) as usize;
        pending[shard].push((id, payload, head));
        if pending[shard].len() >= slice && !stopped {
            let full = std::mem::take(&mut pending[shard]);
            stopped = !send(shard, full);
        }
        Ok(())
    })?;

    for (shard, rest) in pending.into_iter().enumerate() {
        if !rest.is_empty() && !stopped {
            stopped = !send(shard, rest);
        }
    }
    Ok(scanned)
}
