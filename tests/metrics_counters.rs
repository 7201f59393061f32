//! The library's metrics as a recorder receives them: one scripted run touches
//! every counter, and each must hold the exact count. Every family is
//! described, follows the naming rules, and carries only labels from the
//! fixed sets, never an id. Paused clock.

mod common;

use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::metrics as names;
use keywheel::{EntryOptions, FirstRun, Manager, Outcome};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

type Row = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

/// Ids above every shard number, so a label value equal to one is an id.
const BASE: u64 = 1_000_000;

const LABELS: [&str; 6] = [
    "manager", "outcome", "result", "reason", "callback", "shard",
];

const FAMILIES: [&str; 18] = [
    names::PERFORMS_TOTAL,
    names::PERFORM_LATENESS_SECONDS,
    names::CALLS_TOTAL,
    names::CASTS_TOTAL,
    names::PUTS_TOTAL,
    names::DELETES_TOTAL,
    names::PANICS_TOTAL,
    names::TERMINATES_TOTAL,
    names::OVERRUNS_TOTAL,
    names::REJECTED_TOTAL,
    names::CLAMPED_INTERVALS_TOTAL,
    names::ENTRIES,
    names::SHARD_ENTRIES,
    names::POOL_BUSY,
    names::POOL_QUEUED,
    names::POOL_WORKERS,
    names::DUE_NOT_STARTED,
    names::OLDEST_OVERDUE_SECONDS,
];

