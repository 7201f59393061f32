//! Due times: the first perform, cadence, rescheduling, first-run options,
//! jitter and the interval limits. Every test runs on a paused clock, so the
//! times asserted are exact.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ids_on_shard, Log, Recorder, Step};
use keywheel::{
    Cadence, EntryOptions, Error, FirstRun, Interval, Manager, OptionsError, Outcome, MAX_INTERVAL,
    TICK,
};

const MS: Duration = Duration::from_millis(1);

fn every_ms(millis: u64) -> EntryOptions {
    EntryOptions::every(Duration::from_millis(millis))
}

#[tokio::test(start_paused = true)]
async fn first_perform_exactly_after_interval() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.next_due,
        Some(log.at_ms(100)),
        "next due of a new entry is one interval after the put"
    );

    log.sleep_until_ms(99).await;
    let early = log.perform_ms(1);
    assert!(early.is_empty(), "performs before 100 ms: {early:?}");

    log.sleep_until_ms(350).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![100, 200, 300], "perform starts in ms");
}

#[tokio::test(start_paused = true)]
async fn sub_millisecond_interval_rounds_up_to_tick() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let options = EntryOptions::every(Duration::from_micros(1500));
    manager.put(1, "p".into(), options).await.unwrap();

    log.sleep_until_ms(7).await;
    let starts = log.perform_ms(1);
    assert_eq!(starts, vec![2, 4, 6], "a 1.5 ms interval runs every 2 ms");

    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.interval,
        Interval::Every(2 * MS),
        "stored interval is rounded up to whole ticks"
    );
}

#[tokio::test(start_paused = true)]
async fn reschedule_changes_next_gap() {
    let log = Log::new();
    let performs = Arc::new(AtomicU32::new(0));
    let counter = performs.clone();
    let recorder = Recorder::new(&log).perform(move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Step::then(Outcome::Reschedule(Duration::from_millis(250)))
        } else {
            Step::done()
        }
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(120).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.interval,
        Interval::Every(250 * MS),
        "interval after Reschedule(250 ms)"
    );
    assert_eq!(
        snapshot.next_due,
        Some(log.at_ms(350)),
        "next due after Reschedule at 100 ms"
    );

    log.sleep_until_ms(900).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![100, 350, 600, 850],
        "the new interval holds from the reschedule on"
    );
}

/// Fixed delay: the next due time is the end of the perform plus the
/// interval, so a perform of 30 ms at 100 ms intervals starts every 130 ms
/// and the error does not grow with the number of runs.
#[tokio::test(start_paused = true)]
async fn fixed_delay_cadence_does_not_drift() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(30)));
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, "p".into(), every_ms(100)).await.unwrap();

    // The 1000th perform is due at 100 + 999 × 130 ms.
    log.sleep_until_ms(100 + 999 * 130 + 65).await;
    let starts = log.perform_times(1);
    assert_eq!(starts.len(), 1000, "performs in 1000 fixed-delay periods");

    for (k, start) in starts.iter().enumerate() {
        let expected = Duration::from_millis(100 + 130 * k as u64);
        let error = start.abs_diff(expected);
        assert!(
            error <= MS,
            "perform {} started at {start:?}, expected {expected:?} (error {error:?})",
            k + 1
        );
    }
    let last_error = starts[999].abs_diff(Duration::from_millis(100 + 999 * 130));
    assert!(
        last_error <= 2 * MS,
        "error at the 1000th perform is {last_error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fixed_rate_cadence_keeps_grid() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|_, _| Step::sleep(Duration::from_millis(30)));
    let manager = Manager::builder(recorder).build().unwrap();
    let options = every_ms(100).cadence(Cadence::FixedRate);
    manager.put(1, "p".into(), options).await.unwrap();

    log.sleep_until_ms(100_050).await;
    let starts = log.perform_times(1);
    assert_eq!(starts.len(), 1000, "performs on a 100 ms grid in 100 s");
    for (k, start) in starts.iter().enumerate() {
        let expected = Duration::from_millis(100 * (k as u64 + 1));
        let error = start.abs_diff(expected);
        assert!(
            error <= MS,
            "perform {} started at {start:?}, expected {expected:?}",
            k + 1
        );
    }
}

