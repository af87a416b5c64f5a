//! Inbound, when this proxy has an identity: a connection from a peer sidecar (its ClientHello
//! offers the mesh ALPN) is terminated here and its verified SPIFFE ID becomes the peer
//! identity — unless the controller knows the pod at the peer's address as another identity
//! (an address cannot be borrowed). Anything else stays plain and unauthenticated; what was read to tell the two apart
//! is handed on so that it is not read twice.

use bytes::Bytes;
use portcullis_config::matchers::spiffe_namespace;
use tokio::net::TcpStream;

use super::context::Context;
use super::detect::Detected;
use super::outcome::ConnError;
use super::sniff::{FirstByte, sniff};
use crate::mesh::tls::{self, MtlsError};
use crate::net::prefixed::Prefixed;
use crate::net::stream::Stream;
use crate::observe::Chain;
use crate::observe::access_log::Record;
use crate::vocab::Direction;

/// A client connection after the (optional) mutual TLS stage.
#[derive(Debug)]
pub(crate) struct Authenticated {
    /// The client's stream (decrypted when it was mutual TLS).
    pub(crate) stream: Stream,
    /// The peer sidecar's verified SPIFFE ID.
    pub(crate) identity: Option<String>,
    /// Bytes already read from a plain client, and what they looked like.
    pub(crate) sniffed: Option<(Bytes, Detected)>,
}

fn plain(client: TcpStream, sniffed: Option<(Bytes, Detected)>) -> Authenticated {
    Authenticated {
        stream: Stream::Plain(client),
        identity: None,
        sniffed,
    }
}

/// Terminates a peer sidecar's mutual TLS, or hands the connection on as it is.
pub(crate) async fn authenticate(
    ctx: &Context,
    direction: Direction,
    mut client: TcpStream,
    record: &mut Record,
) -> Result<Authenticated, ConnError> {
    let Some(store) = ctx
        .identity
        .as_ref()
        .filter(|_| direction == Direction::Inbound)
    else {
        return Ok(plain(client, None));
    };
    let (prefix, detected) = sniff(ctx, direction, &mut client, FirstByte::Detect).await;
    if !matches!(&detected, Detected::Tls { alpn, .. } if tls::is_mesh(alpn)) {
        return Ok(plain(client, Some((prefix, detected))));
    }
    let own = store.current();
    let accepted = tls::accept(&own.tls, Prefixed::new(prefix, client))
        .await
        .and_then(|(stream, id)| {
            let routes = &ctx.policy.current().routes;
            match routes.mesh_peer(record.src.ip()) {
                Some(pod) if pod.identity(&own.trust_domain) != id => Err(MtlsError::WrongPeer {
                    expected: pod.identity(&own.trust_domain),
                    got: id,
                }),
                _ => Ok((stream, id)),
            }
        });
    let (namespace, result) = match &accepted {
        Ok((_, id)) => (spiffe_namespace(id).unwrap_or(""), "success"),
        Err(_) => ("", "failure"),
    };
    ctx.metrics.count_handshake(direction, result, namespace);
    match accepted {
        Ok((stream, id)) => {
            record.identity = Some(id.clone());
            Ok(Authenticated {
                stream: Stream::Mesh(Box::new(stream)),
                identity: Some(id),
                sniffed: None,
            })
        }
        Err(e) => {
            tracing::info!(src = %record.src, error = %Chain(&e), "peer mTLS handshake refused");
            Err(ConnError::PeerHandshake(e))
        }
    }
}
