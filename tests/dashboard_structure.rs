//! The shape of `dashboards/keywheel.json`, checked without a server:
//! layout, data source references, units, descriptions, variables and the
//! PromQL conventions of every panel.

mod dashboard_support;

use std::collections::BTreeSet;

use dashboard_support::dashboard::{
    self, all_panels, data_panels, instant_selectors, is_exact_integer_le, metric_name,
    panel_queries, quantile_groupings, selectors, FILTER_VARIABLES,
};
use serde_json::{json, Value};

/// The panels' layout grid is 24 columns wide.
const GRID_COLUMNS: u64 = 24;

/// Rows in the order the dashboard shows them, below the top row of stats.
const ROWS: [&str; 8] = [
    "Throughput",
    "Lateness",
    "Worker pool",
    "Shards",
    "HTTP",
    "Watchdog",
    "Store",
    "Process",
];

fn datasource_variable() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

#[test]
fn top_level_fields() {
    let dashboard = dashboard::load();

    assert_eq!(dashboard["schemaVersion"], 41, "schemaVersion");
    assert_eq!(dashboard["uid"], "keywheel-overview", "a stable uid");
    assert!(dashboard["id"].is_null(), "id must be null for import");
    assert!(
        dashboard["refresh"].is_string(),
        "refresh must be a string: {}",
        dashboard["refresh"]
    );
    assert_eq!(dashboard["graphTooltip"], 1, "shared crosshair");
    assert!(
        dashboard.get("__inputs").is_none(),
        "__inputs would leave ${{DS_...}} unresolved under file provisioning"
    );
}

#[test]
fn template_variables() {
    let dashboard = dashboard::load();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list is an array");
    let by_name = |name: &str| {
        variables
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("variable {name} is missing"))
    };

    let datasource = by_name("datasource");
    assert_eq!(datasource["type"], "datasource", "datasource variable type");
    assert_eq!(
        datasource["query"], "prometheus",
        "datasource variable query"
    );

    for name in FILTER_VARIABLES {
        let variable = by_name(name);
        assert_eq!(variable["type"], "query", "{name}: type");
        assert_eq!(
            variable["datasource"],
            datasource_variable(),
            "{name}: datasource"
        );
        assert_eq!(variable["includeAll"], true, "{name}: includeAll");
        assert_eq!(variable["allValue"], ".*", "{name}: allValue");
        let query = variable["query"]["query"].as_str().unwrap_or_default();
        assert!(
            query.starts_with("label_values("),
            "{name}: query {query:?} is not label_values(...)"
        );
        assert_eq!(
            variable["definition"], query,
            "{name}: definition and query differ"
        );
    }

    let parsed = dashboard::label_values_variables(&dashboard);
    assert_eq!(parsed.len(), FILTER_VARIABLES.len(), "query variables");
    for variable in parsed {
        let expr = dashboard::parse(&variable.selector).unwrap_or_else(|error| {
            panic!(
                "variable {}: selector {:?} does not parse: {error}",
                variable.name, variable.selector
            )
        });
        assert!(
            matches!(expr, promql_parser::parser::Expr::VectorSelector(_)),
            "variable {}: {:?} is not a plain selector",
            variable.name,
            variable.selector
        );
    }
}

#[test]
fn panel_ids_unique() {
    let dashboard = dashboard::load();
    let mut seen = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {:?} has no numeric id", panel["title"]));
        assert!(seen.insert(id), "panel id {id} is used twice");
    }
}

