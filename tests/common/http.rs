//! HTTP/1.1 by hand, one request per connection: the admin endpoints, and
//! requests through the front end from chosen source addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http(addr, method, path).unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

pub fn try_http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    request_on(&mut stream, addr, method, path, &[])
}

pub fn request_on(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(stream, addr, method, path, headers)
}

/// Sends one request on `stream` and reads the answer to its end, with
/// whatever read timeout the stream has. `Host` is `addr` unless `headers`
/// give one.
pub fn exchange(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    // A test may send a Host of its own (the admin port's rebinding check).
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    request.push_str("Connection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// GET / through the front end from a given local address (127.0.0.x).
pub fn get_from(front: SocketAddr, source: Option<IpAddr>) -> std::io::Result<String> {
    let mut stream = connect_from(front, source)?;
    let (code, body) = request_on(&mut stream, front, "GET", "/", &[])?;
    if code != 200 {
        return Err(std::io::Error::other(format!("status {code}")));
    }
    Ok(body)
}

/// The `worker=N` part of a demo worker's answer.
pub fn worker_of(body: &str) -> String {
    body.split_whitespace().next().unwrap_or("").to_string()
}

/// A connection to `front` from `source` (any local address when None).
pub fn connect_from(front: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&front.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}
