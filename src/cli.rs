//! The client side of the admin API, for `corral status`, `restart`,
//! `reload`, `scale`, `signal` and `clients` (`logs` is in [`logs`]): find the running instance (by `--admin ADDR` or
//! the `admin.bind` of `-c FILE`), ask it over HTTP, and print what a
//! person reads at a glance. Every text the instance sends is escaped
//! before it is printed ([`crate::terminal`]). Commands on one backend
//! by name (`restart NAME`, `disable`, `enable`) are in [`one_backend`].
//! Every error says what to do next.

pub mod one_backend;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::terminal::{escape, escape_keeping};
use crate::units::human_bytes;

pub mod logs;

/// How long the client waits for the running corral.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Where the running corral's admin port is, and the token it wants.
#[derive(Debug, Clone)]
pub struct Target {
    /// The admin port to connect to (`--admin`, or `admin.bind` of `-c
    /// FILE`, or the default).
    pub admin: SocketAddr,
    /// The bearer token its POST endpoints want (read from
    /// `admin.token_file` of `-c FILE`); `None` when none is set.
    pub token: Option<String>,
}

/// Why a client command failed; printed as one line, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepted the connection: most often no corral runs there.
    #[error("cannot reach corral's admin port at {addr}: {source}. corral may not be running there: start it (corral run), or point at the one that runs with --admin ADDR (its admin.bind) or -c FILE (its config file)")]
    Unreachable {
        /// The admin address tried.
        addr: SocketAddr,
        /// What the connect said.
        source: std::io::Error,
    },
    /// Connected, but no whole answer came in time.
    #[error("corral's admin port at {addr} did not answer within {TIMEOUT:?}")]
    TimedOut {
        /// The admin address asked.
        addr: SocketAddr,
    },
    /// An answer came that is not corral's (not HTTP, not the JSON
    /// expected): something else listens there.
    #[error("corral's admin port at {addr} answered badly: {why}")]
    BadAnswer {
        /// The admin address asked.
        addr: SocketAddr,
        /// What was wrong with the answer.
        why: String,
    },
    /// corral understood and said no (unknown worker, bad token, a reload
    /// it refused...): its own words, printed as they are.
    #[error("{0}")]
    Refused(String),
}

/// An answer: status code and body.
struct Answer {
    status: u16,
    body: String,
}

/// One request to the admin port.
async fn ask(target: &Target, method: &str, path: &str) -> Result<Answer, ClientError> {
    let addr = target.admin;
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Unreachable { addr, source })?;
        let bad = |why: String| ClientError::BadAnswer { addr, why };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| bad(e.to_string()))?;
        let driver = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "corral-cli");
        if let Some(token) = &target.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::new()).map_err(|e| bad(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| bad(e.to_string()))?
            .to_bytes();
        driver.abort();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::TimedOut { addr })?
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Refused(format!("cannot start a runtime: {e}")))
}

/// The reason in a refusal's JSON body, or the body itself, safe to print
/// (its lines kept, every other control character escaped); for a missing
/// or wrong token, where to give it.
fn refusal(answer: &Answer) -> String {
    let text = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| answer.body.trim().to_string());
    let mut text = escape_keeping(&text, &['\n']).into_owned();
    if answer.status == 401 {
        text.push_str(" (corral wants the token of its admin.token_file: run the command with -c FILE, the running corral's config file, and it is sent from there)");
    }
    text
}

/// A string field of the instance's answer, safe to print.
fn field(value: &serde_json::Value) -> Option<String> {
    value.as_str().map(|s| escape(s).into_owned())
}

/// `corral status`: the table of backends.
pub fn status(target: &Target) -> Result<String, ClientError> {
    let answer = runtime()?.block_on(ask(target, "GET", "/status"))?;
    if answer.status != 200 {
        return Err(ClientError::Refused(refusal(&answer)));
    }
    let status: serde_json::Value =
        serde_json::from_str(&answer.body).map_err(|e| ClientError::BadAnswer {
            addr: target.admin,
            why: format!("/status is not JSON: {e}"),
        })?;
    Ok(table(&status))
}

