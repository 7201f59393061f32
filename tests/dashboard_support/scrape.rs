//! A small reader of the Prometheus text format, enough to check the
//! families, labels and help lines that `/metrics` returns.

use std::collections::{BTreeMap, BTreeSet};

/// One metric family: its `# TYPE`, and whether `# HELP` came before its first sample.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    /// Set when a sample of the family appeared before its `# HELP` line.
    pub sample_before_help: bool,
    pub samples: usize,
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format.
    ///
    /// # Panics
    ///
    /// A line that is neither a comment nor a valid sample.
    pub fn parse(text: &str) -> Scrape {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                families.entry(name.to_string()).or_default().help = Some(help.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                families.entry(name.to_string()).or_default().kind = kind.to_string();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }

            let sample =
                parse_sample(line).unwrap_or_else(|problem| panic!("{problem} in line {line:?}"));
            let family_name = family_of(&families, &sample.name);
            let family = families.entry(family_name).or_default();
            if family.help.is_none() {
                family.sample_before_help = true;
            }
            family.samples += 1;
            samples.push(sample);
        }
        Scrape {
            text: text.to_string(),
            families,
            samples,
        }
    }

    /// Returns the names of all sample lines, `_bucket`, `_sum` and `_count` included.
    pub fn series_names(&self) -> BTreeSet<String> {
        self.samples
            .iter()
            .map(|sample| sample.name.clone())
            .collect()
    }

    /// Returns the label names of the samples called `name`.
    pub fn label_names(&self, name: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .flat_map(|sample| sample.labels.iter().map(|(label, _)| label.clone()))
            .collect()
    }

    /// Returns the sum of the samples called `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|sample| sample.name == name)
            .filter(|sample| {
                labels.iter().all(|(key, value)| {
                    sample
                        .labels
                        .iter()
                        .any(|(label, found)| label == key && found == value)
                })
            })
            .map(|sample| sample.value)
            .sum()
    }
}

/// Returns the family a sample belongs to: its own name, or the name
/// without a histogram or summary suffix when that family is declared.
fn family_of(families: &BTreeMap<String, Family>, sample_name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample_name.strip_suffix(suffix) {
            if families
                .get(base)
                .is_some_and(|family| matches!(family.kind.as_str(), "histogram" | "summary"))
            {
                return base.to_string();
            }
        }
    }
    sample_name.to_string()
}

/// Parses `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value after the metric name".to_string())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];

    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remainder;
    }

    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| "missing sample value".to_string())?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .map_err(|error| format!("invalid sample value {other:?} ({error})"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Label pairs of one sample, in the order of the line.
type Labels = Vec<(String, String)>;

/// Parses the labels after `{` and returns them with the text after `}`.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (label, after_name) = rest
            .split_once("=\"")
            .ok_or_else(|| "a label without =\"".to_string())?;

        let mut value = String::new();
        let mut chars = after_name.char_indices();
        let end = loop {
            match chars.next() {
                Some((index, '"')) => break index,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err("a label value ends in a backslash".to_string()),
                },
                Some((_, other)) => value.push(other),
                None => return Err("an unterminated label value".to_string()),
            }
        };
        labels.push((label.to_string(), value));
        rest = &after_name[end + 1..];
    }
}
