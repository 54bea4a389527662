//! Every metric corral exports, defined and registered in one place.
//!
//! Label lookups (`with_label_values`) take a lock, so the hot path never does
//! them: each backend resolves its handles once into [`BackendMetrics`] and
//! each error reason is resolved once into [`ErrorCounters`].

pub(crate) mod carried;
pub(crate) mod names;
pub(crate) mod scrape;

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::sampler::Usage;

/// Buckets from 100 µs (loopback) to 10 s (a slow WAN connect or a long request).
const CONNECT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Buckets for whole connection lifetimes: 1 ms to 1 hour.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The registry and the metric families; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// What earlier images of this process counted (`corral upgrade`):
    /// added to every scrape, set once at adoption.
    carried: std::sync::OnceLock<carried::Carried>,
    pub(crate) accepted: IntCounter,
    pub(crate) errors: ErrorCounters,
    pub(crate) rejected: RejectedCounters,
    pub(crate) accept_errors: IntCounter,
    pub(crate) spliced: IntCounter,
    /// Written only by `/metrics`, from the table's length at scrape time.
    pub(crate) sticky_entries: IntGauge,
    pub(crate) sticky_hit: IntCounter,
    pub(crate) sticky_miss: IntCounter,
    pub(crate) sticky_redispatch: IntCounter,
    pub(crate) reload_success: IntCounter,
    pub(crate) reload_failure: IntCounter,
    /// `corral upgrade`: the new program serves (counted by it).
    pub(crate) upgrade_done: IntCounter,
    /// `corral upgrade` refused before anything changed.
    pub(crate) upgrade_refused: IntCounter,
    /// `corral upgrade` whose new program could not adopt: the old one
    /// took everything back (counted by it).
    pub(crate) upgrade_rolled_back: IntCounter,
    /// Log lines not written because the log sink was not keeping up.
    pub(crate) log_lines_dropped: IntCounter,
    /// Datagrams on the workers' notify socket that were ignored: from a
    /// process outside every worker's tree, or malformed.
    pub(crate) notify_ignored: IntCounter,
    /// `workers.listen = "fd"`: clients corral took off the socket of a
    /// worker slot out of rotation and served through the front end.
    pub(crate) rescued: IntCounter,
    /// The per-backend families, by name for resolving handles.
    backend: BackendFamilies,
    /// The same families, as the one list a removed backend is forgotten
    /// from.
    backend_families: Vec<Box<dyn BackendFamily>>,
}

/// The families labelled by backend.
struct BackendFamilies {
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes_received: IntCounterVec,
    bytes_sent: IntCounterVec,
    up: IntGaugeVec,
    disabled: IntGaugeVec,
    connect_duration: HistogramVec,
    connection_duration: HistogramVec,
    health_checks: IntCounterVec,
    restarts: IntCounterVec,
    worker_scrape_errors: IntCounterVec,
    worker_series_skipped: IntCounterVec,
}

/// `corral_connection_errors_total`, one handle per reason.
pub(crate) struct ErrorCounters {
    pub(crate) connect_failed: IntCounter,
    pub(crate) no_backend: IntCounter,
    pub(crate) timeout: IntCounter,
    pub(crate) limit: IntCounter,
    pub(crate) proxy_protocol: IntCounter,
    /// corral ran short of file descriptors or memory (never a backend's fault).
    pub(crate) resources: IntCounter,
}

/// `corral_connections_rejected_total`, one handle per reason: connections
/// closed at the front door before any backend was chosen.
pub(crate) struct RejectedCounters {
    /// Outside `clients.allow`, or inside `clients.deny`.
    pub(crate) denied: IntCounter,
    /// The client held `clients.max_connections` already.
    pub(crate) client_connections: IntCounter,
    /// The client opened `clients.max_rate` connections in the period.
    pub(crate) client_rate: IntCounter,
    /// A peer outside `listener.proxy_protocol_from` with PROXY headers on.
    pub(crate) untrusted_proxy: IntCounter,
}

