//! The order of runs: which competitor runs which workload, at which size
//! and rate, in which repetition; and the record of what each run returned.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keywheel::{DEFAULT_SHARDS, DEFAULT_WORKERS};
use serde_json::{json, Value};

use crate::competitors::Design;
use crate::workloads::RunSpec;

/// Largest key count for the task-per-key designs. With a mailbox a key
/// costs about 1.6 KB (W1), so 5M keys would need about 8 GB.
pub const TASKS_MAX_KEYS: u64 = 1_000_000;

/// A run whose achieved rate is below this share of its demand failed.
const SUSTAINED_SHARE: f64 = 0.95;
/// A run whose lateness p99 is above this many ms failed.
const SUSTAINED_P99_MS: f64 = 100.0;
/// Below this share of demand a design is so far behind that higher rates
/// are not tried.
pub const COLLAPSED_SHARE: f64 = 0.8;
/// Maximum time a child process may take before it is stopped.
const CHILD_TIMEOUT: Duration = Duration::from_secs(240);

/// A named design under test.
#[derive(Debug, Clone)]
pub struct Entrant {
    pub name: String,
    pub design: Design,
}

/// Everything a benchmark invocation was asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub help: bool,
    pub quick: bool,
    pub explore: bool,
    pub reps: usize,
    pub only: Vec<String>,
    pub assume_max: BTreeMap<String, f64>,
    pub best_shards: usize,
    pub best_workers: usize,
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub plots: Option<PathBuf>,
    /// Renders the tables and plots of a saved JSON-lines file instead of running.
    pub from: Option<PathBuf>,
    pub seed: u64,
    /// Key counts of the footprint runs.
    pub footprint_keys: Vec<u64>,
    /// Keys of the sweep, churn and call runs.
    pub keys: u64,
    /// Demanded performs per second of the sweep.
    pub levels: Vec<f64>,
    /// Sweep levels at which C-nostagger runs.
    pub nostagger_levels: Vec<f64>,
    pub warmup: Duration,
    pub window: Duration,
    /// Settle time of the footprint runs.
    pub settle: Duration,
    /// Del+put pairs per second in the churn runs.
    pub churn_rate: f64,
    /// Calls per second in the call runs.
    pub call_rate: f64,
    pub herd_keys: u64,
    /// Time from the start of the herd load to the instant every key is due.
    pub herd_after: Duration,
    pub horizon_keys: u64,
    /// Waits for other processes to go quiet before each run.
    pub wait_quiet: bool,
    /// Extra attempts of a run during which other processes were busy.
    pub retries: usize,
}

