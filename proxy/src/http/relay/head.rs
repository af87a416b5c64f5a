//! HTTP/1.1 message heads for the relay: parsing (httparse), the checks that decide whether the
//! relay may carry a request itself or must hand the connection to the full server, and the
//! heads forwarded in each direction with hop-by-hop headers removed (RFC 9110 7.6.1).
//!
//! The relay takes only plain requests: HTTP/1.1, origin-form target, no Transfer-Encoding, at
//! most one all-digit Content-Length, one Host, no Upgrade or Expect. Everything else (and every
//! malformed head) is handed over, so its handling — and its errors — stay in one place.

use httparse::{Header, Status};

use crate::http::jwt::Presented;

/// Hop-by-hop headers dropped from forwarded requests and responses.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// Result of looking at the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse<T> {
    /// The head is not complete yet.
    Partial,
    /// A head the relay carries.
    Complete(T),
    /// Not for the relay; the reason is for debugging only.
    Handover(&'static str),
}

/// A request head the relay carries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead<'b> {
    /// The method.
    pub(crate) method: &'b str,
    /// The request target as sent (origin-form).
    pub(crate) target: &'b str,
    /// The Host header.
    pub(crate) host: Option<&'b str>,
    /// Bytes in the head.
    pub(crate) len: usize,
    /// Content-Length (0 without one).
    pub(crate) body: u64,
    /// The client asked to close after this exchange.
    pub(crate) close: bool,
    /// Headers that must not be forwarded are present (the head is rebuilt).
    pub(crate) hop_by_hop: bool,
    /// `TE: trailers` was offered.
    pub(crate) te_trailers: bool,
    /// The `Authorization` headers, as far as bearer tokens go.
    pub(crate) bearer: Presented<'b>,
}

fn value<'b>(h: &Header<'b>) -> Option<&'b str> {
    std::str::from_utf8(h.value).ok()
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(v)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a request head from the start of `buf`.
pub(crate) fn parse_request<'b>(
    buf: &'b [u8],
    headers: &mut [Header<'b>],
) -> Parse<(RequestHead<'b>, usize)> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Parse::Partial,
        Err(_) => return Parse::Handover("malformed head"),
    };
    if req.version != Some(1) {
        return Parse::Handover("not HTTP/1.1");
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parse::Handover("malformed head");
    };
    if method == "CONNECT" || !target.starts_with('/') {
        return Parse::Handover("not origin-form");
    }
    let mut head = RequestHead {
        method,
        target,
        host: None,
        len,
        body: 0,
        close: false,
        hop_by_hop: false,
        te_trailers: false,
        bearer: Presented::Nothing,
    };
    if let Err(why) = scan_headers(&mut head, req.headers) {
        return Parse::Handover(why);
    }
    // No Host, or one that is not a plain host: the full server refuses it (400).
    if !head.host.is_some_and(crate::http::host::is_host) {
        return Parse::Handover("missing or invalid host");
    }
    head.bearer = Presented::from_values(
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
            .map(|h| h.value),
    );
    let count = req.headers.len();
    Parse::Complete((head, count))
}

/// Reads the headers the relay cares about into `head`; the reason to hand over if any.
fn scan_headers<'b>(
    head: &mut RequestHead<'b>,
    headers: &[Header<'b>],
) -> Result<(), &'static str> {
    let mut lengths = 0;
    let mut hosts = 0;
    for h in headers {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            match content_length(h.value) {
                Some(v) => head.body = v,
                None => return Err("content-length"),
            }
        } else if n.eq_ignore_ascii_case("host") {
            hosts += 1;
            head.host = value(h);
            if head.host.is_none() {
                return Err("host");
            }
        } else if n.eq_ignore_ascii_case("transfer-encoding")
            || n.eq_ignore_ascii_case("upgrade")
            || n.eq_ignore_ascii_case("expect")
        {
            return Err("framing or protocol switch");
        } else if n.eq_ignore_ascii_case("content-type") {
            if h.value.starts_with(b"application/grpc") {
                return Err("grpc");
            }
        } else if is_hop_by_hop(n) {
            head.hop_by_hop = true;
            if n.eq_ignore_ascii_case("connection") {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case("close") {
                        head.close = true;
                    } else if t.eq_ignore_ascii_case("upgrade") {
                        return Err("protocol switch");
                    }
                }
            } else if n.eq_ignore_ascii_case("te") {
                head.te_trailers |= tokens(h.value).any(|t| t.eq_ignore_ascii_case("trailers"));
            }
        }
    }
    if lengths > 1 || hosts > 1 {
        return Err("repeated framing or host header");
    }
    Ok(())
}

