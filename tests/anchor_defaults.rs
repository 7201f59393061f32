//! Documented defaults: the options of a new entry and the manager settings
//! a builder starts from. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{
    Cadence, EntryOptions, Error, FirstRun, Interval, Manager, PanicPolicy, TerminateReason,
};

#[test]
fn entry_options_defaults() {
    let every = Duration::from_millis(50);
    assert_eq!(
        EntryOptions::every(every),
        EntryOptions {
            interval: Interval::Every(every),
            first_run: FirstRun::AfterInterval,
            jitter: Duration::ZERO,
            cadence: Cadence::FixedDelay,
        },
        "EntryOptions::every"
    );
    assert_eq!(
        EntryOptions::never(),
        EntryOptions {
            interval: Interval::Never,
            first_run: FirstRun::AfterInterval,
            jitter: Duration::ZERO,
            cadence: Cadence::FixedDelay,
        },
        "EntryOptions::never"
    );
    assert_eq!(
        FirstRun::default(),
        FirstRun::AfterInterval,
        "default first run"
    );
    assert_eq!(Cadence::default(), Cadence::FixedDelay, "default cadence");
    assert_eq!(
        PanicPolicy::default(),
        PanicPolicy::Remove,
        "default panic policy"
    );
}

/// A builder's call timeout is 5 s unless set: a call and a get behind a
/// one-minute perform both give up after exactly 5 s.
#[tokio::test(start_paused = true)]
async fn default_call_timeout_is_five_seconds() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_secs(60)));
    let manager = Manager::builder(recorder).build().unwrap();
    assert_eq!(manager.name(), "default", "default manager name");
    manager
        .put(
            1,
            "p".into(),
            EntryOptions::every(Duration::from_millis(100)),
        )
        .await
        .unwrap();

    log.sleep_until_ms(150).await;
    let call = manager.call(&1, ()).await;
    assert_eq!(
        call,
        Err(Error::Timeout {
            id: "1".into(),
            waited: Duration::from_secs(5),
        }),
        "call behind a one-minute perform"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(5_150),
        "the call gave up 5 s after it was issued"
    );

    let get = manager.get(&1).await;
    assert_eq!(
        get,
        Err(Error::Timeout {
            id: "1".into(),
            waited: Duration::from_secs(5),
        }),
        "get behind a one-minute perform"
    );
    assert_eq!(
        log.elapsed(),
        Duration::from_millis(10_150),
        "the get gave up 5 s after it was issued"
    );
}

/// The default restart limit is 3 panics within 5 s: under `Resume`, an
/// entry that panics every second is removed at its fourth panic.
#[tokio::test(start_paused = true)]
async fn default_restart_limit_is_three_in_five_seconds() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::panic("always"));
    let manager = Manager::builder(recorder)
        .panic_policy(PanicPolicy::Resume)
        .build()
        .unwrap();
    manager
        .put(1, "p".into(), EntryOptions::every(Duration::from_secs(1)))
        .await
        .unwrap();

    log.sleep_until_ms(10_000).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![1_000, 2_000, 3_000, 4_000],
        "the fourth panic within 5 s exceeds the default limit of 3"
    );
    let terminates = log.terminates(1);
    assert_eq!(
        terminates,
        vec![(TerminateReason::Panicked("always".into()), "p".to_string())],
        "terminate once when the limit removes the entry"
    );
    assert_eq!(manager.len(), 0, "len after the limit removed the entry");
}