impl RejectedCounters {
    /// The counter of a `[clients]` refusal.
    pub(crate) fn of(&self, refused: crate::clients::Refused) -> &IntCounter {
        match refused {
            crate::clients::Refused::Denied => &self.denied,
            crate::clients::Refused::Connections => &self.client_connections,
            crate::clients::Refused::Rate => &self.client_rate,
        }
    }
}

/// One backend's metric handles, resolved once when the backend is created.
pub(crate) struct BackendMetrics {
    pub(crate) connections: IntCounter,
    pub(crate) active: IntGauge,
    pub(crate) bytes_received: IntCounter,
    pub(crate) bytes_sent: IntCounter,
    pub(crate) up: IntGauge,
    /// 1 while the operator keeps the backend out of rotation.
    pub(crate) disabled: IntGauge,
    pub(crate) connect_duration: Histogram,
    pub(crate) connection_duration: Histogram,
    pub(crate) health_success: IntCounter,
    pub(crate) health_failure: IntCounter,
    pub(crate) restarts: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

/// Registers a labelled family.
fn family_vec<T: MetricVecBuilder + 'static>(
    registry: &Registry,
    vec: MetricVec<T>,
) -> MetricVec<T> {
    registry
        .register(Box::new(vec.clone()))
        .expect("metric registered once");
    vec
}

/// Registers a counter family with one label.
fn by_label(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    family_vec(
        registry,
        IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
    )
}

impl ErrorCounters {
    /// Registers `corral_connection_errors_total` and resolves a handle
    /// per reason.
    fn register(registry: &Registry) -> ErrorCounters {
        let errors = by_label(
            registry,
            names::CONNECTION_ERRORS,
            "Client connections that failed, by reason.",
            names::REASON,
        );
        ErrorCounters {
            connect_failed: errors.with_label_values(&["connect_failed"]),
            no_backend: errors.with_label_values(&["no_backend"]),
            timeout: errors.with_label_values(&["timeout"]),
            limit: errors.with_label_values(&["limit"]),
            proxy_protocol: errors.with_label_values(&["proxy_protocol"]),
            resources: errors.with_label_values(&["resources"]),
        }
    }
}

impl RejectedCounters {
    /// Registers `corral_connections_rejected_total` and resolves a handle
    /// per reason.
    fn register(registry: &Registry) -> RejectedCounters {
        let rejected = by_label(
            registry,
            names::CONNECTIONS_REJECTED,
            "Client connections closed at the front door before reaching a backend, by reason.",
            names::REASON,
        );
        RejectedCounters {
            denied: rejected.with_label_values(&["denied"]),
            client_connections: rejected.with_label_values(&["client_connections"]),
            client_rate: rejected.with_label_values(&["client_rate"]),
            untrusted_proxy: rejected.with_label_values(&["untrusted_proxy"]),
        }
    }
}