impl Settings {
    pub fn parse(args: &[String]) -> Result<Settings, String> {
        let mut settings = Settings::full();
        let mut reps = None;
        let mut plots = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let mut value = |name: &str| {
                iter.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                // cargo passes `--bench` to every bench target.
                "--bench" => {}
                "--help" | "-h" => settings.help = true,
                "--quick" => settings.quick = true,
                "--explore" => settings.explore = true,
                "--no-wait" => {
                    settings.wait_quiet = false;
                    settings.retries = 0;
                }
                "--reps" => reps = Some(parse_number(&value("--reps")?, "--reps")? as usize),
                "--only" => {
                    settings.only = value("--only")?
                        .split(',')
                        .map(|w| w.trim().to_lowercase())
                        .collect();
                }
                "--assume-max" => {
                    for pair in value("--assume-max")?.split(',') {
                        let (name, rate) = pair.split_once('=').ok_or_else(|| {
                            format!("--assume-max expects NAME=RATE, got {pair:?}")
                        })?;
                        settings
                            .assume_max
                            .insert(name.to_string(), parse_number(rate, "--assume-max")?);
                    }
                }
                "--best-shards" => {
                    settings.best_shards =
                        parse_number(&value("--best-shards")?, "--best-shards")? as usize;
                }
                "--best-workers" => {
                    settings.best_workers =
                        parse_number(&value("--best-workers")?, "--best-workers")? as usize;
                }
                "--json" => settings.json = Some(PathBuf::from(value("--json")?)),
                "--markdown" => settings.markdown = Some(PathBuf::from(value("--markdown")?)),
                "--plots" => plots = Some(PathBuf::from(value("--plots")?)),
                "--from" => settings.from = Some(PathBuf::from(value("--from")?)),
                "--seed" => settings.seed = parse_number(&value("--seed")?, "--seed")? as u64,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if settings.quick {
            settings.make_quick();
        }
        settings.reps = reps.unwrap_or(settings.reps).max(1);
        settings.plots = plots.or_else(|| (!settings.quick).then(crate::default_plot_dir));
        for workload in &settings.only {
            if !["w1", "w2", "w3", "w4", "w5", "w6"].contains(&workload.as_str()) {
                return Err(format!("unknown workload {workload:?} in --only"));
            }
        }
        Ok(settings)
    }

    fn full() -> Settings {
        Settings {
            help: false,
            quick: false,
            explore: false,
            reps: 3,
            only: Vec::new(),
            assume_max: BTreeMap::new(),
            best_shards: 64,
            best_workers: DEFAULT_WORKERS,
            json: None,
            markdown: None,
            plots: None,
            from: None,
            seed: 1,
            footprint_keys: vec![100_000, 1_000_000, 5_000_000],
            keys: 1_000_000,
            levels: vec![100e3, 300e3, 700e3, 1e6, 1.5e6, 2e6, 2.5e6, 3e6],
            nostagger_levels: vec![1e6, 2e6],
            warmup: Duration::from_millis(500),
            window: Duration::from_secs(4),
            settle: Duration::from_secs(1),
            churn_rate: 25_000.0,
            call_rate: 2_000.0,
            herd_keys: 1_000_000,
            herd_after: Duration::from_millis(2500),
            horizon_keys: 300_000,
            wait_quiet: true,
            retries: 1,
        }
    }

    fn make_quick(&mut self) {
        self.reps = 1;
        self.footprint_keys = vec![100_000];
        self.keys = 100_000;
        self.levels = vec![300e3];
        self.nostagger_levels = vec![300e3];
        self.warmup = Duration::from_millis(300);
        self.window = Duration::from_secs(1);
        self.settle = Duration::from_millis(300);
        self.churn_rate = 5_000.0;
        self.call_rate = 1_000.0;
        self.herd_keys = 100_000;
        self.herd_after = Duration::from_millis(500);
        self.horizon_keys = 30_000;
        self.wait_quiet = false;
        self.retries = 0;
    }

    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }

    /// Returns the competitors, in the order of the first repetition.
    pub fn entrants(&self) -> Vec<Entrant> {
        let wheel = |name: &str, shards, workers, stagger| Entrant {
            name: name.to_string(),
            design: Design::Wheel {
                shards,
                workers,
                stagger,
            },
        };
        vec![
            Entrant {
                name: "A".into(),
                design: Design::Tasks { mailbox: true },
            },
            Entrant {
                name: "A0".into(),
                design: Design::Tasks { mailbox: false },
            },
            Entrant {
                name: "B".into(),
                design: Design::Queue {
                    workers: DEFAULT_WORKERS,
                },
            },
            wheel("C", DEFAULT_SHARDS, DEFAULT_WORKERS, true),
            wheel("C-best", self.best_shards, self.best_workers, true),
            wheel("C-nostagger", DEFAULT_SHARDS, DEFAULT_WORKERS, false),
        ]
    }

    pub fn pick(&self, names: &[&str]) -> Vec<Entrant> {
        self.entrants()
            .into_iter()
            .filter(|e| names.contains(&e.name.as_str()))
            .collect()
    }
}

fn parse_number(text: &str, option: &str) -> Result<f64, String> {
    text.replace('_', "")
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{option} expects a non-negative number, got {text:?}"))
}

/// Returns `items` rotated left by `by`, so each repetition starts with a
/// different competitor.
pub fn rotated<T: Clone>(items: &[T], by: usize) -> Vec<T> {
    let mut items = items.to_vec();
    if !items.is_empty() {
        let shift = by % items.len();
        items.rotate_left(shift);
    }
    items
}

