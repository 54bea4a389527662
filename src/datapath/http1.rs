//! A light look at HTTP/1.x framing, for `workers.stateless`: where each
//! request and each response ends, which client bytes belong to requests
//! the backend has not answered yet, and so whether a connection is between
//! two exchanges and may move to another worker.
//!
//! An [`Exchange`] is fed every chunk the pump moves, before it is written
//! on. It parses message heads with `httparse` and follows bodies
//! (`Content-Length`, chunked, until-close), and keeps a copy of the bytes
//! of unanswered requests (at most [`REPLAY_LIMIT`](super::pump::REPLAY_LIMIT)).
//! Anything it does not recognise as plain HTTP/1.x request/response makes
//! the connection *opaque* for good, and it is never moved: a head that
//! does not parse (another protocol, the HTTP/2 preface `PRI * HTTP/2.0`),
//! a `101 Switching Protocols` answer (a WebSocket), `CONNECT`, a response
//! nobody asked for, or a head longer than [`MAX_HEAD`].

use std::collections::VecDeque;

use super::pump::REPLAY_LIMIT;

/// The longest message head looked at; a longer one makes the connection
/// opaque.
pub const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed per head; more make the connection opaque.
const MAX_HEADERS: usize = 96;

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Chunked {
    /// Reading the hex size of the next chunk.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to the end of the size line.
    Extension {
        size: u64,
    },
    /// The size line's CR was seen; its LF comes next.
    SizeLf {
        size: u64,
    },
    /// In a chunk's data: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one.
    Trailer {
        line_start: bool,
    },
    /// The empty line's CR was seen.
    TrailerLf,
}

/// Where one direction's current message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Stage {
    /// Between messages, or in a head (its bytes are in `Reader::head`).
    Head,
    /// In a body with this many bytes left.
    Body(u64),
    Chunked(Chunked),
    /// A response body that ends when the backend closes.
    UntilClose,
}

/// One direction's framing.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Reader {
    stage: Stage,
    /// The head seen so far, when it came in more than one chunk.
    #[serde(with = "crate::hex_bytes")]
    head: Vec<u8>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            stage: Stage::Head,
            head: Vec::new(),
        }
    }

    /// Between messages, with no part of the next head seen.
    fn at_rest(&self) -> bool {
        self.stage == Stage::Head && self.head.is_empty()
    }
}

/// What a message head says about the framing of its body and the
/// connection.
struct Head {
    /// `None`: no body length given.
    content_length: Option<u64>,
    chunked: bool,
    /// The connection ends after this message (`Connection: close`, or
    /// HTTP/1.0 without keep-alive).
    closes: bool,
}

/// Reads the framing headers of a parsed head.
fn framing(version: Option<u8>, headers: &[httparse::Header<'_>]) -> Result<Head, Opaque> {
    let mut head = Head {
        content_length: None,
        chunked: false,
        closes: version == Some(0),
    };
    for header in headers {
        let value = std::str::from_utf8(header.value).map_err(|_| Opaque)?;
        if header.name.eq_ignore_ascii_case("content-length") {
            let length: u64 = value.trim().parse().map_err(|_| Opaque)?;
            if head.content_length.is_some_and(|l| l != length) {
                return Err(Opaque);
            }
            head.content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; anything but a final `chunked`
            // cannot be followed.
            let last = value.rsplit(',').next().unwrap_or("").trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(Opaque);
            }
            head.chunked = true;
        } else if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    head.closes = true;
                } else if option.eq_ignore_ascii_case("keep-alive") && version == Some(0) {
                    head.closes = false;
                }
            }
        }
    }
    Ok(head)
}

/// The connection is not plain HTTP/1.x request/response.
#[derive(Debug)]
struct Opaque;

/// A request sent (or being sent) and not fully answered yet.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Request {
    /// Its bytes at the front of `Exchange::unanswered` (head and body).
    len: usize,
    /// `HEAD`: its answer has no body whatever its headers say.
    head_method: bool,
    /// Safe to send twice (RFC 9110 9.2.2): GET, HEAD, OPTIONS, TRACE,
    /// PUT, DELETE.
    idempotent: bool,
}

