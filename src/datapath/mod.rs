//! The data path: everything a client's bytes pass through. The front-end
//! sockets and accept loops ([`listener`]), one connection from accept to
//! close ([`connection`]), moving bytes ([`pump`], [`splice`]) and the
//! PROXY protocol ([`proxy_protocol`]). It reads one [`Snapshot`] per
//! connection and the sticky table, and changes nothing else but counters
//! and the passive health reports of the backends it used.
//!
//! [`Snapshot`]: crate::pool::Snapshot

pub mod connection;
pub mod http1;
pub mod listener;
pub mod proxy_protocol;
pub mod pump;
pub mod splice;
