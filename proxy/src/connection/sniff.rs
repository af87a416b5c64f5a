//! Reads a client's first bytes until [`detect`] can say what they are, within a byte budget
//! and the detect timeout (server-first protocols send nothing: they are opaque), and counts
//! the outcome. Where the policy reads the connection as HTTP, the first byte may take as long
//! as an HTTP server would wait for a request head ([`FirstByte::Http`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::context::Context;
use super::detect::{Detected, detect};
use crate::http::limits::HEADER_READ_TIMEOUT;
use crate::mesh::tls::is_mesh;
use crate::observe::metrics::DetectLabels;
use crate::vocab::Direction;

/// Bytes read while detecting, at most (a whole TLS ClientHello record fits).
const MAX_SNIFF: usize = 16 * 1024 + 2048;

/// Reads until the protocol is known, the client stops, or `timeout` passes — counted from
/// the first byte, which may take up to `first_byte`.
async fn read_until_known<S: AsyncRead + Unpin>(
    client: &mut S,
    first_byte: Duration,
    timeout: Duration,
) -> (Bytes, Detected) {
    // Most request heads and ClientHellos fit; the buffer grows when they do not.
    let mut buf = BytesMut::with_capacity(1024);
    let mut deadline = tokio::time::Instant::now() + first_byte.max(timeout);
    loop {
        match detect(&buf) {
            Detected::NeedMore if buf.len() < MAX_SNIFF => {}
            Detected::NeedMore => return (buf.freeze(), Detected::Opaque),
            d => return (buf.freeze(), d),
        }
        let first = buf.is_empty();
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                if first {
                    deadline = deadline.min(tokio::time::Instant::now() + timeout);
                }
            }
            _ => return (buf.freeze(), Detected::Opaque),
        }
    }
}

/// The label value of a detection.
fn protocol(detected: &Detected) -> &'static str {
    match detected {
        Detected::Http1 => "http1",
        Detected::Http2 => "http2",
        Detected::Tls { alpn, .. } if is_mesh(alpn) => "mtls",
        Detected::Tls { .. } => "tls",
        Detected::Opaque | Detected::NeedMore => "opaque",
    }
}

/// How long a client may stay silent before its first byte.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FirstByte {
    /// The detect timeout: the client may speak a server-first protocol.
    Detect,
    /// The policy reads this connection as HTTP: clients that connect early (pools) get the
    /// HTTP header read timeout, as an HTTP server would give them.
    Http,
}

/// Reads the client's first bytes and counts what they are.
pub(crate) async fn sniff<S: AsyncRead + Unpin>(
    ctx: &Context,
    direction: Direction,
    client: &mut S,
    first_byte: FirstByte,
) -> (Bytes, Detected) {
    let wait = match first_byte {
        FirstByte::Detect => ctx.detect_timeout,
        FirstByte::Http => HEADER_READ_TIMEOUT,
    };
    let (prefix, detected) = read_until_known(client, wait, ctx.detect_timeout).await;
    ctx.metrics
        .detections
        .get_or_create(&DetectLabels {
            direction,
            protocol: protocol(&detected),
        })
        .inc();
    (prefix, detected)
}