impl BackendFamilies {
    /// Registers every per-backend family through `per_backend`, which
    /// keeps each for [`Metrics::forget_backend`].
    fn register(per_backend: &mut PerBackend<'_>) -> BackendFamilies {
        BackendFamilies {
            connections: per_backend.counter(
                names::CONNECTIONS,
                "Client connections proxied to each backend.",
                &[],
            ),
            active: per_backend.gauge(
                names::CONNECTIONS_ACTIVE,
                "Client connections open to each backend.",
            ),
            bytes_received: per_backend.counter(
                names::BYTES_RECEIVED,
                "Bytes received from clients, by the backend they were sent to.",
                &[],
            ),
            bytes_sent: per_backend.counter(
                names::BYTES_SENT,
                "Bytes sent to clients, by the backend they came from.",
                &[],
            ),
            up: per_backend.gauge(
                names::BACKEND_UP,
                "1 while the backend is in rotation, else 0.",
            ),
            disabled: per_backend.gauge(
                names::BACKEND_DISABLED,
                "1 while the operator keeps the backend out of rotation (corral disable), else 0; corral_backend_up is 0 meanwhile.",
            ),
            connect_duration: per_backend.histogram(
                names::CONNECT_DURATION,
                "Time to open a TCP connection to the backend.",
                CONNECT_BUCKETS,
            ),
            connection_duration: per_backend.histogram(
                names::CONNECTION_DURATION,
                "Lifetime of proxied client connections.",
                DURATION_BUCKETS,
            ),
            health_checks: per_backend.counter(
                names::HEALTH_CHECKS,
                "Active health checks by backend and result.",
                &[names::RESULT],
            ),
            restarts: per_backend.counter(
                names::WORKER_RESTARTS,
                "Worker restarts: after a crash or a failed start, and replacements for unhealthy_restart or max_memory.",
                &[],
            ),
            worker_scrape_errors: per_backend.counter(
                names::WORKER_SCRAPE_ERRORS,
                "Scrapes of a worker's own metrics (workers.metrics_path) that failed or were unusable.",
                &[],
            ),
            worker_series_skipped: per_backend.counter(
                names::WORKER_SERIES_SKIPPED,
                "Series of a worker's own metrics left out because the worker exported more than the cap per scrape.",
                &[],
            ),
        }
    }
}

/// A family whose first label is [`names::BACKEND`]: every one of them is
/// registered through [`PerBackend::add`], which keeps it in the one list
/// [`Metrics::forget_backend`] walks.
trait BackendFamily: Send + Sync {
    /// Removes every series of `backend` (whatever its other labels).
    fn forget(&self, backend: &str);
}

impl<T: MetricVecBuilder> BackendFamily for MetricVec<T> {
    fn forget(&self, backend: &str) {
        for family in self.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|pair| (pair.name(), pair.value()))
                    .collect();
                if labels.get(names::BACKEND) == Some(&backend) {
                    let _ = self.remove(&labels);
                }
            }
        }
    }
}

/// The per-backend families, registered and remembered together.
struct PerBackend<'r> {
    registry: &'r Registry,
    families: Vec<Box<dyn BackendFamily>>,
}

impl PerBackend<'_> {
    /// Registers `vec` (whose first label is [`names::BACKEND`]) and keeps
    /// it for [`Metrics::forget_backend`].
    fn add<T: MetricVecBuilder + 'static>(&mut self, vec: MetricVec<T>) -> MetricVec<T> {
        let vec = family_vec(self.registry, vec);
        self.families.push(Box::new(vec.clone()));
        vec
    }

    fn counter(&mut self, name: &str, help: &str, more: &[&str]) -> IntCounterVec {
        let labels: Vec<&str> = [names::BACKEND].iter().chain(more).copied().collect();
        self.add(IntCounterVec::new(Opts::new(name, help), &labels).expect("valid metric"))
    }

    fn gauge(&mut self, name: &str, help: &str) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), &[names::BACKEND]).expect("valid metric"))
    }

    fn histogram(&mut self, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
        self.add(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &[names::BACKEND],
            )
            .expect("valid metric"),
        )
    }
}

