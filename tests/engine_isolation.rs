//! One entry's trouble stays with it: a slow perform delays only its own
//! id, a caller that gives up costs nothing, and a panicking cast follows
//! the panic policy without touching other entries. Paused clock.

mod common;

use std::time::Duration;

use common::{Event, Log, Recorder, Step};
use keywheel::{EntryOptions, Manager, PanicPolicy, TerminateReason};

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

/// Two entries on one shard: entry 1's perform takes 1 s, entry 2 keeps
/// its 100 ms cadence meanwhile.
#[tokio::test(start_paused = true)]
async fn slow_perform_delays_only_its_own_id() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|id, _| {
        if id == 1 {
            Step::sleep(Duration::from_secs(1))
        } else {
            Step::done()
        }
    });
    let manager = Manager::builder(recorder).shards(1).build().unwrap();
    manager.put(1, "slow".into(), every_ms(100)).await.unwrap();
    manager.put(2, "fast".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(1_250).await;
    let slow = log.perform_ms(1);
    assert_eq!(
        slow,
        vec![100, 1_200],
        "the slow entry: 1 s perform, 100 ms delay"
    );
    let fast = log.perform_ms(2);
    let expected: Vec<u64> = (1..=12).map(|k| k * 100).collect();
    assert_eq!(fast, expected, "the other entry keeps its cadence");
}

/// A caller that drops its call while the call waits behind a perform:
/// the call never runs, the entry keeps working, and later calls reply.
#[tokio::test(start_paused = true)]
async fn abandoned_call_never_runs() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(200)));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let caller = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.call(&1, ()).await })
    };
    common::settle().await;
    caller.abort();
    let aborted = caller.await;
    assert!(
        aborted.as_ref().is_err_and(|error| error.is_cancelled()),
        "the caller task was cancelled: {aborted:?}"
    );

    log.sleep_until_ms(450).await;
    let calls = log.count(1, |e| *e == Event::Call);
    assert_eq!(calls, 0, "the abandoned call ran");
    let reply = manager.call(&1, ()).await;
    assert_eq!(reply, Ok("p".to_string()), "a later call answers");
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100, 400], "performs go on as before");
}

/// A panicking cast removes its entry under `Remove` and keeps it, with
/// the payload as the panic left it, under `Resume`. The caller of the cast
/// already got `Ok(())`, and other entries are untouched.
#[tokio::test(start_paused = true)]
async fn panicking_cast_follows_policy() {
    for policy in [PanicPolicy::Remove, PanicPolicy::Resume] {
        let log = Log::new();
        let recorder = Recorder::new(&log).cast(|id, _| {
            if id == 1 {
                Step::panic("cast exploded")
            } else {
                Step::done()
            }
        });
        let manager = Manager::builder(recorder)
            .panic_policy(policy)
            .build()
            .unwrap();
        manager.put(1, "p".into(), every_ms(100)).await.unwrap();
        manager.put(2, "q".into(), every_ms(100)).await.unwrap();

        log.sleep_until_ms(50).await;
        let cast = manager.cast(&1, "m".into()).await;
        assert_eq!(cast, Ok(()), "{policy:?}: the cast was queued");

        log.sleep_until_ms(250).await;
        let snapshot = manager.get(&1).await.unwrap();
        let terminates = log.terminates(1);
        let starts = log.perform_ms(1);
        match policy {
            PanicPolicy::Remove => {
                assert!(snapshot.is_none(), "Remove: entry 1 is gone: {snapshot:?}");
                assert_eq!(
                    terminates,
                    vec![(
                        TerminateReason::Panicked("cast exploded".into()),
                        "p+m".to_string()
                    )],
                    "Remove: one terminate with the panic and the payload the cast left"
                );
                assert!(starts.is_empty(), "Remove: entry 1 performed: {starts:?}");
            }
            _ => {
                let payload = snapshot.map(|s| s.payload);
                assert_eq!(
                    payload,
                    Some("p+m".to_string()),
                    "Resume: the payload as the panic left it"
                );
                assert!(terminates.is_empty(), "Resume: terminates: {terminates:?}");
                assert_eq!(starts, vec![100, 200], "Resume: entry 1 keeps performing");
            }
        }
        let other = log.perform_ms(2);
        assert_eq!(
            other,
            vec![100, 200],
            "{policy:?}: entry 2 keeps performing"
        );
    }
}