/// The runs so far and where their JSON lines go.
pub struct Recorder {
    pub records: Vec<Value>,
    sink: Box<dyn Write>,
}

impl Recorder {
    fn new(settings: &Settings) -> Result<Recorder, String> {
        let sink: Box<dyn Write> = match &settings.json {
            Some(path) => Box::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
            ),
            None => Box::new(std::io::stdout()),
        };
        Ok(Recorder {
            records: Vec::new(),
            sink,
        })
    }

    fn push(&mut self, record: Value) {
        let _ = writeln!(self.sink, "{record}");
        let _ = self.sink.flush();
        self.records.push(record);
    }
}

/// Runs one child and records its result under the entrant's name.
///
/// In a full run it first waits for other processes to go quiet. It runs
/// again (at most `settings.retries` times) when they used more than
/// [`CONTENDED_CORES`] meanwhile, and the record keeps the last attempt.
pub fn run_one(
    recorder: &mut Recorder,
    settings: &Settings,
    entrant: &Entrant,
    label: &str,
    rep: usize,
    spec: RunSpec,
) -> Option<Value> {
    let mut attempts = 0;
    let record = loop {
        attempts += 1;
        let waited = if settings.wait_quiet {
            wait_for_quiet()
        } else {
            Duration::ZERO
        };
        let mut record = run_attempt(settings, entrant, label, rep, &spec);
        record["waited_s"] = json!(waited.as_secs_f64());
        record["attempts"] = json!(attempts);
        let other = record["other_cores"].as_f64().unwrap_or(0.0);
        if other > CONTENDED_CORES && attempts <= settings.retries {
            eprintln!(
                "{}\n  other processes used {other:.2} cores: running it again",
                crate::report::progress_line(&record)
            );
            continue;
        }
        break record;
    };
    eprintln!("{}", crate::report::progress_line(&record));
    recorder.push(record.clone());
    record.get("error").is_none().then_some(record)
}

/// Other processes' CPU use, in cores, above which a run counts as contended.
const CONTENDED_CORES: f64 = 0.3;
/// Maximum wait for other processes to go quiet before a run starts anyway.
const QUIET_WAIT_MAX: Duration = Duration::from_secs(60);

/// Waits until the machine, with no child of ours running, is busy for
/// less than [`CONTENDED_CORES`] over half a second; returns the time waited.
fn wait_for_quiet() -> Duration {
    let started = Instant::now();
    let sample = Duration::from_millis(500);
    while started.elapsed() < QUIET_WAIT_MAX {
        let before = crate::measure::machine_busy();
        std::thread::sleep(sample);
        let busy = crate::measure::machine_busy().saturating_sub(before);
        if busy.as_secs_f64() / sample.as_secs_f64() < CONTENDED_CORES {
            break;
        }
    }
    started.elapsed()
}

fn run_attempt(
    settings: &Settings,
    entrant: &Entrant,
    label: &str,
    rep: usize,
    spec: &RunSpec,
) -> Value {
    let started = Instant::now();
    let load = crate::measure::load_average();
    let busy_before = crate::measure::machine_busy();
    let children_before = crate::measure::children_cpu_time();
    let result = crate::spawn_child(spec, CHILD_TIMEOUT);

    // CPU that other processes used while the child ran, in cores: the
    // measurement is only as good as this is small.
    let busy = crate::measure::machine_busy().saturating_sub(busy_before);
    let child = crate::measure::children_cpu_time().saturating_sub(children_before);
    let other_cores = busy.saturating_sub(child).as_secs_f64() / started.elapsed().as_secs_f64();

    let mut record = json!({
        "competitor": entrant.name,
        "workload": label,
        "rep": rep + 1,
        "keys": spec.keys,
        "demand": spec.demand,
        "rate": spec.rate,
        "design": format!("{:?}", entrant.design),
        "seed": settings.seed,
        "loadavg": load,
        "other_cores": other_cores,
        "wall_s": 0.0,
    });
    match result {
        Ok(figures) => {
            if let (Some(target), Some(fields)) = (record.as_object_mut(), figures.as_object()) {
                for (name, value) in fields {
                    target.insert(name.clone(), value.clone());
                }
            }
        }
        Err(message) => record["error"] = json!(message),
    }

    record["wall_s"] = json!(started.elapsed().as_secs_f64());
    record
}

