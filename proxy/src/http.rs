//! HTTP enforcement for connections whose fate depends on their requests. Every request is
//! normalized and judged on its own ([`judge`], pure), answered locally when denied
//! ([`respond`]), and otherwise forwarded — under its normalized path — to the original
//! destination over pooled upstream connections ([`pool`]).
//!
//! Two servers carry requests: the HTTP/1.1 [`relay`] takes plain requests itself and hands
//! anything else (and HTTP/2, from the start) to the hyper [`server`]. Both share [`conn`] (the
//! per-connection state, records and the judgement), [`host`] (the one host a request names),
//! [`headers`], [`jwt`] (bearer tokens), [`body`] (chunked bodies read ahead),
//! [`idle`] (activity tracking) and the [`limits`].

pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod headers;
pub(crate) mod host;
pub(crate) mod idle;
pub(crate) mod judge;
pub(crate) mod jwt;
pub mod limits;
pub(crate) mod pool;
pub(crate) mod relay;
pub(crate) mod respond;
pub(crate) mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use self::conn::HttpConn;
use self::pool::Upstream;
use crate::connection::context::Context;
use crate::drain::Drain;
use crate::net::prefixed::Prefixed;
use crate::net::stream::Stream;
use crate::vocab::Direction;

/// Who is on the other end of a downstream HTTP connection, and where it was going.
#[derive(Debug, Clone)]
pub(crate) struct Downstream {
    /// Which listener took it.
    pub(crate) direction: Direction,
    /// The client.
    pub(crate) src: SocketAddr,
    /// The original destination.
    pub(crate) dst: SocketAddr,
    /// The peer sidecar's verified SPIFFE ID (inbound mutual TLS).
    pub(crate) identity: Option<String>,
    /// The Service dialled, when `dst` is its endpoint.
    pub(crate) service: Option<Arc<str>>,
    /// HTTP/2 with prior knowledge, else HTTP/1.
    pub(crate) http2: bool,
}

/// Serves one downstream HTTP connection until it closes or the drain asks it to (HTTP/2
/// GOAWAY; HTTP/1 closes after the response in flight). HTTP/1.1 goes through the relay, which
/// hands anything it does not carry itself to the hyper server.
pub(crate) async fn serve(ctx: Arc<Context>, down: Downstream, io: Prefixed<Stream>, drain: Drain) {
    let Downstream {
        direction,
        src,
        dst,
        identity,
        service,
        http2,
    } = down;
    let upstream = Upstream::new(
        ctx.pools.clone(),
        ctx.connector.clone(),
        direction,
        src,
        dst,
    );
    let trust_domain = ctx
        .identity
        .as_ref()
        .map(|store| store.current().trust_domain.clone());
    let conn = Arc::new(HttpConn {
        ctx,
        direction,
        src,
        dst,
        identity,
        service,
        trust_domain,
        http2,
        upstream,
        drain: drain.clone(),
    });
    // Boxed: a connection carries the state of only the server it uses.
    if http2 {
        return Box::pin(server::serve(conn, io, drain)).await;
    }
    let (prefix, stream) = io.into_parts();
    if let relay::End::Handover(rest, stream) =
        Box::pin(relay::serve(conn.clone(), prefix, stream)).await
    {
        Box::pin(server::serve(conn, Prefixed::new(rest, stream), drain)).await;
    }
}
