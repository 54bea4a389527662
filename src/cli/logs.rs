//! `corral logs [-f] [--lines N] [NAME]`: the workers' last lines from the
//! running corral (`GET /logs`), printed as they arrive; with `-f` the
//! stream stays open and new lines follow until corral or the reader goes.
//! Every line is escaped before it is printed, as all the CLI prints.

use std::io::Write;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{runtime, ClientError, Target, TIMEOUT};
use crate::terminal::escape_keeping;

/// What `corral logs` asks for.
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    /// A worker (`worker-1`); `None` for all.
    pub name: Option<&'a str>,
    /// How many of the last lines kept to print first (`--lines`).
    pub lines: usize,
    /// Keep the connection open and print new lines as they come (`-f`).
    pub follow: bool,
}

/// The request path for `asked`.
fn path(asked: &Asked) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("lines", &asked.lines.to_string());
    if let Some(name) = asked.name {
        query.append_pair("name", name);
    }
    if asked.follow {
        query.append_pair("follow", "1");
    }
    format!("/logs?{}", query.finish())
}

/// Prints the lines to stdout as they come. Returns when the answer ends
/// (without `follow`), or when stdout is closed (`| head`); a followed
/// stream that corral ends is an error (corral stopped).
pub fn show(target: &Target, asked: &Asked) -> Result<(), ClientError> {
    runtime()?.block_on(stream(target, asked))
}

async fn stream(target: &Target, asked: &Asked<'_>) -> Result<(), ClientError> {
    let addr = target.admin;
    let bad = |why: String| ClientError::BadAnswer { addr, why };
    let head = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Unreachable { addr, source })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| bad(e.to_string()))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path(asked))
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "corral-cli")
            .body(Empty::new())
            .map_err(|e| bad(e.to_string()))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| bad(e.to_string()))
    };
    let response = tokio::time::timeout(TIMEOUT, head)
        .await
        .map_err(|_| ClientError::TimedOut { addr })??;
    let status = response.status();
    let mut body = response.into_body();
    if status != hyper::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(ClientError::Refused(
            escape_keeping(text.trim(), &['\n']).into_owned(),
        ));
    }
    let mut out = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("the log stream broke: {e}")))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        // Whole lines only: a chunk may end inside a character.
        let Some(end) = pending.iter().rposition(|&b| b == b'\n') else {
            continue;
        };
        let lines: Vec<u8> = pending.drain(..=end).collect();
        if print(&mut out, &lines).is_err() {
            return Ok(());
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        let _ = print(&mut out, &pending);
    }
    if asked.follow {
        return Err(ClientError::Refused(
            "corral ended the log stream (it stopped)".into(),
        ));
    }
    Ok(())
}

fn print(out: &mut impl Write, lines: &[u8]) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(lines);
    out.write_all(escape_keeping(&text, &['\n', '\t']).as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_what_is_asked() {
        let asked = Asked {
            name: Some("worker-1"),
            lines: 3,
            follow: true,
        };
        assert_eq!(path(&asked), "/logs?lines=3&name=worker-1&follow=1");
        let all = Asked {
            name: None,
            lines: 50,
            follow: false,
        };
        assert_eq!(path(&all), "/logs?lines=50");
        let odd = Asked {
            name: Some("a b&c"),
            ..all
        };
        assert_eq!(path(&odd), "/logs?lines=50&name=a+b%26c");
    }
}
