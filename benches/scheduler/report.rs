//! Markdown tables, ratios against design A and the targets of keywheel,
//! computed from the JSON records of a run.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde_json::Value;

use crate::plan::{sustained, Settings};

/// One line of progress for standard error.
pub fn progress_line(record: &Value) -> String {
    let name = record["competitor"].as_str().unwrap_or("?");
    let workload = record["workload"].as_str().unwrap_or("?");
    let rep = record["rep"].as_u64().unwrap_or(0);
    let keys = record["keys"].as_u64().unwrap_or(0);
    let wall = record["wall_s"].as_f64().unwrap_or(0.0);
    let mut line = format!("[{workload} rep {rep}] {name:<12} {keys:>8} keys");
    if let Some(error) = record["error"].as_str() {
        let _ = write!(line, " FAILED: {error}");
        return line;
    }
    let demand = record["demand"].as_f64().unwrap_or(0.0);
    if demand > 0.0 {
        let _ = write!(line, " demand {}", rate(demand));
    }
    if let Some(achieved) = record["achieved"].as_f64() {
        let _ = write!(line, " achieved {}", rate(achieved));
    }
    if let Some(p99) = record["lateness_ms"]["p99"].as_f64() {
        let _ = write!(line, " p99 {p99:.1} ms");
    }
    if let Some(bytes) = record["rss_bytes_per_key"].as_f64() {
        let _ = write!(line, " rss {bytes:.0} B/key");
    }
    if let Some(p99) = record["call_ms"]["p99"].as_f64() {
        let _ = write!(line, " call p99 {p99:.2} ms");
    }
    let _ = write!(line, " ({wall:.1} s)");
    line
}

/// Formats a rate per second as 700k/s or 1.5M/s.
pub fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else {
        format!("{:.0}k/s", per_second / 1e3)
    }
}

/// Looks up a nested number such as `lateness_ms.p99`.
fn number(record: &Value, path: &str) -> Option<f64> {
    path.split('.')
        .try_fold(record, |value, key| value.get(key))
        .and_then(Value::as_f64)
}

/// Median, minimum and maximum of some values.
fn stats(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some((median, sorted[0], sorted[n - 1]))
}

/// The records of one workload and competitor, optionally at one demand.
fn select<'a>(
    records: &'a [Value],
    workload: &str,
    competitor: &str,
    keys: Option<u64>,
    demand: Option<f64>,
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["workload"] == workload && r["competitor"] == competitor)
        .filter(|r| r.get("error").is_none())
        .filter(|r| keys.is_none_or(|k| r["keys"].as_u64() == Some(k)))
        .filter(|r| demand.is_none_or(|d| r["demand"].as_f64() == Some(d)))
        .collect()
}

fn values(records: &[&Value], path: &str) -> Vec<f64> {
    records.iter().filter_map(|r| number(r, path)).collect()
}

/// The median of a figure over the selected records.
fn median(records: &[&Value], path: &str) -> Option<f64> {
    stats(&values(records, path)).map(|(median, _, _)| median)
}

/// A table cell: the median, with min–max when repetitions differ.
fn cell(records: &[&Value], path: &str, digits: usize) -> String {
    match stats(&values(records, path)) {
        None => "–".into(),
        Some((median, low, high)) if (high - low).abs() < f64::EPSILON || records.len() < 2 => {
            format!("{median:.digits$}")
        }
        Some((median, low, high)) => format!("{median:.digits$} ({low:.digits$}–{high:.digits$})"),
    }
}

