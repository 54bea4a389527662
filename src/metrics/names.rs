//! The name of every metric family corral exports, and of their labels:
//! written once, here. The registry ([`super::Metrics::new`]), the
//! families built at scrape time ([`super::Metrics::render`]) and the list
//! of what the handed front end (`workers.listen = "fd"`) cannot know
//! (`UNKNOWN_METRICS` in `front/handed.rs`) all name families through
//! these constants. (Tests and docs spell the names out:
//! they check the external contract.)
//!
//! # Adding a metric
//!
//! 1. Add its name here (a `corral_` prefix; `_total` for a counter).
//! 2. Register it in [`super::Metrics::new`], or, for a per-backend
//!    family, in `BackendFamilies::register` (through `per_backend`, with
//!    [`BACKEND`] as its first label): it
//!    is then forgotten with the backend's other series when a reload
//!    removes the backend (nothing else to edit), and its handle is
//!    resolved once in [`super::Metrics::backend`] if the hot path uses it.
//! 3. If the handed front end (`workers.listen = "fd"`) cannot know its
//!    value, add it to `UNKNOWN_METRICS` in `front/handed.rs`.
//! 4. Document it in docs/metrics.md.

/// The label every per-backend family carries: the backend's name.
pub const BACKEND: &str = "backend";
/// The label of why a connection failed or was refused.
pub const REASON: &str = "reason";
/// The label of a lookup's, check's or reload's result.
pub const RESULT: &str = "result";

// ---- the front end ----
pub const CONNECTIONS_ACCEPTED: &str = "corral_connections_accepted_total";
pub const ACCEPT_ERRORS: &str = "corral_accept_errors_total";
pub const CONNECTION_ERRORS: &str = "corral_connection_errors_total";
pub const CONNECTIONS_REJECTED: &str = "corral_connections_rejected_total";
pub const SPLICED_CONNECTIONS: &str = "corral_spliced_connections_total";

// ---- dispatch ----
pub const STICKY_ENTRIES: &str = "corral_sticky_entries";
pub const STICKY_LOOKUPS: &str = "corral_sticky_lookups_total";

// ---- per backend ----
pub const CONNECTIONS: &str = "corral_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "corral_connections_active";
pub const BYTES_RECEIVED: &str = "corral_bytes_received_total";
pub const BYTES_SENT: &str = "corral_bytes_sent_total";
pub const BACKEND_UP: &str = "corral_backend_up";
pub const BACKEND_DISABLED: &str = "corral_backend_disabled";
pub const CONNECT_DURATION: &str = "corral_backend_connect_duration_seconds";
pub const CONNECTION_DURATION: &str = "corral_connection_duration_seconds";
pub const HEALTH_CHECKS: &str = "corral_health_checks_total";
pub const WORKER_RESTARTS: &str = "corral_worker_restarts_total";
pub const WORKER_SCRAPE_ERRORS: &str = "corral_worker_metrics_scrape_errors_total";
pub const WORKER_SERIES_SKIPPED: &str = "corral_worker_metrics_series_skipped_total";

// ---- per worker, built at scrape time ----
pub const ACCEPT_QUEUE_LENGTH: &str = "corral_accept_queue_length";
pub const WORKER_CPU_SECONDS: &str = "corral_worker_cpu_seconds_total";
pub const WORKER_RESIDENT_MEMORY: &str = "corral_worker_resident_memory_bytes";

// ---- the process ----
pub const CONFIG_RELOADS: &str = "corral_config_reloads_total";
pub const UPGRADES: &str = "corral_upgrades_total";
pub const LOG_LINES_DROPPED: &str = "corral_log_lines_dropped_total";
pub const WORKER_NOTIFY_IGNORED: &str = "corral_worker_notify_ignored_total";
pub const RESCUED_CONNECTIONS: &str = "corral_rescued_connections_total";
