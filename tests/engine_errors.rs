//! Error messages: each names what failed, on which id or value, and what
//! to do next. The errors come from real operations. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{ConfigError, EntryOptions, Error, Manager};

/// Asserts that `message` contains every one of `parts`.
fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message {message:?} lacks {part:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn error_messages_name_value_and_next_step() {
    let log = Log::new();
    let recorder = Recorder::new(&log)
        .perform(|_, _| Step::sleep(Duration::from_secs(10)))
        .call(|id, _| {
            if id == 2 {
                Step::panic("call exploded")
            } else {
                Step::done()
            }
        });
    let manager = Manager::builder(recorder).build().unwrap();
    manager
        .put(
            1,
            "p".into(),
            EntryOptions::every(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    manager
        .put(2, "q".into(), EntryOptions::never())
        .await
        .unwrap();

    let missing = manager.call(&42, ()).await.expect_err("call to 42");
    assert_mentions(&missing.to_string(), &["not found", "42"]);

    let zero = manager
        .put(3, "r".into(), EntryOptions::every(Duration::ZERO))
        .await
        .expect_err("put with a zero interval");
    assert_mentions(
        &zero.error.to_string(),
        &["invalid interval", "at least 1 ms", "Interval::Never"],
    );
    let long = Duration::from_secs(400 * 24 * 3600);
    let jitter = manager
        .put(
            3,
            "r".into(),
            EntryOptions::every(Duration::from_secs(1)).jitter(long),
        )
        .await
        .expect_err("put with a jitter of 400 days");
    assert_mentions(
        &jitter.error.to_string(),
        &["invalid jitter", "34560000s", "365 days"],
    );

    let panicked = manager.call(&2, ()).await.expect_err("call that panics");
    assert_mentions(
        &panicked.to_string(),
        &["entry 2", "panicked", "call exploded"],
    );

    tokio::time::sleep(Duration::from_millis(150)).await;
    let timeout = manager
        .call_timeout(&1, (), Duration::from_millis(20))
        .await
        .expect_err("call behind a 10 s perform");
    assert_mentions(
        &timeout.to_string(),
        &["timed out", "20ms", "entry 1", "raise the deadline"],
    );

    let overloaded = Error::Overloaded { shard: 3 }.to_string();
    assert_mentions(&overloaded, &["overloaded", "shard 3", "retry"]);

    manager.shutdown(Duration::from_millis(10)).await;
    let closed = manager.call(&1, ()).await.expect_err("call after shutdown");
    assert_mentions(&closed.to_string(), &["shutting down"]);

    let config = Manager::builder(Recorder::new(&log))
        .shards(0)
        .build()
        .err()
        .expect("a manager with 0 shards");
    assert_eq!(
        config,
        ConfigError::OutOfRange {
            setting: "shards",
            value: "0".into(),
            rule: "must be between 1 and 4096".into(),
        },
        "error of shards(0)"
    );
    assert_mentions(
        &config.to_string(),
        &["invalid shards 0", "between 1 and 4096"],
    );
}
