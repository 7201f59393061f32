//! Persistence through the library API: what is written, what a reopened
//! manager finds, how overdue entries come back, and how bad records and
//! values are refused. Every test opens a real fjall store in a temporary
//! directory and runs on the real clock, since the store keeps wall-clock
//! due times.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keywheel::store::{FjallStore, Store, StoreError, StoreOp};
use keywheel::{
    Codec, CodecError, ConfigError, EntryOptions, Error, FirstRun, Handler, Interval, JsonCodec,
    Manager, OpenError, Outcome, Persistence, PutResult, State,
};

/// A payload: a note set by the caller and a count of performs.
type Payload = (String, u64);

enum Request {
    Halt,
    MoveTo(u64),
    Every(Duration),
    Note(String),
}

#[derive(Clone, Default)]
struct Counting {
    performs: Arc<AtomicU64>,
}

impl Handler for Counting {
    type Id = u64;
    type Payload = Payload;
    type Request = Request;
    type Reply = u64;
    type Message = ();

    async fn perform(&self, _id: &u64, payload: &mut Payload) -> Outcome<u64> {
        self.performs.fetch_add(1, Ordering::Relaxed);
        payload.1 += 1;
        Outcome::Continue
    }

    async fn call(
        &self,
        _id: &u64,
        payload: &mut Payload,
        request: Request,
    ) -> (u64, Outcome<u64>) {
        let count = payload.1;
        let outcome = match request {
            Request::Halt => Outcome::Halt,
            Request::MoveTo(to) => Outcome::Move(to),
            Request::Every(every) => Outcome::Reschedule(every),
            Request::Note(note) => {
                payload.0 = note;
                Outcome::Continue
            }
        };
        (count, outcome)
    }
}

fn persistence(dir: &std::path::Path) -> Persistence<u64, Payload> {
    Persistence::new(FjallStore::open(dir).expect("the store opens"), JsonCodec)
        .flush_interval(Duration::from_millis(50))
}

async fn open(dir: &std::path::Path, handler: Counting) -> Manager<Counting> {
    Manager::builder(handler)
        .persistence(persistence(dir))
        .open()
        .await
        .expect("the manager opens")
}

fn note(text: &str) -> Payload {
    (text.to_string(), 0)
}

fn hourly() -> EntryOptions {
    EntryOptions::every(Duration::from_secs(3600))
}