/// The competitor names present in the records, in the order they first appear.
fn competitors(records: &[Value], workload: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for record in records.iter().filter(|r| r["workload"] == workload) {
        if let Some(name) = record["competitor"].as_str() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    let order = ["A", "A0", "B", "C", "C-best", "C-nostagger"];
    names.sort_by_key(|name| order.iter().position(|o| o == name).unwrap_or(order.len()));
    names
}

fn distinct(records: &[Value], workload: &str, field: &str) -> Vec<f64> {
    let mut found: Vec<f64> = records
        .iter()
        .filter(|r| r["workload"] == workload)
        .filter_map(|r| r[field].as_f64())
        .collect();
    found.sort_by(f64::total_cmp);
    found.dedup();
    found
}

/// Each competitor's highest sustained sweep rate: per repetition the
/// highest level it sustained, then the median over repetitions.
pub fn max_sustained(records: &[Value], workload: &str) -> BTreeMap<String, f64> {
    let mut per_rep: BTreeMap<(String, u64), f64> = BTreeMap::new();
    for record in records.iter().filter(|r| r["workload"] == workload) {
        let (Some(name), Some(rep)) = (record["competitor"].as_str(), record["rep"].as_u64())
        else {
            continue;
        };
        let slot = per_rep.entry((name.to_string(), rep)).or_insert(0.0);
        if record.get("error").is_none() && sustained(record) {
            *slot = slot.max(record["demand"].as_f64().unwrap_or(0.0));
        }
    }
    let mut grouped: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for ((name, _), level) in per_rep {
        grouped.entry(name).or_default().push(level);
    }
    grouped
        .into_iter()
        .filter_map(|(name, levels)| stats(&levels).map(|(median, _, _)| (name, median)))
        .collect()
}

/// Renders every table.
pub fn markdown(
    records: &[Value],
    settings: &Settings,
    elapsed: Duration,
    end_load: f64,
) -> String {
    let mut out = String::new();
    machine_table(&mut out, records, settings, elapsed, end_load);
    if settings.explore {
        sweep_table(&mut out, records, "explore");
        max_table(&mut out, records, "explore");
        return out;
    }
    footprint_table(&mut out, records);
    sweep_table(&mut out, records, "w2");
    max_table(&mut out, records, "w2");
    calls_table(
        &mut out,
        records,
        "w4-equal",
        "W4: calls at half of A's highest sustained rate",
    );
    calls_table(
        &mut out,
        records,
        "w4-own",
        "W4: calls at half of each design's own highest sustained rate",
    );
    churn_table(&mut out, records);
    herd_table(&mut out, records);
    horizon_table(&mut out, records);
    crate::report_targets::ratios_table(&mut out, records);
    crate::report_targets::targets_table(&mut out, records);
    out
}

fn machine_table(
    out: &mut String,
    records: &[Value],
    settings: &Settings,
    elapsed: Duration,
    end_load: f64,
) {
    let Some(machine) = records.iter().find(|r| r["workload"] == "machine") else {
        return;
    };
    let m = &machine["machine"];
    let _ = writeln!(out, "### Machine and run\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| CPU | {} ({} cores) |",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"]
    );
    let _ = writeln!(out, "| memory | {} GiB |", m["memory_gib"]);
    let _ = writeln!(
        out,
        "| OS | {}, Linux {} |",
        m["os"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "| toolchain | {} |",
        m["rustc"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "| tokio / tokio-util | {} / {} |",
        m["tokio"].as_str().unwrap_or("?"),
        m["tokio_util"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        out,
        "| mode | {}, {} repetition(s), seed {} |",
        if settings.quick { "quick" } else { "full" },
        settings.reps,
        settings.seed
    );
    let _ = writeln!(
        out,
        "| keywheel revision | {} |",
        m["revision"].as_str().unwrap_or("?")
    );
    let all: Vec<&Value> = records.iter().collect();
    if let Some((median, low, high)) = stats(&values(&all, "loadavg")) {
        let _ = writeln!(out, "| load average (1 min) before each run | median {median:.2}, {low:.2}–{high:.2}; {end_load:.2} at the end |");
    }
    if let Some((median, _, high)) = stats(&values(&all, "other_cores")) {
        let _ = writeln!(out, "| CPU used by other processes during each run | median {median:.2} cores, max {high:.2} |");
    }
    let _ = writeln!(out, "| duration | {:.0} s |\n", elapsed.as_secs_f64());
}

fn footprint_table(out: &mut String, records: &[Value]) {
    let names = competitors(records, "w1");
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "### W1: footprint (u64 ids, unit payload)\n");
    let _ = writeln!(out, "Bytes per key: resident memory (VmRSS) after a settle, the same after `malloc_trim`, and live heap bytes counted by the allocator. Load: time to insert every key (keywheel: `put_many`; A: spawn every task).\n");
    let _ = writeln!(out, "| design | keys | RSS B/key | RSS after trim B/key | heap B/key | load s |\n|---|---:|---:|---:|---:|---:|");
    for keys in distinct(records, "w1", "keys") {
        for name in &names {
            let runs = select(records, "w1", name, Some(keys as u64), None);
            if runs.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                count(keys),
                cell(&runs, "rss_bytes_per_key", 0),
                cell(&runs, "rss_trimmed_bytes_per_key", 0),
                cell(&runs, "heap_bytes_per_key", 0),
                cell(&runs, "load_s", 3),
            );
        }
    }
    let _ = writeln!(out);
}

/// Formats a key count as 100k, 1M or 5M.
pub fn count(keys: f64) -> String {
    if keys >= 1e6 {
        format!("{}M", keys / 1e6)
    } else {
        format!("{}k", keys / 1e3)
    }
}

fn sweep_table(out: &mut String, records: &[Value], workload: &str) {
    let names = competitors(records, workload);
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "### W2: rate sweep ({workload}), no-op perform\n");
    let _ = writeln!(out, "Lateness is the start of a perform minus its due time, in ms. A run is sustained when it achieves at least 95% of its demand with p99 at most 100 ms. Stall: the longest round trip of a `contains` probe sent to every timer loop every 10 ms (an upper bound of the longest loop turn, for every design). Turn: keywheel's own measure of its longest shard loop turn in the window. Cores used: CPU time of the benchmark process over the window; other cores: CPU time of every other process on the machine during the run. Cells show the median and the min–max of the repetitions.\n");
    let _ = writeln!(out, "| design | demand | achieved /s | p50 | p99 | p999 | max | CPU s per 1M performs | cores used | other cores | stall ms | turn ms | sustained |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for demand in distinct(records, workload, "demand") {
        for name in &names {
            let runs = select(records, workload, name, None, Some(demand));
            if runs.is_empty() {
                continue;
            }
            let passed = runs.iter().filter(|r| sustained(r)).count();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {passed}/{} |",
                rate(demand),
                cell(&runs, "achieved", 0),
                cell(&runs, "lateness_ms.p50", 1),
                cell(&runs, "lateness_ms.p99", 1),
                cell(&runs, "lateness_ms.p999", 1),
                cell(&runs, "lateness_ms.max", 1),
                cell(&runs, "cpu_s_per_million", 2),
                cell(&runs, "cores_used", 2),
                cell(&runs, "other_cores", 2),
                cell(&runs, "probe_max_ms", 1),
                cell(&runs, "turn_max_ms", 1),
                runs.len(),
            );
        }
    }
    let _ = writeln!(out);
}

