//! The data path's correctness (not its speed): large transfers each way
//! byte for byte, half-close in both directions, and bounded memory when a
//! client stops reading while its backend floods it.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
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

/// corral with one static backend served by `handler` on a test thread,
/// with bulk transfers spliced or copied through corral's buffers.
fn corral_for(handler: fn(TcpStream), splice: bool) -> Corral {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || handler(stream));
        }
    });
    Corral::start(&format!(
        "[runtime]\nsplice = {splice}\n[[backends]]\nname = \"b\"\naddress = \"{addr}\"\n"
    ))
}

/// Once the connection is over, it was spliced exactly when splice was on.
fn assert_spliced(corral: &Corral, splice: bool) {
    assert!(eventually(Duration::from_secs(10), || {
        corral.metric("corral_connections_active{backend=\"b\"}") == 0.0
            && corral.metric("corral_connections_total{backend=\"b\"}") == 1.0
    }));
    let spliced = corral.metric("corral_spliced_connections_total");
    assert_eq!(spliced, if splice { 1.0 } else { 0.0 }, "splice = {splice}");
}

fn connect(front: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(front).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

#[test]
fn sixty_four_mib_download_then_the_backend_half_closes_and_still_listens() {
    for splice in [true, false] {
        download(splice);
    }
}

fn download(splice: bool) {
    let corral = corral_for(
        |mut backend| {
            backend.write_all(&pattern(64 * MIB, 7)).unwrap();
            // Backend is done talking but still listens: the client's reply must arrive.
            backend.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            backend.read_to_end(&mut reply).unwrap();
            assert_eq!(reply, b"thanks");
        },
        splice,
    );
    let mut client = connect(corral.front);
    let mut got = Vec::with_capacity(64 * MIB);
    client.read_to_end(&mut got).unwrap();
    assert!(got == pattern(64 * MIB, 7), "download differs");
    client.write_all(b"thanks").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
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
    for splice in [true, false] {
        upload(splice);
    }
}

fn upload(splice: bool) {
    let corral = corral_for(
        |mut backend| {
            let mut got = Vec::with_capacity(64 * MIB);
            backend.read_to_end(&mut got).unwrap();
            let verdict: &[u8] = if got == pattern(64 * MIB, 9) {
                b"identical"
            } else {
                b"different"
            };
            backend.write_all(verdict).unwrap();
        },
        splice,
    );
    let mut client = connect(corral.front);
    client.write_all(&pattern(64 * MIB, 9)).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut verdict = String::new();
    client.read_to_string(&mut verdict).unwrap();
    assert_eq!(verdict, "identical");
    assert_spliced(&corral, splice);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_stops_reading_does_not_grow_corral() {
    let corral = corral_for(
        |mut backend| {
            // Flood until the connection goes away.
            let chunk = vec![b'x'; MIB];
            for _ in 0..1024 {
                if backend.write_all(&chunk).is_err() {
                    return;
                }
            }
        },
        true,
    );
    let mut client = connect(corral.front);
    let mut first = [0u8; 1024];
    client.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(corral.pid());
    // The client reads nothing for 3 s while the backend has 1 GiB to send.
    std::thread::sleep(Duration::from_secs(3));
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
