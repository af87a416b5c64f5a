//! Every response the proxy makes up itself, and the one place errors map to the wire: denials
//! (403, or gRPC status 7), rejected requests (400), and upstream failures (502/503/504). Bodies
//! never carry rule names or error details; those go to the access log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// The body type of every response the proxy returns.
pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A gRPC trailers-only response with `status` (HTTP 200).
fn grpc(code: u8, message: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    h.insert("grpc-message", HeaderValue::from_static(message));
    r
}

/// Why the proxy answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// The policy denied it.
    Denied,
    /// The policy denied it, and the bearer token it presented is invalid.
    Unauthenticated,
    /// The request is malformed or rejected by normalization.
    BadRequest,
    /// The upstream could not be reached (refused, unreachable).
    Unavailable,
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream broke the exchange.
    BadGateway,
}

impl Local {
    /// The metrics/log label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Local::Denied => "denied",
            Local::Unauthenticated => "unauthenticated",
            Local::BadRequest => "bad_request",
            Local::Unavailable => "upstream_unavailable",
            Local::Timeout => "upstream_timeout",
            Local::BadGateway => "bad_gateway",
        }
    }
}

/// What a local answer says on the wire, as plain values (what tests and both servers read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wire {
    /// The HTTP status (200 for gRPC: the status travels in `grpc-status`).
    pub(crate) status: u16,
    /// The gRPC status code, for gRPC requests.
    pub(crate) grpc_status: Option<u8>,
    /// Whether a `WWW-Authenticate` challenge goes with it.
    pub(crate) challenge: bool,
}

impl Local {
    /// The HTTP status of the plain (not gRPC) answer.
    pub(crate) fn status(self) -> StatusCode {
        plain(self).0
    }

    /// The answer to a request (gRPC or not) for this reason.
    pub(crate) fn wire(self, grpc_request: bool) -> Wire {
        if grpc_request {
            let (code, _) = grpc_code(self);
            return Wire {
                status: 200,
                grpc_status: Some(code),
                challenge: false,
            };
        }
        Wire {
            status: plain(self).0.as_u16(),
            grpc_status: None,
            challenge: self == Local::Unauthenticated,
        }
    }
}

/// The gRPC status and message for `why`.
fn grpc_code(why: Local) -> (u8, &'static str) {
    match why {
        Local::Denied => (7, "access denied"),
        Local::Unauthenticated => (16, "invalid token"),
        Local::BadRequest => (13, "bad request"),
        Local::Unavailable => (14, "upstream unavailable"),
        Local::Timeout => (4, "upstream timeout"),
        Local::BadGateway => (14, "bad gateway"),
    }
}

/// Status and body of the plain-text response for `why`.
fn plain(why: Local) -> (StatusCode, &'static str) {
    match why {
        Local::Denied => (StatusCode::FORBIDDEN, "access denied\n"),
        Local::Unauthenticated => (StatusCode::UNAUTHORIZED, "invalid token\n"),
        Local::BadRequest => (StatusCode::BAD_REQUEST, "bad request\n"),
        Local::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n"),
        Local::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n"),
        Local::BadGateway => (StatusCode::BAD_GATEWAY, "bad gateway\n"),
    }
}

const INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";

/// The response for `why`, in gRPC form when the request was gRPC.
pub(crate) fn local(why: Local, grpc_request: bool) -> Response<Body> {
    let wire = why.wire(grpc_request);
    if let Some(code) = wire.grpc_status {
        return grpc(code, grpc_code(why).1);
    }
    let (status, body) = plain(why);
    let mut r = text(status, body);
    if wire.challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(INVALID_TOKEN),
        );
    }
    r
}

/// The same response as HTTP/1.1 bytes, for the relay; `close` adds `Connection: close`.
pub(crate) fn h1_bytes(why: Local, close: bool) -> Vec<u8> {
    let (status, body) = plain(why);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    if why.wire(false).challenge {
        out.push_str("www-authenticate: ");
        out.push_str(INVALID_TOKEN);
        out.push_str("\r\n");
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_bytes_say_what_the_server_says() {
        for why in [
            Local::Denied,
            Local::Unauthenticated,
            Local::BadRequest,
            Local::Unavailable,
            Local::Timeout,
            Local::BadGateway,
        ] {
            let bytes = h1_bytes(why, true);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&bytes) {
                Ok(httparse::Status::Complete(n)) => n,
                other => panic!("{why:?}: {other:?}"),
            };
            let served = local(why, false);
            assert_eq!(parsed.code, Some(served.status().as_u16()));
            for (name, value) in served.headers() {
                let got = parsed.headers.iter().find(|h| h.name == name.as_str());
                assert_eq!(
                    got.map(|h| h.value),
                    Some(value.as_bytes()),
                    "{why:?} {name}"
                );
            }
            assert!(
                parsed
                    .headers
                    .iter()
                    .any(|h| h.name == "connection" && h.value == b"close")
            );
            assert_eq!(&bytes[len..], plain(why).1.as_bytes());
        }
    }
}
