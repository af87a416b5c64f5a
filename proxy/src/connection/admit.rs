//! Connection admission, the pure decision of the connection phase: from the policy, the mode,
//! what is known of a connection and (once read) what its first bytes looked like, whether it
//! is closed, carried as opaque bytes, served as HTTP, or must be read first. The IO code only
//! carries the answer out.

use std::net::SocketAddr;

use portcullis_config::matchers::PortSet;
use portcullis_config::{CompiledPolicy, ConnDecision, Connection, Decision};

use super::detect::Detected;
use crate::mesh::tls::is_mesh;
use crate::vocab::{Direction, Ruling};

/// What admission reads besides the connection: the policy in force and how it is enforced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    /// The active policy.
    pub(crate) policy: &'a CompiledPolicy,
    /// Audit mode: a denial is logged as `audit_deny` and the traffic passes.
    pub(crate) audit: bool,
    /// Ports whose connections are never read for a protocol.
    pub(crate) opaque_ports: &'a PortSet,
}

/// A connection as admission sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Conn<'a> {
    /// Which listener took it.
    pub(crate) direction: Direction,
    /// The client.
    pub(crate) src: SocketAddr,
    /// The original destination.
    pub(crate) dst: SocketAddr,
    /// The peer sidecar's verified SPIFFE ID.
    pub(crate) identity: Option<&'a str>,
    /// This workload's own trust domain (peers of others match only rules that name theirs).
    pub(crate) trust_domain: Option<&'a str>,
}

impl<'a> Conn<'a> {
    /// The policy engine's view: the peer is the other end, the port the destination's.
    pub(crate) fn policy(&self, sni: Option<&'a str>) -> Connection<'a> {
        Connection {
            direction: self.direction.into(),
            peer: match self.direction {
                Direction::Inbound => self.src.ip(),
                Direction::Outbound => self.dst.ip(),
            },
            port: self.dst.port(),
            identity: self.identity,
            sni,
            trust_domain: self.trust_domain,
        }
    }
}

/// Why a connection is closed before a byte reaches its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The policy denies it (enforced).
    Denied(Decision),
    /// A peer sidecar spoke mutual TLS to a proxy that has no identity to answer with.
    MeshUnconfigured,
}

/// What becomes of a connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Close it.
    Close(Refusal),
    /// Carry its bytes as they are (allowed, or denied in audit mode).
    Opaque(Ruling),
    /// Serve it as HTTP and judge every request.
    Http {
        /// HTTP/2 with prior knowledge, else HTTP/1.
        http2: bool,
    },
}

/// Carries out a final decision: closed when enforced as a denial, opaque otherwise.
fn settle(view: View<'_>, decision: Decision) -> Admission {
    let ruling = Ruling::new(decision, view.audit);
    if ruling.refuses() {
        return Admission::Close(Refusal::Denied(ruling.decision));
    }
    Admission::Opaque(ruling)
}

/// Admits a connection when it opens, on its peer and port alone; `None` when the answer
/// depends on what the client sends ([`with_bytes`] then decides). A decision that does not
/// depend on requests never waits for bytes.
pub(crate) fn at_open(view: View<'_>, conn: Conn<'_>) -> Option<Admission> {
    let c = conn.policy(None);
    match view.policy.decide_connection(&c, None) {
        ConnDecision::Final(d) => Some(settle(view, d)),
        ConnDecision::NeedHttp if view.opaque_ports.contains(conn.dst.port()) => {
            Some(settle(view, view.policy.decide_opaque(&c, None)))
        }
        ConnDecision::NeedHttp => None,
    }
}

/// Admits a connection whose first bytes looked like `detected` (the decision at open still
/// comes first): HTTP is served, TLS judged again with its server name, anything else judged as
/// non-HTTP traffic — failing closed where only HTTP rules could allow it.
pub(crate) fn with_bytes(view: View<'_>, conn: Conn<'_>, detected: &Detected) -> Admission {
    if let Some(settled) = at_open(view, conn) {
        return settled;
    }
    match detected {
        Detected::Http1 => Admission::Http { http2: false },
        Detected::Http2 => Admission::Http { http2: true },
        Detected::Tls { alpn, .. } if conn.direction == Direction::Inbound && is_mesh(alpn) => {
            Admission::Close(Refusal::MeshUnconfigured)
        }
        Detected::Tls { sni, .. } => {
            let c = conn.policy(sni.as_deref());
            let d = match view.policy.decide_connection(&c, None) {
                ConnDecision::Final(d) => d,
                ConnDecision::NeedHttp => view.policy.decide_opaque(&c, None),
            };
            settle(view, d)
        }
        Detected::Opaque | Detected::NeedMore => {
            settle(view, view.policy.decide_opaque(&conn.policy(None), None))
        }
    }
}

#[cfg(test)]
mod tests;
