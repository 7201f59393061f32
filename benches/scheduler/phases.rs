//! The workload phases of a run: which competitor runs which workload, at
//! which size and rate, in which repetition.

use std::collections::BTreeMap;
use std::time::Duration;

use keywheel::DEFAULT_WORKERS;

use crate::competitors::Design;
use crate::plan::{
    rotated, run_one, spec, sustained, Entrant, Recorder, Settings, COLLAPSED_SHARE, TASKS_MAX_KEYS,
};

pub fn footprint(recorder: &mut Recorder, settings: &Settings) {
    let entrants = settings.pick(&["A", "A0", "B", "C", "C-best"]);
    for rep in 0..settings.reps {
        for &keys in &settings.footprint_keys {
            for entrant in rotated(&entrants, rep) {
                let tasks = matches!(entrant.design, Design::Tasks { .. });
                if tasks && keys > TASKS_MAX_KEYS {
                    continue;
                }
                // Shard count barely changes memory: C-best runs at one size only.
                if entrant.name == "C-best" && keys != settings.keys {
                    continue;
                }
                let mut spec = spec(settings, "w1", entrant.design, keys);
                spec.window = settings.settle;
                run_one(recorder, settings, &entrant, "w1", rep, spec);
            }
        }
    }
}

/// Runs the rate sweep; returns each entrant's highest sustained rate
/// (the median over repetitions of the highest level it sustained).
pub fn sweep(
    recorder: &mut Recorder,
    settings: &Settings,
    entrants: &[Entrant],
    label: &str,
) -> BTreeMap<String, f64> {
    let mut best: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for rep in 0..settings.reps {
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let mut stopped: Vec<String> = Vec::new();
        let mut highest: BTreeMap<String, f64> = BTreeMap::new();
        for &level in &settings.levels {
            for entrant in rotated(entrants, rep) {
                let name = entrant.name.clone();
                if name == "C-nostagger" && !settings.nostagger_levels.contains(&level) {
                    continue;
                }
                if stopped.contains(&name) {
                    continue;
                }
                let mut spec = spec(settings, "w2", entrant.design, settings.keys);
                spec.demand = level;
                spec.probe = !matches!(entrant.design, Design::Tasks { .. });
                let Some(record) = run_one(recorder, settings, &entrant, label, rep, spec) else {
                    stopped.push(name);
                    continue;
                };
                if sustained(&record) {
                    failures.insert(name.clone(), 0);
                    highest.insert(name.clone(), level);
                    continue;
                }
                let count = failures.entry(name.clone()).or_insert(0);
                *count += 1;
                let achieved = record["achieved"].as_f64().unwrap_or(0.0);
                let demand = record["demand_exact"].as_f64().unwrap_or(level);
                if *count >= 2 || achieved < COLLAPSED_SHARE * demand {
                    stopped.push(name);
                }
            }
        }
        for entrant in entrants {
            best.entry(entrant.name.clone())
                .or_default()
                .push(highest.get(&entrant.name).copied().unwrap_or(0.0));
        }
    }
    best.into_iter()
        .map(|(name, mut levels)| {
            levels.sort_by(f64::total_cmp);
            (name, levels[levels.len() / 2])
        })
        .collect()
}

/// Half an entrant's highest sustained rate, or half the lowest sweep
/// level when it sustained none.
fn half_load(settings: &Settings, max: &BTreeMap<String, f64>, name: &str) -> f64 {
    let lowest = settings.levels.first().copied().unwrap_or(100e3);
    let rate = max
        .get(name)
        .copied()
        .filter(|rate| *rate > 0.0)
        .unwrap_or(lowest);
    rate / 2.0
}

pub fn calls(recorder: &mut Recorder, settings: &Settings, max: &BTreeMap<String, f64>) {
    // Everyone at half of A's highest sustained rate, then keywheel at half its own.
    let equal = settings.pick(&["A", "B", "C"]);
    let equal_demand = half_load(settings, max, "A");
    let own = settings.pick(&["C", "C-best"]);
    for rep in 0..settings.reps {
        for entrant in rotated(&equal, rep) {
            let mut spec = spec(settings, "w4", entrant.design, settings.keys);
            spec.demand = equal_demand;
            spec.rate = settings.call_rate;
            spec.warmup = settings.warmup * 2;
            run_one(recorder, settings, &entrant, "w4-equal", rep, spec);
        }
        for entrant in rotated(&own, rep) {
            let mut spec = spec(settings, "w4", entrant.design, settings.keys);
            spec.demand = half_load(settings, max, &entrant.name);
            spec.rate = settings.call_rate;
            spec.warmup = settings.warmup * 2;
            spec.probe = true;
            run_one(recorder, settings, &entrant, "w4-own", rep, spec);
        }
    }
}

pub fn churn(recorder: &mut Recorder, settings: &Settings, max: &BTreeMap<String, f64>) {
    let entrants = settings.pick(&["A", "B", "C"]);
    for rep in 0..settings.reps {
        for entrant in rotated(&entrants, rep) {
            let mut spec = spec(settings, "w3", entrant.design, settings.keys);
            spec.demand = half_load(settings, max, &entrant.name);
            spec.rate = settings.churn_rate;
            spec.warmup = settings.warmup * 3;
            run_one(recorder, settings, &entrant, "w3", rep, spec);
        }
    }
}

pub fn herd(recorder: &mut Recorder, settings: &Settings) {
    let entrants = settings.pick(&["A", "B", "C", "C-best"]);
    for rep in 0..settings.reps {
        for entrant in rotated(&entrants, rep) {
            let mut spec = spec(settings, "w5", entrant.design, settings.herd_keys);
            spec.warmup = settings.herd_after;
            run_one(recorder, settings, &entrant, "w5", rep, spec);
        }
    }
}

pub fn horizon(recorder: &mut Recorder, settings: &Settings) {
    let entrants = settings.pick(&["A", "B", "C"]);
    for rep in 0..settings.reps {
        for entrant in rotated(&entrants, rep) {
            let mut spec = spec(settings, "w6", entrant.design, settings.horizon_keys);
            spec.window = Duration::from_secs(2).min(settings.window * 2);
            run_one(recorder, settings, &entrant, "w6", rep, spec);
        }
    }
}

/// Sweeps keywheel settings at the top rates, to choose C-best.
pub fn explore(recorder: &mut Recorder, settings: &Settings) {
    let mut entrants = Vec::new();
    for shards in [8, 16, 32, 64, 128] {
        for workers in [2, DEFAULT_WORKERS] {
            entrants.push(Entrant {
                name: format!("C s{shards} w{workers}"),
                design: Design::Wheel {
                    shards,
                    workers,
                    stagger: true,
                },
            });
        }
    }
    let mut explore_settings = settings.clone();
    if !settings.quick {
        explore_settings.levels = vec![1.5e6, 2e6, 2.5e6, 3e6];
    }
    sweep(recorder, &explore_settings, &entrants, "explore");
}
