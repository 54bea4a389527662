//! What the kernel says about a connection a health check opened to a local
//! worker: still waiting in the worker's accept queue, or taken by the
//! worker. A connection the worker has not accepted yet has no file behind
//! it, so `/proc/net/tcp` lists it with inode 0.

use std::net::{IpAddr, SocketAddr};

/// Socket states of a connection that is still in an accept queue: the
/// handshake is done (ESTABLISHED), or the client has closed since
/// (CLOSE_WAIT).
const ESTABLISHED: u8 = 0x01;
const CLOSE_WAIT: u8 = 0x08;

/// Has the worker listening on `worker` accepted the connection that comes
/// from `client`? `None` when the kernel's table does not tell (no such
/// entry, or `/proc` is unreadable).
pub fn accepted(worker: SocketAddr, client: SocketAddr) -> Option<bool> {
    Some(taken_as(worker, client)?.is_some())
}

/// Like [`accepted`], and when the connection was accepted, the inode of
/// the accepting side's socket (`Some(None)`: still waiting), so corral can
/// ask which process holds it.
pub fn taken_as(worker: SocketAddr, client: SocketAddr) -> Option<Option<u64>> {
    let table = if worker.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    find(&text, worker, client)
}

fn find(table: &str, worker: SocketAddr, client: SocketAddr) -> Option<Option<u64>> {
    let local = encode(worker);
    let remote = encode(client);
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[1] != local || fields[2] != remote {
            return None;
        }
        let state = u8::from_str_radix(fields[3], 16).ok()?;
        let inode: u64 = fields[9].parse().ok()?;
        let waiting = inode == 0 && matches!(state, ESTABLISHED | CLOSE_WAIT);
        Some((!waiting).then_some(inode))
    })
}

/// An address as `/proc/net/tcp` writes it: the address's bytes as
/// native-endian 32-bit words in hex, a colon, the port in hex.
fn encode(addr: SocketAddr) -> String {
    let words: Vec<u32> = match addr.ip() {
        IpAddr::V4(ip) => vec![u32::from_ne_bytes(ip.octets())],
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    let mut out: String = words.iter().map(|w| format!("{w:08X}")).collect();
    out.push_str(&format!(":{:04X}", addr.port()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_connection_is_waiting_until_accepted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let worker = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(worker).unwrap();
        let ours = client.local_addr().unwrap();
        assert_eq!(accepted(worker, ours), Some(false));
        let (_server_side, _) = listener.accept().unwrap();
        assert_eq!(accepted(worker, ours), Some(true));
        client.write_all(b"x").unwrap();
    }

    #[test]
    fn loopback_encodes_like_the_kernel() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(encode(addr), "0100007F:1F90");
        }
    }
}