fn max_table(out: &mut String, records: &[Value], workload: &str) {
    let max = max_sustained(records, workload);
    if max.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Highest sustained rate ({workload})\n");
    let _ = writeln!(
        out,
        "| design | highest sustained demand (median of repetitions) |\n|---|---:|"
    );
    for name in competitors(records, workload) {
        if let Some(level) = max.get(&name) {
            let shown = if *level > 0.0 {
                rate(*level)
            } else {
                "none".into()
            };
            let _ = writeln!(out, "| {name} | {shown} |");
        }
    }
    let _ = writeln!(out);
}

fn calls_table(out: &mut String, records: &[Value], workload: &str, title: &str) {
    let names = competitors(records, workload);
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "Open-loop calls to random keys at a fixed rate, in ms. Call latency runs from the call's scheduled send time, so it includes the wait for the runtime to start the calling task; round trip runs from that start to the reply.\n");
    let _ = writeln!(out, "| design | demand | achieved /s | perform p99 | perform p999 | call p50 | call p99 | call max | round trip p50 | round trip p99 | failed calls | stall ms | turn ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &names {
        let runs = select(records, workload, name, None, None);
        let demand = median(&runs, "demand").unwrap_or(0.0);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(demand),
            cell(&runs, "achieved", 0),
            cell(&runs, "lateness_ms.p99", 1),
            cell(&runs, "lateness_ms.p999", 1),
            cell(&runs, "call_ms.p50", 2),
            cell(&runs, "call_ms.p99", 2),
            cell(&runs, "call_ms.max", 1),
            cell(&runs, "call_round_trip_ms.p50", 2),
            cell(&runs, "call_round_trip_ms.p99", 2),
            cell(&runs, "calls_failed", 0),
            cell(&runs, "probe_max_ms", 1),
            cell(&runs, "turn_max_ms", 1),
        );
    }
    let _ = writeln!(out);
}