/// `corral restart [NAME]`: a rolling restart of every worker, or of the
/// one named.
pub fn restart(target: &Target, name: Option<&str>) -> Result<String, ClientError> {
    if let Some(name) = name {
        return one_backend::restart_one(target, name);
    }
    let answer = runtime()?.block_on(ask(target, "POST", "/workers/restart"))?;
    match answer.status {
        202 if answer.body.contains("merged") => {
            Ok("a rolling restart is already running; this request joined it".into())
        }
        202 => Ok("rolling restart started".into()),
        _ => Err(ClientError::Refused(refusal(&answer))),
    }
}

/// `corral upgrade`: the running corral executes the file at the path it
/// was started from, in the same process; one line says what was handed
/// over, or why it was refused.
pub fn upgrade(target: &Target) -> Result<String, ClientError> {
    let answer = runtime()?.block_on(ask(target, "POST", "/upgrade"))?;
    let value = serde_json::from_str::<serde_json::Value>(&answer.body).unwrap_or_default();
    match answer.status {
        200 => Ok(format!(
            "upgraded corral {} to {} in {} ms: {} workers handed over, {} open connections handed over",
            escape(value["from"].as_str().unwrap_or("?")),
            escape(value["to"].as_str().unwrap_or("?")),
            value["milliseconds"].as_u64().unwrap_or(0),
            value["workers"].as_u64().unwrap_or(0),
            value["connections"].as_u64().unwrap_or(0),
        )),
        _ => Err(ClientError::Refused(format!(
            "upgrade refused: {}",
            refusal(&answer)
        ))),
    }
}

/// `corral reload`: reload the config file.
pub fn reload(target: &Target) -> Result<String, ClientError> {
    let answer = runtime()?.block_on(ask(target, "POST", "/reload"))?;
    match answer.status {
        200 => Ok(reload_report(&answer.body)),
        _ => Err(ClientError::Refused(format!(
            "reload refused: {}",
            refusal(&answer)
        ))),
    }
}

