//! Slow performs and a saturated pool: one id never runs two callbacks at
//! once, and a stall never turns into a burst of catch-up performs.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Log, Recorder, Step};
use keywheel::{EntryOptions, FirstRun, Manager};

/// A perform of 200 ms at a 50 ms interval never overlaps itself: each run
/// starts 50 ms after the previous one ends. After it speeds up to 10 ms,
/// no queued-up runs follow in a burst.
#[tokio::test(start_paused = true)]
async fn slow_perform_never_overlaps_itself() {
    let log = Log::new();
    let work_ms = Arc::new(AtomicU64::new(200));
    let work = work_ms.clone();
    let recorder = Recorder::new(&log)
        .perform(move |_, _| Step::sleep(Duration::from_millis(work.load(Ordering::SeqCst))));
    let manager = Manager::builder(recorder).build().unwrap();
    manager
        .put(
            1,
            "p".into(),
            EntryOptions::every(Duration::from_millis(50)),
        )
        .await
        .unwrap();

    log.sleep_until_ms(1_000).await;
    let first_second = log.perform_ms(1);
    assert_eq!(
        first_second,
        vec![50, 300, 550, 800],
        "each start is the previous end plus 50 ms"
    );

    // The perform that started at 800 ms ended at 1000 ms, so the next is due at 1050 ms.
    log.sleep_until_ms(1_010).await;
    work_ms.store(10, Ordering::SeqCst);
    log.sleep_until_ms(2_000).await;

    assert_eq!(
        log.max_concurrent(1),
        1,
        "two performs of one id overlapped"
    );
    let spans = log.perform_spans(1);
    for pair in spans.windows(2) {
        let (_, end) = pair[0];
        let (next, _) = pair[1];
        assert_eq!(
            next,
            end + Duration::from_millis(50),
            "fixed delay: the next start is the previous end plus the interval"
        );
    }
    let fast: Vec<u64> = log
        .perform_ms(1)
        .into_iter()
        .filter(|&at| at >= 1_000)
        .collect();
    let expected: Vec<u64> = (0..16).map(|k| 1_050 + 60 * k).collect();
    assert_eq!(fast, expected, "10 ms performs every 60 ms, no catch-up");
}

/// Real time: two workers are held for 1 s by other entries, so entry A,
/// due every 100 ms, waits. After the stall A runs once at once, then every
/// 100 ms again, never in a burst, and the lateness figures show the stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_stall_causes_no_burst() {
    const A: u64 = 100;
    let log = Log::new();
    let recorder = Recorder::new(&log).perform(|id, _| {
        if id == A {
            Step::done()
        } else {
            Step::sleep(Duration::from_secs(1))
        }
    });
    let manager = Manager::builder(recorder).workers(2).build().unwrap();
    let blocker = EntryOptions::every(Duration::from_secs(60)).first_run(FirstRun::Immediately);
    manager.put(1, "blocker".into(), blocker).await.unwrap();
    manager.put(2, "blocker".into(), blocker).await.unwrap();
    manager
        .put(
            A,
            "a".into(),
            EntryOptions::every(Duration::from_millis(100)),
        )
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(1_600)).await;

    let stall_end = log
        .perform_spans(1)
        .into_iter()
        .chain(log.perform_spans(2))
        .map(|(_, end)| end)
        .min()
        .expect("a blocker finished its perform");
    assert!(
        stall_end >= Duration::from_millis(990),
        "the blockers held the pool until {stall_end:?}"
    );

    let starts = log.perform_times(A);
    assert!(!starts.is_empty(), "entry A never performed");
    let resume = starts[0];
    assert!(
        resume >= stall_end && resume < stall_end + Duration::from_millis(100),
        "A first performed at {resume:?}, the stall ended at {stall_end:?}"
    );

    let burst = starts
        .iter()
        .filter(|&&at| at < resume + Duration::from_millis(200))
        .count();
    assert!(
        burst <= 2,
        "A performed {burst} times in the 200 ms after the stall: {starts:?}"
    );
    let spans = log.perform_spans(A);
    for pair in spans.windows(2) {
        let (_, end) = pair[0];
        let (next, _) = pair[1];
        assert!(
            next >= end + Duration::from_millis(100),
            "A started at {next:?}, less than 100 ms after its previous end {end:?}"
        );
    }
    assert!(
        starts.len() >= 4,
        "A performed {} times in the 600 ms after the stall: {starts:?}",
        starts.len()
    );

    let lateness_ms = manager.lateness().max() / 1_000;
    assert!(
        lateness_ms >= 800,
        "largest lateness recorded is {lateness_ms} ms, the stall lasted about 900 ms"
    );
    manager.shutdown(Duration::from_millis(100)).await;
}
