//! The panels, targets and variables of `dashboards/keywheel.json`, and the
//! PromQL of their expressions.

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};
use serde_json::Value;

/// Path of the dashboard under test.
pub const DASHBOARD_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/keywheel.json");

/// The template variables the panels may use, besides `datasource`.
pub const FILTER_VARIABLES: [&str; 3] = ["job", "instance", "manager"];

/// What Grafana's `$__rate_interval` becomes in the tests. Grafana makes it
/// at least four scrape intervals, and 1 m with its default scrape interval
/// of 15 s.
pub const RATE_INTERVAL: &str = "1m";

/// Reads and parses the dashboard JSON.
pub fn load() -> Value {
    let text = std::fs::read_to_string(DASHBOARD_PATH)
        .unwrap_or_else(|error| panic!("failed to read {DASHBOARD_PATH}: {error}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{DASHBOARD_PATH} is not valid JSON: {error}"))
}

/// Returns every panel, rows included, with the panels nested in collapsed rows.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        panels.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            panels.push(nested);
        }
    }
    panels
}

/// Returns the panels that show data, that is every panel except rows.
pub fn data_panels(dashboard: &Value) -> Vec<&Value> {
    all_panels(dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .collect()
}

/// One target of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    pub panel_id: u64,
    pub panel_title: String,
    pub ref_id: String,
    /// The expression as stored in the dashboard.
    pub raw: String,
    /// The expression with Grafana's macros and variables substituted.
    pub expr: String,
}

impl PanelQuery {
    /// Names the query in failure messages.
    pub fn label(&self) -> String {
        format!(
            "panel {} {:?} target {}",
            self.panel_id, self.panel_title, self.ref_id
        )
    }
}

/// Returns every target expression of every data panel.
pub fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    let mut queries = Vec::new();
    for panel in data_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let raw = target["expr"].as_str().unwrap_or_default().to_string();
            queries.push(PanelQuery {
                panel_id: panel["id"].as_u64().unwrap_or_default(),
                panel_title: panel["title"].as_str().unwrap_or_default().to_string(),
                ref_id: target["refId"].as_str().unwrap_or_default().to_string(),
                expr: substitute(&raw),
                raw,
            });
        }
    }
    queries
}

/// A query variable: its name and its `label_values(selector, label)` query.
#[derive(Debug, Clone)]
pub struct LabelValuesVariable {
    pub name: String,
    /// The selector with the other variables substituted.
    pub selector: String,
    pub label: String,
}

/// Returns the query variables, parsed from their `label_values(...)` text.
///
/// # Panics
///
/// A query variable whose query is not `label_values(selector, label)`.
pub fn label_values_variables(dashboard: &Value) -> Vec<LabelValuesVariable> {
    let mut variables = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| {
                panic!("variable {name}: expected label_values(...), got {query:?}")
            });
        let (selector, label) = inner.rsplit_once(',').unwrap_or_else(|| {
            panic!("variable {name}: label_values needs a selector and a label: {query:?}")
        });
        variables.push(LabelValuesVariable {
            name,
            selector: substitute(selector.trim()),
            label: label.trim().to_string(),
        });
    }
    variables
}

/// Replaces Grafana's macros and the filter variables with values
/// Prometheus accepts: `$__rate_interval` becomes [`RATE_INTERVAL`] and each
/// filter variable `.*`, which matches everything inside a `=~` matcher.
pub fn substitute(expr: &str) -> String {
    let mut text = expr
        .replace("${__rate_interval}", RATE_INTERVAL)
        .replace("$__rate_interval", RATE_INTERVAL);
    for variable in FILTER_VARIABLES {
        text = text
            .replace(&format!("${{{variable}}}"), ".*")
            .replace(&format!("${variable}"), ".*");
    }
    text
}

/// Parses a substituted expression.
///
/// # Errors
///
/// The parser's message when the expression is not valid PromQL.
pub fn parse(expr: &str) -> Result<Expr, String> {
    parser::parse(expr)
}

/// Returns every vector selector in `expr`, those inside range selectors included.
pub fn selectors(expr: &Expr) -> Vec<&VectorSelector> {
    let mut found = Vec::new();
    collect_selectors(expr, &mut found);
    found
}

fn collect_selectors<'a>(expr: &'a Expr, found: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::Aggregate(aggregate) => {
            collect_selectors(&aggregate.expr, found);
            if let Some(param) = &aggregate.param {
                collect_selectors(param, found);
            }
        }
        Expr::Unary(unary) => collect_selectors(&unary.expr, found),
        Expr::Binary(binary) => {
            collect_selectors(&binary.lhs, found);
            collect_selectors(&binary.rhs, found);
        }
        Expr::Paren(paren) => collect_selectors(&paren.expr, found),
        Expr::Subquery(subquery) => collect_selectors(&subquery.expr, found),
        Expr::VectorSelector(selector) => found.push(selector),
        Expr::MatrixSelector(matrix) => found.push(&matrix.vs),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_selectors(arg, found);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Returns the metric name a selector reads, from its name or a `__name__` matcher.
