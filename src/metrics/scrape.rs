//! The workers' own metrics (`workers.metrics_path`): on each scrape of
//! corral's `/metrics`, every up worker's `http://HOST:PORT<path>` (in `fd`
//! mode: the front end, from the worker's probe address) is fetched
//! concurrently with a short timeout, parsed (nom-openmetrics),
//! and served with a `worker="<id>"` label added, families merged across
//! workers (one HELP and TYPE per name). A worker that is slow, down or
//! serves something unparsable is skipped and counted in
//! `corral_worker_metrics_scrape_errors_total{backend}`; it never breaks
//! corral's own metrics. Families named `corral_*`, or by the name of
//! one of corral's own families (its `process_*` ones), are left out: one
//! name, one owner.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use nom_openmetrics::{Family, MetricDescriptor, MetricType, Sample};
use tokio::task::JoinSet;

use crate::reach::Reach;

/// How long one worker may take to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// The most a worker's answer may weigh.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The most series one worker's answer contributes; the rest are skipped.
pub const MAX_SERIES: usize = 10_000;

/// One worker to scrape.
pub struct Target {
    /// `worker-<id>`, for the error counter.
    pub label: String,
    /// The id, for the `worker` label.
    pub id: usize,
    /// How the worker is reached: its own address, or (handed) through
    /// the front end.
    pub reach: Reach,
}

/// What one worker answered: its text, or why there is none.
pub type Scraped = (Target, Result<String, String>);

