//! Reading corral's `/metrics` in tests with one parser, nom-openmetrics
//! (the one corral itself reads workers' metrics with): a sample is found
//! by its name and its set of labels, in any order, and a name or label
//! that does not exist is told apart from a sample whose value is zero.

use std::collections::BTreeMap;

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a Prometheus text exposition; panics (failing the test)
/// when the text is not one.
pub fn samples(text: &str) -> Vec<Sample> {
    // The parser takes no blank lines and no comments but HELP and TYPE.
    let mut cleaned: String = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('#') || l.starts_with("# HELP ") || l.starts_with("# TYPE "))
        .flat_map(|l| [l, "\n"])
        .collect();
    if cleaned.is_empty() {
        cleaned.push('\n');
    }
    let families = match nom_openmetrics::parser::prometheus(&cleaned) {
        Ok((_, families)) => families,
        Err(e) => panic!("not a Prometheus text exposition ({e}):\n{text}"),
    };
    families
        .iter()
        .flat_map(|family| &family.samples)
        .map(|s| Sample {
            name: s.name().to_string(),
            labels: s
                .labels()
                .iter()
                .map(|l| (l.name.to_string(), l.value.clone()))
                .collect(),
            value: s.number(),
        })
        .collect()
}

/// The value of the sample of `name` with exactly these labels (in any
/// order), or None when there is no such sample.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(text)
        .into_iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// The value of `series` (a metric name with its labels, as /metrics writes
/// them: `corral_backend_up{backend="worker-0"}`) in an exposition, or None
/// when there is no such sample.
pub fn try_metric_value(text: &str, series: &str) -> Option<f64> {
    let wanted = series_of(series);
    samples(text)
        .into_iter()
        .find(|s| s.name == wanted.name && s.labels == wanted.labels)
        .map(|s| s.value)
}

/// As [`try_metric_value`], but a missing sample (a typo, a wrong label) is
/// an error: it panics and lists the samples of that metric that do exist.
pub fn metric_value(text: &str, series: &str) -> f64 {
    try_metric_value(text, series).unwrap_or_else(|| {
        let name = series_of(series).name;
        let existing: Vec<String> = samples(text)
            .into_iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{} {:?} = {}", s.name, s.labels, s.value))
            .collect();
        if existing.is_empty() {
            panic!("no series {series} in /metrics: there is no metric {name} at all")
        }
        panic!(
            "no series {series} in /metrics; the {name} series are:\n  {}",
            existing.join("\n  ")
        )
    })
}

/// `series` read as a sample (name and labels) by the same parser.
fn series_of(series: &str) -> Sample {
    samples(&format!("{series} 0\n"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{series:?} is not a series name"))
}
