//! The sidecar API: `Sidecar.Watch` over gRPC (tonic), TLS on 15012 ([`tls`]). A watch streams
//! the workload's current view, then every new version — only to a caller that proved it is
//! that workload ([`auth`]: its workload certificate, or its projected service-account token,
//! verified by [`tokens`]).

pub mod auth;
pub mod identity;
pub mod tls;
pub mod tokens;

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use portcullis_api::v1;
use portcullis_api::v1::sidecar_server::{Sidecar, SidecarServer};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};

use self::auth::{Caller, Grant};
use self::tls::PeerCertificate;
use self::tokens::TokenVerifier;
use crate::index::Versioned;
use crate::publish::Publisher;

/// How callers are authenticated.
#[derive(Debug)]
pub enum Authentication {
    /// Plaintext API: nobody is (testbeds only).
    None,
    /// TLS: a client certificate, else a bearer token checked by the verifier.
    Callers(TokenVerifier),
}

impl Authentication {
    /// Who the caller proved it is (`None`: nothing presented).
    pub async fn caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, Status> {
        let Authentication::Callers(verifier) = self else {
            return Ok(Some(Caller::Anyone));
        };
        let certificate = request
            .extensions()
            .get::<PeerCertificate>()
            .and_then(|p| p.0.clone());
        if let Some((id, until)) = certificate {
            return Ok(Some(Caller::Certificate(id, Some(until))));
        }
        let Some(header) = request.metadata().get("authorization") else {
            return Ok(None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization: expected Bearer TOKEN"))?;
        let identity = verifier
            .verify(token)
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Ok(Some(Caller::Token(identity)))
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Api {
    publisher: Arc<Publisher>,
    authentication: Arc<Authentication>,
}

impl Api {
    /// Serves `publisher`'s views to the callers `authentication` admits.
    pub fn new(
        publisher: Arc<Publisher>,
        authentication: Arc<Authentication>,
    ) -> SidecarServer<Self> {
        SidecarServer::new(Self {
            publisher,
            authentication,
        })
    }
}

/// Counts an open stream for as long as it lives.
struct Subscribed {
    publisher: Arc<Publisher>,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.publisher.metrics.subscribers.dec();
    }
}

type ViewStream = Pin<Box<dyn Stream<Item = Result<v1::View, Status>> + Send>>;

/// The stream of one watch: each view the grant permits, until one it does not (then a
/// permission error ends it) or until the grant expires (then an authentication error asks
/// the sidecar to come back with its current token).
fn granted(views: WatchStream<Arc<Versioned>>, grant: Grant, guard: Subscribed) -> ViewStream {
    let deadline = grant.until.map(|until| {
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + left
    });
    let state = (views, grant, guard, false);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut views, grant, guard, ended)| async move {
            if ended {
                return None;
            }
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                // Made whole only to be sent.
                versioned = views.next() => {
                    let view = versioned?.view();
                    match grant.permits(&view) {
                        Ok(()) => Ok(view),
                        Err(e) => Err(Status::permission_denied(e.to_string())),
                    }
                }
                () = expired => Err(Status::unauthenticated(
                    "the token expired: reconnect with the current one",
                )),
            };
            let ended = item.is_err();
            Some((item, (views, grant, guard, ended)))
        },
    ))
}

#[tonic::async_trait]
impl Sidecar for Api {
    type WatchStream = ViewStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.authentication.caller(&request).await?;
        let req = request.into_inner();
        if req.namespace.is_empty() || req.pod.is_empty() {
            return Err(Status::invalid_argument(
                "namespace and pod are required (the sidecar's --pod-namespace and --pod-name)",
            ));
        }
        let grant = auth::admit(caller.as_ref(), &req.namespace, &req.pod).map_err(|e| {
            tracing::warn!(namespace = %req.namespace, pod = %req.pod, "watch refused: {e}");
            match e {
                auth::Denied::NoCredentials => Status::unauthenticated(e.to_string()),
                _ => Status::permission_denied(e.to_string()),
            }
        })?;
        tracing::debug!(namespace = %req.namespace, pod = %req.pod, "watch");
        let Some(rx) = self.publisher.subscribe((req.namespace, req.pod)) else {
            return Err(Status::resource_exhausted(
                "too many watches of pods the controller does not know",
            ));
        };
        self.publisher.metrics.subscribers.inc();
        let guard = Subscribed {
            publisher: self.publisher.clone(),
        };
        Ok(Response::new(granted(WatchStream::new(rx), grant, guard)))
    }
}