/// The HTTP/1.x view of one client connection, across every backend
/// connection it is carried on. `corral upgrade` carries it across (in a
/// parked connection) when a request is in flight.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Exchange {
    opaque: bool,
    requests: Reader,
    responses: Reader,
    /// Requests sent and not fully answered, oldest first; the last one
    /// may still be arriving.
    pending: VecDeque<Request>,
    /// Whether the last of `pending` is still arriving.
    receiving: bool,
    /// The client bytes of `pending`, in order.
    #[serde(with = "crate::hex_bytes")]
    unanswered: Vec<u8>,
    /// Blank lines read while nothing was pending: the start of the next
    /// request's bytes.
    gap: usize,
    /// `unanswered` outgrew the replay limit and was dropped: the bytes
    /// of these requests are no longer known.
    overflow: bool,
    /// A message said the connection ends after it.
    closing: bool,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            opaque: false,
            requests: Reader::new(),
            responses: Reader::new(),
            pending: VecDeque::new(),
            receiving: false,
            unanswered: Vec::new(),
            gap: 0,
            overflow: false,
            closing: false,
        }
    }

    /// Not plain HTTP/1.x: never moved.
    #[cfg(test)]
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Between two exchanges: every request answered in full, and no byte
    /// of the next one seen.
    pub fn is_idle(&self) -> bool {
        !self.opaque
            && self.pending.is_empty()
            && self.requests.at_rest()
            && self.responses.at_rest()
    }

    /// When the backend has just closed: the client bytes it never
    /// answered (possibly none), if the connection can carry on with
    /// another backend. `None` when it cannot: opaque, a response cut in
    /// the middle (or one that ends with the close), a message that said
    /// the connection ends, or unanswered bytes beyond the replay limit.
    pub fn movable(&self) -> Option<&[u8]> {
        let clean = !self.opaque && !self.closing && !self.overflow && self.responses.at_rest();
        match (clean, self.pending.is_empty()) {
            (false, _) => None,
            // Blank lines at most: nothing to send again.
            (true, true) => Some(&[]),
            (true, false) => Some(self.unanswered.as_slice()),
        }
    }

    /// Every unanswered request may be sent twice.
    pub fn unanswered_idempotent(&self) -> bool {
        self.pending.iter().all(|r| r.idempotent)
    }

    /// Client bytes, as they are read.
    pub fn client_sent(&mut self, mut bytes: &[u8]) {
        if self.opaque {
            return;
        }
        if !self.overflow {
            if self.unanswered.len() + bytes.len() <= REPLAY_LIMIT {
                self.unanswered.extend_from_slice(bytes);
            } else {
                self.overflow = true;
                self.unanswered = Vec::new();
            }
        }
        while !bytes.is_empty() {
            let result = match self.requests.stage {
                Stage::Head => self.request_head(bytes),
                _ => {
                    let (used, done) = body(&mut self.requests.stage, bytes);
                    self.received(used);
                    if done {
                        self.receiving = false;
                    }
                    Ok(used)
                }
            };
            match result {
                // Every step takes at least one byte; one that took none
                // would loop for ever, so the framing is given up instead.
                Ok(used) if used > 0 => bytes = &bytes[used.min(bytes.len())..],
                Ok(_) | Err(Opaque) => return self.give_up(),
            }
        }
    }

    /// Backend bytes, as they are read.
    pub fn backend_sent(&mut self, mut bytes: &[u8]) {
        if self.opaque {
            return;
        }
        while !bytes.is_empty() {
            let result = match self.responses.stage {
                Stage::Head => self.response_head(bytes),
                Stage::UntilClose => Ok(bytes.len()),
                _ => {
                    let (used, done) = body(&mut self.responses.stage, bytes);
                    if done {
                        self.answered();
                    }
                    Ok(used)
                }
            };
            match result {
                // Every step takes at least one byte; one that took none
                // would loop for ever, so the framing is given up instead.
                Ok(used) if used > 0 => bytes = &bytes[used.min(bytes.len())..],
                Ok(_) | Err(Opaque) => return self.give_up(),
            }
        }
    }

    fn give_up(&mut self) {
        self.opaque = true;
        self.unanswered = Vec::new();
        self.pending.clear();
        self.requests.head = Vec::new();
        self.responses.head = Vec::new();
    }

    /// `used` more bytes of the request being received.
    fn received(&mut self, used: usize) {
        if let Some(last) = self.pending.back_mut().filter(|_| self.receiving) {
            last.len += used;
        }
    }

    /// Reads request head bytes; returns how many of `bytes` it used.
    fn request_head(&mut self, bytes: &[u8]) -> Result<usize, Opaque> {
        if !self.receiving {
            // Empty lines between requests are allowed (RFC 9112 2.2):
            // they go with the request before (or the next one).
            let blank = bytes
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if self.requests.head.is_empty() && blank > 0 {
                match self.pending.back_mut() {
                    Some(last) => last.len += blank,
                    None => self.gap += blank,
                }
                return Ok(blank);
            }
            self.pending.push_back(Request {
                len: std::mem::take(&mut self.gap),
                head_method: false,
                idempotent: false,
            });
            self.receiving = true;
        }
        let (used, parsed) = head_of(&mut self.requests.head, bytes, |buffer| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(buffer).map_err(|_| Opaque)? {
                httparse::Status::Partial => Ok(None),
                httparse::Status::Complete(len) => {
                    let method = request.method.unwrap_or("");
                    if method == "CONNECT" {
                        return Err(Opaque);
                    }
                    let kind = (
                        method == "HEAD",
                        matches!(
                            method,
                            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
                        ),
                    );
                    let head = framing(request.version, request.headers)?;
                    Ok(Some((len, kind, head)))
                }
            }
        })?;
        self.received(used);
        if let Some(((head_method, idempotent), head)) = parsed {
            if head.closes {
                self.closing = true;
            }
            if let Some(last) = self.pending.back_mut() {
                last.head_method = head_method;
                last.idempotent = idempotent;
            }
            self.requests.stage = match (head.chunked, head.content_length) {
                (true, _) => Stage::Chunked(Chunked::Size { size: 0, digits: 0 }),
                (false, Some(length)) if length > 0 => Stage::Body(length),
                // A request without a length has no body (RFC 9112 6.3).
                _ => Stage::Head,
            };
            if self.requests.stage == Stage::Head {
                self.receiving = false;
            }
        }
        Ok(used)
    }

    /// Reads response head bytes; returns how many of `bytes` it used.
    fn response_head(&mut self, bytes: &[u8]) -> Result<usize, Opaque> {
        let Some(request) = self.pending.front().copied() else {
            // An answer to nothing: not request/response.
            return Err(Opaque);
        };
        let (used, parsed) = head_of(&mut self.responses.head, bytes, |buffer| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(buffer).map_err(|_| Opaque)? {
                httparse::Status::Partial => Ok(None),
                httparse::Status::Complete(len) => {
                    let code = response.code.unwrap_or(0);
                    let head = framing(response.version, response.headers)?;
                    Ok(Some((len, code, head)))
                }
            }
        })?;
        let Some((code, head)) = parsed else {
            return Ok(used);
        };
        match code {
            // The protocol switched: frames from here on.
            101 => return Err(Opaque),
            // An interim answer (100 Continue, 103): the real one follows.
            100..=199 => return Ok(used),
            _ => {}
        }
        if head.closes {
            self.closing = true;
        }
        let bodiless = request.head_method || code == 204 || code == 304;
        self.responses.stage = match (bodiless, head.chunked, head.content_length) {
            (true, _, _) => Stage::Head,
            (false, true, _) => Stage::Chunked(Chunked::Size { size: 0, digits: 0 }),
            (false, false, Some(0)) => Stage::Head,
            (false, false, Some(length)) => Stage::Body(length),
            (false, false, None) => Stage::UntilClose,
        };
        if self.responses.stage == Stage::Head {
            self.answered();
        }
        Ok(used)
    }

    /// The oldest pending request has been answered in full.
    fn answered(&mut self) {
        self.responses.stage = Stage::Head;
        if self.pending.len() == 1 && self.receiving {
            // Answered before it was all sent (a 413 to an upload, say):
            // what follows cannot be told apart.
            self.give_up();
            return;
        }
        if let Some(request) = self.pending.pop_front() {
            if !self.overflow {
                self.unanswered
                    .drain(..request.len.min(self.unanswered.len()));
            }
        }
        if self.pending.is_empty() && self.requests.at_rest() {
            // Nothing unanswered (blank lines at most): the bytes are
            // known again from here.
            self.overflow = false;
            self.unanswered.clear();
            self.gap = 0;
        }
    }
}

