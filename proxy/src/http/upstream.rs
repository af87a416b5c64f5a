//! The upstream side of one downstream HTTP connection: a lazily opened HTTP/1 or HTTP/2
//! connection to the original destination, reused for every request on the downstream
//! connection (HTTP/2 multiplexed), reopened when it closes; protocol switches (Upgrade,
//! CONNECT) get a connection of their own.

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use super::respond::Local;
use crate::connection::{ConnError, Direction};
use crate::upstream::Connector;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection.
    #[error("{0}")]
    Connect(#[from] ConnError),
    /// The connection broke or spoke badly.
    #[error("upstream http: {0}")]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The local response this failure becomes.
    pub fn local(&self) -> Local {
        match self {
            UpstreamError::Connect(ConnError::ConnectTimeout(_)) => Local::Timeout,
            UpstreamError::Connect(_) => Local::Unavailable,
            UpstreamError::Http(_) => Local::BadGateway,
        }
    }
}

/// Upstream connections of one downstream connection.
#[derive(Debug)]
pub struct Upstream {
    connector: Connector,
    direction: Direction,
    client: SocketAddr,
    dst: SocketAddr,
    h1: Mutex<Option<http1::SendRequest<Incoming>>>,
    h2: Mutex<Option<http2::SendRequest<Incoming>>>,
}

impl Upstream {
    /// Nothing is opened until the first request.
    pub fn new(
        connector: Connector,
        direction: Direction,
        client: SocketAddr,
        dst: SocketAddr,
    ) -> Self {
        Self {
            connector,
            direction,
            client,
            dst,
            h1: Mutex::new(None),
            h2: Mutex::new(None),
        }
    }

    async fn h1_connection(&self) -> Result<http1::SendRequest<Incoming>, UpstreamError> {
        let tcp = self
            .connector
            .connect(self.direction, self.client, self.dst)
            .await?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream http/1 connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends over HTTP/1.1, reusing the connection while it lives.
    pub async fn send_h1(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut slot = self.h1.lock().await;
        let reusable = match slot.take() {
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let mut sender = match reusable {
            Some(s) => s,
            None => self.h1_connection().await?,
        };
        let resp = sender.send_request(req).await;
        *slot = Some(sender);
        Ok(resp?)
    }

    /// Sends over HTTP/2 (prior knowledge), multiplexing on one connection.
    pub async fn send_h2(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = {
            let mut slot = self.h2.lock().await;
            match slot.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let tcp = self
                        .connector
                        .connect(self.direction, self.client, self.dst)
                        .await?;
                    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                        .handshake(TokioIo::new(tcp))
                        .await?;
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "upstream http/2 connection ended");
                        }
                    });
                    *slot = Some(sender.clone());
                    sender
                }
            }
        };
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    /// Sends a request that switches protocols (Upgrade, CONNECT) on a connection of its own.
    pub async fn send_switching(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = self.h1_connection().await?;
        Ok(sender.send_request(req).await?)
    }
}