/// Fetches every target's metrics at once.
pub async fn scrape(targets: Vec<Target>, path: &str) -> Vec<Scraped> {
    let mut fetches = JoinSet::new();
    for target in targets {
        let path = path.to_string();
        fetches.spawn(async move {
            let fetched = tokio::time::timeout(SCRAPE_TIMEOUT, fetch(target.reach, &path))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {SCRAPE_TIMEOUT:?}")));
            (target, fetched)
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = fetches.join_next().await {
        if let Ok(answer) = done {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(target, _)| target.id);
    answers
}

async fn fetch(reach: Reach, path: &str) -> Result<String, String> {
    let stream = reach.connect().await.map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, reach.to_string())
        .header(hyper::header::USER_AGENT, "corral-metrics")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        driver.abort();
        return Err(format!("status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    driver.abort();
    String::from_utf8(body.to_vec()).map_err(|_| "the answer is not UTF-8".to_string())
}

/// One merged family: its HELP and TYPE (from the first worker that gave
/// them) and every worker's sample lines.
#[derive(Default)]
struct Merged {
    help: Option<String>,
    kind: Option<&'static str>,
    samples: String,
}

/// What one round of fetching the workers gave: the exposition text, the
/// workers whose answer could not be used (label, why), and the workers
/// whose series past [`MAX_SERIES`] were skipped (label, how many).
#[derive(Debug, Default)]
pub struct Merge {
    pub text: String,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<(String, u64)>,
}

/// Merges the workers' answers into exposition text, leaving out families
/// named in `reserved` or with a reserved prefix.
pub fn merge(answers: &[Scraped], reserved: &HashSet<String>) -> Merge {
    let mut merger = Merger {
        families: BTreeMap::new(),
        reserved,
    };
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for (target, answer) in answers {
        let text = match answer {
            Ok(text) => parser_input(text),
            Err(why) => {
                failed.push((target.label.clone(), why.clone()));
                continue;
            }
        };
        let parsed = match nom_openmetrics::parser::prometheus(&text) {
            Ok((_, parsed)) => parsed,
            Err(error) => {
                let why = format!("not Prometheus text: {}", first_line(&error.to_string()));
                failed.push((target.label.clone(), why));
                continue;
            }
        };
        let over = merger.add_worker(&target.id.to_string(), &parsed);
        if over > 0 {
            skipped.push((target.label.clone(), over));
        }
    }
    Merge {
        text: merger.into_text(),
        failed,
        skipped,
    }
}

/// A worker's answer as the parser takes it: no blank lines and no
/// comments other than HELP and TYPE (which the text format allows), and
/// never empty.
fn parser_input(text: &str) -> String {
    let mut text: String = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('#') || l.starts_with("# HELP ") || l.starts_with("# TYPE "))
        .flat_map(|l| [l, "\n"])
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// The families merged so far, by name, leaving out the reserved ones.
struct Merger<'r> {
    families: BTreeMap<String, Merged>,
    reserved: &'r HashSet<String>,
}

impl Merger<'_> {
    /// Adds one worker's families, its samples labelled `worker`, up to
    /// [`MAX_SERIES`] samples; gives how many were past it.
    fn add_worker(&mut self, worker: &str, parsed: &[Family<'_>]) -> u64 {
        let mut kept = 0usize;
        let mut over = 0u64;
        for family in parsed {
            let described = family.descriptors.first().map(|d| d.metric());
            if let Some(name) = described.filter(|n| !is_reserved(n, self.reserved)) {
                self.describe(name, &family.descriptors);
            }
            for sample in &family.samples {
                // The parser groups by position; a sample belongs to the
                // described family only if its name says so.
                let name = match described {
                    Some(d) if belongs(sample.name(), d) => d,
                    _ => sample.name(),
                };
                if is_reserved(name, self.reserved) {
                    continue;
                }
                if kept >= MAX_SERIES {
                    over += 1;
                    continue;
                }
                kept += 1;
                let merged = self.families.entry(name.to_string()).or_default();
                write_sample(&mut merged.samples, sample, worker);
            }
        }
        over
    }

    /// The family's HELP and TYPE, from the first worker that gives them.
    fn describe(&mut self, name: &str, descriptors: &[MetricDescriptor<'_>]) {
        let merged = self.families.entry(name.to_string()).or_default();
        for descriptor in descriptors {
            match descriptor {
                MetricDescriptor::Help { help, .. } if merged.help.is_none() => {
                    merged.help = Some(help.clone());
                }
                MetricDescriptor::Type { r#type, .. } if merged.kind.is_none() => {
                    merged.kind = Some(type_name(r#type));
                }
                _ => {}
            }
        }
    }

    /// The exposition text: each family's HELP, TYPE and samples.
    fn into_text(self) -> String {
        let mut out = String::new();
        for (name, merged) in self.families {
            // promtool wants a HELP line for every family; not every worker
            // writes one.
            let help = merged
                .help
                .unwrap_or_else(|| "Exported by corral's workers.".to_string());
            let _ = writeln!(out, "# HELP {name} {}", escape(&help, false));
            if let Some(kind) = merged.kind {
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            out.push_str(&merged.samples);
        }
        out
    }
}

/// One sample line, its `worker` label (if the worker gave one) replaced
/// by `worker`.
fn write_sample(out: &mut String, sample: &Sample<'_>, worker: &str) {
    let _ = write!(out, "{}{{", sample.name());
    for label in sample.labels().iter().filter(|l| l.name != "worker") {
        let _ = write!(out, "{}=\"{}\",", label.name, escape(&label.value, true));
    }
    let _ = writeln!(out, "worker=\"{worker}\"}} {}", number(sample.number()));
}

/// Is `sample` a line of the family `family` (itself, or a histogram's or
/// summary's `_bucket`, `_sum`, `_count`)?
fn belongs(sample: &str, family: &str) -> bool {
    sample == family
        || sample
            .strip_prefix(family)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|suffix| matches!(suffix, "bucket" | "sum" | "count" | "created"))
}

fn is_reserved(name: &str, reserved: &HashSet<String>) -> bool {
    name.starts_with("corral_") || reserved.contains(name)
}

fn type_name(kind: &MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
        // nom-openmetrics 0.2 reads `histogram` (and `untyped`) as unknown.
        MetricType::Unknown(name) if name.trim() == "histogram" => "histogram",
        _ => "untyped",
    }
}

/// A label value (quotes too) or HELP text, escaped for the text format:
/// backslash, newline and (in a label value) double quote. The format has
/// no escape for a carriage return, and a raw one would end the line for
/// some readers: it is dropped.
fn escape(text: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// A sample value in its shortest round-trip form: the shorter of the
/// plain (`0.25`, `3`) and the exponent (`1e308`) spellings, so a number is
/// never printed longer than the worker wrote it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        let plain = value.to_string();
        let exponent = format!("{value:e}");
        if exponent.len() < plain.len() {
            exponent
        } else {
            plain
        }
    }
}

/// One fetch of the workers' metrics shared by every `/metrics` request
/// that comes while it runs (a single flight): N concurrent scrapes cost
/// one fetch and one merged text, not N.
#[derive(Default)]
pub struct SingleFlight {
    running: std::sync::Mutex<Option<tokio::sync::watch::Receiver<Option<Arc<Merge>>>>>,
}

impl SingleFlight {
    /// The merged metrics of `targets`: from the fetch running now, or from
    /// a new one (run as a task of its own, so a scrape that gives up does
    /// not cancel it for the others). `account` runs once per fetch.
    pub async fn fetch(
        &self,
        targets: Vec<Target>,
        path: &str,
        reserved: HashSet<String>,
        account: impl FnOnce(&Merge) + Send + 'static,
    ) -> Arc<Merge> {
        let mut waiting = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.as_ref() {
                Some(receiver) => receiver.clone(),
                None => {
                    let (sender, receiver) = tokio::sync::watch::channel(None);
                    *running = Some(receiver.clone());
                    let path = path.to_string();
                    tokio::spawn(async move {
                        let answers = scrape(targets, &path).await;
                        let merged = Arc::new(merge(&answers, &reserved));
                        account(&merged);
                        let _ = sender.send(Some(merged));
                    });
                    receiver
                }
            }
        };
        let merged = match waiting.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        // The first to see the answer ends this flight; the next scrape
        // starts a fresh one.
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.as_ref().is_some_and(|r| r.same_channel(&waiting)) {
            *running = None;
        }
        merged.unwrap_or_default()
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: usize, text: &str) -> Scraped {
        let target = Target {
            label: format!("worker-{id}"),
            id,
            reach: crate::reach::Reach::Own("127.0.0.1:1".parse().unwrap()),
        };
        (target, Ok(text.to_string()))
    }

    #[test]
    fn families_merge_with_one_help_and_type_and_a_worker_label() {
        let text = "# HELP demo_requests_total Requests.\n# TYPE demo_requests_total counter\ndemo_requests_total{path=\"/\"} 3\n\n# a comment\n# TYPE lat histogram\nlat_bucket{le=\"+Inf\"} 1\nlat_sum 0.5\nlat_count 1\n";
        let answers = vec![answer(0, text), answer(1, text)];
        let Merge {
            text: out, failed, ..
        } = merge(&answers, &HashSet::new());
        assert!(failed.is_empty());
        assert_eq!(
            out.matches("# TYPE demo_requests_total counter").count(),
            1,
            "{out}"
        );
        assert!(
            out.contains("demo_requests_total{path=\"/\",worker=\"0\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("demo_requests_total{path=\"/\",worker=\"1\"} 3\n"),
            "{out}"
        );
    }

    #[test]
    fn garbage_is_skipped_and_reported_and_reserved_names_left_out() {
        let answers = vec![
            answer(0, "this is { not metrics\n"),
            answer(
                1,
                "# TYPE process_open_fds gauge\nprocess_open_fds 7\nup_things 1\n",
            ),
        ];
        let reserved = HashSet::from(["process_open_fds".to_string()]);
        let Merge {
            text: out, failed, ..
        } = merge(&answers, &reserved);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, "worker-0");
        assert!(!out.contains("process_open_fds"), "{out}");
        assert!(out.contains("up_things{worker=\"1\"} 1"), "{out}");
    }

    #[test]
    fn numbers_are_never_printed_longer_than_they_came() {
        assert_eq!(number(1e308), "1e308");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1e-9), "1e-9");
        assert_eq!(number(123456.0), "123456");
        assert_eq!(number(f64::INFINITY), "+Inf");
        let body = "x 1e308\n".repeat(100);
        let Merge { text, .. } = merge(&[answer(0, &body)], &HashSet::new());
        assert!(text.contains("x{worker=\"0\"} 1e308\n"), "{text}");
    }

    #[test]
    fn a_worker_past_the_series_cap_is_cut_and_counted() {
        let body: String = (0..MAX_SERIES + 5)
            .map(|i| format!("s{{i=\"{i}\"}} 1\n"))
            .collect();
        let merged = merge(&[answer(3, &body)], &HashSet::new());
        assert_eq!(merged.skipped, vec![("worker-3".to_string(), 5)]);
        assert_eq!(merged.text.matches("worker=\"3\"").count(), MAX_SERIES);
    }

    #[test]
    fn label_values_are_escaped_and_a_carriage_return_dropped() {
        assert_eq!(escape("a\\b\"c\nd\re", true), "a\\\\b\\\"c\\nde");
        assert_eq!(escape("say \"hi\"", false), "say \"hi\"");
    }
}
