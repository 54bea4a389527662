//! The data path: everything a client's bytes pass through. The front-end
//! sockets and accept loops ([`listener`]), one connection from accept to
//! close ([`connection`]), moving bytes ([`pump`], [`splice`]), the
//! PROXY protocol ([`proxy_protocol`]), and the HTTP/1.x framing that lets
//! a `workers.stateless` connection move between workers ([`http1`]). It
//! reads one [`Snapshot`] at a time per connection and the sticky table,
//! and changes nothing else but counters and the passive health reports of
//! the backends it used.
//!
//! [`Snapshot`]: crate::pool::Snapshot

pub mod connection;
pub mod http1;
pub mod listener;
pub mod parked;
pub mod proxy_protocol;
pub mod pump;
pub mod splice;
