//! Macro benchmark: keywheel against the naive designs of keyed periodic
//! work, on the workloads described in BENCHMARKS.md.
//!
//! The competitors:
//!
//! - A: a tokio task per key with a mailbox for calls.
//! - A0: the same without a mailbox.
//! - B: one unsharded `DelayQueue` feeding a worker pool.
//! - C: keywheel with default settings.
//! - C-best: keywheel with 64 shards (`--best-shards` changes it, and
//!   `--explore` compares settings).
//! - C-nostagger: keywheel with staggered shard starts turned off.
//!
//! Every run happens in a child process (this binary with `--child`) on a
//! fresh two-worker tokio runtime, so memory readings start clean and one
//! run's leftovers never slow the next. Competitors run in an order that
//! rotates with each repetition, with the same seed.
//!
//! ```text
//! cargo bench --bench scheduler                # full run
//! cargo bench --bench scheduler -- --quick     # harness check, under a minute
//! cargo bench --bench scheduler -- --help      # every option
//! ```

#[path = "scheduler/competitors.rs"]
mod competitors;
#[path = "scheduler/measure.rs"]
mod measure;
#[path = "scheduler/phases.rs"]
mod phases;
#[path = "scheduler/plan.rs"]
mod plan;
#[path = "scheduler/plots.rs"]
mod plots;
#[path = "scheduler/queue.rs"]
mod queue;
#[path = "scheduler/report.rs"]
mod report;
#[path = "scheduler/report_targets.rs"]
mod report_targets;
#[path = "scheduler/workloads.rs"]
mod workloads;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use competitors::Design;
use workloads::RunSpec;

const USAGE: &str = "\
usage: cargo bench --bench scheduler -- [options]

  --quick               100k keys, 1 s windows, 1 repetition (checks the harness, not timings)
  --reps N              repetitions of every run (default 3; 1 with --quick)
  --only LIST           workloads to run, comma-separated: w1,w2,w3,w4,w5,w6
                        (w3 and w4 use the rates w2 finds; without w2 they use --assume-max)
  --assume-max LIST     highest sustained rates to use without w2, e.g. A=600000,C=2000000
  --explore             sweep keywheel settings (shards x workers) at high rates instead
  --no-wait             start every run at once; by default a full run waits for other
                        processes to go quiet and repeats once a run they disturbed
  --best-shards N       shards of C-best (default 64)
  --best-workers N      workers of C-best (default 64)
  --json PATH           write the JSON lines to PATH instead of stdout
  --markdown PATH       also write the Markdown tables to PATH
  --plots DIR           draw PNG plots into DIR (default benches/plots in a full run, none with --quick)
  --from PATH           render the tables and plots of JSON lines saved by --json, without running
  --seed N              seed of every key set (default 1)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(position) = args.iter().position(|arg| arg == "--child") {
        return run_child(args.get(position + 1).map(String::as_str));
    }
    let settings = match plan::Settings::parse(&args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    if settings.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match plan::run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one workload as a child process and prints its figures as one JSON line.
fn run_child(spec: Option<&str>) -> ExitCode {
    let Some(spec) = spec.and_then(|text| serde_json::from_str::<Value>(text).ok()) else {
        eprintln!("error: --child needs a JSON run spec");
        return ExitCode::FAILURE;
    };
    let spec = match parse_spec(&spec) {
        Ok(spec) => spec,
        Err(message) => {
            eprintln!("error: invalid run spec: {message}");
            return ExitCode::FAILURE;
        }
    };
    let result = workloads::run(&spec);
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{result}");
    let _ = stdout.flush();
    // Dropping millions of tasks or entries takes seconds and measures
    // nothing: leave that to the operating system.
    std::process::exit(0);
}

/// Builds the JSON run spec that a child process reads.
pub fn spec_json(spec: &RunSpec) -> Value {
    let design = match spec.design {
        Design::Tasks { mailbox } => json!({ "kind": "tasks", "mailbox": mailbox }),
        Design::Queue { workers } => json!({ "kind": "queue", "workers": workers }),
        Design::Wheel {
            shards,
            workers,
            stagger,
        } => json!({ "kind": "wheel", "shards": shards, "workers": workers, "stagger": stagger }),
    };
    json!({
        "workload": spec.workload,
        "design": design,
        "keys": spec.keys,
        "demand": spec.demand,
        "warmup_s": spec.warmup.as_secs_f64(),
        "window_s": spec.window.as_secs_f64(),
        "seed": spec.seed,
        "rate": spec.rate,
        "probe": spec.probe,
    })
}

fn parse_spec(value: &Value) -> Result<RunSpec, String> {
    let number = |name: &str| {
        value[name]
            .as_f64()
            .ok_or_else(|| format!("missing number {name:?}"))
    };
    let design = &value["design"];
    let count = |name: &str| {
        design[name]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("missing design.{name}"))
    };
    let design = match design["kind"].as_str() {
        Some("tasks") => Design::Tasks {
            mailbox: design["mailbox"].as_bool().unwrap_or(true),
        },
        Some("queue") => Design::Queue {
            workers: count("workers")?,
        },
        Some("wheel") => Design::Wheel {
            shards: count("shards")?,
            workers: count("workers")?,
            stagger: design["stagger"].as_bool().unwrap_or(true),
        },
        other => return Err(format!("unknown design kind {other:?}")),
    };
    Ok(RunSpec {
        workload: value["workload"]
            .as_str()
            .ok_or("missing workload")?
            .to_string(),
        design,
        keys: number("keys")? as u64,
        demand: number("demand")?,
        warmup: Duration::from_secs_f64(number("warmup_s")?),
        window: Duration::from_secs_f64(number("window_s")?),
        seed: number("seed")? as u64,
        rate: number("rate")?,
        probe: value["probe"].as_bool().unwrap_or(false),
    })
}

/// Runs `spec` in a child process; returns its figures, or an error text
/// when the child failed, timed out or printed no JSON.
pub fn spawn_child(spec: &RunSpec, timeout: Duration) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("--child")
        .arg(spec_json(spec).to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start a child process: {e}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });

    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for the child failed: {e}")),
        }
    };
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("child exited with {status}"));
    }
    text.lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| "child printed no JSON result".to_string())
}

/// Returns the directory that a full run draws its plots into.
pub fn default_plot_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/plots"))
}