/// Names listed in `Connection` headers (they are hop-by-hop too).
fn connection_named<'a>(headers: &'a [Header<'a>]) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .collect()
}

/// Headers that frame the message: the relay forwards bodies as received, so these are never
/// dropped, whatever `Connection` names.
fn is_framing(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding")
}

/// Headers `Connection` can never remove: the framing, and what the request was judged on
/// (the host and the credentials the application receives are the ones that were judged).
fn is_protected(name: &str) -> bool {
    is_framing(name)
        || name.eq_ignore_ascii_case("host")
        || name.eq_ignore_ascii_case("authorization")
}

fn write_headers(out: &mut Vec<u8>, headers: &[Header<'_>], keep: impl Fn(&str) -> bool) {
    let named = connection_named(headers);
    for h in headers {
        let named_here =
            !is_protected(h.name) && named.iter().any(|n| n.eq_ignore_ascii_case(h.name));
        if is_hop_by_hop(h.name) || named_here {
            continue;
        }
        if !keep(h.name) {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// The request head to forward: `target` (normalized) in the request line, hop-by-hop headers
/// and the ones `Connection` names removed (`TE: trailers` kept).
pub(crate) fn forward_request(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    headers: &[Header<'_>],
    target: &str,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_headers(out, headers, |_| true);
    if head.te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Content-Length bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes.
    Close,
}

/// A response head from the upstream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// Status code.
    pub(crate) status: u16,
    /// Bytes in the head.
    pub(crate) len: usize,
    /// How its body ends.
    pub(crate) framing: Framing,
    /// The upstream connection can carry another request afterwards.
    pub(crate) reusable: bool,
    /// Nothing to strip or rewrite: the head can be forwarded as received.
    pub(crate) verbatim: bool,
}

/// Why an upstream response cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResponseError {
    /// Not an HTTP/1.x response head.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
}

/// Parses a response head from the start of `buf`; `head_request` says the request was HEAD.
pub(crate) fn parse_response(
    buf: &[u8],
    head_request: bool,
) -> Result<Option<ResponseHead>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; crate::http::limits::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ResponseError::Malformed("too many headers"));
        }
        Err(_) => return Err(ResponseError::Malformed("syntax")),
    };
    let status = resp.code.ok_or(ResponseError::Malformed("status"))?;
    let http11 = resp.version == Some(1);
    let mut reusable = http11;
    let mut verbatim = http11;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in resp.headers.iter() {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let v = content_length(h.value).ok_or(ResponseError::Malformed("content-length"))?;
            if length.is_some_and(|l| l != v) {
                return Err(ResponseError::Malformed("conflicting content-length"));
            }
            length = Some(v);
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            let last = tokens(h.value).last().unwrap_or("");
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if is_hop_by_hop(n) {
            verbatim = false;
            if n.eq_ignore_ascii_case("connection")
                && tokens(h.value).any(|t| t.eq_ignore_ascii_case("close"))
            {
                reusable = false;
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(l)) => Framing::Length(l),
            (None, None) => Framing::Close,
        }
    };
    if chunked.is_some() && length.is_some() {
        // RFC 9112 6.3: Transfer-Encoding wins; Content-Length is not forwarded.
        verbatim = false;
    }
    if framing == Framing::Close {
        reusable = false;
    }
    Ok(Some(ResponseHead {
        status,
        len,
        framing,
        reusable,
        verbatim,
    }))
}

/// The response head to send the client: HTTP/1.1 status line, hop-by-hop headers removed,
/// `Connection: close` when the relay closes the client connection after it.
pub(crate) fn forward_response(out: &mut Vec<u8>, raw: &[u8], close: bool) {
    let mut headers = [httparse::EMPTY_HEADER; crate::http::limits::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    // Only called with a head `parse_response` accepted.
    let _ = resp.parse(raw);
    let status = resp.code.unwrap_or(502).min(999);
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse accepts exactly three digits.
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let te = resp
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    write_headers(out, resp.headers, |n| {
        !(te && n.eq_ignore_ascii_case("content-length"))
    });
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