#[test]
fn grid_positions_do_not_overlap() {
    let dashboard = dashboard::load();
    let boxes: Vec<(String, [u64; 4])> = all_panels(&dashboard)
        .into_iter()
        .map(|panel| {
            let grid = &panel["gridPos"];
            let field = |key: &str| {
                grid[key].as_u64().unwrap_or_else(|| {
                    panic!("panel {:?}: gridPos.{key} is missing", panel["title"])
                })
            };
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            (title, [field("x"), field("y"), field("w"), field("h")])
        })
        .collect();

    for (title, [x, _, w, h]) in &boxes {
        assert!(*w > 0, "panel {title:?} has a gridPos of width 0");
        assert!(*h > 0, "panel {title:?} has a gridPos of height 0");
        assert!(
            x + w <= GRID_COLUMNS,
            "panel {title:?} ends at column {}, past {GRID_COLUMNS}",
            x + w
        );
    }
    for (index, (first, [x1, y1, w1, h1])) in boxes.iter().enumerate() {
        for (second, [x2, y2, w2, h2]) in &boxes[index + 1..] {
            let apart = x1 + w1 <= *x2 || x2 + w2 <= *x1 || y1 + h1 <= *y2 || y2 + h2 <= *y1;
            assert!(apart, "panels {first:?} and {second:?} overlap");
        }
    }
}

#[test]
fn datasource_references_use_variable() {
    let dashboard = dashboard::load();
    let mut references = Vec::new();
    collect_datasources(&dashboard["panels"], "panels", &mut references);
    collect_datasources(&dashboard["templating"], "templating", &mut references);
    collect_datasources(&dashboard["annotations"], "annotations", &mut references);

    assert!(!references.is_empty(), "no datasource references found");
    for (path, reference) in references {
        assert_eq!(
            *reference,
            datasource_variable(),
            "{path}: datasource must be the ${{datasource}} variable"
        );
    }

    for panel in data_panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            panel.get("datasource").is_some(),
            "panel {title}: no datasource"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert!(
                target.get("datasource").is_some(),
                "panel {title}: target {} has no datasource",
                target["refId"]
            );
        }
    }
}

fn collect_datasources<'a>(value: &'a Value, path: &str, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                if key == "datasource" {
                    found.push((child_path, child));
                } else {
                    collect_datasources(child, &child_path, found);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                collect_datasources(child, &format!("{path}[{index}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn panels_have_unit_and_description() {
    let dashboard = dashboard::load();
    for panel in data_panels(&dashboard) {
        let title = &panel["title"];
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "panel {title}: no unit");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(
            description.len() >= 20,
            "panel {title}: description {description:?} is missing or too short"
        );
        assert!(
            !panel["targets"].as_array().is_none_or(Vec::is_empty),
            "panel {title}: no targets"
        );
    }
}

#[test]
fn layout_stats_then_rows() {
    let dashboard = dashboard::load();
    let top: Vec<&Value> = all_panels(&dashboard)
        .into_iter()
        .filter(|panel| panel["gridPos"]["y"] == 0)
        .collect();
    let top_titles: Vec<&str> = top
        .iter()
        .map(|panel| panel["title"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        top_titles,
        [
            "Entries",
            "Performs/s",
            "Lateness p99",
            "Oldest overdue",
            "Error ratio"
        ],
        "top row"
    );
    assert!(
        top.iter().all(|panel| panel["type"] == "stat"),
        "the top row holds stat panels"
    );

    let rows: Vec<&str> = all_panels(&dashboard)
        .into_iter()
        .filter(|panel| panel["type"] == "row")
        .map(|panel| panel["title"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(rows, ROWS, "rows in order");
}

#[test]
fn lateness_heatmap_uses_buckets() {
    let dashboard = dashboard::load();
    let heatmaps: Vec<&Value> = data_panels(&dashboard)
        .into_iter()
        .filter(|panel| panel["type"] == "heatmap")
        .collect();
    assert!(!heatmaps.is_empty(), "no heatmap panel");

    for panel in heatmaps {
        let title = &panel["title"];
        assert_eq!(
            panel["options"]["calculate"], false,
            "heatmap {title}: calculate"
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["format"], "heatmap", "heatmap {title}: format");
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("_bucket") && expr.contains("by (le)"),
                "heatmap {title}: {expr:?} is not a sum by (le) over buckets"
            );
        }
    }
}

#[test]
fn expressions_parse_after_substitution() {
    let dashboard = dashboard::load();
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 30, "only {} queries found", queries.len());

    for query in &queries {
        assert!(
            !query.expr.contains('$'),
            "{}: unknown variable left in {:?}",
            query.label(),
            query.expr
        );
        if let Err(error) = dashboard::parse(&query.expr) {
            panic!("{}: {error}\n{}", query.label(), query.expr);
        }
    }
}

#[test]
fn filter_variables_only_in_regex_matchers() {
    let dashboard = dashboard::load();
    for query in panel_queries(&dashboard) {
        for variable in FILTER_VARIABLES {
            let quoted = format!("\"${variable}\"");
            let mut rest = query.raw.as_str();
            while let Some(found) = rest.find(&quoted) {
                let before = rest[..found].trim_end();
                assert!(
                    before.ends_with("=~"),
                    "{}: ${variable} must be matched with =~ (multi-value and All): {:?}",
                    query.label(),
                    query.raw
                );
                rest = &rest[found + quoted.len()..];
            }
        }
    }
}

#[test]
fn ranges_use_rate_interval() {
    let dashboard = dashboard::load();
    for query in panel_queries(&dashboard) {
        let mut rest = query.raw.as_str();
        while let Some(open) = rest.find('[') {
            let close = rest[open..]
                .find(']')
                .unwrap_or_else(|| panic!("{}: unclosed [", query.label()));
            let range = &rest[open..open + close + 1];
            assert_eq!(
                range,
                "[$__rate_interval]",
                "{}: ranges must be [$__rate_interval]",
                query.label()
            );
            rest = &rest[open + close + 1..];
        }
    }
}

#[test]
fn counters_and_buckets_go_through_ranges() {
    let dashboard = dashboard::load();
    for query in panel_queries(&dashboard) {
        let expr = dashboard::parse(&query.expr).expect("checked by another test");
        for selector in instant_selectors(&expr) {
            let name = metric_name(selector).unwrap_or_default();
            let cumulative = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.ends_with(suffix));
            assert!(
                !cumulative,
                "{}: {name} is cumulative and must go through rate() or increase()",
                query.label()
            );
        }
    }
}

