//! Other processes listening on the handed-mode front end. A process of the
//! same user may bind the front-end address with SO_REUSEPORT and join the
//! slots' group at its end; the steering program never picks an index past
//! corral's slots, but a slot added later (scale-up) would get the index
//! after the intruder's, and the intruder the new slot's clients and
//! probes. So corral looks: the kernel's listening TCP sockets (sock_diag
//! over netlink, the source `ss -tl` reads) on the front end's port that are
//! none of corral's slot sockets (compared by inode) are intruders, named
//! with the pid that holds them (the sampler finds it in `/proc/<pid>/fd`).

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Another process's listening socket on the front end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Intruder {
    /// A process holding it (the first found), if it can be seen.
    pub pid: Option<u32>,
    /// That process's name (`/proc/<pid>/comm`).
    pub command: Option<String>,
    /// The address it listens on.
    pub address: String,
    #[serde(skip)]
    pub inode: u64,
}

impl std::fmt::Display for Intruder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(command)) => write!(
                f,
                "pid {pid} ({}) on {}",
                crate::terminal::escape(command),
                self.address
            ),
            (Some(pid), None) => write!(f, "pid {pid} on {}", self.address),
            _ => write!(f, "socket inode {} on {}", self.inode, self.address),
        }
    }
}

/// The inode of a socket, as sock_diag and `/proc/<pid>/fd` name it.
pub fn inode_of(socket: &impl AsRawFd) -> Option<u64> {
    // SAFETY: fstat writes a `stat` into the zeroed buffer and reads
    // nothing else; the descriptor is borrowed and stays open.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let done = unsafe { libc::fstat(socket.as_raw_fd(), &mut stat) };
    (done == 0).then_some(stat.st_ino)
}

/// Listening IPv4 TCP sockets on `front`'s port (its address, or any
/// address when one of the two is unspecified) that are not in `own`,
/// not yet named ([`name`]).
pub fn find(front: SocketAddr, own: &HashSet<u64>) -> io::Result<Vec<Intruder>> {
    let front_ip = match front.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => return Ok(Vec::new()),
    };
    let found: Vec<Intruder> = listeners()?
        .into_iter()
        .filter(|(addr, inode)| {
            addr.port() == front.port()
                && (addr.ip() == &front_ip
                    || addr.ip().is_unspecified()
                    || front_ip.is_unspecified())
                && !own.contains(inode)
        })
        .map(|(addr, inode)| Intruder {
            pid: None,
            command: None,
            address: addr.to_string(),
            inode,
        })
        .collect();
    Ok(found)
}

/// Fills in the pid and command of each intruder from what `sample` found
/// holding its socket ([`Sampler::holders_of`]).
///
/// [`Sampler::holders_of`]: crate::sampler::Sampler::holders_of
pub fn name(found: &mut [Intruder], sample: &crate::sampler::Sample) {
    for intruder in found.iter_mut() {
        if let Some(holder) = sample.holder(intruder.inode) {
            intruder.pid = Some(holder.pid);
            intruder.command = holder.command.clone();
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY` from `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` from `<net/tcp_states.h>`.
const TCP_LISTEN: u32 = 10;
/// Bytes of `struct nlmsghdr`.
const HEADER: usize = 16;
/// Bytes of `struct inet_diag_msg` before its attributes.
const DIAG_MSG: usize = 72;

/// Every listening IPv4 TCP socket of this network namespace: its local
/// address and inode (one sock_diag dump over netlink).
fn listeners() -> io::Result<Vec<(std::net::SocketAddrV4, u64)>> {
    Ok(listening(libc::AF_INET as u8)?
        .into_iter()
        .filter_map(|(addr, inode)| match addr {
            SocketAddr::V4(v4) => Some((v4, inode)),
            SocketAddr::V6(_) => None,
        })
        .collect())
}

/// Every listening TCP socket of `family` (`AF_INET` or `AF_INET6`) in
/// this network namespace: its local address and inode.
pub(crate) fn listening(family: u8) -> io::Result<Vec<(SocketAddr, u64)>> {
    let socket = sock_diag_socket()?;
    send_to_kernel(&socket, &dump_request(family))?;
    let mut found = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv writes at most `buffer.len()` bytes into it.
        let got = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        if read_messages(&buffer[..got as usize], family, &mut found)? {
            return Ok(found);
        }
    }
}

/// A netlink socket to the kernel's sock_diag, whose reads give up after
/// a second.
fn sock_diag_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: the option value is a valid timeval of the given size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    Ok(socket)
}

/// The request for a dump of every listening TCP socket of `family`:
/// nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states,
/// and a zero inet_diag_sockid (48 bytes).
fn dump_request(family: u8) -> Vec<u8> {
    let mut request = Vec::with_capacity(HEADER + 56);
    request.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request.extend_from_slice(&flags.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    request.extend_from_slice(&[0u8; 48]);
    request
}

/// Sends `request` to the kernel over `socket`.
fn send_to_kernel(socket: &OwnedFd, request: &[u8]) -> io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl with the family set addresses the
    // kernel; `request` is valid for its length.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds the listening sockets in one datagram of the dump to `found`;
/// true once the dump is done.
fn read_messages(
    mut rest: &[u8],
    family: u8,
    found: &mut Vec<(SocketAddr, u64)>,
) -> io::Result<bool> {
    while rest.len() >= HEADER {
        let word =
            |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let length = word(0) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if length < HEADER || length > rest.len() {
            return Err(io::Error::other("a malformed sock_diag answer"));
        }
        match kind as libc::c_int {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = if length >= HEADER + 4 {
                    word(HEADER) as i32
                } else {
                    0
                };
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY && length >= HEADER + DIAG_MSG => {
                found.push(listener_of(&rest[HEADER..length], family));
            }
            _ => {}
        }
        // Messages are aligned to 4 bytes.
        let step = (length + 3) & !3;
        rest = &rest[step.min(rest.len())..];
    }
    Ok(false)
}

/// The local address and inode in one `inet_diag_msg`.
fn listener_of(msg: &[u8], family: u8) -> (SocketAddr, u64) {
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let ip: std::net::IpAddr = if family == libc::AF_INET6 as u8 {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&msg[8..24]);
        std::net::Ipv6Addr::from(octets).into()
    } else {
        Ipv4Addr::new(msg[8], msg[9], msg[10], msg[11]).into()
    };
    let inode = u32::from_ne_bytes([msg[68], msg[69], msg[70], msg[71]]);
    (SocketAddr::new(ip, port), u64::from(inode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stranger_on_the_port_is_found_and_named_and_our_own_is_not() {
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let front = own.local_addr().unwrap();
        let ours = HashSet::from([inode_of(&own).unwrap()]);
        assert_eq!(find(front, &ours).unwrap(), Vec::new());
        let sampler = crate::sampler::Sampler::start().unwrap();
        let other =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        other.set_reuse_address(true).unwrap();
        // Not joined by SO_REUSEPORT here: a plain listener on the same
        // port at another address of the same machine.
        other
            .bind(&SocketAddr::new("127.0.0.2".parse().unwrap(), front.port()).into())
            .unwrap();
        other.listen(8).unwrap();
        let mut found = find(
            SocketAddr::new("0.0.0.0".parse().unwrap(), front.port()),
            &ours,
        )
        .unwrap();
        let inodes: Vec<u64> = found.iter().map(|i| i.inode).collect();
        let sample = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(sampler.holders_of(&inodes));
        name(&mut found, &sample);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, Some(std::process::id()));
        assert_eq!(found[0].address, format!("127.0.0.2:{}", front.port()));
    }
}
