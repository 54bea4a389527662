//! The classic BPF program corral attaches to a front end's SO_REUSEPORT
//! group in handed mode. The kernel runs it for every new connection; the
//! number it returns is the index of the socket (the worker slot) that gets
//! the connection. An index past the group's end makes the kernel fall
//! back to its own hash.
//!
//! Every program starts the same way: a connection from corral's probe
//! range, 127.254.X.Y, goes to slot X·256+Y, so corral can check one
//! chosen worker through the front end. Then:
//!
//! - [`Rule::Spread`] (round-robin): a random bucket among the slots in
//!   rotation. A classic BPF program keeps no state between runs, so there
//!   is no counter to rotate; a uniform random choice spreads as evenly
//!   over many connections.
//! - [`Rule::Sticky`]: the client's IPv4 address, masked by the prefix,
//!   hashed ([`hash`], the same function the program computes) into one of
//!   [`table::BUCKETS`] buckets, and the bucket to a slot through the
//!   consistent table of [`table::build`].
//!
//! A bucket becomes a slot through a binary search tree of compare-and-jump
//! instructions over the table's runs (classic BPF cannot index memory).
//!
//! [`access_filter`] is the other kind: a socket filter (`SO_ATTACH_FILTER`)
//! on every slot socket that enforces `clients.allow` and `clients.deny` in
//! the kernel. A listening socket's filter sees each incoming SYN: a denied
//! client's is dropped (returns 0) before any worker hears of it, and its
//! connection attempt times out. corral's probes always pass.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use libc::sock_filter;

use super::table;

/// `SO_ATTACH_REUSEPORT_CBPF` from `<asm-generic/socket.h>` (not in libc's
/// Linux module).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// The longest program the kernel accepts.
const MAX_INSTRUCTIONS: usize = libc::BPF_MAXINSNS as usize;

/// Where the IPv4 source address sits, counted from the network header.
const IPV4_SOURCE: i32 = libc::SKF_NET_OFF + 12;

/// corral's probe range: 127.254.0.0/16.
const PROBE_NET: u32 = 0x7ffe_0000;
const PROBE_MASK: u32 = 0xffff_0000;

/// How a program places clients that are not corral's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// At random over the slots in rotation.
    Spread,
    /// By the client's address masked to `prefix` bits.
    Sticky { prefix: u8 },
}

/// A generated program.
#[derive(Debug, Clone)]
pub struct Program {
    instructions: Vec<sock_filter>,
}

impl Program {
    /// The program that places clients by `rule` over `slots` (not empty,
    /// sorted, each a socket index of the group).
    pub fn new(rule: &Rule, slots: &[usize]) -> Program {
        debug_assert!(!slots.is_empty());
        let mut code = probe_branch();
        match rule {
            Rule::Spread => {
                code.push(load_abs(
                    libc::BPF_W,
                    libc::SKF_AD_OFF + libc::SKF_AD_RANDOM,
                ));
                code.push(alu_k(libc::BPF_MOD, slots.len() as u32));
                let runs: Vec<(u32, u32)> = slots
                    .iter()
                    .enumerate()
                    .map(|(bucket, &slot)| (bucket as u32, slot as u32))
                    .collect();
                code.extend(search(&runs));
            }
            Rule::Sticky { prefix } => {
                code.push(load_abs(libc::BPF_W, IPV4_SOURCE));
                code.push(alu_k(libc::BPF_AND, mask(*prefix)));
                code.extend(hash_code());
                code.push(alu_k(libc::BPF_MOD, table::BUCKETS as u32));
                code.extend(search(&table::runs(&table::build(slots))));
            }
        }
        Program { instructions: code }
    }

    /// Its length in instructions (the tests hold it under the kernel's
    /// limit).
    #[cfg(test)]
    pub fn instructions(&self) -> usize {
        self.instructions.len()
    }

    /// Makes this the program of the SO_REUSEPORT group `socket` belongs
    /// to (it replaces the group's previous one).
    pub fn attach(&self, socket: &impl AsRawFd) -> io::Result<()> {
        self.set(socket, SO_ATTACH_REUSEPORT_CBPF)
    }
}

/// The port-mode front end's program: a random one of the group's first
/// `sockets` sockets, which are corral's own (one per proxy thread, bound
/// before anyone else can join). A process that joins the group later with
/// SO_REUSEPORT gets a higher index, which this program never returns: it
/// gets no client.
pub fn only_own(sockets: usize) -> Program {
    Program {
        instructions: vec![
            load_abs(libc::BPF_W, libc::SKF_AD_OFF + libc::SKF_AD_RANDOM),
            alu_k(libc::BPF_MOD, sockets.max(1) as u32),
            ret_a(),
        ],
    }
}

