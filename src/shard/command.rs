//! Messages from the manager to a shard, and the waiting room of a busy entry.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::Error;
use crate::handler::Handler;
use crate::manager::{PutResult, ShardReport, Snapshot};
use crate::options::EntryOptions;

/// Whether a put replaces an existing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutMode {
    Upsert,
    IfAbsent,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One operation for a shard. Each carries the channel its result goes to.
pub(crate) enum Command<H: Handler> {
    Put {
        id: H::Id,
        payload: H::Payload,
        options: EntryOptions,
        mode: PutMode,
        /// `None` for the insert half of a `Move` from another shard.
        reply: Option<Reply<PutResult>>,
    },
    PutMany {
        items: Vec<(H::Id, H::Payload, EntryOptions)>,
        mode: PutMode,
        /// On the first slice of a bulk put, the entries of every slice
        /// for this shard; 0 on the others.
        coming: usize,
        reply: Reply<(usize, usize)>,
    },
    Get {
        id: H::Id,
        reply: Reply<Option<Snapshot<H::Payload>>>,
    },
    Contains {
        id: H::Id,
        reply: Reply<bool>,
    },
    Del {
        id: H::Id,
        reply: Reply<bool>,
    },
    DelMany {
        ids: Vec<H::Id>,
        reply: Reply<usize>,
    },
    Call {
        id: H::Id,
        request: H::Request,
        deadline: Instant,
        issued: Instant,
        reply: Reply<H::Reply>,
    },
    Cast {
        id: H::Id,
        message: H::Message,
        reply: Reply<()>,
    },
    /// Entries read back from the store at start.
    Restore {
        items: Vec<super::persist::Restored<H>>,
        reply: oneshot::Sender<super::persist::RestoreCounts>,
    },
    /// Writes the entries whose payload changed since their last write.
    Flush,
    Shutdown {
        grace: Duration,
        run_terminate: bool,
        reply: oneshot::Sender<ShardReport>,
    },
}

/// Work that waits for a busy entry's in-flight callback, in arrival order.
pub(crate) enum Waiter<H: Handler> {
    Perform {
        due: Instant,
    },
    Call {
        request: H::Request,
        deadline: Instant,
        issued: Instant,
        reply: Reply<H::Reply>,
    },
    Cast {
        message: H::Message,
    },
    Get {
        reply: Reply<Option<Snapshot<H::Payload>>>,
    },
}
