//! corral: a Layer-4 TCP load balancer whose master process also spawns and
//! supervises the application's worker processes.
//!
//! # Layout
//!
//! The front end, one type per mode of `workers.listen`, behind one enum:
//! - [`front`]: `Proxied` (`port`: corral accepts and proxies) or `Handed`
//!   (`fd`: each worker slot is handed a socket of the front end and corral
//!   leaves the byte path). What differs between the modes is asked of it;
//!   how one instance is reached (its own address, or through the front
//!   end) is a [`reach::Reach`].
//!
//! The data path, left to right:
//! - [`datapath`]: the proxied front end's sockets and accept loops, one
//!   connection from accept to close, the byte pump and splice(2), the
//!   PROXY protocol.
//! - [`dispatch`]: round-robin, least-connections, the sticky table and ring.
//! - [`steering`]: the handed front end's mechanism: the slot sockets handed
//!   to workers, the kernel program that places clients on them, and the
//!   rescue of clients queued on a slot out of rotation.
//!
//! - [`clients`]: the per-client table: limits and access lists at the
//!   front door.
//!
//! The state they read:
//! - [`shared`]: the one shared view: the config-and-pool snapshot, the
//!   dispatcher, the metrics, the process's stop tokens.
//! - [`pool`]: every backend, with its lifecycle-and-health state machine.
//! - [`metrics`]: every metric, defined and registered in one place.
//!
//! What changes that state:
//! - [`supervisor`]: worker slots: spawn, readiness, backoff, rolling
//!   restart.
//! - [`health`]: active checks with rise/fall, and the passive checks.
//! - [`control`]: start-up and the graceful stop, signals, reload and scale,
//!   the admin HTTP server, systemd notifications.
//!
//! What the kernel says of processes: [`sampler`], the only reader of
//! `/proc` while corral serves (one pass a second on its own thread; the
//! others read its last sample or wait for a fresher one).
//!
//! Around them: [`config`] (the file, raw then validated), [`reach`] (how
//! an instance is reached; a leaf), [`cli`] (the
//! client side of the admin API), [`terminal`] (text from elsewhere made
//! safe to print), [`logging`], [`privileges`], [`clock`] and
//! [`demo_worker`].

// Public is only what `main.rs` and the benches use (the end-to-end tests
// drive the binary, not the library); everything else is `pub(crate)`, so
// the compiler finds what nothing uses, and what stays public is
// documented.
#![warn(missing_docs)]

pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod control;
pub(crate) mod datapath;
pub mod demo_worker;
pub mod dispatch;
pub(crate) mod fds;
pub(crate) mod front;
pub(crate) mod health;
pub(crate) mod hex_bytes;
pub mod labels;
pub(crate) mod logging;
pub mod metrics;
pub mod pool;
pub(crate) mod privileges;
pub(crate) mod reach;
pub(crate) mod sampler;
pub(crate) mod shared;
pub(crate) mod signal;
pub(crate) mod steering;
pub(crate) mod strategy;
pub mod supervisor;
pub(crate) mod terminal;
pub(crate) mod units;
pub mod upgrade;

// What `main.rs` runs: the balancer, its fatal errors, where its config
// came from.
pub use control::lifecycle::{run, Fatal};
pub use control::Source;
