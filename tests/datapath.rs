//! The data path's correctness (not its speed): large transfers each way
//! byte for byte, half-close in both directions, and bounded memory when a
//! client stops reading while its backend floods it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// corral with one static backend "b" served by `handler`, with bulk
/// transfers spliced or copied through corral's buffers.
fn corral_for<T: Send + 'static>(
    handler: impl Fn(&mut TcpStream) -> T + Send + Sync + 'static,
    splice: bool,
) -> (Corral, Backend<T>) {
    let backend = Backend::start(handler);
    let corral = Corral::start(
        &Config::new()
            .set("runtime.splice", splice)
            .connection_logs(true)
            .backend("b", backend.addr),
    );
    (corral, backend)
}

/// Once the connection is over, it was spliced exactly when splice was on.
fn assert_spliced(corral: &Corral, splice: bool) {
    assert!(eventually(Duration::from_secs(10), || {
        corral.metric("corral_connections_active{backend=\"b\"}") == 0.0
            && corral.metric("corral_connections_total{backend=\"b\"}") == 1.0
    }));
    // corral logs the connection after it has counted it, spliced or not.
    corral.wait_log("connection closed", Duration::from_secs(10));
    let spliced = corral.metric("corral_spliced_connections_total");
    assert_eq!(spliced, if splice { 1.0 } else { 0.0 }, "splice = {splice}");
}

fn connect(front: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(front).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Runs `transfer` with splice on, then off.
fn spliced_and_copied(transfer: fn(bool)) {
    for splice in [true, false] {
        transfer(splice);
    }
}

#[test]
fn sixty_four_mib_download_then_the_backend_half_closes_and_still_listens() {
    spliced_and_copied(download);
}

fn download(splice: bool) {
    let data = Arc::new(pattern(64 * MIB, 7));
    let sent = Arc::clone(&data);
    // The verdict is what the backend heard back; health checks connect and
    // leave, so their connections end in an error.
    let (corral, backend) = corral_for(
        move |backend| -> std::io::Result<Vec<u8>> {
            backend.write_all(&sent)?;
            // Backend is done talking but still listens: the client's reply must arrive.
            backend.shutdown(Shutdown::Write)?;
            let mut reply = Vec::new();
            backend.read_to_end(&mut reply)?;
            Ok(reply)
        },
        splice,
    );
    let mut client = connect(corral.front);
    let mut got = Vec::with_capacity(64 * MIB);
    client.read_to_end(&mut got).unwrap();
    assert!(got == *data, "download differs");
    client.write_all(b"thanks").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let reply = backend.verdict_where(Duration::from_secs(60), |r| r.is_ok());
    assert_eq!(reply.unwrap(), b"thanks");
    assert!(eventually(Duration::from_secs(10), || {
        corral.metric("corral_bytes_received_total{backend=\"b\"}") == 6.0
    }));
    assert_eq!(
        corral.metric("corral_bytes_sent_total{backend=\"b\"}"),
        (64 * MIB) as f64
    );
    assert_spliced(&corral, splice);
}

#[test]
fn sixty_four_mib_upload_with_the_client_half_closing() {
    spliced_and_copied(upload);
}

fn upload(splice: bool) {
    let data = Arc::new(pattern(64 * MIB, 9));
    let expected = Arc::clone(&data);
    // The backend's verdict travels back to the client on the connection.
    let (corral, _backend) = corral_for(
        move |backend| -> std::io::Result<()> {
            let mut got = Vec::with_capacity(64 * MIB);
            backend.read_to_end(&mut got)?;
            let verdict: &[u8] = if got == *expected {
                b"identical"
            } else {
                b"different"
            };
            backend.write_all(verdict)
        },
        splice,
    );
    let mut client = connect(corral.front);
    client.write_all(&data).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut verdict = String::new();
    client.read_to_string(&mut verdict).unwrap();
    assert_eq!(verdict, "identical");
    assert_spliced(&corral, splice);
}

fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")[0].parse().unwrap()
}

