//! Connections to original destinations for HTTP, reused across downstream connections.
//!
//! Connections are keyed by destination and by the source address the proxy must use (the
//! client's own IP when TPROXY preserves it, else none): HTTP/2 connections are shared and
//! multiplexed; an HTTP/1 connection returns to an idle list when its response body has been
//! read to the end, and is taken again only if it is still open. Protocol switches (Upgrade,
//! CONNECT) get a connection of their own that is never reused. Whether a destination speaks
//! HTTP/2 with prior knowledge is probed once and remembered ([`Upstream::speaks_h2`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::respond::{Body, Local};
use crate::net::connector::{ConnectError, Connector};
use crate::net::stream::Stream;
use crate::vocab::{CaptureMode, Direction};

/// Idle HTTP/1 connections kept per key.
const MAX_IDLE_PER_KEY: usize = 64;
/// How long a pooled HTTP/1 connection may take to be ready before it is dropped.
const POOLED_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);
/// Keys kept at most (destinations × sources); past it, connections are not kept idle.
const MAX_KEYS: usize = 4096;

/// How long an upstream may take to answer the HTTP/2 preface before it is taken for HTTP/1.
const H2_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke or spoke badly.
    #[error("upstream http")]
    Http(#[from] hyper::Error),
    /// The upstream switched protocols where the request did not ask for it (or to one it did
    /// not name).
    #[error("upstream switched to {0:?}, which the request did not ask for")]
    UnrequestedSwitch(String),
}

impl UpstreamError {
    /// The local response this failure becomes.
    pub(crate) fn local(&self) -> Local {
        match self {
            UpstreamError::Connect(ConnectError::Timeout(_)) => Local::Timeout,
            UpstreamError::Connect(_) => Local::Unavailable,
            UpstreamError::Http(_) | UpstreamError::UnrequestedSwitch(_) => Local::BadGateway,
        }
    }
}

/// (direction, spoofed source, destination).
type Key = (Direction, Option<IpAddr>, SocketAddr);

/// Upstream HTTP connections shared by every downstream connection.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    h1: Mutex<HashMap<Key, Vec<http1::SendRequest<Body>>>>,
    /// Idle connections of the HTTP/1 relay, between exchanges.
    raw: Mutex<HashMap<Key, Vec<Stream>>>,
    h2: Mutex<HashMap<Key, http2::SendRequest<Incoming>>>,
    /// Whether each destination speaks HTTP/2 with prior knowledge (as probed).
    h2_support: Mutex<HashMap<Key, bool>>,
}

impl Pools {
    fn take_h1(&self, key: &Key) -> Vec<http1::SendRequest<Body>> {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        map.get_mut(key).map(std::mem::take).unwrap_or_default()
    }

    fn put_h1(&self, key: Key, sender: http1::SendRequest<Body>) {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            return;
        }
        let idle = map.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_KEY {
            idle.push(sender);
        }
    }

    fn take_raw(&self, key: &Key) -> Option<Stream> {
        let mut map = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let idle = map.get_mut(key)?;
        while let Some(mut s) = idle.pop() {
            if is_quiet(&mut s) {
                return Some(s);
            }
        }
        None
    }

    fn put_raw(&self, key: Key, stream: Stream) {
        let mut map = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            return;
        }
        let idle = map.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_KEY {
            idle.push(stream);
        }
    }

    fn h2_support(&self, key: &Key) -> Option<bool> {
        let map = self.h2_support.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).copied()
    }

    fn remember_h2_support(&self, key: Key, speaks: bool) {
        let mut map = self.h2_support.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_KEYS || map.contains_key(&key) {
            map.insert(key, speaks);
        }
    }

    fn give_back_h1(&self, key: Key, mut rest: Vec<http1::SendRequest<Body>>) {
        if rest.is_empty() {
            return;
        }
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let idle = map.entry(key).or_default();
        idle.append(&mut rest);
        idle.truncate(MAX_IDLE_PER_KEY);
    }
}

