//! One captured connection, end to end, as a short chain of stages:
//!
//! [`listener`] accepts → [`destination`] recovers where it was going (and refuses loops; an
//! outbound connection to a Service goes to the endpoint [`crate::routes`] picks) →
//! [`mesh_accept`] terminates a peer sidecar's mutual TLS (inbound, with an identity) →
//! [`admit`] decides, as a pure function, whether the connection is closed, carried, or served
//! as HTTP — reading its first bytes through [`sniff`] ([`detect`] says what they are) when
//! the answer depends on them → [`crate::http`] judges every request, or [`tcp`] moves the
//! bytes. [`outcome`] turns errors into verdicts and settles the record and gauges however the
//! task ends; [`context`] is what every connection task shares.

pub(crate) mod admit;
pub(crate) mod context;
pub(crate) mod destination;
pub(crate) mod detect;
pub(crate) mod http_ports;
pub(crate) mod listener;
pub(crate) mod mesh_accept;
pub(crate) mod outcome;
pub(crate) mod sniff;
pub(crate) mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use self::admit::{Admission, Conn, Refusal, View};
use self::context::Context;
use self::detect::Detected;
use self::mesh_accept::{Authenticated, authenticate};
use self::outcome::{ConnError, Settle, Transfer};
use self::sniff::{FirstByte, sniff};
use crate::drain::Drain;
use crate::http;
use crate::net::prefixed::Prefixed;
use crate::observe::access_log::Record;
use crate::routes::Route;
use crate::vocab::{Direction, Ruling, Verdict};

/// How an admitted connection is carried.
enum Carry {
    /// Bytes both ways; `prefix` was already read from the client (detection).
    Opaque { prefix: Bytes },
    /// As HTTP, every request judged.
    Http { prefix: Bytes, http2: bool },
}

/// How a connection was carried to its end.
enum Carried {
    Http,
    Opaque(Transfer),
}

/// Serves one accepted connection to completion.
pub(crate) async fn serve(
    ctx: Arc<Context>,
    direction: Direction,
    client: TcpStream,
    src: SocketAddr,
    drain: Drain,
) {
    let mut settle = Settle::open(&ctx, direction, src);
    let _ = client.set_nodelay(true);
    match carry(&ctx, (direction, src), client, drain, settle.record()).await {
        Ok(Carried::Http) => settle.http(),
        Ok(Carried::Opaque(t)) => settle.transferred(t),
        Err(e) => settle.failed(e),
    }
}

/// The chain of stages. The handshake's, the connect's and the servers' state are boxed: they
/// live only while they run, not for the life of every connection.
async fn carry(
    ctx: &Arc<Context>,
    (direction, src): (Direction, SocketAddr),
    client: TcpStream,
    drain: Drain,
    record: &mut Record,
) -> Result<Carried, ConnError> {
    let dst = destination::destination(
        &client,
        ctx.capture,
        ctx.original_dst_override,
        &ctx.own_ports,
    )?;
    let dst = match direction {
        Direction::Outbound => routed(ctx, dst, record),
        Direction::Inbound => dst,
    };
    record.dst = Some(dst);
    let mut peer = Box::pin(authenticate(ctx, direction, client, record)).await?;
    if direction == Direction::Outbound {
        // Judged as the pod it reaches: the connector holds the peer to this identity.
        peer.identity = ctx.connector.expected_peer(direction, dst);
    }
    match Box::pin(classify(ctx, (direction, src, dst), &mut peer, record)).await? {
        Carry::Http { prefix, http2 } => {
            let down = http::Downstream {
                direction,
                src,
                dst,
                identity: peer.identity,
                service: record.service.clone(),
                http2,
            };
            let io = Prefixed::new(prefix, peer.stream);
            Box::pin(http::serve(ctx.clone(), down, io, drain)).await;
            Ok(Carried::Http)
        }
        Carry::Opaque { prefix } => {
            let t = tcp::forward(ctx, (direction, src, dst), peer.stream, prefix, record);
            Ok(Carried::Opaque(Box::pin(t).await?))
        }
    }
}