/// Returns the sum of the counter `name` over the series whose label `key`
/// is `value` (or over all series when `key` is empty).
fn counter(rows: &[Row], name: &str, key: &str, value: &str) -> u64 {
    rows.iter()
        .filter(|(composite, ..)| composite.kind() == MetricKind::Counter)
        .filter(|(composite, ..)| composite.key().name() == name)
        .filter(|(composite, ..)| {
            key.is_empty()
                || composite
                    .key()
                    .labels()
                    .any(|label| label.key() == key && label.value() == value)
        })
        .map(|(.., sample)| match sample {
            DebugValue::Counter(count) => *count,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

#[tokio::test(start_paused = true)]
async fn counters_match_scripted_run() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let log = Log::new();
    let handler = Recorder::new(&log)
        .perform(|id, payload| match id - BASE {
            4 => Step::then(Outcome::Halt),
            5 if payload.is_empty() => {
                payload.push('.');
                Step::then(Outcome::Reschedule(Duration::ZERO))
            }
            5 => Step::then(Outcome::Reschedule(Duration::from_secs(3600))),
            6 => Step::sleep(Duration::from_secs(10)),
            _ => Step::done(),
        })
        .call(|id, _| {
            if id == BASE + 2 {
                Step::panic("call exploded")
            } else {
                Step::done()
            }
        });
    let manager = Manager::builder(handler)
        .name("counts")
        .workers(4)
        .build()
        .unwrap();

    // Puts: 6 inserted, 1 replaced, 1 unchanged, 2 rejected.
    for id in [1, 3, 4, 5] {
        manager
            .put(BASE + id, String::new(), every_ms(100))
            .await
            .unwrap();
    }
    manager
        .put(BASE + 2, String::new(), EntryOptions::never())
        .await
        .unwrap();
    let slow = EntryOptions::every(Duration::from_secs(60)).first_run(FirstRun::Immediately);
    manager.put(BASE + 6, String::new(), slow).await.unwrap();
    manager
        .put(BASE + 1, String::new(), every_ms(100))
        .await
        .unwrap();
    manager
        .put_new(BASE + 2, String::new(), every_ms(100))
        .await
        .unwrap();
    let zero = manager
        .put(BASE + 7, String::new(), EntryOptions::every(Duration::ZERO))
        .await;
    assert!(zero.is_err(), "put with a zero interval: {zero:?}");
    let three_years = Duration::from_secs(3 * 365 * 24 * 3600);
    let jitter = manager
        .put(BASE + 8, String::new(), every_ms(100).jitter(three_years))
        .await;
    assert!(jitter.is_err(), "put with a jitter of 3 years: {jitter:?}");

    // Calls: ok, not found, panicked, timed out. Casts: ok, not found.
    manager.call(&(BASE + 1), ()).await.unwrap();
    let missing = manager.call(&(BASE + 99), ()).await;
    assert!(missing.is_err(), "call to a missing id: {missing:?}");
    let panicked = manager.call(&(BASE + 2), ()).await;
    assert!(panicked.is_err(), "call that panics: {panicked:?}");
    let late = manager
        .call_timeout(&(BASE + 6), (), Duration::from_millis(10))
        .await;
    assert!(late.is_err(), "call behind a 10 s perform: {late:?}");
    manager.cast(&(BASE + 3), "x".into()).await.unwrap();
    let missing = manager.cast(&(BASE + 99), "x".into()).await;
    assert!(missing.is_err(), "cast to a missing id: {missing:?}");

    // Deletes: one of an existing entry, one of a missing id.
    assert!(manager.del(&(BASE + 3)).await.unwrap(), "del of entry 3");
    assert!(!manager.del(&(BASE + 3)).await.unwrap(), "second del of 3");

    // Performs by 150 ms: entry 1 continues, 4 halts, and 5 reschedules
    // twice, the first time to zero, which is clamped. Entry 6 runs until 10 s.
    log.sleep_until_ms(150).await;
    manager.shutdown(Duration::from_secs(20)).await;
    let rows: Vec<Row> = snapshotter.snapshot().into_vec();

    let expected: [(&str, &str, &str, u64); 27] = [
        (names::PUTS_TOTAL, "result", "inserted", 6),
        (names::PUTS_TOTAL, "result", "replaced", 1),
        (names::PUTS_TOTAL, "result", "exists", 1),
        (names::REJECTED_TOTAL, "reason", "interval", 1),
        (names::REJECTED_TOTAL, "reason", "jitter", 1),
        (names::REJECTED_TOTAL, "reason", "first_run", 0),
        (names::CALLS_TOTAL, "result", "ok", 1),
        (names::CALLS_TOTAL, "result", "not_found", 1),
        (names::CALLS_TOTAL, "result", "panicked", 1),
        (names::CALLS_TOTAL, "result", "timeout", 1),
        (names::CASTS_TOTAL, "result", "ok", 1),
        (names::CASTS_TOTAL, "result", "not_found", 1),
        (names::DELETES_TOTAL, "", "", 1),
        (names::PERFORMS_TOTAL, "outcome", "continue", 2),
        (names::PERFORMS_TOTAL, "outcome", "halt", 1),
        (names::PERFORMS_TOTAL, "outcome", "reschedule", 2),
        (names::PERFORMS_TOTAL, "outcome", "move", 0),
        (names::PERFORMS_TOTAL, "outcome", "panicked", 0),
        (names::PANICS_TOTAL, "callback", "call", 1),
        (names::PANICS_TOTAL, "callback", "perform", 0),
        (names::TERMINATES_TOTAL, "reason", "replaced", 1),
        (names::TERMINATES_TOTAL, "reason", "panicked", 1),
        (names::TERMINATES_TOTAL, "reason", "deleted", 1),
        (names::TERMINATES_TOTAL, "reason", "halted", 1),
        (names::TERMINATES_TOTAL, "reason", "shutdown", 3),
        (names::CLAMPED_INTERVALS_TOTAL, "", "", 1),
        (names::OVERRUNS_TOTAL, "", "", 0),
    ];
    for (name, key, value, count) in expected {
        let got = counter(&rows, name, key, value);
        assert_eq!(got, count, "{name}{{{key}=\"{value}\"}}");
    }

    let lateness_samples: usize = rows
        .iter()
        .filter(|(key, ..)| key.key().name() == names::PERFORM_LATENESS_SECONDS)
        .map(|(.., value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum();
    assert!(
        lateness_samples >= 1,
        "no lateness sample reached the recorder"
    );
    let workers: Vec<f64> = rows
        .iter()
        .filter(|(key, ..)| key.key().name() == names::POOL_WORKERS)
        .filter_map(|(.., value)| match value {
            DebugValue::Gauge(value) => Some(value.into_inner()),
            _ => None,
        })
        .collect();
    assert_eq!(workers, vec![4.0], "keywheel_pool_workers");
}

/// Every family is registered and described when a manager starts, before
/// any sample, and its name and labels follow the rules.
#[tokio::test(start_paused = true)]
async fn families_described_and_labelled() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .name("labels")
        .shards(4)
        .build()
        .unwrap();
    manager
        .put(BASE + 1, String::new(), every_ms(10))
        .await
        .unwrap();
    log.sleep_until_ms(1_100).await;
    let rows: Vec<Row> = snapshotter.snapshot().into_vec();

    for family in FAMILIES {
        let row = rows.iter().find(|(key, ..)| key.key().name() == family);
        let Some((_, _, description, _)) = row else {
            panic!("family {family} is not registered when the manager starts");
        };
        assert!(description.is_some(), "family {family} has no description");
    }

    let gauges = |name: &str| -> Vec<f64> {
        rows.iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter_map(|(.., value)| match value {
                DebugValue::Gauge(value) => Some(value.into_inner()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(gauges(names::ENTRIES), vec![1.0], "keywheel_entries");
    let per_shard = gauges(names::SHARD_ENTRIES);
    assert_eq!(
        per_shard.len(),
        4,
        "one keywheel_shard_entries series per shard"
    );
    assert_eq!(
        per_shard.iter().sum::<f64>(),
        1.0,
        "keywheel_shard_entries summed over shards: {per_shard:?}"
    );

    for (key, unit, _, _) in &rows {
        let name = key.key().name();
        assert!(name.starts_with("keywheel_"), "name {name}");
        match key.kind() {
            MetricKind::Counter => {
                assert!(name.ends_with("_total"), "counter {name}");
            }
            MetricKind::Histogram => {
                assert!(name.ends_with("_seconds"), "histogram {name}");
                assert_eq!(
                    *unit,
                    Some(metrics::Unit::Seconds),
                    "unit of histogram {name}"
                );
            }
            MetricKind::Gauge => {}
        }
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|label| (label.key().to_string(), label.value().to_string()))
            .collect();
        assert!(
            labels.contains(&("manager".to_string(), "labels".to_string())),
            "{name} lacks the manager label: {labels:?}"
        );
        for (label, value) in &labels {
            assert!(
                LABELS.contains(&label.as_str()),
                "{name} has label {label}, outside the fixed sets"
            );
            assert!(
                !value.contains(&BASE.to_string()),
                "{name} has an id as the value of {label}"
            );
        }
    }
}

/// A perform that waits 150 ms at a 100 ms interval overruns the default
/// factor of 1.1: each one is counted, and each still runs to its end.
#[tokio::test(start_paused = true)]
async fn waiting_overrun_is_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let log = Log::new();
    let handler = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(150)));
    let manager = Manager::builder(handler).name("overrun").build().unwrap();
    let options = every_ms(100).first_run(FirstRun::Immediately);
    manager.put(BASE, String::new(), options).await.unwrap();

    // Performs run from 0 to 150 ms and from 250 to 400 ms.
    log.sleep_until_ms(450).await;
    manager.shutdown(Duration::from_secs(1)).await;
    let rows: Vec<Row> = snapshotter.snapshot().into_vec();

    let ends = log.count(BASE, |e| *e == common::Event::PerformEnd);
    assert_eq!(ends, 2, "overrunning performs run to their end");
    let overruns = counter(&rows, names::OVERRUNS_TOTAL, "", "");
    assert_eq!(overruns, 2, "keywheel_overruns_total");
}

/// The library records through the facade but never installs a recorder:
/// after a manager ran, a program can still install its own.
#[tokio::test(start_paused = true)]
async fn library_installs_no_recorder() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager
        .put(BASE, String::new(), every_ms(10))
        .await
        .unwrap();
    log.sleep_until_ms(100).await;
    manager.shutdown(Duration::from_secs(1)).await;

    let installed = DebuggingRecorder::new().install();
    assert!(
        installed.is_ok(),
        "a global recorder was already installed when the program tried to install one"
    );
}
