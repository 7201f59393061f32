//! PNG plots of a run: memory per key against key count, the rate sweep,
//! and lateness distributions per design.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use serde_json::Value;

use crate::report::{count, rate};

/// Fonts tried for the plots' text, in order. plotters draws text with a
/// font registered at run time, so a machine without any of these gets no plots.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const SIZE: (u32, u32) = (960, 600);

type PlotResult<T> = Result<T, Box<dyn std::error::Error>>;

fn register_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .ok_or_else(|| format!("no font found at {}", FONT_PATHS.join(", ")))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font file could not be parsed".to_string())
}

/// Draws every plot the records allow into `dir`; returns the file names.
pub fn draw_all(records: &[Value], dir: &Path) -> Result<Vec<String>, String> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut attempt = |name: &str, result: PlotResult<bool>| match result {
        Ok(true) => files.push(name.to_string()),
        Ok(false) => {}
        Err(error) => eprintln!("plot {name} failed: {error}"),
    };
    attempt(
        "footprint.png",
        footprint(records, &dir.join("footprint.png")),
    );
    attempt("sweep.png", sweep(records, &dir.join("sweep.png")));
    attempt(
        "lateness_half_of_a.png",
        lateness(
            records,
            "w4-equal",
            None,
            "Perform lateness at half of A's highest sustained rate",
            &dir.join("lateness_half_of_a.png"),
        ),
    );
    if let Some(level) = busiest_common_level(records) {
        let title = format!("Perform lateness at {} demanded", rate(level));
        attempt(
            "lateness_sweep.png",
            lateness(
                records,
                "w2",
                Some(level),
                &title,
                &dir.join("lateness_sweep.png"),
            ),
        );
    }
    Ok(files)
}

fn names(records: &[Value], workload: &str) -> Vec<String> {
    let order = ["A", "A0", "B", "C", "C-best", "C-nostagger"];
    order
        .iter()
        .filter(|name| {
            records
                .iter()
                .any(|r| r["workload"] == workload && r["competitor"] == **name)
        })
        .map(|name| name.to_string())
        .collect()
}

/// The color of a design, the same in every plot.
fn color_of(name: &str) -> RGBColor {
    let order = ["A", "A0", "B", "C", "C-best", "C-nostagger"];
    color(order.iter().position(|o| *o == name).unwrap_or(order.len()))
}

fn color(index: usize) -> RGBColor {
    let palette = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(127, 127, 127),
    ];
    palette[index % palette.len()]
}

fn ok_runs<'a>(
    records: &'a [Value],
    workload: &str,
    name: &str,
) -> impl Iterator<Item = &'a Value> {
    let (workload, name) = (workload.to_string(), name.to_string());
    records
        .iter()
        .filter(move |r| r["workload"] == workload.as_str() && r["competitor"] == name.as_str())
        .filter(|r| r.get("error").is_none())
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Median of a figure per distinct value of `x_field`, sorted by x.
fn series(
    records: &[Value],
    workload: &str,
    name: &str,
    x_field: &str,
    y: impl Fn(&Value) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut xs: Vec<f64> = ok_runs(records, workload, name)
        .filter_map(|r| r[x_field].as_f64())
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    xs.into_iter()
        .filter_map(|x| {
            let ys = ok_runs(records, workload, name)
                .filter(|r| r[x_field].as_f64() == Some(x))
                .filter_map(&y)
                .collect();
            median(ys).map(|value| (x, value))
        })
        .collect()
}

