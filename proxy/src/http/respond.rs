//! Every response the proxy makes up itself, and the one place errors map to the wire: denials
//! (403, or gRPC status 7), rejected requests (400), and upstream failures (502/503/504). Bodies
//! never carry rule names or error details; those go to the access log.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
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
pub enum Local {
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
    pub fn reason(self) -> &'static str {
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

/// The response for `why`, in gRPC form when the request was gRPC.
pub fn local(why: Local, grpc_request: bool) -> Response<Body> {
    match (why, grpc_request) {
        (Local::Denied, false) => text(StatusCode::FORBIDDEN, "access denied\n"),
        (Local::Denied, true) => grpc(7, "access denied"),
        (Local::Unauthenticated, false) => {
            let mut r = text(StatusCode::UNAUTHORIZED, "invalid token\n");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            r
        }
        (Local::Unauthenticated, true) => grpc(16, "invalid token"),
        (Local::BadRequest, false) => text(StatusCode::BAD_REQUEST, "bad request\n"),
        (Local::BadRequest, true) => grpc(13, "bad request"),
        (Local::Unavailable, false) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n")
        }
        (Local::Unavailable, true) => grpc(14, "upstream unavailable"),
        (Local::Timeout, false) => text(StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n"),
        (Local::Timeout, true) => grpc(4, "upstream timeout"),
        (Local::BadGateway, false) => text(StatusCode::BAD_GATEWAY, "bad gateway\n"),
        (Local::BadGateway, true) => grpc(14, "bad gateway"),
    }
}
