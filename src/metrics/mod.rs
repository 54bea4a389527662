//! Every metric corral exports, defined and registered in one place.
//!
//! Label lookups (`with_label_values`) take a lock, so the hot path never does
//! them: each backend resolves its handles once into [`BackendMetrics`] and
//! each error reason is resolved once into [`ErrorCounters`].

pub mod workers;

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
    pub accepted: IntCounter,
    pub errors: ErrorCounters,
    pub rejected: RejectedCounters,
    pub accept_errors: IntCounter,
    pub spliced: IntCounter,
    pub sticky_entries: IntGauge,
    pub sticky_hit: IntCounter,
    pub sticky_miss: IntCounter,
    pub sticky_redispatch: IntCounter,
    pub reload_success: IntCounter,
    pub reload_failure: IntCounter,
    /// Log lines not written because the log sink was not keeping up.
    pub log_lines_dropped: IntCounter,
    /// Datagrams on the workers' notify socket that were ignored: from a
    /// process outside every worker's tree, or malformed.
    pub notify_ignored: IntCounter,
    /// `workers.listen = "fd"`: clients corral took off the socket of a
    /// worker slot out of rotation and served through the front end.
    pub rescued: IntCounter,
    connections: IntCounterVec,
    active: IntGaugeVec,
    bytes_received: IntCounterVec,
    bytes_sent: IntCounterVec,
    up: IntGaugeVec,
    connect_duration: HistogramVec,
    connection_duration: HistogramVec,
    health_checks: IntCounterVec,
    restarts: IntCounterVec,
    worker_scrape_errors: IntCounterVec,
    worker_series_skipped: IntCounterVec,
}

/// `corral_connection_errors_total`, one handle per reason.
pub struct ErrorCounters {
    pub connect_failed: IntCounter,
    pub no_backend: IntCounter,
    pub timeout: IntCounter,
    pub limit: IntCounter,
    pub proxy_protocol: IntCounter,
    /// corral ran short of file descriptors or memory (never a backend's fault).
    pub resources: IntCounter,
}

/// `corral_connections_rejected_total`, one handle per reason: connections
/// closed at the front door before any backend was chosen.
pub struct RejectedCounters {
    /// Outside `clients.allow`, or inside `clients.deny`.
    pub denied: IntCounter,
    /// The client held `clients.max_connections` already.
    pub client_connections: IntCounter,
    /// The client opened `clients.max_rate` connections in the period.
    pub client_rate: IntCounter,
    /// A peer outside `listener.proxy_protocol_from` with PROXY headers on.
    pub untrusted_proxy: IntCounter,
}

impl RejectedCounters {
    /// The counter of a `[clients]` refusal.
    pub fn of(&self, refused: crate::clients::Refused) -> &IntCounter {
        match refused {
            crate::clients::Refused::Denied => &self.denied,
            crate::clients::Refused::Connections => &self.client_connections,
            crate::clients::Refused::Rate => &self.client_rate,
        }
    }
}

