//! Ratios against design A and keywheel's targets on the measuring machine.

use std::fmt::Write;

use serde_json::Value;

use crate::report::{figure, max_sustained, rate};

/// A ratio `numerator / denominator` as text, or a dash when either is missing.
fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> String {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d > 0.0 => format!("{:.1}×", n / d),
        _ => "–".into(),
    }
}

fn positive(value: Option<f64>) -> Option<f64> {
    value.filter(|v| *v > 0.0)
}

pub fn ratios_table(out: &mut String, records: &[Value]) {
    let max = max_sustained(records, "w2");
    let rss = |name: &str| figure(records, "w1", name, Some(1_000_000), "rss_bytes_per_key");
    let heap = |name: &str| figure(records, "w1", name, Some(1_000_000), "heap_bytes_per_key");
    let equal_p99 = |name: &str| figure(records, "w4-equal", name, None, "lateness_ms.p99");
    let equal_cpu = |name: &str| figure(records, "w4-equal", name, None, "cpu_s_per_million");
    let drained = |name: &str| figure(records, "w5", name, None, "drained_s");
    let highest = |name: &str| positive(max.get(name).copied());

    let _ = writeln!(out, "### Ratios against A (medians)\n");
    let _ = writeln!(
        out,
        "| figure | A0 | B | C | C-best |\n|---|---:|---:|---:|---:|"
    );
    let row = |out: &mut String, label: &str, value: &dyn Fn(&str) -> String| {
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            value("A0"),
            value("B"),
            value("C"),
            value("C-best")
        );
    };
    row(out, "RSS bytes per key at 1M, A ÷ design", &|n| {
        ratio(rss("A"), rss(n))
    });
    row(out, "heap bytes per key at 1M, A ÷ design", &|n| {
        ratio(heap("A"), heap(n))
    });
    row(out, "highest sustained rate, design ÷ A", &|n| {
        ratio(highest(n), highest("A"))
    });
    row(out, "perform p99 at half of A's rate, A ÷ design", &|n| {
        ratio(equal_p99("A"), equal_p99(n))
    });
    row(
        out,
        "CPU per perform at half of A's rate, A ÷ design",
        &|n| ratio(equal_cpu("A"), equal_cpu(n)),
    );
    row(out, "herd drain time, A ÷ design", &|n| {
        ratio(drained("A"), drained(n))
    });
    let _ = writeln!(out);
}

/// Reads one figure of the named design from the records.
type Reading = Box<dyn Fn(&str) -> Option<f64>>;

/// One target: a description, a goal, and how to read the value of a design.
struct Target {
    name: &'static str,
    goal: &'static str,
    value: Reading,
    show: fn(f64) -> String,
    met: fn(f64) -> bool,
}

pub fn targets_table(out: &mut String, records: &[Value]) {
    let owned: Vec<Value> = records.to_vec();
    let shared = std::rc::Rc::new(owned);
    let max = std::rc::Rc::new(max_sustained(records, "w2"));
    let at = |workload: &'static str, keys: Option<u64>, path: &'static str| {
        let records = shared.clone();
        Box::new(move |name: &str| figure(&records, workload, name, keys, path)) as Reading
    };
    let bytes = |v: f64| format!("{v:.0} B");
    let ms = |v: f64| format!("{v:.2} ms");
    let times = |v: f64| format!("{v:.1}×");
    let share = |v: f64| format!("{:+.1}%", v * 100.0);

    let a_rss = figure(records, "w1", "A", Some(1_000_000), "rss_bytes_per_key");
    let a_p99 = figure(records, "w4-equal", "A", None, "lateness_ms.p99");
    let a_max = positive(max.get("A").copied());
    let targets = vec![
        Target {
            name: "W1 RSS per key at 1M",
            goal: "≤ 100 B",
            value: at("w1", Some(1_000_000), "rss_bytes_per_key"),
            show: bytes,
            met: |v| v <= 100.0,
        },
        Target {
            name: "W1 RSS per key at 5M",
            goal: "≤ 100 B",
            value: at("w1", Some(5_000_000), "rss_bytes_per_key"),
            show: bytes,
            met: |v| v <= 100.0,
        },
        Target {
            name: "W1 RSS per key at 1M, A ÷ design",
            goal: "≥ 5×",
            value: {
                let per_key = at("w1", Some(1_000_000), "rss_bytes_per_key");
                Box::new(move |name| Some(a_rss? / positive(per_key(name))?))
            },
            show: times,
            met: |v| v >= 5.0,
        },
        Target {
            name: "put_many of 1M keys",
            goal: "≤ 0.25 s",
            value: at("w1", Some(1_000_000), "load_s"),
            show: |v| format!("{v:.3} s"),
            met: |v| v <= 0.25,
        },
        Target {
            name: "W2 highest sustained rate",
            goal: "≥ 2M/s (stretch 2.5M/s)",
            value: {
                let max = max.clone();
                Box::new(move |name| max.get(name).copied())
            },
            show: rate,
            met: |v| v >= 2e6,
        },
        Target {
            name: "W2 highest sustained rate, design ÷ A",
            goal: "≥ 2.5×",
            value: {
                let max = max.clone();
                Box::new(move |name| Some(max.get(name).copied()? / a_max?))
            },
            show: times,
            met: |v| v >= 2.5,
        },
        Target {
            name: "perform p99 at half of own highest rate",
            goal: "≤ 5 ms",
            value: at("w4-own", None, "lateness_ms.p99"),
            show: ms,
            met: |v| v <= 5.0,
        },
        Target {
            name: "perform p999 at half of own highest rate",
            goal: "≤ 10 ms",
            value: at("w4-own", None, "lateness_ms.p999"),
            show: ms,
            met: |v| v <= 10.0,
        },
        Target {
            name: "longest shard loop turn at half of own highest rate",
            goal: "≤ 5 ms",
            value: at("w4-own", None, "turn_max_ms"),
            show: ms,
            met: |v| v <= 5.0,
        },
        Target {
            name: "perform p99 at half of A's highest rate, A ÷ design",
            goal: "≥ 20×",
            value: {
                let p99 = at("w4-equal", None, "lateness_ms.p99");
                Box::new(move |name| Some(a_p99? / positive(p99(name))?))
            },
            show: times,
            met: |v| v >= 20.0,
        },
        Target {
            name: "W3 RSS after churn against before",
            goal: "within ±10%",
            value: at("w3", None, "rss_growth"),
            show: share,
            met: |v| v.abs() <= 0.10,
        },
        Target {
            name: "W4 call p99 at half of own highest rate",
            goal: "≤ 1 ms",
            value: at("w4-own", None, "call_ms.p99"),
            show: ms,
            met: |v| v <= 1.0,
        },
    ];

    let _ = writeln!(out, "### Targets for keywheel on this machine\n");
    let _ = writeln!(
        out,
        "| target | goal | C (defaults) | met | C-best | met |\n|---|---|---:|---|---:|---|"
    );
    for target in &targets {
        let mut line = format!("| {} | {} |", target.name, target.goal);
        for name in ["C", "C-best"] {
            match (target.value)(name) {
                Some(value) => {
                    let verdict = if (target.met)(value) { "met" } else { "missed" };
                    let _ = write!(line, " {} | {verdict} |", (target.show)(value));
                }
                None => line.push_str(" – | not measured |"),
            }
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}
