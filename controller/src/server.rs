//! Wires the controller: binds the admin and API ports, starts the source, and serves until
//! the process is stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::Api;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::settings::{Settings, Source};

/// A bound controller.
#[derive(Debug)]
pub struct Controller {
    settings: Settings,
    api: TcpListener,
    admin: TcpListener,
    /// The views and their subscribers.
    pub publisher: Arc<Publisher>,
}

/// A port that cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {addr}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

impl Controller {
    /// Binds every port.
    pub async fn bind(settings: Settings) -> Result<Self, BindError> {
        Ok(Self {
            api: bind(settings.api_addr).await?,
            admin: bind(settings.admin_addr).await?,
            publisher: Arc::new(Publisher::new(Arc::new(Metrics::default()))),
            settings,
        })
    }

    /// The bound API address.
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until the process ends (or the gRPC server fails).
    pub async fn run(self) -> Result<(), tonic::transport::Error> {
        let Source::Dir(path) = self.settings.source.clone();
        tokio::spawn(crate::source::dir::watch(
            path,
            self.settings.source_poll,
            self.publisher.clone(),
        ));
        tokio::spawn(crate::admin::serve(self.admin, self.publisher.clone()));
        // No Nagle: a view is one write, and a delayed ACK would hold each one 40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.api).with_nodelay(Some(true));
        tracing::info!(trust_domain = %self.settings.trust_domain, "serving");
        tonic::transport::Server::builder()
            .add_service(Api::new(self.publisher))
            .serve_with_incoming(incoming)
            .await
    }
}