/// Whether an idle connection is still open and has nothing unread: one read attempt that must
/// find nothing (no syscall when the runtime already knows the socket is not readable).
fn is_quiet(stream: &mut Stream) -> bool {
    use tokio::io::AsyncRead;
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// Sends the HTTP/2 preface and an empty SETTINGS frame and reads the first frame header: an
/// HTTP/2 server answers with SETTINGS; an HTTP/1 server with a status line, or it closes.
/// `None` when the upstream says nothing in time.
async fn probe_h2(stream: &mut Stream) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let exchange = async {
        stream.write_all(crate::net::H2_PREFACE).await?;
        stream.write_all(&EMPTY_SETTINGS).await?;
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    match tokio::time::timeout(H2_PROBE_TIMEOUT, exchange).await {
        Ok(Ok(head)) => Some(head[3] == 0x4),
        Ok(Err(_)) => Some(false),
        Err(_) => None,
    }
}

/// A copy of an idempotent request whose body has already ended (nothing to stream), to send
/// again on a fresh connection.
fn replayable(req: &Request<Body>) -> Option<Request<Body>> {
    let idempotent = matches!(
        *req.method(),
        hyper::Method::GET
            | hyper::Method::HEAD
            | hyper::Method::OPTIONS
            | hyper::Method::TRACE
            | hyper::Method::PUT
            | hyper::Method::DELETE
    );
    if !idempotent || !req.body().is_end_stream() {
        return None;
    }
    use http_body_util::BodyExt as _;
    let empty = http_body_util::Empty::<Bytes>::new().map_err(|never| match never {});
    let mut copy = Request::new(empty.boxed());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether the connection may carry another request after this response (not HTTP/1.0 without
/// keep-alive, no `Connection: close`).
fn keeps_alive<B>(resp: &Response<B>) -> bool {
    let says = |token: &str| {
        resp.headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match resp.version() {
        hyper::Version::HTTP_10 => says("keep-alive"),
        _ => !says("close"),
    }
}

/// A response body that hands its HTTP/1 connection back to the pool once read to the end.
struct Returning {
    inner: Incoming,
    done: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // Servers stop polling once `is_end_stream` says so, so the end is seen either way.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended && let Some(done) = self.done.take() {
            done();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream side of one downstream connection.
#[derive(Debug)]
pub(crate) struct Upstream {
    pools: Arc<Pools>,
    connector: Connector,
    direction: Direction,
    client: SocketAddr,
    dst: SocketAddr,
}

impl Upstream {
    /// Nothing is opened until the first request.
    pub(crate) fn new(
        pools: Arc<Pools>,
        connector: Connector,
        direction: Direction,
        client: SocketAddr,
        dst: SocketAddr,
    ) -> Self {
        Self {
            pools,
            connector,
            direction,
            client,
            dst,
        }
    }

    /// An idle relay connection to the destination, if one is kept.
    pub(crate) fn take_raw(&self) -> Option<Stream> {
        self.pools.take_raw(&self.key())
    }

    /// Keeps a relay connection whose last exchange ended cleanly, for the next request.
    pub(crate) fn put_raw(&self, stream: Stream) {
        self.pools.put_raw(self.key(), stream);
    }

    /// A new connection to the destination.
    pub(crate) async fn connect(&self) -> Result<Stream, ConnectError> {
        Ok(self
            .connector
            .connect(self.direction, self.client, self.dst)
            .await?
            .stream)
    }

    fn key(&self) -> Key {
        let spoofed = (self.direction == Direction::Inbound
            && self.connector.capture == CaptureMode::Tproxy)
            .then_some(self.client.ip());
        (self.direction, spoofed, self.dst)
    }

    async fn h1_connection<B>(&self) -> Result<http1::SendRequest<B>, UpstreamError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = self
            .connector
            .connect(self.direction, self.client, self.dst)
            .await?
            .stream;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream http/1 connection ended");
            }
        });
        Ok(sender)
    }

    /// An idle pooled HTTP/1 connection that is ready at once, if one is kept.
    async fn pooled_h1(&self, key: &Key) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.pools.take_h1(key);
        let mut found = None;
        while let Some(mut s) = idle.pop() {
            // A pooled connection is handed back only after its response ended, so a healthy one
            // is ready at once; one that is not (an upstream that sent more than it was asked
            // for, say) is dropped rather than waited on.
            let ready = tokio::time::timeout(POOLED_READY_TIMEOUT, s.ready()).await;
            if !s.is_closed() && matches!(ready, Ok(Ok(()))) {
                found = Some(s);
                break;
            }
        }
        self.pools.give_back_h1(*key, idle);
        found
    }

    /// Sends over HTTP/1.1 on an idle pooled connection, or a new one. A pooled connection that
    /// fails before any response (the app closed it as the request arrived) is replaced once,
    /// for idempotent requests without a body — as the relay does.
    pub(crate) async fn send_h1(
        &self,
        req: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        let key = self.key();
        let replay = replayable(&req);
        let (sender, resp) = match self.pooled_h1(&key).await {
            Some(mut pooled) => match (pooled.send_request(req).await, replay) {
                (Ok(resp), _) => (pooled, resp),
                (Err(e), Some(again)) => {
                    tracing::debug!(error = %e, "pooled upstream connection was stale; retrying");
                    let mut fresh = self.h1_connection().await?;
                    let resp = fresh.send_request(again).await?;
                    (fresh, resp)
                }
                (Err(e), None) => return Err(e.into()),
            },
            None => {
                let mut fresh = self.h1_connection().await?;
                let resp = fresh.send_request(req).await?;
                (fresh, resp)
            }
        };
        let keep = keeps_alive(&resp);
        let pools = self.pools.clone();
        let give_back = move || {
            if keep && !sender.is_closed() {
                pools.put_h1(key, sender);
            }
        };
        Ok(resp.map(|inner| {
            if inner.is_end_stream() {
                give_back();
                return http_body_util::BodyExt::boxed(inner);
            }
            http_body_util::BodyExt::boxed(Returning {
                inner,
                done: Some(Box::new(give_back)),
            })
        }))
    }

    /// Whether the destination speaks HTTP/2 with prior knowledge: probed once on a connection
    /// of its own ([`probe_h2`]), then remembered. An upstream that cannot be reached is an
    /// error, as for a request.
    pub(crate) async fn speaks_h2(&self) -> Result<bool, UpstreamError> {
        let key = self.key();
        if let Some(known) = self.pools.h2_support(&key) {
            return Ok(known);
        }
        let mut probe = self.connect().await?;
        // An HTTP/2 server sends its SETTINGS at once; one silent past the timeout is taken
        // (and remembered) as HTTP/1, so later requests do not wait for the probe again.
        let speaks = probe_h2(&mut probe).await.unwrap_or(false);
        self.pools.remember_h2_support(key, speaks);
        tracing::debug!(dst = %self.dst, speaks, "probed the upstream for HTTP/2");
        Ok(speaks)
    }

    /// Sends over HTTP/2 (prior knowledge) on the shared connection for this destination.
    pub(crate) async fn send_h2(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, UpstreamError> {
        let key = self.key();
        let shared = {
            let map = self.pools.h2.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&key).filter(|s| !s.is_closed()).cloned()
        };
        let mut sender = match shared {
            Some(s) => s,
            None => {
                let tcp = self
                    .connector
                    .connect(self.direction, self.client, self.dst)
                    .await?
                    .stream;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(tcp))
                    .await?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream http/2 connection ended");
                    }
                });
                let mut map = self.pools.h2.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() < MAX_KEYS || map.contains_key(&key) {
                    map.insert(key, sender.clone());
                }
                sender
            }
        };
        sender.ready().await?;
        Ok(sender
            .send_request(req)
            .await?
            .map(http_body_util::BodyExt::boxed))
    }

    /// Sends a request that switches protocols (Upgrade, CONNECT) on a connection of its own.
    pub(crate) async fn send_switching(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.h1_connection().await?;
        Ok(sender.send_request(req).await?)
    }
}