impl Metrics {
    /// Every metric at zero, registered in a fresh registry (one per
    /// corral; the tests and benches make their own).
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(process))
                .expect("process metrics registered once");
        }
        let sticky_lookups = by_label(
            &r,
            names::STICKY_LOOKUPS,
            "Sticky table lookups by result.",
            names::RESULT,
        );
        let reloads = by_label(
            &r,
            names::CONFIG_RELOADS,
            "Configuration reloads by result.",
            names::RESULT,
        );
        let upgrades = by_label(
            &r,
            names::UPGRADES,
            "Upgrades of corral itself (corral upgrade) by result.",
            names::RESULT,
        );
        let sticky_entries = IntGauge::new(names::STICKY_ENTRIES, "Entries in the sticky table.")
            .expect("valid metric");
        r.register(Box::new(sticky_entries.clone()))
            .expect("metric registered once");
        let mut per_backend = PerBackend {
            registry: &r,
            families: Vec::new(),
        };
        let backend = BackendFamilies::register(&mut per_backend);
        let backend_families = per_backend.families;
        Metrics {
            carried: std::sync::OnceLock::new(),
            accepted: counter(
                &r,
                names::CONNECTIONS_ACCEPTED,
                "Client connections accepted by the front end.",
            ),
            accept_errors: counter(
                &r,
                names::ACCEPT_ERRORS,
                "accept() failures on the front end (EMFILE and the like).",
            ),
            spliced: counter(
                &r,
                names::SPLICED_CONNECTIONS,
                "Connections that moved bulk data with splice(2).",
            ),
            errors: ErrorCounters::register(&r),
            rejected: RejectedCounters::register(&r),
            log_lines_dropped: counter(
                &r,
                names::LOG_LINES_DROPPED,
                "Log lines not written because the log sink was not keeping up.",
            ),
            notify_ignored: counter(
                &r,
                names::WORKER_NOTIFY_IGNORED,
                "Datagrams on the workers' NOTIFY_SOCKET that were ignored (sent by a process outside every worker's tree, or malformed).",
            ),
            rescued: counter(
                &r,
                names::RESCUED_CONNECTIONS,
                "Clients corral took off the socket of a worker slot out of rotation and served through the front end (workers.listen = \"fd\").",
            ),
            sticky_entries,
            sticky_hit: sticky_lookups.with_label_values(&["hit"]),
            sticky_miss: sticky_lookups.with_label_values(&["miss"]),
            sticky_redispatch: sticky_lookups.with_label_values(&["redispatch"]),
            reload_success: reloads.with_label_values(&["success"]),
            reload_failure: reloads.with_label_values(&["failure"]),
            upgrade_done: upgrades.with_label_values(&["done"]),
            upgrade_refused: upgrades.with_label_values(&["refused"]),
            upgrade_rolled_back: upgrades.with_label_values(&["rolled_back"]),
            backend,
            backend_families,
            registry: r,
        }
    }

    /// `skipped` series of a worker's metrics were past the cap.
    pub(crate) fn worker_series_skipped(&self, label: &str, skipped: u64) {
        self.backend
            .worker_series_skipped
            .with_label_values(&[label])
            .inc_by(skipped);
    }

    /// A worker's metrics could not be used for this scrape.
    pub(crate) fn worker_scrape_failed(&self, label: &str) {
        self.backend
            .worker_scrape_errors
            .with_label_values(&[label])
            .inc();
    }

    /// Resolves (and so creates, at zero) every per-backend series for `label`.
    pub(crate) fn backend(&self, label: &str) -> BackendMetrics {
        let l = &[label];
        let f = &self.backend;
        BackendMetrics {
            connections: f.connections.with_label_values(l),
            active: f.active.with_label_values(l),
            bytes_received: f.bytes_received.with_label_values(l),
            bytes_sent: f.bytes_sent.with_label_values(l),
            up: f.up.with_label_values(l),
            disabled: f.disabled.with_label_values(l),
            connect_duration: f.connect_duration.with_label_values(l),
            connection_duration: f.connection_duration.with_label_values(l),
            health_success: f.health_checks.with_label_values(&[label, "success"]),
            health_failure: f.health_checks.with_label_values(&[label, "failure"]),
            restarts: f.restarts.with_label_values(l),
        }
    }

    /// Drops every per-backend series of a backend removed by a reload:
    /// every series labelled with it, in every per-backend family.
    pub(crate) fn forget_backend(&self, label: &str) {
        for family in &self.backend_families {
            family.forget(label);
        }
    }

    /// Every registered family, with what earlier images counted added.
    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.registry.gather();
        if let Some(carried) = self.carried.get() {
            carried.add_to(&mut families);
        }
        families
    }

    /// The counters and histograms so far (earlier images' included), for
    /// the next image (`corral upgrade`).
    pub(crate) fn export_counters(&self) -> carried::Carried {
        carried::Carried::export(&self.gather())
    }

    /// Takes over what the image before this one counted; once, at
    /// adoption, before the first scrape.
    pub(crate) fn carry_over(&self, counted: carried::Carried) {
        let _ = self.carried.set(counted);
    }

    /// The Prometheus text exposition of every metric, with what each
    /// worker's process tree costs (read at scrape time, `usage` by label),
    /// and the names of the families in it. The families the front end
    /// cannot know (`unknown`, [`crate::front::Front::unknown_metrics`])
    /// are left out rather than shown as zeros; `queues` are the worker
    /// slots' accept-queue lengths by label, where the front end has them.
    pub(crate) fn render(
        &self,
        usage: &[(String, Usage)],
        unknown: &[&str],
        queues: Option<&[(String, u32)]>,
    ) -> (Vec<u8>, std::collections::HashSet<String>) {
        let mut families = self.gather();
        families.retain(|f| !unknown.contains(&f.name()));
        if let Some(queues) = queues {
            families.push(family(
                names::ACCEPT_QUEUE_LENGTH,
                "Clients waiting in each worker slot's socket (workers.listen = \"fd\").",
                MetricType::GAUGE,
                queues
                    .iter()
                    .map(|(label, n)| (label.as_str(), f64::from(*n))),
            ));
        }
        families.push(family(
            names::WORKER_CPU_SECONDS,
            "CPU seconds (user + system) used by each worker's process tree.",
            MetricType::COUNTER,
            usage
                .iter()
                .map(|(label, u)| (label.as_str(), u.cpu_seconds)),
        ));
        families.push(family(
            names::WORKER_RESIDENT_MEMORY,
            "Resident memory of each worker's process tree.",
            MetricType::GAUGE,
            usage
                .iter()
                .map(|(label, u)| (label.as_str(), u.memory_bytes as f64)),
        ));
        // The text encoder refuses a family without samples (no workers).
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        let names = families.iter().map(|f| f.name().to_string()).collect();
        (out, names)
    }
}