/// One backend's metric handles, resolved once when the backend is created.
pub struct BackendMetrics {
    pub connections: IntCounter,
    pub active: IntGauge,
    pub bytes_received: IntCounter,
    pub bytes_sent: IntCounter,
    pub up: IntGauge,
    pub connect_duration: Histogram,
    pub connection_duration: Histogram,
    pub health_success: IntCounter,
    pub health_failure: IntCounter,
    pub restarts: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["backend"],
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let process = prometheus::process_collector::ProcessCollector::for_self();
            r.register(Box::new(process))
                .expect("process metrics registered once");
        }
        let errors = counter_vec(
            &r,
            "corral_connection_errors_total",
            "Client connections that failed, by reason.",
            &["reason"],
        );
        let rejected = counter_vec(
            &r,
            "corral_connections_rejected_total",
            "Client connections closed at the front door before reaching a backend, by reason.",
            &["reason"],
        );
        let sticky_lookups = counter_vec(
            &r,
            "corral_sticky_lookups_total",
            "Sticky table lookups by result.",
            &["result"],
        );
        let reloads = counter_vec(
            &r,
            "corral_config_reloads_total",
            "Configuration reloads by result.",
            &["result"],
        );
        let sticky_entries = IntGauge::new("corral_sticky_entries", "Entries in the sticky table.")
            .expect("valid metric");
        r.register(Box::new(sticky_entries.clone()))
            .expect("metric registered once");
        Metrics {
            accepted: counter(
                &r,
                "corral_connections_accepted_total",
                "Client connections accepted by the front end.",
            ),
            accept_errors: counter(
                &r,
                "corral_accept_errors_total",
                "accept() failures on the front end (EMFILE and the like).",
            ),
            spliced: counter(
                &r,
                "corral_spliced_connections_total",
                "Connections that moved bulk data with splice(2).",
            ),
            errors: ErrorCounters {
                connect_failed: errors.with_label_values(&["connect_failed"]),
                no_backend: errors.with_label_values(&["no_backend"]),
                timeout: errors.with_label_values(&["timeout"]),
                limit: errors.with_label_values(&["limit"]),
                proxy_protocol: errors.with_label_values(&["proxy_protocol"]),
                resources: errors.with_label_values(&["resources"]),
            },
            rejected: RejectedCounters {
                denied: rejected.with_label_values(&["denied"]),
                client_connections: rejected.with_label_values(&["client_connections"]),
                client_rate: rejected.with_label_values(&["client_rate"]),
                untrusted_proxy: rejected.with_label_values(&["untrusted_proxy"]),
            },
            log_lines_dropped: counter(
                &r,
                "corral_log_lines_dropped_total",
                "Log lines not written because the log sink was not keeping up.",
            ),
            notify_ignored: counter(
                &r,
                "corral_worker_notify_ignored_total",
                "Datagrams on the workers' NOTIFY_SOCKET that were ignored (sent by a process outside every worker's tree, or malformed).",
            ),
            rescued: counter(
                &r,
                "corral_rescued_connections_total",
                "Clients corral took off the socket of a worker slot out of rotation and served through the front end (workers.listen = \"fd\").",
            ),
            sticky_entries,
            sticky_hit: sticky_lookups.with_label_values(&["hit"]),
            sticky_miss: sticky_lookups.with_label_values(&["miss"]),
            sticky_redispatch: sticky_lookups.with_label_values(&["redispatch"]),
            reload_success: reloads.with_label_values(&["success"]),
            reload_failure: reloads.with_label_values(&["failure"]),
            connections: counter_vec(
                &r,
                "corral_connections_total",
                "Client connections proxied to each backend.",
                &["backend"],
            ),
            active: gauge_vec(
                &r,
                "corral_connections_active",
                "Client connections open to each backend.",
                &["backend"],
            ),
            bytes_received: counter_vec(
                &r,
                "corral_bytes_received_total",
                "Bytes received from clients, by the backend they were sent to.",
                &["backend"],
            ),
            bytes_sent: counter_vec(
                &r,
                "corral_bytes_sent_total",
                "Bytes sent to clients, by the backend they came from.",
                &["backend"],
            ),
            up: gauge_vec(
                &r,
                "corral_backend_up",
                "1 while the backend is in rotation, else 0.",
                &["backend"],
            ),
            connect_duration: histogram_vec(
                &r,
                "corral_backend_connect_duration_seconds",
                "Time to open a TCP connection to the backend.",
                CONNECT_BUCKETS,
            ),
            connection_duration: histogram_vec(
                &r,
                "corral_connection_duration_seconds",
                "Lifetime of proxied client connections.",
                DURATION_BUCKETS,
            ),
            health_checks: counter_vec(
                &r,
                "corral_health_checks_total",
                "Active health checks by backend and result.",
                &["backend", "result"],
            ),
            restarts: counter_vec(
                &r,
                "corral_worker_restarts_total",
                "Worker restarts: after a crash or a failed start, and replacements for unhealthy_restart or max_memory.",
                &["backend"],
            ),
            worker_scrape_errors: counter_vec(
                &r,
                "corral_worker_metrics_scrape_errors_total",
                "Scrapes of a worker's own metrics (workers.metrics_path) that failed or were unusable.",
                &["backend"],
            ),
            worker_series_skipped: counter_vec(
                &r,
                "corral_worker_metrics_series_skipped_total",
                "Series of a worker's own metrics left out because the worker exported more than the cap per scrape.",
                &["backend"],
            ),
            registry: r,
        }
    }

    /// `skipped` series of a worker's metrics were past the cap.
    pub fn worker_series_skipped(&self, label: &str, skipped: u64) {
        self.worker_series_skipped
            .with_label_values(&[label])
            .inc_by(skipped);
    }

    /// A worker's metrics could not be used for this scrape.
    pub fn worker_scrape_failed(&self, label: &str) {
        self.worker_scrape_errors.with_label_values(&[label]).inc();
    }

    /// Resolves (and so creates, at zero) every per-backend series for `label`.
    pub fn backend(&self, label: &str) -> BackendMetrics {
        let l = &[label];
        BackendMetrics {
            connections: self.connections.with_label_values(l),
            active: self.active.with_label_values(l),
            bytes_received: self.bytes_received.with_label_values(l),
            bytes_sent: self.bytes_sent.with_label_values(l),
            up: self.up.with_label_values(l),
            connect_duration: self.connect_duration.with_label_values(l),
            connection_duration: self.connection_duration.with_label_values(l),
            health_success: self.health_checks.with_label_values(&[label, "success"]),
            health_failure: self.health_checks.with_label_values(&[label, "failure"]),
            restarts: self.restarts.with_label_values(l),
        }
    }

    /// Drops every per-backend series of a backend removed by a reload.
    pub fn forget_backend(&self, label: &str) {
        let l = &[label];
        let _ = self.connections.remove_label_values(l);
        let _ = self.active.remove_label_values(l);
        let _ = self.bytes_received.remove_label_values(l);
        let _ = self.bytes_sent.remove_label_values(l);
        let _ = self.up.remove_label_values(l);
        let _ = self.connect_duration.remove_label_values(l);
        let _ = self.connection_duration.remove_label_values(l);
        let _ = self.health_checks.remove_label_values(&[label, "success"]);
        let _ = self.health_checks.remove_label_values(&[label, "failure"]);
        let _ = self.restarts.remove_label_values(l);
        let _ = self.worker_scrape_errors.remove_label_values(l);
        let _ = self.worker_series_skipped.remove_label_values(l);
    }

    /// The Prometheus text exposition of every metric, with what each
    /// worker's process tree costs (read at scrape time, `usage` by label),
    /// and the names of the families in it. In `fd` mode, `queues` are the
    /// slots' accept-queue lengths by label, and the families corral cannot
    /// know there ([`UNKNOWN_IN_FD_MODE`]) are left out rather than shown
    /// as zeros.
    pub fn render(
        &self,
        usage: &[(String, Usage)],
        queues: Option<&[(String, u32)]>,
    ) -> (Vec<u8>, std::collections::HashSet<String>) {
        let mut families = self.registry.gather();
        if let Some(queues) = queues {
            families.retain(|f| !UNKNOWN_IN_FD_MODE.contains(&f.name()));
            families.push(family(
                "corral_accept_queue_length",
                "Clients waiting in each worker slot's socket (workers.listen = \"fd\").",
                MetricType::GAUGE,
                queues
                    .iter()
                    .map(|(label, n)| (label.as_str(), f64::from(*n))),
            ));
        }
        families.push(family(
            "corral_worker_cpu_seconds_total",
            "CPU seconds (user + system) used by each worker's process tree.",
            MetricType::COUNTER,
            usage
                .iter()
                .map(|(label, u)| (label.as_str(), u.cpu_seconds)),
        ));
        families.push(family(
            "corral_worker_resident_memory_bytes",
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

/// What corral does not see in `fd` mode, where the kernel hands clients
/// straight to the workers: every front-end and per-backend connection
/// figure, and the sticky table (placement is computed, not stored).
pub const UNKNOWN_IN_FD_MODE: &[&str] = &[
    "corral_connections_accepted_total",
    "corral_accept_errors_total",
    "corral_spliced_connections_total",
    "corral_connections_total",
    "corral_connections_active",
    "corral_bytes_received_total",
    "corral_bytes_sent_total",
    "corral_backend_connect_duration_seconds",
    "corral_connection_duration_seconds",
    "corral_sticky_entries",
    "corral_sticky_lookups_total",
];

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
        pair.set_name("backend".to_string());
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
