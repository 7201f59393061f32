//! The payload as callbacks change it: changes through `&mut` are the
//! entry's state at once, `get` returns that live payload, a reply never
//! overwrites it, and replacing an entry by `put` keeps one perform chain.
//! Paused clock.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{
    EntryOptions, Handler, Interval, Manager, Outcome, OutcomeKind, PutResult, TerminateReason,
};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// A perform that writes the payload and reschedules: the next gap is the
/// new interval, the next perform gets the written payload, and `get`
/// returns it.
#[tokio::test(start_paused = true)]
async fn reschedule_keeps_written_payload() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| match payload.as_str() {
        "start" => {
            *payload = "r1".to_string();
            Step::then(Outcome::Reschedule(Duration::from_millis(100)))
        }
        "r1" => {
            *payload = "r2".to_string();
            Step::then(Outcome::Reschedule(Duration::from_millis(1_000)))
        }
        _ => Step::done(),
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "start".into(), every_ms(50)).await.unwrap();

    log.sleep_until_ms(200).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.payload, "r2", "payload after two performs");
    assert_eq!(
        snapshot.interval,
        Interval::Every(Duration::from_millis(1_000)),
        "interval after the second reschedule"
    );
    assert_eq!(
        snapshot.next_due,
        Some(log.at_ms(1_150)),
        "next due one new interval after the perform at 150 ms"
    );
    assert_eq!(snapshot.performs, 2, "performs counted");
    assert_eq!(
        snapshot.last_outcome,
        Some(OutcomeKind::Reschedule),
        "last outcome"
    );

    log.sleep_until_ms(1_200).await;
    let performs = log.performs(1);
    let expected: Vec<(u64, String)> = [(50, "start"), (150, "r1"), (1_150, "r2")]
        .into_iter()
        .map(|(at, payload)| (at, payload.to_string()))
        .collect();
    assert_eq!(
        performs, expected,
        "performs (ms, payload received): gaps of 100 ms, then 1000 ms"
    );
}

/// A payload written by a perform or by a cast is what the next perform
/// receives and what `get` returns.
#[tokio::test(start_paused = true)]
async fn payload_from_perform_and_cast_carries_over() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, payload| {
        payload.push('.');
        Step::done()
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "a".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let after_perform = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(after_perform.payload, "a.", "payload the perform left");
    manager.cast(&1, "x".into()).await.unwrap();
    let after_cast = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(after_cast.payload, "a.+x", "payload the cast left");

    log.sleep_until_ms(250).await;
    let performs = log.performs(1);
    assert_eq!(
        performs,
        vec![(100, "a".to_string()), (200, "a.+x".to_string())],
        "performs (ms, payload received)"
    );
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.payload, "a.+x.",
        "payload after the second perform"
    );
}

/// A balance that performs add 1 to. A call's reply is separate from the
/// payload: `Quote` replies without touching the balance, `Deposit` changes
/// it and replies the new balance.
struct Ledger;

enum Ask {
    Quote,
    Deposit(u64),
}

const QUOTE: u64 = 999;

impl Handler for Ledger {
    type Id = u64;
    type Payload = u64;
    type Request = Ask;
    type Reply = u64;
    type Message = ();

    async fn perform(&self, _id: &u64, balance: &mut u64) -> Outcome<u64> {
        *balance += 1;
        Outcome::Continue
    }

    async fn call(&self, _id: &u64, balance: &mut u64, ask: Ask) -> (u64, Outcome<u64>) {
        match ask {
            Ask::Quote => (QUOTE, Outcome::Continue),
            Ask::Deposit(amount) => {
                *balance += amount;
                (*balance, Outcome::Continue)
            }
        }
    }
}

/// `get` returns the live payload, not the last reply, and a reply never
/// becomes the payload.
#[tokio::test(start_paused = true)]
async fn get_returns_live_payload_not_reply() {
    let manager = Manager::builder(Ledger).build().unwrap();
    manager.put(1, 10, every_ms(100)).await.unwrap();
    let start = tokio::time::Instant::now();

    tokio::time::sleep_until(start + Duration::from_millis(150)).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.payload, 11, "balance after one perform");

    let quote = manager.call(&1, Ask::Quote).await;
    assert_eq!(quote, Ok(QUOTE), "reply of Quote");
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.payload, 11, "a reply does not become the payload");

    let deposit = manager.call(&1, Ask::Deposit(5)).await;
    assert_eq!(deposit, Ok(16), "reply of Deposit(5)");
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(snapshot.payload, 16, "balance after the deposit");
    assert_eq!(snapshot.performs, 1, "calls are not counted as performs");

    tokio::time::sleep_until(start + Duration::from_millis(250)).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.payload, 17,
        "the second perform received the deposited balance"
    );
    assert_eq!(snapshot.performs, 2, "performs counted");
}

/// Replacing an entry's payload with `put`, while its perform runs, while
/// it is idle, and twice at the same instant, leaves exactly one perform
/// chain on the schedule of the last put.
#[tokio::test(start_paused = true)]
async fn repeated_put_keeps_one_perform_chain() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(20)));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "v1".into(), every_ms(100)).await.unwrap();

    // The first perform runs from 100 to 120 ms.
    log.sleep_until_ms(110).await;
    let result = manager.put(1, "v2".into(), every_ms(100)).await.unwrap();
    assert_eq!(result, PutResult::Replaced, "put during a perform");

    // The second entry performs from 210 to 230 ms.
    log.sleep_until_ms(250).await;
    let result = manager.put(1, "v3a".into(), every_ms(100)).await.unwrap();
    assert_eq!(result, PutResult::Replaced, "put of an idle entry");
    let result = manager.put(1, "v3".into(), every_ms(100)).await.unwrap();
    assert_eq!(
        result,
        PutResult::Replaced,
        "second put at the same instant"
    );

    log.sleep_until_ms(1_000).await;
    let performs = log.performs(1);
    let expected: Vec<(u64, String)> = [
        (100, "v1"),
        (210, "v2"),
        (350, "v3"),
        (470, "v3"),
        (590, "v3"),
        (710, "v3"),
        (830, "v3"),
        (950, "v3"),
    ]
    .into_iter()
    .map(|(at, payload)| (at, payload.to_string()))
    .collect();
    assert_eq!(
        performs, expected,
        "performs (ms, payload): one chain, 20 ms perform plus 100 ms delay"
    );
    assert_eq!(log.max_concurrent(1), 1, "performs of one id overlapped");

    let terminates = log.terminates(1);
    let expected: Vec<(TerminateReason, String)> = ["v1", "v2", "v3a"]
        .into_iter()
        .map(|payload| (TerminateReason::Replaced, payload.to_string()))
        .collect();
    assert_eq!(terminates, expected, "one terminate per replaced entry");
    let replaced_at = log.times_ms(1, |e| matches!(e, Event::Terminate(_)));
    assert_eq!(
        replaced_at,
        vec![120, 250, 250],
        "the busy entry terminates when its perform ends"
    );
    assert_eq!(manager.len(), 1, "len after the re-puts");
}