/// Reads head bytes from `bytes`, in place when the whole head is in it,
/// else gathered in `gathered`. `parse` says whether a buffer holds a whole
/// head (and how long it is). Returns how many of `bytes` were used and
/// what `parse` found once the head is complete.
fn head_of<T>(
    gathered: &mut Vec<u8>,
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Result<Option<(usize, T, Head)>, Opaque>,
) -> Result<(usize, Option<(T, Head)>), Opaque> {
    if gathered.is_empty() {
        if let Some((len, found, head)) = parse(bytes)? {
            return Ok((len, Some((found, head))));
        }
        if bytes.len() > MAX_HEAD {
            return Err(Opaque);
        }
        gathered.extend_from_slice(bytes);
        return Ok((bytes.len(), None));
    }
    let before = gathered.len();
    let take = bytes.len().min(MAX_HEAD + 1 - before.min(MAX_HEAD));
    gathered.extend_from_slice(&bytes[..take]);
    match parse(gathered)? {
        Some((len, found, head)) => {
            gathered.clear();
            // The head ended inside this chunk; the rest is body or more.
            Ok((len - before, Some((found, head))))
        }
        None if gathered.len() > MAX_HEAD => Err(Opaque),
        None => Ok((take, None)),
    }
}

/// Follows a body through `bytes`: how many it used, and whether the body
/// ended (the stage is then back at `Head`).
fn body(stage: &mut Stage, bytes: &[u8]) -> (usize, bool) {
    match *stage {
        Stage::Body(left) => {
            let used = (left.min(bytes.len() as u64)) as usize;
            let left = left - used as u64;
            *stage = if left == 0 {
                Stage::Head
            } else {
                Stage::Body(left)
            };
            (used, left == 0)
        }
        Stage::Chunked(mut chunked) => {
            let mut used = 0;
            while used < bytes.len() {
                if let Chunked::Data(left) = chunked {
                    let n = (left.min((bytes.len() - used) as u64)) as usize;
                    used += n;
                    chunked = if left == n as u64 {
                        Chunked::DataCr
                    } else {
                        Chunked::Data(left - n as u64)
                    };
                    continue;
                }
                let byte = bytes[used];
                used += 1;
                match step(chunked, byte) {
                    Some(next) => chunked = next,
                    None => {
                        *stage = Stage::Head;
                        return (used, true);
                    }
                }
            }
            *stage = Stage::Chunked(chunked);
            (used, false)
        }
        Stage::Head | Stage::UntilClose => (0, false),
    }
}

