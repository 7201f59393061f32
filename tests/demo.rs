//! `keywheel demo` run in-process over real TCP on loopback, small enough
//! for a debug build.

use std::time::Duration;

use clap::Parser;
use keywheel::demo::{self, DemoArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    demo: DemoArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_small_run_passes() {
    // Completions land within 60 % of the interval, so a 3 s interval leaves
    // 1.2 s of slack before the first due time. With both cores of a 2-core
    // machine kept busy by other processes, completions of this debug build
    // ran up to 0.25 s behind schedule.
    let args = DemoArgs {
        keys: 2_000,
        interval: Duration::from_secs(3),
        complete_ratio: 0.9,
        margin: Duration::from_millis(500),
        quiet: true,
        ..DemoArgs::default()
    };

    let summary = demo::run_with(args).await.expect("the demo runs");
    println!("{summary}");

    assert!(
        summary.passed,
        "check failed with {} violations: {:#?}",
        summary.violations, summary.first_violations
    );
    assert_eq!(summary.violations, 0);
    assert_eq!(summary.registered, 2_000);
    assert_eq!(summary.completed, 1_800, "90 % of 2,000 keys are completed");
    assert_eq!(summary.completed_alerted, 0, "no completed key was alerted");
    assert_eq!(summary.completed_gone, 1_800, "every completed key is gone");
    assert_eq!(summary.overdue, 200);
    assert_eq!(
        summary.overdue_alerted, summary.overdue,
        "every pending key was alerted"
    );
    assert!(
        summary.alerts >= summary.overdue_alerts_seen,
        "server counter {} below the {} alerts the keys reported",
        summary.alerts,
        summary.overdue_alerts_seen
    );
    assert!(
        summary.max_completion_delay < Duration::from_secs(3),
        "a completion came {:?} after its registration, past the interval",
        summary.max_completion_delay
    );
    assert!(
        summary.exported_alerts >= Some(summary.overdue_alerts_seen),
        "/metrics shows {:?} alerts, the keys reported {}",
        summary.exported_alerts,
        summary.overdue_alerts_seen
    );
    // PUT for every key, POST for the completed ones, GET for every key,
    // one scrape of /metrics.
    assert_eq!(summary.http_requests, 2_000 + 1_800 + 2_000 + 1);
    assert!(summary.lateness.samples >= 200, "{:?}", summary.lateness);
}

#[tokio::test]
async fn demo_rejects_ratio_above_one() {
    let args = DemoArgs {
        complete_ratio: 1.5,
        quiet: true,
        ..DemoArgs::default()
    };

    let error = demo::run_with(args)
        .await
        .expect_err("ratio 1.5 is invalid");

    let message = error.to_string();
    assert!(
        message.contains("--complete-ratio"),
        "message does not name the flag: {message}"
    );
    assert!(
        message.contains("1.5"),
        "message does not show the value: {message}"
    );
}

#[test]
fn demo_args_validation_names_flag() {
    let cases = [
        (
            DemoArgs {
                keys: 0,
                ..DemoArgs::default()
            },
            "--keys",
        ),
        (
            DemoArgs {
                keys: 10_000_001,
                ..DemoArgs::default()
            },
            "--keys",
        ),
        (
            DemoArgs {
                complete_ratio: -0.1,
                ..DemoArgs::default()
            },
            "--complete-ratio",
        ),
        (
            DemoArgs {
                complete_ratio: f64::NAN,
                ..DemoArgs::default()
            },
            "--complete-ratio",
        ),
        (
            DemoArgs {
                interval: Duration::from_millis(999),
                ..DemoArgs::default()
            },
            "--interval",
        ),
        (
            DemoArgs {
                concurrency: 0,
                ..DemoArgs::default()
            },
            "--concurrency",
        ),
        (
            DemoArgs {
                concurrency: 401,
                ..DemoArgs::default()
            },
            "--concurrency",
        ),
        (
            DemoArgs {
                interval: Duration::from_secs(366 * 24 * 60 * 60),
                ..DemoArgs::default()
            },
            "--interval",
        ),
    ];

    for (args, flag) in cases {
        let error = args.validate().expect_err(flag);
        let message = error.to_string();
        assert!(message.contains(flag), "{flag}: {message}");
    }
    DemoArgs::default()
        .validate()
        .expect("the defaults are valid");
}

#[test]
fn demo_args_defaults_match_flags() {
    let parsed = Cli::parse_from(["demo"]).demo;
    let default = DemoArgs::default();

    assert_eq!(parsed.keys, default.keys);
    assert_eq!(parsed.interval, default.interval);
    assert_eq!(parsed.complete_ratio, default.complete_ratio);
    assert_eq!(parsed.concurrency, default.concurrency);
    assert_eq!(parsed.seed, default.seed);
    assert_eq!(parsed.margin, default.margin);
    assert_eq!(parsed.shards, default.shards);
    assert_eq!(parsed.workers, default.workers);
    assert_eq!(parsed.quiet, default.quiet);
}

#[test]
fn demo_args_parse_durations() {
    let parsed = Cli::parse_from(["demo", "--interval", "1m 30s", "--margin", "250ms"]).demo;

    assert_eq!(parsed.interval, Duration::from_secs(90));
    assert_eq!(parsed.margin, Duration::from_millis(250));
}