pub fn metric_name(selector: &VectorSelector) -> Option<String> {
    selector.name.clone().or_else(|| {
        all_matchers(selector)
            .find(|matcher| matcher.name == "__name__" && matches!(matcher.op, MatchOp::Equal))
            .map(|matcher| matcher.value.clone())
    })
}

/// Returns every label matcher of a selector, the `or` groups included.
pub fn all_matchers(selector: &VectorSelector) -> impl Iterator<Item = &Matcher> {
    selector
        .matchers
        .matchers
        .iter()
        .chain(selector.matchers.or_matchers.iter().flatten())
}

/// Returns true for a matcher such as `le="1"` or `le=~"1"`: an exact match
/// on an integer bucket bound. Prometheus 3 stores `le="1"` as `"1.0"`, so
/// such a matcher silently matches nothing there.
pub fn is_exact_integer_le(matcher: &Matcher) -> bool {
    matcher.name == "le"
        && !matcher.value.is_empty()
        && matcher.value.bytes().all(|byte| byte.is_ascii_digit())
}

/// Returns the vector selectors of `expr` that are not inside a range
/// selector, that is the series read as instant values.
pub fn instant_selectors(expr: &Expr) -> Vec<&VectorSelector> {
    let mut found = Vec::new();
    collect_selectors(expr, &mut found);
    let mut in_ranges = Vec::new();
    collect_range_selectors(expr, &mut in_ranges);
    found
        .into_iter()
        .filter(|selector| {
            !in_ranges
                .iter()
                .any(|ranged| std::ptr::eq(*ranged, *selector))
        })
        .collect()
}

fn collect_range_selectors<'a>(expr: &'a Expr, found: &mut Vec<&'a VectorSelector>) {
    match expr {
        Expr::MatrixSelector(matrix) => found.push(&matrix.vs),
        Expr::Aggregate(aggregate) => {
            collect_range_selectors(&aggregate.expr, found);
            if let Some(param) = &aggregate.param {
                collect_range_selectors(param, found);
            }
        }
        Expr::Unary(unary) => collect_range_selectors(&unary.expr, found),
        Expr::Binary(binary) => {
            collect_range_selectors(&binary.lhs, found);
            collect_range_selectors(&binary.rhs, found);
        }
        Expr::Paren(paren) => collect_range_selectors(&paren.expr, found),
        Expr::Subquery(subquery) => collect_range_selectors(&subquery.expr, found),
        Expr::Call(call) => {
            for arg in &call.args.args {
                collect_range_selectors(arg, found);
            }
        }
        Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

/// Returns, for each `histogram_quantile` call in `expr`, the labels of the
/// `by (...)` clause of its second argument, or `None` when that argument
/// is not an aggregation with `by`.
pub fn quantile_groupings(expr: &Expr) -> Vec<Option<Vec<String>>> {
    let mut found = Vec::new();
    collect_quantile_groupings(expr, &mut found);
    found
}

fn collect_quantile_groupings(expr: &Expr, found: &mut Vec<Option<Vec<String>>>) {
    match expr {
        Expr::Call(call) => {
            if call.func.name == "histogram_quantile" {
                let grouping = call.args.args.get(1).and_then(|arg| by_labels(arg));
                found.push(grouping);
            }
            for arg in &call.args.args {
                collect_quantile_groupings(arg, found);
            }
        }
        Expr::Aggregate(aggregate) => {
            collect_quantile_groupings(&aggregate.expr, found);
            if let Some(param) = &aggregate.param {
                collect_quantile_groupings(param, found);
            }
        }
        Expr::Unary(unary) => collect_quantile_groupings(&unary.expr, found),
        Expr::Binary(binary) => {
            collect_quantile_groupings(&binary.lhs, found);
            collect_quantile_groupings(&binary.rhs, found);
        }
        Expr::Paren(paren) => collect_quantile_groupings(&paren.expr, found),
        Expr::Subquery(subquery) => collect_quantile_groupings(&subquery.expr, found),
        Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

fn by_labels(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Paren(paren) => by_labels(&paren.expr),
        Expr::Aggregate(aggregate) => match &aggregate.modifier {
            Some(LabelModifier::Include(labels)) => Some(labels.labels.clone()),
            _ => None,
        },
        _ => None,
    }
}