/// A family of one sample per backend, built at scrape time.
fn family<'a>(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl Iterator<Item = (&'a str, f64)>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    for (label, value) in samples {
        let mut pair = LabelPair::default();
        pair.set_name(names::BACKEND.to_string());
        pair.set_value(label.to_string());
        let mut metric = Metric::default();
        metric.set_label(vec![pair]);
        if kind == MetricType::COUNTER {
            let mut counter = Counter::default();
            counter.set_value(value);
            metric.set_counter(counter);
        } else {
            let mut gauge = Gauge::default();
            gauge.set_value(value);
            metric.set_gauge(gauge);
        }
        family.mut_metric().push(metric);
    }
    family
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series of `backend` in the exposition.
    fn series_of(metrics: &Metrics, backend: &str) -> Vec<String> {
        let (text, _) = metrics.render(&[], &[], None);
        String::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|line| line.contains(&format!("backend=\"{backend}\"")))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_forgotten_backend_leaves_no_series_in_any_per_backend_family() {
        let metrics = Metrics::new();
        let _gone = metrics.backend("gone");
        let _kept = metrics.backend("kept");
        metrics.worker_scrape_failed("gone");
        metrics.worker_series_skipped("gone", 3);
        assert!(series_of(&metrics, "gone")
            .iter()
            .any(|line| line.starts_with(names::WORKER_SCRAPE_ERRORS)));
        let kept = series_of(&metrics, "kept");
        metrics.forget_backend("gone");
        assert_eq!(series_of(&metrics, "gone"), Vec::<String>::new());
        assert_eq!(series_of(&metrics, "kept"), kept);
    }
}