/// One byte of chunked framing outside chunk data; `None` when the body
/// ended. Lenient like the servers it sits in front of: a bare LF ends a
/// line, and a malformed size reads as the end of the body rather than
/// trapping the connection (the peer will fail it).
fn step(state: Chunked, byte: u8) -> Option<Chunked> {
    let next = match state {
        Chunked::Size { size, digits } => match (byte as char).to_digit(16) {
            Some(d) if digits < 16 => Chunked::Size {
                size: size * 16 + u64::from(d),
                digits: digits + 1,
            },
            Some(_) => return None,
            None if byte == b'\r' => Chunked::SizeLf { size },
            None if byte == b'\n' => return after_size(size),
            None => Chunked::Extension { size },
        },
        Chunked::Extension { size } => match byte {
            b'\r' => Chunked::SizeLf { size },
            b'\n' => return after_size(size),
            _ => Chunked::Extension { size },
        },
        Chunked::SizeLf { size } => return after_size(size),
        Chunked::Data(_) => state,
        Chunked::DataCr => match byte {
            b'\r' => Chunked::DataLf,
            b'\n' => Chunked::Size { size: 0, digits: 0 },
            _ => return None,
        },
        Chunked::DataLf => Chunked::Size { size: 0, digits: 0 },
        Chunked::Trailer { line_start } => match byte {
            b'\r' if line_start => Chunked::TrailerLf,
            b'\n' if line_start => return None,
            b'\n' => Chunked::Trailer { line_start: true },
            _ => Chunked::Trailer { line_start: false },
        },
        Chunked::TrailerLf => return None,
    };
    Some(next)
}

