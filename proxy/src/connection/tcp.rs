//! Opaque TCP forwarding: both directions copied concurrently, each through a buffer it holds
//! only while bytes are in flight ([`crate::buffers`]), with half-close carried across (EOF on
//! one side shuts down writing on the other) and the first error ending both directions.

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::context::Context;
use super::outcome::{ConnError, Transfer};
use crate::net::buffers;
use crate::net::stream::Stream;
use crate::observe::access_log::Record;
use crate::vocab::Direction;

async fn pipe<R, W>(mut from: R, mut to: W, count: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let n = buffers::read(&mut from, &mut buf).await?;
        if n == 0 {
            // Half-close: pass the EOF on and keep the other direction open.
            return to.shutdown().await;
        }
        to.write_all(&buf).await?;
        buffers::give(&mut buf);
        *count += n as u64;
    }
}

/// Copies between `client` and `upstream` until both directions have ended.
async fn copy_both_ways(client: Stream, upstream: Stream) -> Transfer {
    let (cr, cw) = client.into_halves();
    let (ur, uw) = upstream.into_halves();
    let (mut bytes_in, mut bytes_out) = (0, 0);
    let result = tokio::try_join!(pipe(cr, uw, &mut bytes_in), pipe(ur, cw, &mut bytes_out));
    Transfer {
        bytes_in,
        bytes_out,
        error: result.err(),
    }
}

/// Connects to the original destination, sends what was already read from the client
/// (`prefix`, from detection) and copies both ways.
pub(crate) async fn forward(
    ctx: &Context,
    (direction, src, dst): (Direction, SocketAddr, SocketAddr),
    client: Stream,
    prefix: Bytes,
    record: &mut Record,
) -> Result<Transfer, ConnError> {
    let connected = ctx.connector.connect(direction, src, dst).await?;
    if connected.peer_identity.is_some() {
        record.identity = connected.peer_identity;
    }
    let mut upstream = connected.stream;
    if !prefix.is_empty() {
        upstream
            .write_all(&prefix)
            .await
            .map_err(ConnError::UpstreamWrite)?;
    }
    let mut t = Box::pin(copy_both_ways(client, upstream)).await;
    t.bytes_in += prefix.len() as u64;
    Ok(t)
}
