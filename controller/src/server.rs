//! Wires the controller: binds the admin, API and webhook ports, starts the source, and serves
//! until the process is stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::identity::IdentityApi;
use crate::api::tls::{Acceptor, TlsError};
use crate::api::tokens::{JwksError, JwksFile, Reviewer, TokenVerifier};
use crate::api::{Api, Authentication};
use crate::ca::live::LiveCa;
use crate::ca::{AuthorityError, DEFAULT_TTL};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::settings::{ApiSecurity, CaRoot, Settings, Source, TokenCheck};
use crate::webhooks::{self, WebhookError};

/// A bound controller.
#[derive(Debug)]
pub struct Controller {
    settings: Settings,
    api: TcpListener,
    admin: TcpListener,
    tls: Option<Arc<Acceptor>>,
    jwks: Option<JwksFile>,
    ca: Option<Arc<LiveCa>>,
    webhooks: Option<webhooks::Server>,
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

/// What the controller cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A port that cannot be bound.
    #[error("binding {addr}")]
    Port {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Unusable API certificate files.
    #[error("the sidecar API's TLS")]
    Tls(#[from] TlsError),
    /// An unusable service-account JWKS.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// An unusable mesh CA root.
    #[error(transparent)]
    Ca(#[from] AuthorityError),
    /// The admission webhooks' port or certificate.
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Port { addr, source })
}

/// The mesh CA the settings ask for, its root loaded (or made).
fn mesh_ca(settings: &Settings) -> Result<Option<Arc<LiveCa>>, BindError> {
    let Some(ca) = &settings.ca else {
        return Ok(None);
    };
    let td = &settings.trust_domain;
    let live = match &ca.root {
        CaRoot::Generate => LiveCa::generated(td, ca.ttl)?,
        CaRoot::Files { cert, key, bundle } => {
            LiveCa::from_files(td, ca.ttl, (cert.clone(), key.clone(), bundle.clone()))?
        }
    };
    Ok(Some(Arc::new(live)))
}

/// The TLS acceptor and the token keys the settings name, loaded (and checked) once.
fn security(settings: &Settings) -> Result<(Option<Arc<Acceptor>>, Option<JwksFile>), BindError> {
    let ApiSecurity::Tls { files, tokens } = &settings.api_security else {
        return Ok((None, None));
    };
    let acceptor = Acceptor::new(files.clone(), settings.trust_domain.clone())?;
    let jwks = match tokens {
        TokenCheck::Jwks { path, issuer } => Some(JwksFile::load(path.clone(), issuer.clone())?),
        _ => None,
    };
    Ok((Some(Arc::new(acceptor)), jwks))
}

impl Controller {
    /// Binds every port.
    pub async fn bind(settings: Settings) -> Result<Self, BindError> {
        let (tls, jwks) = security(&settings)?;
        let publisher = Arc::new(Publisher::new(Arc::new(Metrics::default())));
        let webhooks = match &settings.webhooks {
            Some(w) => Some(webhooks::Server::bind(w, publisher.clone()).await?),
            None => None,
        };
        Ok(Self {
            ca: mesh_ca(&settings)?,
            tls,
            jwks,
            webhooks,
            api: bind(settings.api_addr).await?,
            admin: bind(settings.admin_addr).await?,
            publisher,
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

    /// The bound webhook address, when the webhooks are served.
    pub fn webhook_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.webhooks.as_ref().map(webhooks::Server::local_addr)
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

    /// Serves with `client` as the `kube` source's API server (and token reviewer).
    pub async fn run_with(self, client: Option<kube::Client>) -> Result<(), RunError> {
        match (self.settings.source.clone(), client.clone()) {
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
        match self.webhooks {
            Some(server) => {
                tokio::spawn(async move {
                    if let Err(e) = server.run(std::future::pending()).await {
                        tracing::error!(error = %e, "the admission webhooks stopped");
                    }
                });
            }
            None => tracing::info!(
                "admission webhooks off (no --webhook-tls-cert and --webhook-tls-key): /mutate and /validate are not served"
            ),
        }
        let authentication = match (&self.settings.api_security, self.jwks, client) {
            (ApiSecurity::Plaintext, _, _) => Authentication::None,
            (_, Some(jwks), _) => Authentication::Callers(TokenVerifier::Jwks(jwks)),
            (
                ApiSecurity::Tls {
                    tokens: TokenCheck::Review,
                    ..
                },
                None,
                Some(client),
            ) => Authentication::Callers(TokenVerifier::Review(Reviewer::new(client))),
            (
                ApiSecurity::Tls {
                    tokens: TokenCheck::Review,
                    ..
                },
                None,
                None,
            ) => {
                return Err(RunError::NoClient);
            }
            _ => Authentication::Callers(TokenVerifier::Refuse),
        };
        tracing::info!(trust_domain = %self.settings.trust_domain, tls = self.tls.is_some(), "serving");
        let authentication = Arc::new(authentication);
        let identity = self.ca.map(|ca| {
            tokio::spawn(
                ca.clone()
                    .run(self.publisher.clone(), self.settings.source_poll),
            );
            let ttl = self.settings.ca.as_ref().map_or(DEFAULT_TTL, |c| c.ttl);
            let metrics = self.publisher.metrics.clone();
            IdentityApi::new(ca, authentication.clone(), ttl, metrics)
        });
        // Keepalives find the connections of sidecars that went away without a word.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_service(Api::new(self.publisher, authentication))
            .add_optional_service(identity);
        match self.tls {
            Some(acceptor) => {
                server
                    .serve_with_incoming(crate::api::tls::incoming(self.api, acceptor))
                    .await
            }
            None => {
                tracing::warn!(
                    "the sidecar API is plaintext and unauthenticated (--api-plaintext): anyone who reaches it can read any workload's view"
                );
                // No Nagle: a view is one write, and a delayed ACK would hold each one 40 ms.
                let incoming =
                    tonic::transport::server::TcpIncoming::from(self.api).with_nodelay(Some(true));
                server.serve_with_incoming(incoming).await
            }
        }
        .map_err(RunError::Serve)
    }
}