/// A fixed-rate perform that overruns two slots skips them: the next start
/// is the next grid point after it ends, with no catch-up burst.
#[tokio::test(start_paused = true)]
async fn fixed_rate_skips_missed_slots() {
    let log = Log::new();
    let performs = Arc::new(AtomicU32::new(0));
    let counter = performs.clone();
    let recorder = Recorder::new(&log).perform(move |_, _| {
        if counter.fetch_add(1, Ordering::SeqCst) == 1 {
            Step::sleep(Duration::from_millis(250))
        } else {
            Step::done()
        }
    });
    let manager = Manager::builder(recorder).build().unwrap();
    let options = every_ms(100).cadence(Cadence::FixedRate);
    manager.put(1, "p".into(), options).await.unwrap();

    log.sleep_until_ms(750).await;
    let starts = log.perform_ms(1);
    assert_eq!(
        starts,
        vec![100, 200, 500, 600, 700],
        "the perform at 200 ms ends at 450 ms, so the 300 and 400 ms slots are skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn first_run_immediately_and_after() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let now = every_ms(100).first_run(FirstRun::Immediately);
    let later = every_ms(100).first_run(FirstRun::After(Duration::from_millis(30)));
    manager.put(1, "p".into(), now).await.unwrap();
    manager.put(2, "p".into(), later).await.unwrap();

    log.sleep_until_ms(250).await;
    let immediate = log.perform_ms(1);
    assert_eq!(immediate, vec![0, 100, 200], "FirstRun::Immediately");
    let delayed = log.perform_ms(2);
    assert_eq!(delayed, vec![30, 130, 230], "FirstRun::After(30 ms)");
}

#[tokio::test(start_paused = true)]
async fn never_interval_performs_only_first_run() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    manager
        .put(1, "p".into(), EntryOptions::never())
        .await
        .unwrap();
    let once = EntryOptions::never().first_run(FirstRun::After(Duration::from_millis(40)));
    manager.put(2, "p".into(), once).await.unwrap();

    log.sleep_until_ms(5_000).await;
    let never = log.perform_ms(1);
    assert!(never.is_empty(), "Interval::Never performs: {never:?}");
    let single = log.perform_ms(2);
    assert_eq!(single, vec![40], "Interval::Never with a first run");
    assert_eq!(manager.len(), 2, "both entries stay");
}

