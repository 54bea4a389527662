//! The ports held by live worker processes, so that a slot never starts a
//! process on a port another slot's process is using (the alternate ports
//! shift when `count` changes on reload).

use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Default)]
pub struct PortBook(Mutex<Vec<u16>>);

impl PortBook {
    /// Claims the first of `candidates` that no worker holds and nothing
    /// else on `host` listens on (a stranger on the port would pass the
    /// readiness check and get the slot's traffic).
    pub fn claim(&self, host: IpAddr, candidates: [u16; 2]) -> Option<u16> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let port = candidates
            .into_iter()
            .find(|&p| !held.contains(&p) && std::net::TcpListener::bind((host, p)).is_ok())?;
        held.push(port);
        Some(port)
    }

    pub fn release(&self, port: u16) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|&p| p != port);
    }
}
