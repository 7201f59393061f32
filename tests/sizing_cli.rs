//! `keywheel bench` runs both measurements on a small key set and refuses
//! settings out of range with a message that names them.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_keywheel");

#[test]
fn bench_prints_footprint_and_rates() {
    let output = Command::new(BINARY)
        .args([
            "bench", "--keys", "2000", "--rates", "1k,2k", "--window", "1s",
        ])
        .output()
        .expect("keywheel runs");
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success(), "exit status; stdout: {stdout}");
    assert!(stdout.contains("resident memory per key"), "{stdout}");
    assert!(stdout.contains("| 1000 |"), "a row for 1k/s: {stdout}");
    assert!(stdout.contains("| 2000 |"), "a row for 2k/s: {stdout}");
    let rows = stdout
        .lines()
        .filter(|line| line.ends_with("| yes |"))
        .count();
    assert_eq!(rows, 2, "both small rates are sustained: {stdout}");
}

#[test]
fn bench_refuses_bad_settings() {
    for (args, named) in [
        (&["bench", "--keys", "10"][..], "--keys"),
        (&["bench", "--rates", "fast"][..], "--rates"),
        (&["bench", "--window", "0s"][..], "--window"),
    ] {
        let output = Command::new(BINARY)
            .args(args)
            .output()
            .expect("keywheel runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains(named),
            "{args:?}: the error names {named}: {stderr}"
        );
    }
}