/// `SO_ATTACH_FILTER`/`SO_DETACH_FILTER` (socket filters).
const SO_ATTACH_FILTER: libc::c_int = libc::SO_ATTACH_FILTER;
const SO_DETACH_FILTER: libc::c_int = libc::SO_DETACH_FILTER;

/// The most networks `allow` and `deny` may list together in handed mode (4
/// instructions each within the kernel's 4096).
pub const MAX_ACCESS_NETWORKS: usize = 1000;

/// The socket filter for `allow` and `deny` (IPv4 networks; the handed-mode
/// front end is IPv4), or `None` when both are empty (no filter). Deny
/// wins; a non-empty allow lets only its networks in; corral's probe range
/// always passes.
pub fn access_filter(allow: &[ipnet::IpNet], deny: &[ipnet::IpNet]) -> Option<Program> {
    if allow.is_empty() && deny.is_empty() {
        return None;
    }
    const KEEP: u32 = u32::MAX;
    const DROP: u32 = 0;
    let v4 = |nets: &[ipnet::IpNet]| -> Vec<(u32, u32)> {
        nets.iter()
            .filter_map(|net| match net {
                ipnet::IpNet::V4(v4) => Some((u32::from(v4.network()), mask(v4.prefix_len()))),
                ipnet::IpNet::V6(_) => None,
            })
            .collect()
    };
    // if (source & mask) == network: return verdict
    let check = |(network, net_mask): (u32, u32), verdict: u32| {
        [
            load_abs(libc::BPF_W, IPV4_SOURCE),
            alu_k(libc::BPF_AND, net_mask),
            jump(libc::BPF_JEQ, network & net_mask, 0, 1),
            stmt(libc::BPF_RET | libc::BPF_K, verdict),
        ]
    };
    let mut code = Vec::new();
    code.extend(check((PROBE_NET, PROBE_MASK), KEEP));
    for net in v4(deny) {
        code.extend(check(net, DROP));
    }
    if allow.is_empty() {
        code.push(stmt(libc::BPF_RET | libc::BPF_K, KEEP));
    } else {
        for net in v4(allow) {
            code.extend(check(net, KEEP));
        }
        code.push(stmt(libc::BPF_RET | libc::BPF_K, DROP));
    }
    Some(Program { instructions: code })
}

impl Program {
    /// Makes this the socket filter of `socket` (replacing any).
    pub fn attach_filter(&self, socket: &impl AsRawFd) -> io::Result<()> {
        self.set(socket, SO_ATTACH_FILTER)
    }

    fn set(&self, socket: &impl AsRawFd, option: libc::c_int) -> io::Result<()> {
        if self.instructions.len() > MAX_INSTRUCTIONS {
            return Err(io::Error::other(format!(
                "the program has {} instructions, more than the kernel's {MAX_INSTRUCTIONS}",
                self.instructions.len()
            )));
        }
        let program = libc::sock_fprog {
            len: self.instructions.len() as u16,
            filter: self.instructions.as_ptr() as *mut sock_filter,
        };
        // SAFETY: `program` points at `instructions`, which outlive the
        // call; the kernel copies the program.
        let done = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&program as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Attaches a socket filter that drops every packet to `socket` (a
/// listening slot socket at a graceful stop): new clients' SYNs go
/// unanswered, while the connections already queued stay for the workers
/// to accept. Unlike a shutdown of the socket, this leaves the workers'
/// own `accept` on it working (uvicorn logs `EINVAL` tracebacks when the
/// socket it accepts from is shut down under it).
pub fn drop_new_clients(socket: &impl AsRawFd) -> io::Result<()> {
    Program {
        instructions: vec![stmt(libc::BPF_RET | libc::BPF_K, 0)],
    }
    .attach_filter(socket)
}

/// Removes `socket`'s filter; having none is fine.
pub fn detach_filter(socket: &impl AsRawFd) -> io::Result<()> {
    let nothing: libc::c_int = 0;
    // SAFETY: SO_DETACH_FILTER reads no option value; a valid pointer and
    // length are given anyway.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_FILTER,
            (&nothing as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match done {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            e => Err(e),
        },
    }
}

/// The probe source address that the program steers to `slot`.
pub fn probe_source(slot: usize) -> Ipv4Addr {
    Ipv4Addr::from(PROBE_NET | (slot as u32 & !PROBE_MASK))
}

/// Is `ip` in corral's probe range?
pub fn is_probe_source(ip: Ipv4Addr) -> bool {
    u32::from(ip) & PROBE_MASK == PROBE_NET
}

/// The network mask of an IPv4 prefix length.
pub fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - p),
    }
}