async fn stop(manager: Manager<Counting>) {
    manager.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_found_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;

    assert_eq!(
        manager.put(1, note("one"), hourly()).await.unwrap(),
        PutResult::Inserted
    );
    manager.put(2, note("two"), hourly()).await.unwrap();
    manager.put(2, note("two again"), hourly()).await.unwrap();
    manager.put(3, note("three"), hourly()).await.unwrap();
    assert!(manager.del(&3).await.unwrap());
    let bulk = (100..1100).map(|id| (id, note("bulk"), hourly()));
    manager.put_many(bulk).await.unwrap();
    assert_eq!(manager.del_many(100..200).await.unwrap(), 100);
    stop(manager).await;

    let manager = open(dir.path(), Counting::default()).await;
    assert_eq!(
        manager.state(),
        State::Ready,
        "open returns a ready manager"
    );
    assert_eq!(manager.len(), 2 + 900);
    assert_eq!(manager.get(&1).await.unwrap().unwrap().payload, note("one"));
    assert_eq!(
        manager.get(&2).await.unwrap().unwrap().payload,
        note("two again"),
        "the later put wins"
    );
    assert!(
        manager.get(&3).await.unwrap().is_none(),
        "a deleted id stays deleted"
    );
    assert!(manager.get(&150).await.unwrap().is_none());
    assert_eq!(
        manager.get(&700).await.unwrap().unwrap().payload,
        note("bulk")
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_outcomes_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    for id in 1..=4 {
        manager.put(id, note("x"), hourly()).await.unwrap();
    }

    manager.call(&1, Request::Halt).await.unwrap();
    manager.call(&2, Request::MoveTo(20)).await.unwrap();
    manager
        .call(&3, Request::Every(Duration::from_secs(90)))
        .await
        .unwrap();
    manager
        .call(&4, Request::Note("changed by a call".to_string()))
        .await
        .unwrap();
    // Payload changes are written on the next flush or at shutdown.
    stop(manager).await;

    let manager = open(dir.path(), Counting::default()).await;
    assert!(
        manager.get(&1).await.unwrap().is_none(),
        "Halt deleted the record"
    );
    assert!(
        manager.get(&2).await.unwrap().is_none(),
        "Move deleted the old id"
    );
    assert_eq!(manager.get(&20).await.unwrap().unwrap().payload, note("x"));
    let rescheduled = manager.get(&3).await.unwrap().unwrap();
    assert_eq!(
        rescheduled.interval,
        Interval::Every(Duration::from_secs(90))
    );
    let next = rescheduled
        .next_due
        .expect("a periodic entry has a due time");
    let ahead = next.saturating_duration_since(tokio::time::Instant::now());
    assert!(
        ahead > Duration::from_secs(80) && ahead <= Duration::from_secs(90),
        "the new interval's due time was kept: {ahead:?} ahead"
    );
    assert_eq!(
        manager.get(&4).await.unwrap().unwrap().payload.0,
        "changed by a call"
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perform_changes_are_flushed_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    let every = EntryOptions::every(Duration::from_millis(20));
    manager.put(1, note("ticking"), every).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Drop without shutdown: no final flush, so only the periodic flushes
    // (every 50 ms) can have written the count.
    let seen = manager.get(&1).await.unwrap().unwrap().payload.1;
    assert!(seen >= 5, "the entry performed: {seen}");
    drop(manager);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let manager = open(dir.path(), Counting::default()).await;
    let stored = manager.get(&1).await.unwrap().unwrap().payload.1;
    assert!(
        stored >= 5 && stored <= seen + 1,
        "the stored count {stored} lags the live count {seen} by at most a flush"
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perform_changes_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let manager = Manager::builder(Counting::default())
        .persistence(persistence(dir.path()).perform_changes(false))
        .open()
        .await
        .unwrap();
    let every = EntryOptions::every(Duration::from_millis(20));
    manager.put(1, note("ticking"), every).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop(manager).await;

    let manager = open(dir.path(), Counting::default()).await;
    assert_eq!(
        manager.get(&1).await.unwrap().unwrap().payload,
        note("ticking"),
        "performs changed nothing in the store"
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_entries_run_within_the_spread_and_show_their_lateness() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    let every = EntryOptions::every(Duration::from_millis(500));
    manager
        .put_many((0..50).map(|id| (id, note("due"), every)))
        .await
        .unwrap();
    stop(manager).await;

    // Down for 1.5 s: every entry misses at least two due times.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let handler = Counting::default();
    let manager = Manager::builder(handler.clone())
        .persistence(persistence(dir.path()).recovery_spread(Duration::from_millis(300)))
        .open()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;

    assert_eq!(
        handler.performs.load(Ordering::Relaxed),
        50,
        "every overdue entry ran once within the 300 ms spread, and none twice"
    );
    let lateness = manager.lateness();
    assert!(
        lateness.min() >= 1_000_000,
        "lateness counts from the missed due time: min {} µs",
        lateness.min()
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_intervals_keep_their_due_time() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    manager
        .put(
            1,
            note("long"),
            EntryOptions::every(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    stop(manager).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let manager = open(dir.path(), Counting::default()).await;
    let next = manager.get(&1).await.unwrap().unwrap().next_due.unwrap();
    let ahead = next.saturating_duration_since(tokio::time::Instant::now());
    assert!(
        ahead > Duration::from_secs(55) && ahead < Duration::from_secs(59),
        "due 60 s after the put, not at once and not 60 s after the restart: {ahead:?} ahead"
    );
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_entries_apply_only_to_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = |text: &str| {
        let text = text.to_string();
        Manager::builder(Counting::default())
            .persistence(persistence(dir.path()))
            .initial_entries((1..=3).map(move |id| (id, note(&text), hourly())))
    };

    let manager = seeded("first seed").open().await.unwrap();
    assert_eq!(manager.len(), 3);
    manager.del(&1).await.unwrap();
    manager.put(2, note("changed"), hourly()).await.unwrap();
    stop(manager).await;

    let manager = seeded("second seed").open().await.unwrap();
    assert_eq!(manager.len(), 2, "the deleted seed entry did not come back");
    assert!(manager.get(&1).await.unwrap().is_none());
    assert_eq!(
        manager.get(&2).await.unwrap().unwrap().payload,
        note("changed")
    );
    assert_eq!(
        manager.get(&3).await.unwrap().unwrap().payload,
        note("first seed"),
        "the store wins over the new seed"
    );
    stop(manager).await;
}

/// A codec that refuses payloads whose note is "refuse".
struct Picky;

impl Codec<u64, Payload> for Picky {
    fn encode_id(&self, id: &u64, out: &mut Vec<u8>) -> Result<(), CodecError> {
        Codec::<u64, Payload>::encode_id(&JsonCodec, id, out)
    }
    fn decode_id(&self, bytes: &[u8]) -> Result<u64, CodecError> {
        Codec::<u64, Payload>::decode_id(&JsonCodec, bytes)
    }
    fn encode_payload(&self, payload: &Payload, out: &mut Vec<u8>) -> Result<(), CodecError> {
        if payload.0 == "refuse" {
            return Err(CodecError::new("this payload cannot be stored"));
        }
        Codec::<u64, Payload>::encode_payload(&JsonCodec, payload, out)
    }
    fn decode_payload(&self, bytes: &[u8]) -> Result<Payload, CodecError> {
        Codec::<u64, Payload>::decode_payload(&JsonCodec, bytes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_the_codec_refuses_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let manager = Manager::builder(Counting::default())
        .persistence(Persistence::new(store, Picky))
        .open()
        .await
        .unwrap();
    manager.put(1, note("kept"), hourly()).await.unwrap();

    let error = manager
        .put(1, note("refuse"), hourly())
        .await
        .unwrap_err()
        .error;
    assert!(matches!(error, Error::Codec { .. }), "got {error:?}");
    assert!(error.to_string().contains("nothing changed"), "{error}");
    assert_eq!(
        manager.get(&1).await.unwrap().unwrap().payload,
        note("kept")
    );

    let bulk = vec![(2, note("fine"), hourly()), (3, note("refuse"), hourly())];
    assert!(manager.put_many(bulk).await.is_err());
    assert!(
        manager.get(&2).await.unwrap().is_none(),
        "a refused bulk put inserts none of its entries"
    );
    assert_eq!(manager.len(), 1);
    stop(manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_does_not_decode_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    manager.put(1, note("good"), hourly()).await.unwrap();
    stop(manager).await;

    // A record with a key of the right shape and a value that is not one.
    let mut store = FjallStore::open(dir.path()).unwrap();
    store
        .commit(&[StoreOp::Put {
            key: vec![0, 9, b'4', b'2'],
            value: b"not a record".to_vec(),
        }])
        .unwrap();
    drop(store);

    let result = Manager::builder(Counting::default())
        .persistence(persistence(dir.path()))
        .open()
        .await;
    match result {
        Err(OpenError::Store(StoreError::Corrupt { key, detail })) => {
            assert_eq!(key, "00093432", "the error names the record");
            assert!(detail.contains("record"), "{detail}");
        }
        Err(other) => panic!("expected a corrupt record error, got {other}"),
        Ok(_) => panic!("a store with an undecodable record opened"),
    }

    // Nothing was deleted, and the store is free again.
    let mut store = FjallStore::open(dir.path()).unwrap();
    let mut records = 0;
    store
        .scan(&mut |_, _| {
            records += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(records, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_directory_serves_one_manager() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;

    match FjallStore::open(dir.path()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second store opened the directory of a running manager"),
    }
    stop(manager).await;
    FjallStore::open(dir.path()).expect("free again after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_refuses_a_manager_with_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let result = Manager::builder(Counting::default())
        .persistence(persistence(dir.path()))
        .build();
    assert!(matches!(result, Err(ConfigError::NeedsOpen)));

    let result = Manager::builder(Counting::default())
        .persistence(persistence(dir.path()).flush_interval(Duration::ZERO))
        .open()
        .await;
    match result {
        Err(OpenError::Config(ConfigError::OutOfRange { setting, .. })) => {
            assert_eq!(setting, "flush_interval")
        }
        Err(other) => panic!("expected OutOfRange, got {other}"),
        Ok(_) => panic!("a zero flush interval was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_first_runs_come_back_due() {
    let dir = tempfile::tempdir().unwrap();
    let manager = open(dir.path(), Counting::default()).await;
    let once = EntryOptions::never().first_run(FirstRun::After(Duration::from_secs(3600)));
    manager
        .put(1, note("calls only"), EntryOptions::never())
        .await
        .unwrap();
    manager.put(2, note("once, later"), once).await.unwrap();
    stop(manager).await;

    let manager = open(dir.path(), Counting::default()).await;
    let calls_only = manager.get(&1).await.unwrap().unwrap();
    assert_eq!(calls_only.interval, Interval::Never);
    assert!(
        calls_only.next_due.is_none(),
        "an entry without a schedule gets none"
    );
    let later = manager.get(&2).await.unwrap().unwrap();
    assert!(
        later.next_due.is_some(),
        "a one-off first run keeps its due time"
    );
    stop(manager).await;
}
