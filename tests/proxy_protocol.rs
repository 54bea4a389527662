//! PROXY protocol against a real peer: HAProxy (Debian's `haproxy` package)
//! in front of corral with `send-proxy-v2`, and HAProxy behind corral with
//! `accept-proxy`, echoing the client address it was told.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

struct HaProxy {
    _child: Killed,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    fn start(config: &str, port: u16) -> HaProxy {
        require("haproxy", "haproxy");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Killed(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()),
            "haproxy did not start"
        );
        HaProxy {
            _child: child,
            _dir: dir,
        }
    }
}

const DEFAULTS: &str =
    "defaults\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n";

/// HAProxy answering every HTTP request with the client address it sees
/// (from the PROXY header corral sends).
fn echo_source_haproxy(port: u16) -> HaProxy {
    HaProxy::start(
        &format!(
            "{DEFAULTS}frontend echo\n  mode http\n  bind 127.0.0.1:{port} accept-proxy\n  http-request return status 200 content-type text/plain lf-string \"%[src]\\n\"\n"
        ),
        port,
    )
}

fn source(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn corral_sends_v1_and_v2_headers_that_haproxy_accepts() {
    for version in ["v1", "v2"] {
        let port = free_port();
        let _peer = echo_source_haproxy(port);
        let corral = Corral::start(&Config::new().backend_sending_proxy(
            "haproxy",
            format!("127.0.0.1:{port}"),
            Some(version),
        ));
        let body = get_from(corral.front, Some(source(88))).expect("answer through corral");
        assert_eq!(body.trim(), "127.0.0.88", "{version}");
    }
}

#[test]
fn corral_takes_the_client_address_from_haproxys_v2_header() {
    let haproxy_port = free_port();
    let echo_port = free_port();
    let _echo = echo_source_haproxy(echo_port);
    // Client -> HAProxy (send-proxy-v2) -> corral (accepts v2, sends v1) -> HAProxy echo.
    // Sticky entries and connection log lines show which address corral used.
    let corral = Corral::start(
        &Config::new()
            .set("listener.proxy_protocol", "v2")
            .strategy("sticky")
            .connection_logs(true)
            .backend_sending_proxy("echo", format!("127.0.0.1:{echo_port}"), Some("v1")),
    );
    let (corral_front, admin) = (corral.front, corral.admin);
    let _front = HaProxy::start(
        &format!(
            "{DEFAULTS}frontend fe\n  mode tcp\n  bind 127.0.0.1:{haproxy_port}\n  default_backend be\nbackend be\n  mode tcp\n  server corral {corral_front} send-proxy-v2\n"
        ),
        haproxy_port,
    );
    let via: SocketAddr = format!("127.0.0.1:{haproxy_port}").parse().unwrap();
    let body = get_from(via, Some(source(77))).expect("answer through haproxy and corral");
    assert_eq!(body.trim(), "127.0.0.77");
    // Stickiness and logs use the address from the header.
    let (_, sticky) = http(admin, "GET", "/sticky?ip=127.0.0.77");
    assert!(sticky.contains("\"by\":\"entry\""), "{sticky}");
    corral.wait_log("127.0.0.77:", Duration::from_secs(5));
}

/// corral accepting PROXY headers (`mode`) in front of an echo backend;
/// sticky, so that its entries show the address a header gave.
fn proxy_corral(mode: &str) -> (Corral, Backend<std::io::Result<()>>) {
    let echo = Backend::echo();
    let corral = Corral::start(
        &Config::new()
            .set("listener.proxy_protocol", mode)
            .strategy("sticky")
            .backend("echo", echo.addr),
    );
    (corral, echo)
}

#[test]
fn a_header_in_pieces_is_put_together_and_data_after_it_is_kept() {
    let (corral, _echo) = proxy_corral("any");
    let front = corral.front;
    let mut s = TcpStream::connect(front).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for piece in [
        &b"PROXY TCP4 "[..],
        b"192.0.2.9 127.0.0.1 ",
        b"4242 80\r",
        b"\nhello",
    ] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let (_, sticky) = http(corral.admin, "GET", "/sticky?ip=192.0.2.9");
    assert!(sticky.contains("\"by\":\"entry\""), "{sticky}");
}

#[test]
fn missing_or_malformed_headers_are_closed_and_counted() {
    let (corral, _echo) = proxy_corral("v1");
    let front = corral.front;
    let cases: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c",
    ];
    for bytes in cases {
        let mut s = TcpStream::connect(front).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "{bytes:?} was not closed"
        );
    }
    assert!(eventually(Duration::from_secs(5), || {
        corral.metric("corral_connection_errors_total{reason=\"proxy_protocol\"}") == 3.0
    }));
    // Good clients are unaffected.
    let mut s = TcpStream::connect(front).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nok")
        .unwrap();
    let mut buf = [0u8; 2];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ok");
}
