//! The PROXY protocol (v1 text, v2 binary), both ways: reading the header an
//! upstream balancer puts in front of a client connection, so the real client
//! address is the one used for stickiness, logs and onward headers; and
//! writing one to a backend that wants to know who the client is.
//!
//! Reading never consumes more than the header: whatever application bytes
//! arrived with it are handed back to be sent on to the backend first.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::{ProxyProtocolMode, SendProxy};
use crate::signal::Signal;

/// How long a client has to deliver a complete header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 line, CRLF included (from the specification).
const V1_MAX: usize = 107;

/// The largest v2 header accepted (16 fixed bytes and the address block
/// with its TLVs).
const V2_MAX: usize = 16 + 2048;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Bytes the header took.
    pub length: usize,
    /// The original client and the address it connected to, when the header
    /// carries them (not for v1 `UNKNOWN` or v2 `LOCAL`).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("no PROXY header where one is required")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header incomplete after {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header was complete")]
    Closed,
}

/// The result of looking at the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    Complete(Header),
    Incomplete,
    Invalid(Invalid),
}

/// Parses a header at the start of `buf` in the given mode.
pub fn parse(buf: &[u8], mode: ProxyProtocolMode) -> Parse {
    let v1_prefix = b"PROXY ";
    let could_be_v1 = buf.len().min(6) > 0 && v1_prefix.starts_with(&buf[..buf.len().min(6)]);
    let could_be_v2 =
        !buf.is_empty() && V2_SIGNATURE.starts_with(&buf[..buf.len().min(V2_SIGNATURE.len())]);
    let (v1, v2) = match mode {
        ProxyProtocolMode::None => return Parse::Invalid(Invalid::Missing),
        ProxyProtocolMode::V1 => (could_be_v1, false),
        ProxyProtocolMode::V2 => (false, could_be_v2),
        ProxyProtocolMode::Any => (could_be_v1, could_be_v2),
    };
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    if v1 {
        parse_v1(buf)
    } else if v2 {
        parse_v2(buf)
    } else {
        Parse::Invalid(Invalid::Missing)
    }
}

fn parse_v1(buf: &[u8]) -> Parse {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parse::Invalid(Invalid::Malformed("v1 line longer than 107 bytes"))
        } else {
            Parse::Incomplete
        };
    };
    if end + 2 > V1_MAX {
        return Parse::Invalid(Invalid::Malformed("v1 line longer than 107 bytes"));
    }
    let header = |addresses| {
        Parse::Complete(Header {
            length: end + 2,
            addresses,
        })
    };
    // "the receiver must ignore anything presented before the CRLF is
    // found" after UNKNOWN: whatever bytes they are.
    let line = &buf[..end];
    if line == b"PROXY UNKNOWN" || line.starts_with(b"PROXY UNKNOWN ") {
        return header(None);
    }
    let Ok(line) = std::str::from_utf8(line) else {
        return Parse::Invalid(Invalid::Malformed("v1 line is not text"));
    };
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => header(None),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(dst)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>()) else {
                return Parse::Invalid(Invalid::Malformed("v1 address is not an IP address"));
            };
            if src.is_ipv4() != (*family == "TCP4") || dst.is_ipv4() != (*family == "TCP4") {
                return Parse::Invalid(Invalid::Malformed("v1 address does not match its family"));
            }
            let (Some(sport), Some(dport)) = (port(sport), port(dport)) else {
                return Parse::Invalid(Invalid::Malformed("v1 port is not a port"));
            };
            header(Some((
                SocketAddr::new(src, sport),
                SocketAddr::new(dst, dport),
            )))
        }
        _ => Parse::Invalid(Invalid::Malformed("v1 line is not PROXY TCP4|TCP6|UNKNOWN")),
    }
}

/// A decimal port without sign or leading zeros.
fn port(text: &str) -> Option<u16> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.chars()
        .all(|c| c.is_ascii_digit())
        .then(|| text.parse().ok())?
}

fn parse_v2(buf: &[u8]) -> Parse {
    if buf.len() < 16 {
        return Parse::Incomplete;
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Parse::Invalid(Invalid::Malformed("v2 version is not 2"));
    }
    let length = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if length > V2_MAX {
        return Parse::Invalid(Invalid::Malformed("v2 header too long"));
    }
    if buf.len() < length {
        return Parse::Incomplete;
    }
    let block = &buf[16..length];
    let addresses = match (version_command & 0x0f, buf[13]) {
        // LOCAL: a health check from the balancer itself; keep the real peer.
        (0x0, _) => None,
        (0x1, 0x11) if block.len() >= 12 => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        (0x1, 0x21) if block.len() >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        (0x1, 0x11 | 0x21) => {
            return Parse::Invalid(Invalid::Malformed("v2 address block too short"))
        }
        // UNSPEC, UDP or UNIX: nothing corral can use; keep the real peer.
        (0x1, _) => None,
        _ => return Parse::Invalid(Invalid::Malformed("v2 command is neither LOCAL nor PROXY")),
    };
    Parse::Complete(Header { length, addresses })
}