fn footprint(records: &[Value], path: &Path) -> PlotResult<bool> {
    let names = names(records, "w1");
    let all: Vec<Vec<(f64, f64)>> = names
        .iter()
        .map(|name| {
            series(records, "w1", name, "keys", |r| {
                r["rss_bytes_per_key"].as_f64()
            })
        })
        .collect();
    let points: Vec<&(f64, f64)> = all.iter().flatten().collect();
    if points.is_empty() {
        return Ok(false);
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.5;
    let x_min = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 1.5;
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 2.0;
    let y_min = points
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .max(1.0)
        / 2.0;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Resident bytes per key (u64 id, unit payload)",
            ("sans-serif", 24),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("keys")
        .y_desc("RSS bytes per key")
        .x_label_formatter(&|x| count(*x))
        .draw()?;
    for (name, line) in names.iter().zip(&all) {
        let style = color_of(name).stroke_width(2);
        chart
            .draw_series(LineSeries::new(line.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart.draw_series(
            line.iter()
                .map(|&point| Circle::new(point, 4, color_of(name).filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

fn sweep(records: &[Value], path: &Path) -> PlotResult<bool> {
    let names = names(records, "w2");
    let achieved: Vec<Vec<(f64, f64)>> = names
        .iter()
        .map(|name| series(records, "w2", name, "demand", |r| r["achieved"].as_f64()))
        .collect();
    let p99: Vec<Vec<(f64, f64)>> = names
        .iter()
        .map(|name| {
            series(records, "w2", name, "demand", |r| {
                r["lateness_ms"]["p99"].as_f64()
            })
        })
        .collect();
    let points: Vec<&(f64, f64)> = achieved.iter().flatten().collect();
    if points.is_empty() {
        return Ok(false);
    }
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let y_max = points.iter().map(|p| p.1).fold(x_max, f64::max) * 1.05;
    let p99_max = p99.iter().flatten().map(|p| p.1).fold(10.0, f64::max) * 2.0;

    let root = BitMapBackend::new(path, (SIZE.0 * 2, SIZE.1)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(SIZE.0);

    let mut rates = ChartBuilder::on(&left)
        .caption(
            "Achieved against demanded performs/s (1M keys)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    rates
        .configure_mesh()
        .x_desc("demanded performs/s")
        .y_desc("achieved performs/s")
        .x_label_formatter(&|x| rate(*x))
        .y_label_formatter(&|y| rate(*y))
        .draw()?;
    rates.draw_series(LineSeries::new(
        vec![(0.0, 0.0), (x_max, x_max)],
        BLACK.mix(0.3),
    ))?;
    for (name, line) in names.iter().zip(&achieved) {
        let style = color_of(name).stroke_width(2);
        rates
            .draw_series(LineSeries::new(line.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        rates.draw_series(
            line.iter()
                .map(|&point| Circle::new(point, 4, color_of(name).filled())),
        )?;
    }
    rates
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    let mut tails = ChartBuilder::on(&right)
        .caption(
            "Lateness p99 against demanded performs/s",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, (0.5..p99_max).log_scale())?;
    tails
        .configure_mesh()
        .x_desc("demanded performs/s")
        .y_desc("lateness p99, ms")
        .x_label_formatter(&|x| rate(*x))
        .draw()?;
    for (name, line) in names.iter().zip(&p99) {
        let style = color_of(name).stroke_width(2);
        tails
            .draw_series(LineSeries::new(line.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        tails.draw_series(
            line.iter()
                .map(|&point| Circle::new(point, 4, color_of(name).filled())),
        )?;
    }
    tails
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

/// The highest sweep level at which A and C both ran.
fn busiest_common_level(records: &[Value]) -> Option<f64> {
    let levels = |name: &str| -> Vec<f64> {
        ok_runs(records, "w2", name)
            .filter_map(|r| r["demand"].as_f64())
            .collect()
    };
    let (a, c) = (levels("A"), levels("C"));
    a.into_iter()
        .filter(|level| c.contains(level))
        .max_by(f64::total_cmp)
}

/// Percentile curves of one workload: per design the repetition with the median p99.
fn lateness(
    records: &[Value],
    workload: &str,
    level: Option<f64>,
    title: &str,
    path: &Path,
) -> PlotResult<bool> {
    let mut curves = Vec::new();
    for name in names(records, workload) {
        let mut runs: Vec<&Value> = ok_runs(records, workload, &name)
            .filter(|r| level.is_none_or(|l| r["demand"].as_f64() == Some(l)))
            .filter(|r| r["lateness_ms"]["p99"].is_number())
            .collect();
        if runs.is_empty() {
            continue;
        }
        runs.sort_by(|x, y| {
            let p99 = |r: &Value| r["lateness_ms"]["p99"].as_f64().unwrap_or(0.0);
            p99(x).total_cmp(&p99(y))
        });
        let run = runs[runs.len() / 2];
        let points: Vec<(f64, f64)> = run["lateness_curve"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|point| Some((point[0].as_f64()?, point[1].as_f64()?)))
            .filter(|(quantile, _)| *quantile < 1.0)
            .map(|(quantile, ms)| (1.0 / (1.0 - quantile), ms.max(0.01)))
            .collect();
        if !points.is_empty() {
            curves.push((name.clone(), points));
        }
    }
    if curves.is_empty() {
        return Ok(false);
    }
    let x_max = curves
        .iter()
        .flat_map(|c| &c.1)
        .map(|p| p.0)
        .fold(10.0, f64::max)
        * 1.5;
    let y_max = curves
        .iter()
        .flat_map(|c| &c.1)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 2.0;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1.0..x_max).log_scale(), (0.1..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("lateness, ms")
        .x_label_formatter(&|x| format!("{}%", trim_percent(100.0 * (1.0 - 1.0 / x))))
        .draw()?;
    for (name, points) in &curves {
        let style = color_of(name).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(true)
}

fn trim_percent(percent: f64) -> String {
    let text = format!("{percent:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
