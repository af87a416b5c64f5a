//! The limits of HTTP serving, in one place: sizes a client may send and how long it may take.

use std::time::Duration;

/// Largest request head (request line + headers) accepted from a client.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers accepted in one request.
pub(crate) const MAX_HEADERS: usize = 100;
/// Most concurrent HTTP/2 streams per client connection.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Largest request body the HTTP/1 relay buffers whole; larger ones go to the hyper server
/// (streamed).
pub(crate) const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// How long the full server waits for a chunked request body to end before it starts
/// forwarding what it has (a streaming client is not held up longer than this).
pub(crate) const BODY_READ_AHEAD: Duration = Duration::from_millis(100);

/// How long a client may take to send a request head (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a served HTTP connection may stay without a byte moving before it is shut down
/// gracefully (HTTP/2 GOAWAY; HTTP/1 idle keep-alive is also cut by the header read timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long HTTP/1 connections keep serving (answering with `Connection: close`) after a drain
/// starts, before idle ones are closed.
pub(crate) const HTTP1_DRAIN_GRACE: Duration = Duration::from_secs(1);
