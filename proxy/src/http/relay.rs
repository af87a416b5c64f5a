//! The HTTP/1.1 relay: one task per client connection parses each request head itself, judges
//! it, writes the (normalized) head and the buffered body to an upstream connection and copies
//! the response back, framed exactly as the upstream framed it. No second HTTP implementation
//! stands between the two sockets, no buffers are held while a connection waits for its next
//! request, and upstream connections go back to the shared pool between exchanges.
//!
//! It carries only what is plain (see [`head`]): a request it does not take — HTTP/1.0, absolute
//! or asterisk form, chunked or large bodies, Expect, Upgrade, malformed heads — hands the
//! connection, with every byte not yet consumed, to the hyper server for the rest of its life.

pub(crate) mod chunked;
pub(crate) mod head;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use portcullis_config::normalize::normalize_host;
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use self::chunked::{ChunkError, Scanner};
use self::head::{Framing, Parse, ResponseError, ResponseHead};
use super::conn::HttpConn;
use super::judge::{Ask, Judgement};
use super::limits::{
    HEADER_READ_TIMEOUT, HTTP1_DRAIN_GRACE, IDLE_TIMEOUT, MAX_BUFFERED_BODY, MAX_HEADER_BYTES,
    MAX_HEADERS,
};
use super::pool::Upstream;
use super::respond::{Local, h1_bytes};
use crate::net::buffers;
use crate::net::connector::ConnectError;
use crate::net::stream::Stream;
use crate::observe::Chain;
use crate::observe::access_log::Record;

/// Request headers as the policy engine reads them (case-insensitive, repeats joined by `,`).
struct RawHeaders<'a>(&'a [httparse::Header<'a>]);

impl portcullis_config::decide::Headers for RawHeaders<'_> {
    fn get(&self, lower_name: &str) -> Option<Cow<'_, str>> {
        super::headers::join(
            self.0
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(lower_name))
                .map(|h| String::from_utf8_lossy(h.value)),
        )
    }
}

/// What to do with the bytes buffered so far.
enum Step {
    /// The request is not complete yet.
    NeedMore,
    /// Not for the relay.
    Handover,
    /// Answered locally (already logged).
    Answer {
        bytes: Vec<u8>,
        consumed: usize,
        close: bool,
    },
    /// Forward upstream.
    Forward(Box<Forward>),
}

/// An admitted request.
struct Forward {
    /// The rewritten request (head and body), or `None` to send the buffered bytes as they are.
    request: Option<Vec<u8>>,
    /// Bytes of the buffer the request takes.
    consumed: usize,
    close: bool,
    head_request: bool,
    idempotent: bool,
    rec: Record,
    started: Instant,
}

