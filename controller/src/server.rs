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

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No API server client (in-cluster service account or kubeconfig).
    #[error("connecting to the API server (in-cluster config or kubeconfig)")]
    Kube(#[source] kube::Error),
    /// `kube` source without a client.
    #[error("the kube source needs an API server client")]
    NoClient,
    /// The gRPC server failed.
    #[error("serving the sidecar API")]
    Serve(#[source] tonic::transport::Error),
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

    /// Serves until the process ends (or the gRPC server fails), with the source the settings
    /// name (`kube`: the in-cluster or kubeconfig client).
    pub async fn run(self) -> Result<(), RunError> {
        let client = match &self.settings.source {
            Source::Kube => Some(kube::Client::try_default().await.map_err(RunError::Kube)?),
            Source::Dir(_) => None,
        };
        self.run_with(client).await
    }

    /// Serves with `client` as the `kube` source's API server.
    pub async fn run_with(self, client: Option<kube::Client>) -> Result<(), RunError> {
        match (self.settings.source.clone(), client) {
            (Source::Dir(path), _) => {
                tokio::spawn(crate::source::dir::watch(
                    path,
                    self.settings.source_poll,
                    self.publisher.clone(),
                ));
            }
            (Source::Kube, Some(client)) => {
                tokio::spawn(crate::source::kube::watch(client, self.publisher.clone()));
            }
            (Source::Kube, None) => return Err(RunError::NoClient),
        }
        tokio::spawn(crate::admin::serve(self.admin, self.publisher.clone()));
        // No Nagle: a view is one write, and a delayed ACK would hold each one 40 ms.
        let incoming =
            tonic::transport::server::TcpIncoming::from(self.api).with_nodelay(Some(true));
        tracing::info!(trust_domain = %self.settings.trust_domain, "serving");
        tonic::transport::Server::builder()
            .add_service(Api::new(self.publisher))
            .serve_with_incoming(incoming)
            .await
            .map_err(RunError::Serve)
    }
}