/// True if a sweep run kept up with its demand.
pub fn sustained(record: &Value) -> bool {
    let achieved = record["achieved"].as_f64().unwrap_or(0.0);
    let demand = record["demand_exact"].as_f64().unwrap_or(f64::INFINITY);
    let p99 = record["lateness_ms"]["p99"]
        .as_f64()
        .unwrap_or(f64::INFINITY);
    achieved >= SUSTAINED_SHARE * demand && p99 <= SUSTAINED_P99_MS
}

pub fn spec(settings: &Settings, workload: &str, design: Design, keys: u64) -> RunSpec {
    RunSpec {
        workload: workload.to_string(),
        design,
        keys,
        demand: 0.0,
        warmup: settings.warmup,
        window: settings.window,
        seed: settings.seed,
        rate: 0.0,
        probe: false,
    }
}

/// Runs every selected workload, then prints the tables and draws the plots.
pub fn run(settings: &Settings) -> Result<(), String> {
    let started = Instant::now();
    let mut recorder = Recorder::new(settings)?;
    if let Some(path) = &settings.from {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        recorder.records = text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
    } else {
        let machine = crate::measure::machine();
        let record = json!({ "workload": "machine", "machine": machine, "quick": settings.quick });
        recorder.push(record);
    }

    if settings.from.is_some() {
        // Nothing to run: the records are loaded.
    } else if settings.explore {
        crate::phases::explore(&mut recorder, settings);
    } else {
        if settings.runs("w1") {
            crate::phases::footprint(&mut recorder, settings);
        }
        let max = if settings.runs("w2") {
            crate::phases::sweep(&mut recorder, settings, &settings.entrants(), "w2")
        } else {
            settings.assume_max.clone()
        };
        if settings.runs("w4") {
            crate::phases::calls(&mut recorder, settings, &max);
        }
        if settings.runs("w3") {
            crate::phases::churn(&mut recorder, settings, &max);
        }
        if settings.runs("w5") {
            crate::phases::herd(&mut recorder, settings);
        }
        if settings.runs("w6") {
            crate::phases::horizon(&mut recorder, settings);
        }
    }

    let (elapsed, end_load) = if settings.from.is_some() {
        saved_summary(&recorder.records)
    } else {
        let elapsed = started.elapsed();
        let end_load = crate::measure::load_average();
        recorder.push(json!({
            "workload": "summary",
            "duration_s": elapsed.as_secs_f64(),
            "loadavg": end_load,
        }));
        (elapsed, end_load)
    };
    let markdown = crate::report::markdown(&recorder.records, settings, elapsed, end_load);
    println!("\n{markdown}");
    if let Some(path) = &settings.markdown {
        std::fs::write(path, &markdown)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(dir) = &settings.plots {
        match crate::plots::draw_all(&recorder.records, dir) {
            Ok(files) => eprintln!("plots: {}", files.join(", ")),
            Err(message) => eprintln!("plots skipped: {message}"),
        }
    }
    eprintln!("finished in {:.0} s", elapsed.as_secs_f64());
    Ok(())
}

/// Returns the duration and final load average of a saved run. A file
/// without a summary line gets the sum of its runs' wall times and the
/// last run's load average.
fn saved_summary(records: &[Value]) -> (Duration, f64) {
    if let Some(summary) = records.iter().find(|r| r["workload"] == "summary") {
        let duration = summary["duration_s"].as_f64().unwrap_or(0.0);
        return (
            Duration::from_secs_f64(duration),
            summary["loadavg"].as_f64().unwrap_or(0.0),
        );
    }
    let wall: f64 = records.iter().filter_map(|r| r["wall_s"].as_f64()).sum();
    let load = records
        .iter()
        .rev()
        .find_map(|r| r["loadavg"].as_f64())
        .unwrap_or(0.0);
    (Duration::from_secs_f64(wall), load)
}