fn churn_table(out: &mut String, records: &[Value]) {
    let names = competitors(records, "w3");
    if names.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "### W3: put/del churn at half of each design's highest sustained rate\n"
    );
    let _ = writeln!(out, "Each pair deletes a random live key and puts a new one. Resident bytes per key before the churn, at its peak, and one second after it; growth is after over before.\n");
    let _ = writeln!(out, "| design | demand | pairs | pair p99 ms | perform p99 ms | RSS before | RSS peak | RSS after | RSS growth % | heap growth % |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &names {
        let runs = select(records, "w3", name, None, None);
        let growth = |path: &str| {
            let scaled: Vec<Value> = values(&runs, path)
                .iter()
                .map(|g| serde_json::json!({ "percent": g * 100.0 }))
                .collect();
            cell(&scaled.iter().collect::<Vec<_>>(), "percent", 1)
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            rate(median(&runs, "demand").unwrap_or(0.0)),
            cell(&runs, "pairs", 0),
            cell(&runs, "pair_ms.p99", 2),
            cell(&runs, "lateness_ms.p99", 1),
            cell(&runs, "rss_before_per_key", 0),
            cell(&runs, "rss_peak_per_key", 0),
            cell(&runs, "rss_after_per_key", 0),
            growth("rss_growth"),
            growth("heap_growth"),
        );
    }
    let _ = writeln!(out);
}

fn herd_table(out: &mut String, records: &[Value]) {
    let names = competitors(records, "w5");
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "### W5: herd, every key due at once\n");
    let _ = writeln!(out, "Drained: seconds from the common due instant until every key has performed. keywheel takes a delay rather than an instant, so its due times spread over the load time.\n");
    let _ = writeln!(out, "| design | keys | load s | drained s | lateness p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|");
    for name in &names {
        let runs = select(records, "w5", name, None, None);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            count(median(&runs, "keys").unwrap_or(0.0)),
            cell(&runs, "load_s", 2),
            cell(&runs, "drained_s", 2),
            cell(&runs, "lateness_ms.p50", 0),
            cell(&runs, "lateness_ms.p99", 0),
            cell(&runs, "lateness_ms.max", 0),
        );
    }
    let _ = writeln!(out);
}

fn horizon_table(out: &mut String, records: &[Value]) {
    let names = competitors(records, "w6");
    if names.is_empty() {
        return;
    }
    let _ = writeln!(out, "### W6: long horizons\n");
    let _ = writeln!(out, "Keys with 1 h, 1 day and 364 day intervals next to 1,000 keys at 100 ms. Early: performs of a long key during the window (must be 0). Next due: keywheel's reported due times read back with `get`, misplaced when not one interval after the put.\n");
    let _ = writeln!(out, "| design | long keys | early performs | control performs | next due checked | misplaced |\n|---|---:|---:|---:|---:|---:|");
    for name in &names {
        let runs = select(records, "w6", name, None, None);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            count(median(&runs, "keys").unwrap_or(0.0)),
            cell(&runs, "early_performs", 0),
            cell(&runs, "performs", 0),
            cell(&runs, "next_due_checked", 0),
            cell(&runs, "next_due_misplaced", 0),
        );
    }
    let _ = writeln!(out);
}

/// Median of a figure for one competitor, workload and optional key count.
pub fn figure(
    records: &[Value],
    workload: &str,
    name: &str,
    keys: Option<u64>,
    path: &str,
) -> Option<f64> {
    median(&select(records, workload, name, keys, None), path)
}
