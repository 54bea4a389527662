//! Handed mode: a worker that listens on a port of its own instead of
//! accepting from the socket corral handed it as fd 3 (a server started
//! with its usual `--port`, or code that ignores `LISTEN_FDS`). Its clients
//! would wait in fd 3's queue for ever, so a starting worker is looked at
//! a few times a second: listening TCP sockets (sock_diag, as in
//! [`crate::steering::intruders`]) held by a process of its tree (as the
//! [`crate::sampler`] saw it) that are not the handed one are strays.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::collections::HashSet;

use crate::steering::intruders;

/// How often a starting handed-mode worker is looked at.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// How long a worker may hold a listener of its own without accepting
/// from fd 3 before it is called a stray: a server may open a metrics or
/// admin port a moment before it starts taking clients from fd 3.
pub const GRACE: Duration = Duration::from_secs(1);

/// The addresses a worker's tree, holding the sockets `held`, listens on
/// other than the handed socket (inode `handed`), sorted; empty when there
/// is none.
pub fn listening_elsewhere(held: &HashSet<u64>, handed: u64) -> io::Result<Vec<SocketAddr>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        found.extend(
            intruders::listening(family as u8)?
                .into_iter()
                .filter(|(_, inode)| *inode != handed && held.contains(inode))
                .map(|(addr, _)| addr),
        );
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// `a, b and c`, for a log line.
pub fn list(addrs: &[SocketAddr]) -> String {
    let names: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// What to tell the user about a worker listening on `addrs`.
pub fn advice(addrs: &[SocketAddr]) -> String {
    format!(
        "it listens on {} (a port of its own) and accepts no client from the socket corral handed it as fd 3. In fd mode clients reach a worker only through fd 3: accept from fd 3 (LISTEN_FDS=1, systemd socket activation: `server.listen({{fd: 3}})` in Node, `uvicorn --fd 3`, `gunicorn --bind fd://3`; see docs/fd-mode.md), or set workers.listen = \"port\" (--listen port) and listen on $PORT",
        list(addrs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_this_process_is_found_and_the_handed_one_is_not() {
        let handed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stray6 = std::net::TcpListener::bind("[::1]:0").ok();
        let handed_inode = intruders::inode_of(&handed).unwrap();
        let held = crate::sampler::proc::socket_inodes(std::process::id());
        let found = listening_elsewhere(&held, handed_inode).unwrap();
        assert!(found.contains(&stray.local_addr().unwrap()), "{found:?}");
        assert!(!found.contains(&handed.local_addr().unwrap()), "{found:?}");
        if let Some(stray6) = stray6 {
            assert!(found.contains(&stray6.local_addr().unwrap()), "{found:?}");
        }
    }

    #[test]
    fn addresses_read_as_a_list() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "[::]:2".parse().unwrap();
        assert_eq!(list(&[a]), "127.0.0.1:1");
        assert_eq!(list(&[a, b, a]), "127.0.0.1:1, [::]:2 and 127.0.0.1:1");
    }
}
