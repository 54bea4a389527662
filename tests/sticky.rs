//! Sticky sessions and least-connections end to end, with clients on
//! distinct loopback source addresses (Linux accepts any 127.0.0.0/8).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use common::*;

fn ip(a: u8, b: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, a, b))
}

/// `n` distinct client addresses 127.0.a.b.
fn clients(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| ip((i / 250) as u8 + 1, (i % 250) as u8 + 1))
        .collect()
}

/// `count` demo workers behind the sticky strategy.
fn sticky(count: usize) -> Config {
    Config::new().strategy("sticky").demo_workers(count)
}

fn worker_for(corral: &Corral, client: IpAddr) -> String {
    worker_of(&get_from(corral.front, Some(client)).expect("request"))
}

#[test]
fn one_client_stays_and_many_clients_spread() {
    let corral = Corral::start(&sticky(4));
    corral.wait_up(4);
    let first = worker_for(&corral, ip(9, 9));
    for _ in 0..14 {
        assert_eq!(worker_for(&corral, ip(9, 9)), first);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for client in clients(400) {
        *counts.entry(worker_for(&corral, client)).or_default() += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|&n| n <= 160), "over 40%: {counts:?}");
    assert_eq!(
        corral.metric("corral_sticky_lookups_total{result=\"hit\"}"),
        14.0
    );
    assert_eq!(
        corral.metric("corral_sticky_lookups_total{result=\"miss\"}"),
        401.0
    );
    assert_eq!(corral.metric("corral_sticky_entries"), 401.0);
    assert_eq!(corral.status()["sticky_entries"], 401);
}

#[test]
fn placement_survives_a_restart_of_corral() {
    let base = free_port_range(6);
    let placements = |corral: &Corral| -> Vec<String> {
        clients(40)
            .into_iter()
            .map(|c| worker_for(corral, c))
            .collect()
    };
    let first = {
        let corral = Corral::start(&sticky(3).set("workers.port_base", base));
        corral.wait_up(3);
        placements(&corral)
    };
    let corral = Corral::start(&sticky(3).set("workers.port_base", base));
    corral.wait_up(3);
    assert_eq!(placements(&corral), first);
}

#[test]
fn a_prefix_groups_a_subnet_on_one_worker() {
    let corral = Corral::start(&sticky(4).set("sticky.ipv4_prefix", 24));
    corral.wait_up(4);
    for subnet in 1..=5u8 {
        let first = worker_for(&corral, ip(subnet, 1));
        for host in [2u8, 77, 200, 254] {
            assert_eq!(
                worker_for(&corral, ip(subnet, host)),
                first,
                "127.0.{subnet}.{host}"
            );
        }
    }
    assert_eq!(corral.status()["sticky_entries"], 5);
}

#[test]
fn a_dead_workers_clients_are_redispatched_and_nobody_else_moves() {
    let corral = Corral::start(&sticky(3));
    corral.wait_up(3);
    let all = clients(60);
    let before: Vec<String> = all.iter().map(|&c| worker_for(&corral, c)).collect();
    let victim = before[0].clone();
    let slot: usize = victim.trim_start_matches("worker=").parse().unwrap();
    let pid = corral.status()["backends"][slot]["pid"].as_u64().unwrap();
    send_signal(pid as u32, Signal::SIGKILL);
    // Its clients are served elsewhere at once, and stay there.
    let after: Vec<String> = all.iter().map(|&c| worker_for(&corral, c)).collect();
    let moved = before.iter().filter(|w| **w == victim).count();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if *b == victim {
            assert_ne!(a, b, "client {i} still on the dead worker");
        } else {
            assert_eq!(a, b, "client {i} moved although its worker is fine");
        }
    }
    assert_eq!(
        corral.metric("corral_sticky_lookups_total{result=\"redispatch\"}"),
        moved as f64
    );
    // The slot comes back; the redispatched clients stay on their new worker.
    assert!(
        eventually(Duration::from_secs(10), || corral.backends_in("up") == 3),
        "{}\n{}",
        corral.status(),
        corral.log()
    );
    let later: Vec<String> = all.iter().map(|&c| worker_for(&corral, c)).collect();
    assert_eq!(later, after);
}