/// Jitter adds a random delay in `[0, jitter)` to the first due time only.
#[tokio::test(start_paused = true)]
async fn jitter_spreads_first_due() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let jitter = Duration::from_millis(100);
    let immediate = every_ms(1000)
        .first_run(FirstRun::Immediately)
        .jitter(jitter);
    let after_interval = every_ms(1000).jitter(jitter);
    manager
        .put_many((0..500).map(|id| (id, "p".to_string(), immediate)))
        .await
        .unwrap();
    manager
        .put_many((1000..1500).map(|id| (id, "p".to_string(), after_interval)))
        .await
        .unwrap();

    log.sleep_until_ms(1_500).await;

    let mut firsts = Vec::new();
    for id in 0..500 {
        let starts = log.perform_ms(id);
        assert!(!starts.is_empty(), "entry {id} never performed");
        let first = starts[0];
        assert!(first < 100, "entry {id} first performed at {first} ms");
        firsts.push(first);
    }
    let distinct: BTreeSet<u64> = firsts.iter().copied().collect();
    assert!(
        distinct.len() >= 60,
        "first performs of 500 entries fall on only {} distinct ms: {distinct:?}",
        distinct.len()
    );
    for window in 0..10 {
        let in_window = firsts.iter().filter(|&&ms| ms / 10 == window).count();
        assert!(
            (10..=100).contains(&in_window),
            "{in_window} of 500 first performs in [{} ms, {} ms)",
            window * 10,
            window * 10 + 10
        );
    }

    for id in 1000..1500 {
        let starts = log.perform_ms(id);
        assert!(!starts.is_empty(), "entry {id} never performed");
        let first = starts[0];
        assert!(
            (1000..1100).contains(&first),
            "entry {id} with AfterInterval and jitter first performed at {first} ms"
        );
    }

    // Jitter moves the first due time only. Later ones follow the interval.
    for id in 0..500 {
        let starts = log.perform_ms(id);
        assert_eq!(
            starts.get(1).copied(),
            Some(starts[0] + 1000),
            "second perform of entry {id}: {starts:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn zero_interval_rejected() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();

    let error = manager
        .put(1, "p".into(), EntryOptions::every(Duration::ZERO))
        .await
        .expect_err("a zero interval must be rejected");
    assert_eq!(
        error.error,
        Error::InvalidOptions(OptionsError::ZeroInterval),
        "error of put with a zero interval"
    );
    assert_eq!(
        error.payload.as_deref(),
        Some("p"),
        "the payload comes back in the error"
    );

    assert_eq!(manager.len(), 0, "len after a rejected put");
    let contains = manager.contains(&1).await.unwrap();
    assert!(!contains, "a rejected entry is not stored");
    log.sleep_until_ms(1_000).await;
    let records = log.records();
    assert!(
        records.is_empty(),
        "callbacks ran for a rejected entry: {records:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn too_long_durations_rejected() {
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log)).build().unwrap();
    let three_years = Duration::from_secs(3 * 365 * 24 * 3600);
    let cases = [
        (
            EntryOptions::every(Duration::MAX),
            "interval",
            Duration::MAX,
        ),
        (EntryOptions::every(three_years), "interval", three_years),
        (
            EntryOptions::every(MAX_INTERVAL + MS),
            "interval",
            MAX_INTERVAL + MS,
        ),
        (
            every_ms(100).first_run(FirstRun::After(Duration::MAX)),
            "first_run",
            Duration::MAX,
        ),
        (every_ms(100).jitter(three_years), "jitter", three_years),
    ];
    for (id, (options, field, value)) in cases.into_iter().enumerate() {
        let error = manager
            .put(id as u64, "p".into(), options)
            .await
            .expect_err("an over-long duration must be rejected");
        assert_eq!(
            error.error,
            Error::InvalidOptions(OptionsError::TooLong { field, value }),
            "case {id}: {options:?}"
        );
    }
    assert_eq!(manager.len(), 0, "len after rejected puts");

    let bulk = manager
        .put_many([
            (10, "p".to_string(), every_ms(100)),
            (11, "p".to_string(), EntryOptions::every(three_years)),
        ])
        .await;
    assert!(
        matches!(bulk, Err(Error::InvalidOptions(_))),
        "put_many with one bad entry returned {bulk:?}"
    );
    assert_eq!(
        manager.len(),
        0,
        "put_many with a bad entry inserts nothing"
    );

    let longest = manager
        .put(20, "p".into(), EntryOptions::every(MAX_INTERVAL))
        .await;
    assert!(
        longest.is_ok(),
        "MAX_INTERVAL itself is accepted: {longest:?}"
    );
    let snapshot = manager.get(&20).await.unwrap().expect("entry 20 exists");
    assert_eq!(
        snapshot.next_due,
        Some(log.start() + MAX_INTERVAL),
        "due time of an entry at MAX_INTERVAL"
    );
}

