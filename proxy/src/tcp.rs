//! Opaque TCP forwarding: both directions copied concurrently, each through a buffer it holds
//! only while bytes are in flight ([`crate::buffers`]), with half-close carried across (EOF on
//! one side shuts down writing on the other) and the first error ending both directions.

use std::io;

use crate::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Bytes moved by a forwarded connection, and how it ended.
#[derive(Debug)]
pub struct Transfer {
    /// Client → destination.
    pub bytes_in: u64,
    /// Destination → client.
    pub bytes_out: u64,
    /// The error that ended it, if any.
    pub error: Option<io::Error>,
}

async fn pipe<R, W>(mut from: R, mut to: W, count: &mut u64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let n = crate::buffers::read(&mut from, &mut buf).await?;
        if n == 0 {
            // Half-close: pass the EOF on and keep the other direction open.
            return to.shutdown().await;
        }
        to.write_all(&buf).await?;
        crate::buffers::give(&mut buf);
        *count += n as u64;
    }
}

/// Copies between `client` and `upstream` until both directions have ended.
pub async fn forward(client: Stream, upstream: Stream) -> Transfer {
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