#[test]
fn a_client_that_stops_reading_does_not_grow_corral() {
    // How many times the flooding backend found corral taking no more bytes.
    let held_back = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&held_back);
    let (corral, _backend) = corral_for(
        move |backend| -> std::io::Result<()> {
            // A client says one byte first; a health check says nothing.
            if backend.read(&mut [0u8; 1])? == 0 {
                return Ok(());
            }
            // Flood (1 GiB at most) until the connection goes away.
            backend.set_nonblocking(true)?;
            let chunk = vec![b'x'; MIB];
            let mut flooded = 0;
            while flooded < 1024 * MIB {
                match backend.write(&chunk) {
                    Ok(n) => flooded += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        },
        true,
    );
    let mut client = connect(corral.front);
    client.write_all(b"g").unwrap();
    let mut first = [0u8; 1024];
    client.read_exact(&mut first).unwrap();
    // Every buffer between the backend and the stalled client is full: the
    // backend's writes block.
    assert!(
        eventually(Duration::from_secs(10), || held_back.load(Ordering::SeqCst)
            > 0),
        "corral never held the flooding backend back"
    );
    let before = rss_kib(corral.pid());
    // The client reads nothing for 3 s while the backend has 1 GiB to send...
    std::thread::sleep(Duration::from_secs(3));
    // ...and corral is still holding the backend back at the end of it.
    let so_far = held_back.load(Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), || held_back.load(Ordering::SeqCst)
            > so_far),
        "the backend is no longer held back"
    );
    let after = rss_kib(corral.pid());
    assert!(
        after < before + 8 * 1024,
        "corral grew from {before} KiB to {after} KiB while the client stalled"
    );
    // Bytes are counted as they move, not when the connection closes.
    let sent = corral.metric("corral_bytes_sent_total{backend=\"b\"}");
    assert!(
        sent >= 1024.0,
        "nothing counted while the connection is open: {sent}"
    );
    // Reading resumes and the stream is intact.
    let mut more = vec![0u8; 8 * MIB];
    client.read_exact(&mut more).unwrap();
    assert!(more.iter().all(|&b| b == b'x'));
}

/// A live backend that reads the request and hangs up without a byte of
/// answer (it may have acted on it: no replay). The connection ends as any
/// other does, through the one exit: logged `backend_closed`, closed by the
/// backend, with the bytes the client sent, and counted in the duration
/// histogram and the byte counter of its backend.
#[test]
fn a_backend_that_hangs_up_unanswered_is_logged_and_accounted_once() {
    const REQUEST: &[u8] = b"POST /order HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n";
    // Health checks connect and leave without a request: their handler
    // fails, which is no verdict the test waits for.
    let backend = Backend::start(|backend: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        let mut got = vec![0u8; REQUEST.len()];
        backend.read_exact(&mut got)?;
        // Returning drops the stream: closed, unanswered.
        Ok(got)
    });
    let corral = Corral::start(
        &Config::new()
            .set("log.format", "json")
            .connection_logs(true)
            .backend("b", backend.addr),
    );
    let mut client = connect(corral.front);
    client.write_all(REQUEST).unwrap();
    let mut answer = Vec::new();
    // A close or a reset: either way, no byte of answer.
    let _ = client.read_to_end(&mut answer);
    assert_eq!(answer, b"", "the client got an answer from nowhere");
    let heard = backend.verdict_where(Duration::from_secs(10), |r| r.is_ok());
    assert_eq!(heard.unwrap(), REQUEST);
    corral.wait_log("connection closed", Duration::from_secs(10));
    let log = corral.log();
    let closed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "connection closed")
        .collect();
    assert_eq!(closed.len(), 1, "one log line per connection:\n{log}");
    let entry = &closed[0];
    assert_eq!(entry["end"], "backend_closed", "{entry}");
    assert_eq!(entry["closed_by"], "backend", "{entry}");
    assert_eq!(entry["backend"], "b", "{entry}");
    assert_eq!(entry["bytes_in"], REQUEST.len() as u64, "{entry}");
    assert_eq!(entry["bytes_out"], 0, "{entry}");
    assert_eq!(
        corral.metric("corral_connection_duration_seconds_count{backend=\"b\"}"),
        1.0
    );
    assert_eq!(
        corral.metric("corral_bytes_received_total{backend=\"b\"}"),
        REQUEST.len() as f64
    );
    assert_eq!(corral.metric("corral_bytes_sent_total{backend=\"b\"}"), 0.0);
}