/// The hash the sticky program computes over a masked address (murmur3's
/// 32-bit finaliser: every input bit moves every output bit).
pub fn hash(masked: u32) -> u32 {
    let mut h = masked;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The slot the sticky program picks for `client` over `slots`.
pub fn sticky_slot(client: Ipv4Addr, prefix: u8, slots: &[usize]) -> usize {
    let bucket = hash(u32::from(client) & mask(prefix)) as usize % table::BUCKETS;
    table::build(slots)[bucket]
}

/// `A = source address; if it is in 127.254/16, return its low 16 bits`.
fn probe_branch() -> Vec<sock_filter> {
    vec![
        load_abs(libc::BPF_W, IPV4_SOURCE),
        alu_k(libc::BPF_AND, PROBE_MASK),
        jump(libc::BPF_JEQ, PROBE_NET, 0, 3),
        load_abs(libc::BPF_W, IPV4_SOURCE),
        alu_k(libc::BPF_AND, !PROBE_MASK),
        ret_a(),
    ]
}

/// [`hash`] in classic BPF, over A, using X.
fn hash_code() -> Vec<sock_filter> {
    let xor_shift = |by: u32| {
        [
            stmt(libc::BPF_MISC | libc::BPF_TAX, 0),
            alu_k(libc::BPF_RSH, by),
            stmt(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0),
        ]
    };
    let mut code = Vec::new();
    code.extend(xor_shift(16));
    code.push(alu_k(libc::BPF_MUL, 0x85eb_ca6b));
    code.extend(xor_shift(13));
    code.push(alu_k(libc::BPF_MUL, 0xc2b2_ae35));
    code.extend(xor_shift(16));
    code
}

/// Returns the slot of the run that holds A. `runs` are `(first bucket,
/// slot)`, sorted, the first starting at 0. Each inner node is `if A >=
/// split` (fall through to a long jump to the right half) `else` (skip it,
/// into the left half): conditional jumps reach only 255 instructions,
/// `ja` reaches any.
fn search(runs: &[(u32, u32)]) -> Vec<sock_filter> {
    if runs.len() == 1 {
        return vec![stmt(libc::BPF_RET | libc::BPF_K, runs[0].1)];
    }
    let middle = runs.len() / 2;
    let left = search(&runs[..middle]);
    let right = search(&runs[middle..]);
    let mut code = Vec::with_capacity(2 + left.len() + right.len());
    code.push(jump(libc::BPF_JGE, runs[middle].0, 0, 1));
    code.push(stmt(libc::BPF_JMP | libc::BPF_JA, left.len() as u32));
    code.extend(left);
    code.extend(right);
    code
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn load_abs(size: u32, offset: i32) -> sock_filter {
    stmt(libc::BPF_LD | size | libc::BPF_ABS, offset as u32)
}

fn alu_k(op: u32, k: u32) -> sock_filter {
    stmt(libc::BPF_ALU | op | libc::BPF_K, k)
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | op | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

fn ret_a() -> sock_filter {
    stmt(libc::BPF_RET | libc::BPF_A, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::net::{SocketAddr, TcpStream};

    /// A group of `n` listening sockets on one loopback port.
    fn group(n: usize) -> (Vec<Socket>, SocketAddr) {
        let mut sockets = Vec::new();
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        for _ in 0..n {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(128).unwrap();
            addr = s.local_addr().unwrap().as_socket().unwrap();
            s.set_nonblocking(true).unwrap();
            sockets.push(s);
        }
        (sockets, addr)
    }

    /// Connects from `source` and says which socket of the group got it.
    fn landed(sockets: &[Socket], addr: SocketAddr, source: Ipv4Addr) -> usize {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        client
            .bind(&SocketAddr::new(source.into(), 0).into())
            .unwrap();
        client.connect(&addr.into()).unwrap();
        let _client: TcpStream = client.into();
        let took: Vec<usize> = sockets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.accept().is_ok())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(took.len(), 1, "exactly one socket accepts");
        took[0]
    }

    #[test]
    fn the_kernel_places_sticky_clients_where_the_table_says() {
        let (sockets, addr) = group(4);
        for slots in [vec![0, 1, 2, 3], vec![0, 2, 3], vec![1]] {
            let program = Program::new(&Rule::Sticky { prefix: 32 }, &slots);
            program.attach(&sockets[0]).unwrap();
            for n in 0..40u8 {
                let client = Ipv4Addr::new(127, 0, 1, n + 1);
                let expected = sticky_slot(client, 32, &slots);
                assert!(slots.contains(&expected));
                assert_eq!(landed(&sockets, addr, client), expected, "{client}");
            }
        }
    }

    #[test]
    fn a_prefix_keeps_a_subnet_together() {
        let (sockets, addr) = group(3);
        Program::new(&Rule::Sticky { prefix: 16 }, &[0, 1, 2])
            .attach(&sockets[1])
            .unwrap();
        let first = landed(&sockets, addr, Ipv4Addr::new(127, 9, 1, 1));
        for n in 2..12 {
            assert_eq!(landed(&sockets, addr, Ipv4Addr::new(127, 9, n, n)), first);
        }
    }

    #[test]
    fn spread_reaches_only_and_every_slot_in_rotation() {
        let (sockets, addr) = group(4);
        Program::new(&Rule::Spread, &[1, 3])
            .attach(&sockets[0])
            .unwrap();
        let mut seen = [0usize; 4];
        for _ in 0..60 {
            seen[landed(&sockets, addr, Ipv4Addr::LOCALHOST)] += 1;
        }
        assert_eq!((seen[0], seen[2]), (0, 0), "{seen:?}");
        assert!(seen[1] > 0 && seen[3] > 0, "{seen:?}");
    }

    #[test]
    fn probes_reach_the_slot_they_name() {
        let (sockets, addr) = group(3);
        Program::new(&Rule::Sticky { prefix: 24 }, &[0])
            .attach(&sockets[0])
            .unwrap();
        for slot in [2, 1, 0, 2] {
            assert_eq!(landed(&sockets, addr, probe_source(slot)), slot);
        }
    }

    /// Does a connection from `source` reach the listening socket?
    fn reaches(socket: &Socket, addr: SocketAddr, source: Ipv4Addr) -> bool {
        let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        client
            .bind(&SocketAddr::new(source.into(), 0).into())
            .unwrap();
        let connected = client
            .connect_timeout(&addr.into(), std::time::Duration::from_millis(300))
            .is_ok();
        while socket.accept().is_ok() {}
        connected
    }

    #[test]
    fn the_access_filter_drops_denied_and_unlisted_clients_in_the_kernel() {
        let (sockets, addr) = group(1);
        let net = |t: &str| t.parse::<ipnet::IpNet>().unwrap();
        access_filter(&[net("127.0.2.0/24")], &[net("127.0.2.9/32")])
            .unwrap()
            .attach_filter(&sockets[0])
            .unwrap();
        assert!(reaches(&sockets[0], addr, Ipv4Addr::new(127, 0, 2, 8)));
        assert!(!reaches(&sockets[0], addr, Ipv4Addr::new(127, 0, 2, 9)));
        assert!(!reaches(&sockets[0], addr, Ipv4Addr::new(127, 0, 3, 1)));
        assert!(reaches(&sockets[0], addr, probe_source(0)));
        detach_filter(&sockets[0]).unwrap();
        assert!(reaches(&sockets[0], addr, Ipv4Addr::new(127, 0, 2, 9)));
        assert!(access_filter(&[], &[]).is_none());
        let many: Vec<_> = (0..MAX_ACCESS_NETWORKS as u32)
            .map(|i| ipnet::IpNet::from(std::net::IpAddr::V4(Ipv4Addr::from(i))))
            .collect();
        assert!(access_filter(&many, &[]).unwrap().instructions() <= MAX_INSTRUCTIONS);
    }

    #[test]
    fn a_latecomer_to_the_group_gets_nothing() {
        let (mut sockets, addr) = group(3);
        only_own(2).attach(&sockets[0]).unwrap();
        let mut seen = [0usize; 3];
        for _ in 0..60 {
            seen[landed(&sockets, addr, Ipv4Addr::LOCALHOST)] += 1;
        }
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
        sockets.truncate(2);
    }

    #[test]
    fn the_largest_table_fits_the_kernels_limit() {
        let slots: Vec<usize> = (0..table::MAX_SLOTS).collect();
        assert!(
            Program::new(&Rule::Sticky { prefix: 32 }, &slots).instructions() <= MAX_INSTRUCTIONS
        );
        assert!(Program::new(&Rule::Spread, &slots).instructions() <= MAX_INSTRUCTIONS);
    }
}