fn after_size(size: u64) -> Option<Chunked> {
    Some(if size == 0 {
        Chunked::Trailer { line_start: true }
    } else {
        Chunked::Data(size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn a_kept_alive_exchange_comes_back_to_idle() {
        let mut x = Exchange::new();
        assert!(x.is_idle());
        x.client_sent(GET);
        assert!(!x.is_idle());
        assert_eq!(x.movable(), Some(GET), "unanswered: the whole request");
        x.backend_sent(OK);
        assert!(x.is_idle());
        assert_eq!(x.movable(), Some(&b""[..]));
    }

    #[test]
    fn heads_and_bodies_split_anywhere_are_followed() {
        let request = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
        let response =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
        for cut in 1..request.len() {
            let mut x = Exchange::new();
            x.client_sent(&request[..cut]);
            x.client_sent(&request[cut..]);
            assert_eq!(x.movable(), Some(&request[..]), "cut at {cut}");
            for byte in response.iter() {
                assert!(!x.is_idle());
                x.backend_sent(std::slice::from_ref(byte));
            }
            assert!(x.is_idle(), "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let mut x = Exchange::new();
        let two = [GET, b"DELETE /a HTTP/1.1\r\n\r\n"].concat();
        x.client_sent(&two);
        x.backend_sent(OK);
        assert_eq!(x.movable(), Some(&b"DELETE /a HTTP/1.1\r\n\r\n"[..]));
        assert!(x.unanswered_idempotent());
        x.client_sent(b"POST /b HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(!x.unanswered_idempotent());
    }

    #[test]
    fn a_response_cut_short_or_ended_by_the_close_is_not_movable() {
        let mut x = Exchange::new();
        x.client_sent(GET);
        x.backend_sent(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel");
        assert_eq!(x.movable(), None);
        let mut until_close = Exchange::new();
        until_close.client_sent(GET);
        until_close.backend_sent(b"HTTP/1.1 200 OK\r\n\r\nall of it");
        assert_eq!(until_close.movable(), None);
    }

    #[test]
    fn connection_close_and_http_1_0_end_with_the_connection() {
        let mut x = Exchange::new();
        x.client_sent(GET);
        x.backend_sent(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(x.movable(), None);
        let mut old = Exchange::new();
        old.client_sent(b"GET / HTTP/1.0\r\n\r\n");
        old.backend_sent(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(old.movable(), None);
    }

    #[test]
    fn upgrades_http2_and_other_protocols_are_opaque() {
        let mut ws = Exchange::new();
        ws.client_sent(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        ws.backend_sent(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(ws.is_opaque());
        assert_eq!(ws.movable(), None);
        let mut h2 = Exchange::new();
        h2.client_sent(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(h2.is_opaque());
        let mut redis = Exchange::new();
        redis.client_sent(b"*1\r\n$4\r\nPING\r\n");
        assert!(redis.is_opaque());
        let mut unasked = Exchange::new();
        unasked.backend_sent(b"+PONG\r\n");
        assert!(unasked.is_opaque());
    }

    #[test]
    fn interim_answers_and_bodiless_responses() {
        let mut x = Exchange::new();
        x.client_sent(b"HEAD / HTTP/1.1\r\n\r\n");
        x.backend_sent(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        assert!(x.is_idle());
        x.client_sent(b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        x.backend_sent(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(!x.is_idle());
        x.client_sent(b"ok");
        x.backend_sent(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert!(x.is_idle());
    }

    #[test]
    fn past_the_replay_limit_nothing_moves_until_all_is_answered() {
        let mut x = Exchange::new();
        let big = REPLAY_LIMIT as u64 + 10;
        x.client_sent(format!("POST / HTTP/1.1\r\nContent-Length: {big}\r\n\r\n").as_bytes());
        x.client_sent(&vec![b'x'; big as usize]);
        assert_eq!(x.movable(), None);
        x.backend_sent(OK);
        assert!(x.is_idle());
        assert_eq!(x.movable(), Some(&b""[..]));
        x.client_sent(GET);
        assert_eq!(x.movable(), Some(GET));
    }

    #[test]
    fn any_bytes_split_anywhere_end_without_a_panic_or_a_hang() {
        // A small deterministic generator: HTTP-looking pieces and noise.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 8] = [
            GET,
            OK,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"\x00\xff garbage",
        ];
        for _ in 0..2000 {
            let mut x = Exchange::new();
            for _ in 0..(next() % 8) {
                let piece = pieces[(next() % 8) as usize];
                let cut = (next() as usize) % (piece.len() + 1);
                if next() % 2 == 0 {
                    x.client_sent(&piece[..cut]);
                    x.client_sent(&piece[cut..]);
                } else {
                    x.backend_sent(&piece[..cut]);
                    x.backend_sent(&piece[cut..]);
                }
            }
            let _ = (x.movable(), x.is_idle(), x.unanswered_idempotent());
        }
    }

    #[test]
    fn an_overlong_head_is_opaque() {
        let mut x = Exchange::new();
        x.client_sent(b"GET / HTTP/1.1\r\n");
        x.client_sent(&vec![b'a'; MAX_HEAD + 2]);
        assert!(x.is_opaque());
    }
}