/// Where an outbound connection goes: a Service's address becomes the endpoint picked for it,
/// which is then judged and connected to. Without a ready endpoint it stays the Service's
/// address, which the connector never connects to (TCP is refused, HTTP answered 503).
fn routed(ctx: &Context, dst: SocketAddr, record: &mut Record) -> SocketAddr {
    match ctx.policy.current().routes.route(dst) {
        Route::Direct => dst,
        Route::Service { service, endpoint } => {
            record.service = Some(service);
            endpoint.unwrap_or(dst)
        }
    }
}

/// Admission, carried out: the first bytes are read only when the decision depends on them
/// (or were read already by the mesh stage), then the answer is applied to the record.
async fn classify(
    ctx: &Context,
    (direction, src, dst): (Direction, SocketAddr, SocketAddr),
    peer: &mut Authenticated,
    record: &mut Record,
) -> Result<Carry, ConnError> {
    let active = ctx.policy.current();
    let view = View {
        policy: &active.loaded.policy,
        audit: ctx.audit,
        opaque_ports: &ctx.opaque_ports,
    };
    let Authenticated {
        stream,
        identity,
        sniffed,
    } = peer;
    let own = ctx.identity.as_ref().map(|store| store.current());
    let conn = Conn {
        direction,
        src,
        dst,
        identity: identity.as_deref(),
        trust_domain: own.as_ref().map(|m| m.trust_domain.as_str()),
    };
    let sniffed = sniffed.take();
    // A Service without a ready endpoint: HTTP gets its 503, so the bytes are read first.
    let unroutable = record.service.is_some() && active.routes.is_service(dst);
    let settled = match admit::at_open(view, conn) {
        Some(Admission::Opaque(_)) if unroutable => None,
        settled => settled,
    };
    let (prefix, admission) = match settled {
        None => {
            // On a port known to carry HTTP, a client that has said nothing yet (an HTTP pool
            // connecting early) gets an HTTP server's patience, not the detect timeout.
            let first_byte = if ctx.http_ports.knows(direction, dst.port()) {
                FirstByte::Http
            } else {
                FirstByte::Detect
            };
            let (prefix, detected) = match sniffed {
                Some(s) if !s.0.is_empty() || matches!(first_byte, FirstByte::Detect) => s,
                _ => sniff(ctx, direction, stream, first_byte).await,
            };
            if matches!(detected, Detected::Http1 | Detected::Http2) {
                ctx.http_ports.learn(direction, dst.port());
            }
            if let Detected::Tls { sni, .. } = &detected {
                record.protocol = "tls";
                record.sni.clone_from(sni);
            }
            let admission = match (admit::with_bytes(view, conn, &detected), &detected) {
                (Admission::Opaque(r), Detected::Http1 | Detected::Http2) if unroutable => {
                    note(record, &r);
                    Admission::Http {
                        http2: matches!(detected, Detected::Http2),
                    }
                }
                (admission, _) => admission,
            };
            (prefix, admission)
        }
        Some(settled) => (sniffed.map(|(p, _)| p).unwrap_or_default(), settled),
    };
    match admission {
        Admission::Opaque(ruling) => {
            note(record, &ruling);
            Ok(Carry::Opaque { prefix })
        }
        Admission::Http { http2 } => Ok(Carry::Http { prefix, http2 }),
        Admission::Close(Refusal::Denied(d)) => {
            record.policy.clone_from(&d.policy);
            record.rule = Some(d.rule.clone());
            Err(ConnError::Denied(d))
        }
        Admission::Close(Refusal::MeshUnconfigured) => Err(ConnError::MeshUnconfigured),
    }
}

/// Writes an admitting ruling into the connection's record.
fn note(record: &mut Record, ruling: &Ruling) {
    record.policy.clone_from(&ruling.decision.policy);
    record.rule = Some(ruling.decision.rule.clone());
    if ruling.verdict == Verdict::AuditDeny {
        record.verdict = Verdict::AuditDeny;
        record.reason = Some(ruling.decision.reason.to_string());
    }
}
