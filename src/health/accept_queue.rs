//! What the kernel says about a connection a health check opened to a local
//! worker: still waiting in the worker's accept queue, or taken by the
//! worker. A connection the worker has not accepted yet has no file behind
//! it, so the kernel reports its socket with inode 0.
//!
//! corral asks for that one socket by its addresses through the sock_diag
//! netlink interface (what `ss` uses), which finds it by a hash lookup: the
//! answer costs the same with ten connections on the machine or a million
//! (reading `/proc/net/tcp` would walk them all, on every check).

use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Socket states of a connection that is still in an accept queue: the
/// handshake is done (ESTABLISHED), or the client has closed since
/// (CLOSE_WAIT).
const ESTABLISHED: u8 = 0x01;
const CLOSE_WAIT: u8 = 0x08;

/// From `<linux/sock_diag.h>` and `<linux/inet_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const INET_DIAG_NOCOOKIE: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Answer {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// Has the worker listening on `worker` accepted the connection that comes
/// from `client`? `None` when the kernel does not tell (no such socket, or
/// no sock_diag).
pub fn accepted(worker: SocketAddr, client: SocketAddr) -> Option<bool> {
    Some(taken_as(worker, client)?.is_some())
}

/// Like [`accepted`], and when the connection was accepted, the inode of
/// the accepting side's socket (`Some(None)`: still waiting), so corral can
/// ask which process holds it.
pub fn taken_as(worker: SocketAddr, client: SocketAddr) -> Option<Option<u64>> {
    let (state, inode) = lookup(worker, client)?;
    let waiting = inode == 0 && matches!(state, ESTABLISHED | CLOSE_WAIT);
    Some((!waiting).then_some(u64::from(inode)))
}

/// The state and inode of the TCP socket whose local address is `local`
/// and whose peer is `peer`.
fn lookup(local: SocketAddr, peer: SocketAddr) -> Option<(u8, u32)> {
    // SAFETY: a plain socket(2) call; the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let family = match local {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        id: SockId {
            sport: local.port().to_be(),
            dport: peer.port().to_be(),
            src: words(local.ip()),
            dst: words(peer.ip()),
            interface: 0,
            cookie: [INET_DIAG_NOCOOKIE; 2],
        },
    };
    // SAFETY: sends `request`, plain data of the size given.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            (&request as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return None;
    }
    let mut buffer = [0u8; 512];
    // SAFETY: receives into `buffer`, at most its length.
    let got = unsafe {
        libc::recv(
            socket.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            0,
        )
    };
    let header_len = size_of::<libc::nlmsghdr>();
    if got < (header_len + size_of::<Answer>()) as isize {
        return None; // an NLMSG_ERROR (no such socket) is shorter
    }
    // SAFETY: the buffer holds at least a header; read unaligned.
    let header: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(buffer.as_ptr().cast()) };
    if header.nlmsg_type != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // SAFETY: the buffer holds a header and an answer; read unaligned.
    let answer: Answer = unsafe { std::ptr::read_unaligned(buffer[header_len..].as_ptr().cast()) };
    Some((answer.state, answer.inode))
}

/// An address as sock_diag takes it: network-order bytes in 32-bit words.
fn words(ip: IpAddr) -> [u32; 4] {
    let mut out = [0u32; 4];
    match ip {
        IpAddr::V4(v4) => out[0] = u32::from_ne_bytes(v4.octets()),
        IpAddr::V6(v6) => {
            for (word, chunk) in out.iter_mut().zip(v6.octets().chunks_exact(4)) {
                *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_connection_is_waiting_until_accepted() {
        for host in ["127.0.0.1:0", "[::1]:0"] {
            let listener = std::net::TcpListener::bind(host).unwrap();
            let worker = listener.local_addr().unwrap();
            let mut client = std::net::TcpStream::connect(worker).unwrap();
            let ours = client.local_addr().unwrap();
            assert_eq!(taken_as(worker, ours), Some(None), "{host}");
            let (server_side, _) = listener.accept().unwrap();
            let inode = std::fs::metadata(format!("/proc/self/fd/{}", server_side.as_raw_fd()))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap();
            assert_eq!(taken_as(worker, ours), Some(Some(inode)), "{host}");
            client.write_all(b"x").unwrap();
        }
    }

    #[test]
    fn an_unknown_connection_is_not_known() {
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert_eq!(taken_as(nobody, other), None);
    }
}
