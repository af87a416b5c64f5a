//! One access-log record: a decision as logged, filled in by the stages of a connection or
//! request and written by [`super::AccessLog`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::vocab::{Direction, Verdict};

/// One decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Record {
    /// When the connection opened (RFC 3339, milliseconds, in the log).
    #[serde(serialize_with = "serialize_ts")]
    pub(crate) ts: SystemTime,
    /// `inbound` or `outbound`.
    pub(crate) direction: Direction,
    /// The connecting peer.
    pub(crate) src: SocketAddr,
    /// The original destination, when it could be recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dst: Option<SocketAddr>,
    /// The Service (`namespace/name`) the client dialled, when `dst` is the endpoint picked
    /// for it (outbound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) service: Option<Arc<str>>,
    /// `tcp`, `tls`, `http1`, `http2` or `grpc`.
    pub(crate) protocol: &'static str,
    /// The peer's verified SPIFFE ID: the calling sidecar's (inbound mutual TLS) or the
    /// destination sidecar's (outbound to `--mesh-cidrs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<String>,
    /// TLS server name, when the connection opened with a ClientHello.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sni: Option<String>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<String>,
    /// Normalized HTTP host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// Normalized HTTP path (as forwarded), or the raw one when it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// HTTP status returned to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// The decision.
    pub(crate) verdict: Verdict,
    /// The deciding policy (absent for a default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) policy: Option<Arc<str>>,
    /// The deciding rule, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<Arc<str>>,
    /// Why, when it was not a plain allow (a denial or a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// How long the connection lasted.
    pub(crate) duration_ms: u64,
    /// Bytes from the connecting side (connection records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_in: Option<u64>,
    /// Bytes back to the connecting side (connection records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_out: Option<u64>,
    /// The request's `x-request-id`, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
}

impl Record {
    /// A record for a decision starting now, allowed until told otherwise.
    pub(crate) fn new(
        direction: Direction,
        src: SocketAddr,
        dst: Option<SocketAddr>,
        protocol: &'static str,
    ) -> Self {
        Self {
            ts: SystemTime::now(),
            direction,
            src,
            dst,
            service: None,
            protocol,
            identity: None,
            sni: None,
            method: None,
            host: None,
            path: None,
            status: None,
            verdict: Verdict::Allow,
            policy: None,
            rule: None,
            reason: None,
            duration_ms: 0,
            bytes_in: None,
            bytes_out: None,
            request_id: None,
        }
    }
}

fn serialize_ts<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(*t))
}

/// Formats a time as the log's `ts`.
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