/// Why an exchange with the upstream failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("upstream i/o")]
    Io(#[from] std::io::Error),
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream")]
    Response(#[from] ResponseError),
    #[error("upstream chunked body")]
    Chunk(#[from] ChunkError),
}

impl Failure {
    fn local(&self) -> Local {
        match self {
            Failure::Connect(ConnectError::Timeout(_)) | Failure::Timeout => Local::Timeout,
            Failure::Connect(_) => Local::Unavailable,
            _ => Local::BadGateway,
        }
    }

    /// Whether the request may be sent again on a fresh connection: a reused connection that
    /// the upstream had closed before it saw the request.
    fn is_stale(&self) -> bool {
        matches!(self, Failure::Io(_) | Failure::Closed)
    }
}

/// How a relayed connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Done; the client connection is closed.
    Closed,
    /// The hyper server takes over with these unread bytes and the stream.
    Handover(Bytes, Stream),
}

/// One client connection being relayed.
struct Relay {
    conn: Arc<HttpConn>,
    down: Stream,
    /// Client bytes not consumed yet.
    buf: Vec<u8>,
    /// Upstream bytes of the response in progress.
    upbuf: Vec<u8>,
    /// What goes to the client next.
    out: Vec<u8>,
    /// When the head being read began to arrive.
    head_deadline: Option<tokio::time::Instant>,
}

/// Relays `down` (after `prefix`, already read) until it closes or needs the hyper server.
pub(super) async fn serve(conn: Arc<HttpConn>, prefix: Bytes, down: Stream) -> End {
    let mut r = Relay {
        conn,
        down,
        buf: Vec::from(prefix),
        upbuf: Vec::new(),
        out: Vec::new(),
        head_deadline: None,
    };
    if r.run().await {
        End::Handover(Bytes::from(std::mem::take(&mut r.buf)), r.down)
    } else {
        let _ = r.down.shutdown().await;
        End::Closed
    }
}

impl Relay {
    /// Serves requests; `true` to hand the connection over, `false` when it is done.
    async fn run(&mut self) -> bool {
        loop {
            let step = loop {
                match self.step() {
                    Step::NeedMore => {}
                    s => break s,
                }
                if !self.read_down().await {
                    return false;
                }
            };
            self.head_deadline = None;
            match step {
                Step::NeedMore => unreachable!("read until complete"),
                Step::Handover => return true,
                Step::Answer {
                    bytes,
                    consumed,
                    close,
                } => {
                    self.buf.drain(..consumed);
                    if self.down.write_all(&bytes).await.is_err() || close {
                        return false;
                    }
                }
                Step::Forward(f) => {
                    // Boxed: the exchange's state exists only while a request is in flight, not
                    // in every idle connection.
                    if !Box::pin(self.forward(*f)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Parses and judges the buffered request, if it is complete.
    fn step(&self) -> Step {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (head, n) = match head::parse_request(&self.buf, &mut headers) {
            Parse::Partial if self.buf.len() >= MAX_HEADER_BYTES => return Step::Handover,
            Parse::Partial => return Step::NeedMore,
            Parse::Handover(why) => {
                tracing::trace!(why, "http/1 request handed to the full server");
                return Step::Handover;
            }
            Parse::Complete(parsed) => parsed,
        };
        // Over-long heads and large bodies are the full server's (which answers 431 to the one).
        if head.len > MAX_HEADER_BYTES || head.body > MAX_BUFFERED_BODY {
            return Step::Handover;
        }
        let consumed = head.len + head.body as usize;
        if self.buf.len() < consumed {
            return Step::NeedMore;
        }
        let started = Instant::now();
        let headers = &headers[..n];
        let request_id = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("x-request-id"))
            .and_then(|h| std::str::from_utf8(h.value).ok());
        let conn = &self.conn;
        let mut rec = conn.record(head.method, request_id, false);
        let close = head.close || conn.drain.is_draining();
        let ask = Ask {
            method: head.method,
            target: head.target,
            host: head.host.map(normalize_host),
            headers: &RawHeaders(headers),
        };
        let target = match conn.judge(&mut rec, &ask, head.bearer) {
            Judgement::Forward { target, .. } => target,
            Judgement::Reject { .. } => {
                return self.answer(&mut rec, Local::BadRequest, consumed, close, started);
            }
            Judgement::Deny { answer, .. } => {
                return self.answer(&mut rec, answer, consumed, close, started);
            }
        };
        let request = self.rewritten(&head, headers, &target, consumed);
        Step::Forward(Box::new(Forward {
            request,
            consumed,
            close,
            head_request: head.method == "HEAD",
            idempotent: matches!(
                head.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            rec,
            started,
        }))
    }

    /// A local answer, logged.
    fn answer(
        &self,
        rec: &mut Record,
        why: Local,
        consumed: usize,
        close: bool,
        started: Instant,
    ) -> Step {
        self.conn.log(rec, started, why.status());
        Step::Answer {
            bytes: h1_bytes(why, close),
            consumed,
            close,
        }
    }

    /// The request to forward when it must be rebuilt (a normalized target, hop-by-hop headers
    /// to drop); `None` to send the buffered bytes as they are.
    fn rewritten(
        &self,
        head: &head::RequestHead<'_>,
        headers: &[httparse::Header<'_>],
        target: &portcullis_config::normalize::Target,
        consumed: usize,
    ) -> Option<Vec<u8>> {
        let (raw_path, raw_query) = match head.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (head.target, None),
        };
        let same = target.path == raw_path && target.query.as_deref() == raw_query;
        (!same || head.hop_by_hop).then(|| {
            let mut v = Vec::with_capacity(consumed + 64);
            let target = if same {
                Cow::Borrowed(head.target)
            } else {
                Cow::Owned(target.path_and_query())
            };
            head::forward_request(&mut v, head, headers, &target);
            v.extend_from_slice(&self.buf[head.len..consumed]);
            v
        })
    }

    /// Reads more of the client's request; `false` when the connection should end (closed,
    /// idle past the header read timeout — as the hyper server does for keep-alive connections
    /// — or past the drain's grace period, or a head that takes too long).
    async fn read_down(&mut self) -> bool {
        let idle = self.buf.is_empty();
        if idle {
            // Between requests nothing is held but the socket.
            buffers::give(&mut self.buf);
            buffers::give(&mut self.upbuf);
            buffers::give(&mut self.out);
        }
        let Relay {
            conn,
            down,
            buf,
            head_deadline,
            ..
        } = self;
        let read = buffers::read(down, buf);
        let n = if idle {
            let drained = async {
                conn.drain.started().await;
                tokio::time::sleep(HTTP1_DRAIN_GRACE).await;
            };
            tokio::select! {
                r = read => r,
                () = tokio::time::sleep(HEADER_READ_TIMEOUT) => return false,
                () = drained => return false,
            }
        } else {
            let deadline = head_deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + HEADER_READ_TIMEOUT);
            match tokio::time::timeout_at(*deadline, read).await {
                Ok(r) => r,
                Err(_) => return false,
            }
        };
        match n {
            Ok(n) if n > 0 => {
                head_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + HEADER_READ_TIMEOUT);
                true
            }
            _ => false,
        }
    }

    /// Forwards one admitted request and relays its response; `false` to close the client
    /// connection afterwards.
    async fn forward(&mut self, f: Forward) -> bool {
        let Forward {
            request,
            consumed,
            mut close,
            head_request,
            idempotent,
            mut rec,
            started,
        } = f;
        let buf = std::mem::take(&mut self.buf);
        let bytes = request.as_deref().unwrap_or(&buf[..consumed]);
        let exchanged = exchange(
            &self.conn.upstream,
            bytes,
            idempotent,
            head_request,
            &mut self.upbuf,
        )
        .await;
        self.buf = buf;
        self.buf.drain(..consumed);
        let (mut up, mut head) = match exchanged {
            Ok(x) => x,
            Err(e) => {
                let why = e.local();
                rec.reason = Some(Chain(&e).to_string());
                self.conn.count_error(why);
                self.conn.log(&mut rec, started, why.status());
                return self.down.write_all(&h1_bytes(why, close)).await.is_ok() && !close;
            }
        };
        // Informational responses (103 Early Hints, …) go through as they are.
        while (100..200).contains(&head.status) {
            let sent = self.down.write_all(&self.upbuf[..head.len]).await;
            self.upbuf.drain(..head.len);
            let next = read_head(&mut up, &mut self.upbuf, head_request).await;
            match (sent, next) {
                (Ok(()), Ok(h)) => head = h,
                (_, Err(e)) => {
                    rec.reason = Some(Chain(&e).to_string());
                    self.conn.log(&mut rec, started, StatusCode::BAD_GATEWAY);
                    return false;
                }
                (Err(_), _) => return false,
            }
        }
        close |= self.conn.drain.is_draining() || head.framing == Framing::Close;
        let status = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let result = self.relay_response(&mut up, &head, close).await;
        match result {
            Ok(clean) => {
                if clean && head.reusable {
                    self.conn.upstream.put_raw(up);
                }
            }
            Err(e) => {
                rec.reason = Some(format!("response: {}", Chain(&e)));
                close = true;
            }
        }
        self.conn.log(&mut rec, started, status);
        !close
    }

    /// Sends the response head and body to the client. `Ok(true)` when the upstream sent
    /// exactly one message (its connection can be reused).
    async fn relay_response(
        &mut self,
        up: &mut Stream,
        head: &ResponseHead,
        close: bool,
    ) -> Result<bool, Failure> {
        buffers::take(&mut self.out);
        let raw = &self.upbuf[..head.len];
        self.out.clear();
        if head.verbatim && !close {
            self.out.extend_from_slice(raw);
        } else {
            head::forward_response(&mut self.out, raw, close);
        }
        let body = &self.upbuf[head.len..];
        let mut chunks = Scanner::new();
        let (take, mut left) = match head.framing {
            Framing::Empty => (0, 0),
            Framing::Length(n) => {
                let take = n.min(body.len() as u64);
                (take as usize, n - take)
            }
            Framing::Chunked => (chunks.feed(body)?, 0),
            Framing::Close => (body.len(), 0),
        };
        let mut clean = take == body.len();
        self.out.extend_from_slice(&body[..take]);
        self.down.write_all(&self.out).await?;
        loop {
            let more = match head.framing {
                Framing::Empty => false,
                Framing::Length(_) => left > 0,
                Framing::Chunked => !chunks.is_done(),
                Framing::Close => true,
            };
            if !more {
                return Ok(clean);
            }
            self.upbuf.clear();
            let n = read_up(up, &mut self.upbuf).await?;
            if n == 0 {
                return match head.framing {
                    Framing::Close => Ok(false),
                    _ => Err(Failure::Closed),
                };
            }
            let take = match head.framing {
                Framing::Length(_) => {
                    let take = left.min(n as u64);
                    left -= take;
                    take as usize
                }
                Framing::Chunked => chunks.feed(&self.upbuf)?,
                _ => n,
            };
            clean &= take == n;
            self.down.write_all(&self.upbuf[..take]).await?;
        }
    }
}

/// Sends `request` on a pooled connection (or a new one) and reads the response head. A
/// reused connection the upstream had already closed is replaced once, for idempotent requests.
async fn exchange(
    upstream: &Upstream,
    request: &[u8],
    idempotent: bool,
    head_request: bool,
    upbuf: &mut Vec<u8>,
) -> Result<(Stream, ResponseHead), Failure> {
    let mut pooled = true;
    loop {
        let (mut up, reused) = match pooled.then(|| upstream.take_raw()).flatten() {
            Some(s) => (s, true),
            None => (upstream.connect().await?, false),
        };
        upbuf.clear();
        // An upstream may answer before it has read the whole request (413, say) and close:
        // what it answered is still read and relayed, on a connection not reused.
        let wrote = up.write_all(request).await;
        let result = match read_head(&mut up, upbuf, head_request).await {
            Ok(mut head) => {
                head.reusable &= wrote.is_ok();
                Ok(head)
            }
            Err(e) => Err(wrote.err().map_or(e, Failure::Io)),
        };
        match result {
            Ok(head) => return Ok((up, head)),
            Err(e) if reused && idempotent && upbuf.is_empty() && e.is_stale() => pooled = false,
            Err(e) => return Err(e),
        }
    }
}

/// Reads until `upbuf` starts with a complete response head.
async fn read_head(
    up: &mut Stream,
    upbuf: &mut Vec<u8>,
    head_request: bool,
) -> Result<ResponseHead, Failure> {
    loop {
        if let Some(head) = head::parse_response(upbuf, head_request)? {
            if head.status == 101 {
                // Nothing the relay sends asks for a protocol switch.
                return Err(ResponseError::Malformed("unrequested protocol switch").into());
            }
            return Ok(head);
        }
        if upbuf.len() >= MAX_HEADER_BYTES {
            return Err(ResponseError::Malformed("head too large").into());
        }
        if read_up(up, upbuf).await? == 0 {
            return Err(Failure::Closed);
        }
    }
}

/// One read from the upstream, bounded by the idle timeout.
async fn read_up(up: &mut Stream, upbuf: &mut Vec<u8>) -> Result<usize, Failure> {
    match timeout(IDLE_TIMEOUT, buffers::read(up, upbuf)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(Failure::Timeout),
    }
}

#[cfg(test)]
mod tests {
    use portcullis_config::decide::Headers as _;

    use super::*;

    #[test]
    fn policy_headers_are_case_insensitive_and_repeats_are_joined() {
        let raw = [
            httparse::Header {
                name: "X-Tenant",
                value: b"a",
            },
            httparse::Header {
                name: "x-other",
                value: b"z",
            },
            httparse::Header {
                name: "x-tenant",
                value: b"b",
            },
        ];
        let h = RawHeaders(&raw);
        assert_eq!(h.get("x-tenant").as_deref(), Some("a,b"));
        assert_eq!(h.get("x-other").as_deref(), Some("z"));
        assert_eq!(h.get("x-missing"), None);
    }
}