#[test]
fn ttl_forgets_and_max_entries_bounds_the_table() {
    let corral = Corral::start(
        &sticky(2)
            .set("sticky.ttl", "1s")
            .set("sticky.max_entries", 1000),
    );
    corral.wait_up(2);
    worker_for(&corral, ip(200, 1));
    assert_eq!(corral.status()["sticky_entries"], 1);
    assert!(eventually(Duration::from_secs(5), || corral.status()
        ["sticky_entries"]
        == 0));
    let (code, body) = http(corral.admin, "GET", "/sticky?ip=127.0.200.1");
    assert_eq!(code, 200);
    assert!(body.contains("\"by\":\"placement\""), "{body}");

    // A flood of 5,000 sources: the table never holds more than 1,000 for long.
    let corral = Corral::start(&sticky(2).set("sticky.max_entries", 1000));
    corral.wait_up(2);
    for client in clients(5000) {
        worker_for(&corral, client);
    }
    // At most 1,000, and not emptied either (eviction goes 5% below).
    let bounded = || {
        let n = corral.status()["sticky_entries"].as_u64().unwrap_or(0);
        (950..=1000).contains(&n)
    };
    assert!(
        eventually(Duration::from_secs(5), bounded),
        "{}",
        corral.status()["sticky_entries"]
    );
    // The most recent clients are the ones kept.
    let (_, body) = http(
        corral.admin,
        "GET",
        &format!("/sticky?ip={}", clients(5000)[4999]),
    );
    assert!(body.contains("\"by\":\"entry\""), "{body}");
    let (_, body) = http(
        corral.admin,
        "GET",
        &format!("/sticky?ip={}", clients(5000)[0]),
    );
    assert!(body.contains("\"by\":\"placement\""), "{body}");
}

#[test]
fn sticky_admin_lookup_and_forget() {
    let corral = Corral::start(&sticky(2));
    corral.wait_up(2);
    let worker = worker_for(&corral, ip(7, 7));
    let (code, body) = http(corral.admin, "GET", "/sticky?ip=127.0.7.7");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["by"], "entry");
    assert_eq!(v["backend"].as_str().unwrap(), worker.replace('=', "-"));
    assert_eq!(http(corral.admin, "DELETE", "/sticky?ip=127.0.7.7").0, 200);
    assert_eq!(http(corral.admin, "DELETE", "/sticky?ip=127.0.7.7").0, 404);
    assert_eq!(http(corral.admin, "GET", "/sticky?ip=nonsense").0, 400);
    assert_eq!(corral.status()["sticky_entries"], 0);
}

#[test]
fn least_connections_avoids_the_backend_holding_a_long_connection() {
    let corral = Corral::start(&Config::new().strategy("least-connections").echo_workers(2));
    corral.wait_up(2);
    let mut long = TcpStream::connect(corral.front).unwrap();
    long.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    long.read_exact(&mut b).unwrap();
    let busy = ["worker-0", "worker-1"]
        .into_iter()
        .find(|w| corral.metric(&format!("corral_connections_active{{backend=\"{w}\"}}")) == 1.0)
        .expect("one worker holds the long connection");
    let idle = if busy == "worker-0" {
        "worker-1"
    } else {
        "worker-0"
    };
    let idle_active = format!("corral_connections_active{{backend=\"{idle}\"}}");
    for _ in 0..10 {
        let mut s = TcpStream::connect(corral.front).unwrap();
        s.write_all(b"y").unwrap();
        s.read_exact(&mut b).unwrap();
        drop(s);
        // Sequential clients: each is gone before the next arrives.
        assert!(eventually(Duration::from_secs(5), || corral
            .metric(&idle_active)
            == 0.0));
    }
    assert_eq!(
        corral.metric(&format!("corral_connections_total{{backend=\"{busy}\"}}")),
        1.0
    );
    assert_eq!(
        corral.metric(&format!("corral_connections_total{{backend=\"{idle}\"}}")),
        10.0
    );
}