/// What an applied reload did, one line each (the `lines` of `POST
/// /reload`'s answer): applied, rolled out, needing a restart, overridden
/// by a command-line flag.
fn reload_report(body: &str) -> String {
    let value = serde_json::from_str::<serde_json::Value>(body).unwrap_or_default();
    let lines = value["lines"].as_array().into_iter().flatten();
    std::iter::once("config reloaded".to_string())
        .chain(
            lines
                .filter_map(|l| l.as_str())
                .map(|l| format!("  {}", escape(l))),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// `corral scale N`: set the worker count.
pub fn scale(target: &Target, count: usize) -> Result<String, ClientError> {
    let path = format!("/workers/scale?count={count}");
    let answer = runtime()?.block_on(ask(target, "POST", &path))?;
    match answer.status {
        202 => Ok(scaled(count, &answer.body)),
        _ => Err(ClientError::Refused(format!(
            "scale refused: {}",
            refusal(&answer)
        ))),
    }
}

/// What `corral scale` says it did: how long the count holds depends on
/// whether the running corral has a file to reload from.
fn scaled(count: usize, body: &str) -> String {
    let answer: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match field(&answer["config_file"]) {
        Some(file) => format!(
            "scaling to {count} workers, until the next reload of {file} (its workers.count applies then: write {count} there to keep this)"
        ),
        None => format!(
            "scaling to {count} workers; corral runs without a config file, so this count holds until corral stops or is scaled again"
        ),
    }
}

/// `corral clients [--top N]`: who holds the most connections now.
pub fn clients(target: &Target, top: usize) -> Result<String, ClientError> {
    let answer = runtime()?.block_on(ask(target, "GET", &format!("/clients?top={top}")))?;
    if answer.status != 200 {
        return Err(ClientError::Refused(refusal(&answer)));
    }
    let value: serde_json::Value =
        serde_json::from_str(&answer.body).map_err(|e| ClientError::BadAnswer {
            addr: target.admin,
            why: format!("/clients is not JSON: {e}"),
        })?;
    Ok(clients_table(&value))
}

/// The `/clients` document as an aligned table.
pub(crate) fn clients_table(value: &serde_json::Value) -> String {
    let empty = Vec::new();
    let rows: Vec<[String; 4]> = value["clients"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|c| {
            [
                field(&c["client"]).unwrap_or_else(|| "?".into()),
                c["connections"].as_u64().unwrap_or(0).to_string(),
                format!("{:.2}/s", c["rate"].as_f64().unwrap_or(0.0)),
                c["rejected"].as_u64().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    aligned(&["CLIENT", "CONNS", "RATE", "REJECTED"], &rows)
}

/// Rows under headers, each column as wide as its widest cell.
fn aligned<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out.truncate(out.trim_end().len());
    out
}

/// The `/status` document as an aligned table with a totals line.
pub(crate) fn table(status: &serde_json::Value) -> String {
    let headers = [
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CONNS", "CPU", "MEM",
    ];
    let empty = Vec::new();
    let backends = status["backends"].as_array().unwrap_or(&empty);
    let mut rows: Vec<[String; 8]> = Vec::new();
    let (mut up, mut restarts, mut conns, mut cpu, mut memory) = (0, 0, None, 0.0, 0u64);
    for b in backends {
        let state = field(&b["state"]).unwrap_or_else(|| "?".into());
        if state == "up" {
            up += 1;
        }
        restarts += b["restarts"].as_u64().unwrap_or(0);
        if let Some(open) = b["active_connections"].as_u64() {
            conns = Some(conns.unwrap_or(0) + open);
        }
        cpu += b["cpu_seconds"].as_f64().unwrap_or(0.0);
        memory += b["memory_bytes"].as_u64().unwrap_or(0);
        rows.push([
            field(&b["name"]).unwrap_or_else(|| "?".into()),
            match field(&b["reason"]) {
                Some(reason) => format!("{state} ({reason})"),
                None => state.clone(),
            },
            b["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
            b["uptime_seconds"]
                .as_f64()
                .map_or("-".into(), human_duration),
            b["restarts"].as_u64().unwrap_or(0).to_string(),
            // Unknown in fd mode (the kernel hands clients to the workers).
            b["active_connections"]
                .as_u64()
                .map_or("-".into(), |c| c.to_string()),
            b["cpu_seconds"]
                .as_f64()
                .map_or("-".into(), |c| format!("{c:.2}s")),
            b["memory_bytes"].as_u64().map_or("-".into(), human_bytes),
        ]);
    }
    rows.push([
        "total".into(),
        format!("{up}/{} up", backends.len()),
        String::new(),
        String::new(),
        restarts.to_string(),
        conns.map_or("-".into(), |c: u64| c.to_string()),
        format!("{cpu:.2}s"),
        human_bytes(memory),
    ]);
    let mut out = aligned(&headers, &rows);
    // What workers say of themselves (workers.notify's STATUS=), if any,
    // escaped like every text from the instance.
    let said: Vec<(String, String)> = backends
        .iter()
        .filter_map(|b| Some((field(&b["name"])?, field(&b["status"])?)))
        .collect();
    if !said.is_empty() {
        let width = said
            .iter()
            .map(|(name, _)| name.chars().count())
            .max()
            .unwrap_or(0);
        let _ = write!(out, "\n\n{:<width$}  STATUS", "NAME");
        for (name, text) in said {
            let _ = write!(out, "\n{name:<width$}  {text}");
        }
    }
    out
}

/// `corral signal NAME|all SIG`: a signal to one worker or all.
pub fn signal(target: &Target, name: &str, signal: &str) -> Result<String, ClientError> {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("name", name)
        .append_pair("signal", signal)
        .finish();
    let path = format!("/workers/signal?{query}");
    let answer = runtime()?.block_on(ask(target, "POST", &path))?;
    match answer.status {
        202 => {
            let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
            let sent = field(&body["signal"]).unwrap_or_else(|| escape(signal).into_owned());
            let reached: Vec<String> = body["workers"]
                .as_array()
                .map(|all| all.iter().filter_map(field).collect())
                .unwrap_or_default();
            if reached.is_empty() {
                Ok(format!("{sent}: no running worker to send it to"))
            } else {
                Ok(format!("{sent} sent to {}", reached.join(", ")))
            }
        }
        _ => Err(ClientError::Refused(format!(
            "signal refused: {}",
            refusal(&answer)
        ))),
    }
}

/// Where the corral that runs `file` listens for admin requests, and its
/// token, read leniently: a file being edited may be invalid, and `corral
/// reload` must still reach the running corral to hear why it refuses it.
pub fn target_of_file(file: &std::path::Path) -> Result<Target, String> {
    let text =
        crate::config::read_file(file).map_err(|why| format!("{}: {why}", file.display()))?;
    let (bind, token_file) = admin_keys(&text);
    let admin = match bind {
        Some(bind) => crate::config::parse_addr(&bind).ok_or_else(|| {
            format!(
                "{}: key `admin.bind`: `{bind}` is not an address with a port",
                file.display()
            )
        })?,
        None => crate::config::defaults::ADMIN_BIND,
    };
    let token = token_file
        .filter(|f| !f.is_empty())
        .and_then(|f| crate::config::read_file(std::path::Path::new(&f)).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Target {
        admin: reachable(admin),
        token,
    })
}

/// `admin.bind` and `admin.token_file` as written: from the parsed table,
/// or line by line when the file does not parse.
fn admin_keys(text: &str) -> (Option<String>, Option<String>) {
    if let Ok(table) = text.parse::<toml::Table>() {
        let admin = table.get("admin").and_then(|a| a.as_table());
        let key = |k: &str| {
            admin
                .and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        return (key("bind"), key("token_file"));
    }
    let (mut section, mut bind, mut token_file) = (String::new(), None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            match (section.as_str(), key.trim()) {
                ("admin", "bind") => bind = Some(value.to_string()),
                ("admin", "token_file") => token_file = Some(value.to_string()),
                _ => {}
            }
        }
    }
    (bind, token_file)
}

/// An admin address bound to every interface is reached over loopback.
pub(crate) fn reachable(bind: SocketAddr) -> SocketAddr {
    if bind.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if bind.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, bind.port())
    } else {
        bind
    }
}

/// 3m12s, 2h05m, 4d03h.
pub(crate) fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_with_a_totals_line() {
        let status = serde_json::json!({
            "strategy": "round-robin", "sticky_entries": 0,
            "backends": [
                {"name": "worker-0", "state": "up", "reason": null, "pid": 41877, "restarts": 0,
                 "active_connections": 2, "uptime_seconds": 192.0, "cpu_seconds": 0.41, "memory_bytes": 12_478_054},
                {"name": "worker-1", "state": "down", "reason": "crashed", "pid": 41878, "restarts": 3,
                 "active_connections": 0, "uptime_seconds": 1.0, "cpu_seconds": 0.01, "memory_bytes": 0},
            ]
        });
        let text = table(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME      STATE"), "{text}");
        assert!(
            lines[1].contains("41877") && lines[1].contains("3m12s"),
            "{text}"
        );
        assert!(lines[2].contains("down (crashed)"), "{text}");
        assert!(
            lines[3].starts_with("total") && lines[3].contains("1/2 up"),
            "{text}"
        );
        let column = |line: &str| line.find("PID").or_else(|| line.find("4187"));
        assert_eq!(column(lines[0]), column(lines[1]));
    }

    #[test]
    fn the_admin_address_is_found_in_a_file_that_does_not_parse() {
        let text = "[admin]\nbind = \"0.0.0.0:9999\"\n[health]\ninterval = = 2\n";
        assert_eq!(admin_keys(text).0.as_deref(), Some("0.0.0.0:9999"));
        let valid = "[admin]\nbind = \"127.0.0.1:9998\"\n";
        assert_eq!(admin_keys(valid).0.as_deref(), Some("127.0.0.1:9998"));
    }

    #[test]
    fn scale_says_how_long_the_count_holds() {
        let with_file = scaled(3, r#"{"scale":3,"config_file":"/etc/corral/corral.toml"}"#);
        assert!(
            with_file.contains("until the next reload of /etc/corral/corral.toml"),
            "{with_file}"
        );
        let without = scaled(3, r#"{"scale":3,"config_file":null}"#);
        assert!(without.contains("without a config file"), "{without}");
        assert!(!without.contains("reload"), "{without}");
    }

    #[test]
    fn a_missing_token_says_where_to_give_it() {
        let answer = Answer {
            status: 401,
            body: "a bearer token is required\n".into(),
        };
        assert!(refusal(&answer).contains("-c FILE"));
    }

    #[test]
    fn sizes_and_durations_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(12_478_054), "11.9 MiB");
        assert_eq!(human_duration(192.0), "3m12s");
        assert_eq!(human_duration(7500.0), "2h05m");
    }
}