/// `Reschedule` to a value out of range is clamped into `[TICK, MAX_INTERVAL]`:
/// never a panic, never a hot loop.
#[tokio::test(start_paused = true)]
async fn reschedule_out_of_range_is_clamped() {
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|id, payload| {
        payload.push('.');
        match (id, payload.len()) {
            (1, _) => Step::then(Outcome::Reschedule(Duration::from_millis(u64::MAX))),
            (3, 1) => Step::then(Outcome::Reschedule(Duration::ZERO)),
            (3, 5) => Step::then(Outcome::Halt),
            _ => Step::done(),
        }
    });
    let manager = Manager::builder(recorder).build().unwrap();
    manager.put(1, String::new(), every_ms(100)).await.unwrap();
    manager.put(2, String::new(), every_ms(100)).await.unwrap();
    manager.put(3, String::new(), every_ms(100)).await.unwrap();

    log.sleep_until_ms(150).await;
    let snapshot = manager.get(&1).await.unwrap().expect("entry 1 exists");
    assert_eq!(
        snapshot.interval,
        Interval::Every(MAX_INTERVAL),
        "Reschedule(u64::MAX ms) is clamped to MAX_INTERVAL"
    );
    assert_eq!(
        snapshot.next_due,
        Some(log.at_ms(100) + MAX_INTERVAL),
        "next due after the clamped reschedule"
    );

    log.sleep_until_ms(10_050).await;
    let huge = log.perform_ms(1);
    assert_eq!(huge, vec![100], "entry 1 performs once, then waits a year");
    let steady = log.perform_ms(2).len();
    assert_eq!(steady, 100, "entry 2 keeps its 100 ms cadence");

    let tiny = log.perform_ms(3);
    assert_eq!(
        tiny,
        vec![100, 101, 102, 103, 104],
        "Reschedule(0) is clamped to one {TICK:?} tick, then the entry halts"
    );
}

/// The wheel under each shard covers 2^36 ms from its creation. After the
/// clock moves past that, a new entry still performs on time and entries on
/// the same shard keep their cadence. Thousands of overdue timers from the
/// start-up queue make the shard drain them over several turns while the
/// new put arrives.
#[tokio::test(start_paused = true)]
async fn put_after_wheel_horizon_performs_on_time() {
    const SHARDS: u64 = 32;
    let log = Log::new();
    let manager = Manager::builder(Recorder::new(&log))
        .shards(SHARDS as usize)
        .build()
        .unwrap();

    let ids = ids_on_shard(5, SHARDS, 5_002);
    let (steady, late, far) = (ids[0], ids[1], &ids[2..]);
    let far_options = EntryOptions::every(Duration::from_secs(3600))
        .first_run(FirstRun::After(Duration::from_secs(300 * 24 * 3600)));
    manager
        .put_many(far.iter().map(|&id| (id, "far".to_string(), far_options)))
        .await
        .unwrap();
    manager
        .put(steady, "steady".into(), every_ms(1000))
        .await
        .unwrap();

    log.sleep_until_ms(1_500).await;
    tokio::time::advance(Duration::from_millis(1 << 36) + Duration::from_secs(1)).await;
    let jump = log.elapsed();

    let put = manager.put(late, "late".into(), every_ms(10_000)).await;
    assert!(put.is_ok(), "put after the jump failed: {put:?}");

    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let since_jump = |id| -> Vec<u64> {
        log.perform_times(id)
            .into_iter()
            .filter(|at| *at >= jump)
            .map(|at| common::whole_ms(at - jump))
            .collect()
    };

    let late_starts = since_jump(late);
    assert_eq!(late_starts, vec![10_000], "entry put after the jump");

    let steady_starts = since_jump(steady);
    let expected: Vec<u64> = (0..=10).map(|k| k * 1000).collect();
    assert_eq!(
        steady_starts, expected,
        "entry with a 1 s interval on the same shard, ms after the jump"
    );

    for &id in far.iter().step_by(500) {
        let starts = since_jump(id);
        assert_eq!(starts, vec![0], "overdue far entry {id} performs once");
    }
    assert_eq!(manager.len(), 5_002, "no entry lost");
}
