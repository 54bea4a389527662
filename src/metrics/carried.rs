//! Counters and histograms carried over from earlier images of this
//! process (`corral upgrade`): a counter never goes down across an upgrade.
//!
//! The image that hands over exports every counter and histogram series it
//! serves ([`Carried::export`], earlier carries included); the next image
//! keeps them and adds them to its own at each scrape ([`Carried::add_to`]),
//! series by series (same name, same labels). A series the new image has
//! not touched yet is served from the carry alone.

use prometheus::proto::{Bucket, Counter, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One carried series.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    /// A counter's value, or a histogram's sum.
    pub value: f64,
    /// A histogram's count (0 for a counter).
    pub count: u64,
    /// A histogram's buckets: (upper bound, cumulative count).
    pub buckets: Vec<(f64, u64)>,
}

/// One carried family.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub histogram: bool,
    pub series: Vec<Series>,
}

/// Everything carried over.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub families: Vec<Family>,
}

impl Carried {
    /// The counters and histograms of `families`, as the next image keeps
    /// them.
    pub fn export(families: &[MetricFamily]) -> Carried {
        let families = families
            .iter()
            .filter_map(|family| {
                let histogram = match family.get_field_type() {
                    MetricType::COUNTER => false,
                    MetricType::HISTOGRAM => true,
                    _ => return None,
                };
                let series = family
                    .get_metric()
                    .iter()
                    .map(|metric| series_of(metric, histogram))
                    .collect();
                Some(Family {
                    name: family.name().to_string(),
                    help: family.help().to_string(),
                    histogram,
                    series,
                })
            })
            .collect();
        Carried { families }
    }

    /// Adds the carried values to `families`, series by series.
    pub fn add_to(&self, families: &mut Vec<MetricFamily>) {
        for carried in &self.families {
            let index = match families.iter().position(|f| f.name() == carried.name) {
                Some(index) => index,
                None => {
                    let mut family = MetricFamily::default();
                    family.set_name(carried.name.clone());
                    family.set_help(carried.help.clone());
                    family.set_field_type(if carried.histogram {
                        MetricType::HISTOGRAM
                    } else {
                        MetricType::COUNTER
                    });
                    families.push(family);
                    families.len() - 1
                }
            };
            let family = &mut families[index];
            for series in &carried.series {
                let metrics = family.mut_metric();
                match metrics.iter_mut().find(|m| same_labels(m, &series.labels)) {
                    Some(metric) => add(metric, series, carried.histogram),
                    None => metrics.push(metric_of(series, carried.histogram)),
                }
            }
        }
    }
}

fn series_of(metric: &Metric, histogram: bool) -> Series {
    let labels = metric
        .get_label()
        .iter()
        .map(|l| (l.name().to_string(), l.value().to_string()))
        .collect();
    if histogram {
        let h = metric.get_histogram();
        Series {
            labels,
            value: h.get_sample_sum(),
            count: h.get_sample_count(),
            buckets: h
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .collect(),
        }
    } else {
        Series {
            labels,
            value: metric.get_counter().get_value(),
            count: 0,
            buckets: Vec::new(),
        }
    }
}

fn same_labels(metric: &Metric, labels: &[(String, String)]) -> bool {
    let own = metric.get_label();
    own.len() == labels.len()
        && own
            .iter()
            .zip(labels)
            .all(|(a, (name, value))| a.name() == name && a.value() == value)
}

fn add(metric: &mut Metric, series: &Series, histogram: bool) {
    if histogram {
        let own = metric.get_histogram();
        let mut sum = Histogram::default();
        sum.set_sample_sum(own.get_sample_sum() + series.value);
        sum.set_sample_count(own.get_sample_count() + series.count);
        let buckets = own
            .get_bucket()
            .iter()
            .map(|b| {
                let carried = series
                    .buckets
                    .iter()
                    .find(|(upper, _)| *upper == b.upper_bound())
                    .map_or(0, |(_, n)| *n);
                bucket(b.upper_bound(), b.cumulative_count() + carried)
            })
            .collect();
        sum.set_bucket(buckets);
        metric.set_histogram(sum);
    } else {
        let mut counter = Counter::default();
        counter.set_value(metric.get_counter().get_value() + series.value);
        metric.set_counter(counter);
    }
}

fn metric_of(series: &Series, histogram: bool) -> Metric {
    let labels = series
        .labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.clone());
            pair.set_value(value.clone());
            pair
        })
        .collect();
    let mut metric = Metric::from_label(labels);
    if histogram {
        let mut h = Histogram::default();
        h.set_sample_sum(series.value);
        h.set_sample_count(series.count);
        h.set_bucket(series.buckets.iter().map(|(u, n)| bucket(*u, *n)).collect());
        metric.set_histogram(h);
    } else {
        let mut counter = Counter::default();
        counter.set_value(series.value);
        metric.set_counter(counter);
    }
    metric
}

fn bucket(upper: f64, count: u64) -> Bucket {
    let mut b = Bucket::default();
    b.set_upper_bound(upper);
    b.set_cumulative_count(count);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    fn registry() -> (Registry, IntCounterVec, HistogramVec) {
        let registry = Registry::new();
        let counter = IntCounterVec::new(Opts::new("c_total", "c"), &["backend"]).unwrap();
        let histogram = HistogramVec::new(
            HistogramOpts::new("h_seconds", "h").buckets(vec![0.1, 1.0]),
            &["backend"],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        (registry, counter, histogram)
    }

    #[test]
    fn carried_series_add_to_the_new_images_own_and_untouched_ones_stay() {
        let (old, counter, histogram) = registry();
        counter.with_label_values(&["a"]).inc_by(5);
        counter.with_label_values(&["b"]).inc_by(2);
        histogram.with_label_values(&["a"]).observe(0.05);
        histogram.with_label_values(&["a"]).observe(0.5);
        let carried = Carried::export(&old.gather());
        // Through the handover's JSON, as an upgrade carries it.
        let carried: Carried =
            serde_json::from_str(&serde_json::to_string(&carried).unwrap()).unwrap();

        let (new, counter, histogram) = registry();
        counter.with_label_values(&["a"]).inc_by(1);
        histogram.with_label_values(&["a"]).observe(2.0);
        let mut families = new.gather();
        carried.add_to(&mut families);
        let c = families.iter().find(|f| f.name() == "c_total").unwrap();
        let value = |label: &str| {
            c.get_metric()
                .iter()
                .find(|m| m.get_label()[0].value() == label)
                .map(|m| m.get_counter().get_value())
        };
        assert_eq!(value("a"), Some(6.0));
        assert_eq!(value("b"), Some(2.0));
        let h = families.iter().find(|f| f.name() == "h_seconds").unwrap();
        let h = h.get_metric()[0].get_histogram();
        assert_eq!(h.get_sample_count(), 3);
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts, vec![1, 2]);
        assert!((h.get_sample_sum() - 2.55).abs() < 1e-9);
    }
}