#[test]
fn quantiles_keep_le() {
    let dashboard = dashboard::load();
    let mut quantiles = 0;
    for query in panel_queries(&dashboard) {
        let expr = dashboard::parse(&query.expr).expect("checked by another test");
        for grouping in quantile_groupings(&expr) {
            quantiles += 1;
            let labels = grouping.unwrap_or_else(|| {
                panic!(
                    "{}: histogram_quantile needs sum by (le, ...) (...)",
                    query.label()
                )
            });
            assert!(
                labels.iter().any(|label| label == "le"),
                "{}: by ({}) drops le",
                query.label(),
                labels.join(", ")
            );
        }
    }
    assert!(quantiles > 0, "no histogram_quantile found");
}

#[test]
fn no_exact_match_on_integer_le() {
    let dashboard = dashboard::load();
    for query in panel_queries(&dashboard) {
        let expr = dashboard::parse(&query.expr).expect("checked by another test");
        for selector in selectors(&expr) {
            for matcher in dashboard::all_matchers(selector) {
                assert!(
                    !is_exact_integer_le(matcher),
                    "{}: le=\"{}\" matches nothing once Prometheus 3 stores it as {}.0",
                    query.label(),
                    matcher.value,
                    matcher.value
                );
            }
        }
    }
}

#[test]
fn integer_le_check_catches_examples() {
    for (expr, flagged) in [
        (r#"x_bucket{le="1"}"#, true),
        (r#"x_bucket{le=~"10"}"#, true),
        (r#"x_bucket{le="0.1"}"#, false),
        (r#"x_bucket{le=~"1([.]0)?"}"#, false),
    ] {
        let parsed = dashboard::parse(expr).expect("example parses");
        let found = selectors(&parsed)
            .into_iter()
            .flat_map(dashboard::all_matchers)
            .any(is_exact_integer_le);
        assert_eq!(found, flagged, "{expr}");
    }
}
