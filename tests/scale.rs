//! Many connections at once: several thousand kept-alive clients through
//! corral, every one answered twice and closed cleanly, and corral's
//! descriptors back to what they were before.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Clients held open at once, when the descriptor limit allows: the test
/// holds one descriptor per client, corral two (client and backend side).
const WANTED: usize = 5000;

/// Descriptors left for everything else (the test harness, corral's
/// listeners, workers' pipes, logs).
const SPARE: usize = 400;

/// Raises this process's soft descriptor limit to its hard one (corral, a
/// child, inherits it) and returns how many clients fit.
fn clients_that_fit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .expect("raise the soft limit to the hard one");
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0 as usize;
    // corral holds two per client; the workers (each its own process) hold the
    // backend ends, spread over them.
    (limit.saturating_sub(SPARE) / 2).min(WANTED)
}

/// Open descriptors of a process.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

/// Sends a GET on a kept-alive connection (or, with `close`, the last one).
fn send_get(stream: &mut TcpStream, close: bool) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET / HTTP/1.1\r\nHost: scale\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes())
}

/// Reads one answer (head and `Content-Length` body) and returns its status
/// line and body, leaving the connection open.
fn read_answer(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "closed before a whole head: {:?}",
                String::from_utf8_lossy(&data)
            )));
        }
        data.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head:?}")))?;
    while data.len() < head_end + length {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed in the middle of a body"));
        }
        data.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&data[head_end..head_end + length]).to_string();
    Ok((status, body))
}

/// After its last answer a `Connection: close` exchange ends with a clean
/// end of stream: no reset, no stray bytes.
fn closes_cleanly(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} bytes after the last answer",
            rest.len()
        )))
    }
}

/// Checks one answer: a 200 from a demo worker.
fn answered(stream: &mut TcpStream, which: usize, round: &str) {
    match read_answer(stream) {
        Ok((status, body)) => assert!(
            status.starts_with("HTTP/1.1 200") && body.starts_with("worker="),
            "client {which}, {round} request: {status:?} {body:?}"
        ),
        Err(e) => panic!("client {which}, {round} request: {e}"),
    }
}

#[test]
fn thousands_of_kept_alive_clients_are_each_answered_and_closed_cleanly() {
    let count = clients_that_fit();
    assert!(
        count >= 1000,
        "the descriptor limit leaves room for only {count} clients"
    );
    let config = Config::new()
        .demo_workers(2)
        .set("listener.max_connections", count + 100)
        .set("listener.backlog", 4096);
    let corral = Corral::start(&config);
    corral.wait_up(2);
    // What corral holds with nothing open (the health checks' sockets come
    // and go: the baseline is taken as the least seen).
    let baseline = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            descriptors(corral.pid())
        })
        .min()
        .unwrap();

    // Every client connects and asks once; all stay open together.
    let mut clients: Vec<TcpStream> = Vec::with_capacity(count);
    for which in 0..count {
        let mut stream = TcpStream::connect(config.front)
            .unwrap_or_else(|e| panic!("client {which} of {count} cannot connect: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        send_get(&mut stream, false).unwrap();
        clients.push(stream);
    }
    for (which, stream) in clients.iter_mut().enumerate() {
        answered(stream, which, "first");
    }
    // All of them at once, still open: corral holds a backend side for each.
    assert!(
        descriptors(corral.pid()) >= baseline + count,
        "corral holds {} descriptors with {count} clients open (baseline {baseline})",
        descriptors(corral.pid())
    );
    // A second request on the same connections: they were kept alive.
    for stream in clients.iter_mut() {
        send_get(stream, true).unwrap();
    }
    for (which, stream) in clients.iter_mut().enumerate() {
        answered(stream, which, "second");
        closes_cleanly(stream).unwrap_or_else(|e| panic!("client {which}: {e}"));
    }
    drop(clients);

    let back = eventually(Duration::from_secs(30), || {
        descriptors(corral.pid()) <= baseline
    });
    assert!(
        back,
        "corral still holds {} descriptors, {baseline} before the clients",
        descriptors(corral.pid())
    );
    let accepted = corral.metric("corral_connections_accepted_total");
    assert!(
        accepted >= count as f64,
        "corral counted {accepted} accepted connections for {count} clients"
    );
}