/// How reading a header ended, when the client was not at fault.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderRead {
    /// The addresses the header carries, and the application bytes that
    /// came after it.
    Complete(Option<(SocketAddr, SocketAddr)>, Vec<u8>),
    /// `corral upgrade` asked the connection to park first: the bytes of
    /// the header read so far, for the next image to go on from.
    Parked(Vec<u8>),
}

/// Reads a header from `client` within [`HEADER_TIMEOUT`], after the bytes
/// `so_far` (those an earlier image had read), until it is complete or
/// `park` is cancelled.
pub async fn read_header(
    client: &mut TcpStream,
    mode: ProxyProtocolMode,
    so_far: Vec<u8>,
    park: &Signal,
) -> Result<HeaderRead, Invalid> {
    let mut buf = so_far;
    buf.reserve(256);
    let reading = async {
        loop {
            match parse(&buf, mode) {
                Parse::Complete(header) => {
                    let rest = buf.split_off(header.length);
                    return Ok(HeaderRead::Complete(header.addresses, rest));
                }
                Parse::Invalid(why) => return Err(why),
                Parse::Incomplete => {}
            }
            let mut chunk = [0u8; 512];
            tokio::select! {
                read = client.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return Err(Invalid::Closed),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                _ = park.fired() => return Ok(HeaderRead::Parked(std::mem::take(&mut buf))),
            }
        }
    };
    tokio::time::timeout(HEADER_TIMEOUT, reading)
        .await
        .unwrap_or(Err(Invalid::Timeout(HEADER_TIMEOUT)))
}

/// The header to send a backend for a client `source` that connected to
/// `destination`.
pub fn encode(version: SendProxy, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    // Mixed families (an IPv6 client on an IPv4 listener cannot happen, but
    // an IPv4-mapped peer can): send both as IPv6.
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (source, destination)
        }
        _ => (as_v6(source), as_v6(destination)),
    };
    match version {
        SendProxy::None => Vec::new(),
        SendProxy::V1 => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        SendProxy::V2 => {
            let mut out = Vec::with_capacity(52);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, PROXY
            match (source.ip(), destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11);
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (s, d) => {
                    out.push(0x21);
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6_octets(s));
                    out.extend_from_slice(&v6_octets(d));
                }
            }
            out.extend_from_slice(&source.port().to_be_bytes());
            out.extend_from_slice(&destination.port().to_be_bytes());
            out
        }
    }
}

fn as_v6(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(match addr.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        }),
        addr.port(),
    )
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProxyProtocolMode::{Any, V1, V2};

    fn addrs(h: &Parse) -> Option<(SocketAddr, SocketAddr)> {
        match h {
            Parse::Complete(h) => h.addresses,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_round_trip_and_pieces() {
        let src: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();
        let bytes = encode(SendProxy::V1, src, dst);
        assert_eq!(bytes, b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 443\r\n");
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], Any), Parse::Incomplete, "cut at {cut}");
        }
        let mut with_data = bytes.clone();
        with_data.extend_from_slice(b"GET /");
        let parsed = parse(&with_data, V1);
        assert_eq!(addrs(&parsed), Some((src, dst)));
        assert!(matches!(parsed, Parse::Complete(Header { length, .. }) if length == bytes.len()));
    }

    #[test]
    fn v2_round_trip_v4_and_v6() {
        for (src, dst) in [
            ("192.0.2.7:5555", "198.51.100.1:443"),
            ("[2001:db8::1]:5555", "[2001:db8::2]:443"),
        ] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let bytes = encode(SendProxy::V2, src, dst);
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut], V2), Parse::Incomplete, "cut at {cut}");
            }
            assert_eq!(addrs(&parse(&bytes, Any)), Some((src, dst)));
        }
    }

    #[test]
    fn unknown_and_local_keep_the_peer() {
        assert_eq!(addrs(&parse(b"PROXY UNKNOWN\r\n", V1)), None);
        assert!(matches!(
            parse(b"PROXY UNKNOWN \xff\xfe garbage\r\nGET", V1),
            Parse::Complete(Header {
                length: 26,
                addresses: None
            })
        ));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(addrs(&parse(&local, V2)), None);
    }

    #[test]
    fn missing_and_malformed_headers_are_refused() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Any),
            Parse::Invalid(Invalid::Missing)
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4\r\n", V2),
            Parse::Invalid(Invalid::Missing)
        );
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", V1),
            Parse::Invalid(Invalid::Malformed(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 ::1 5.6.7.8 1 1\r\n", V1),
            Parse::Invalid(Invalid::Malformed(_))
        ));
        assert!(matches!(parse(&[b'P'; 200], V1), Parse::Invalid(_)));
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend_from_slice(&[0x31, 0x11, 0x00, 0x0c]);
        assert!(matches!(
            parse(&bad_version, V2),
            Parse::Invalid(Invalid::Malformed(_))
        ));
    }
}
