//! The HTTPS shell: `POST` routes (the injector's own: `/mutate`, the AdmissionReview),
//! `GET /healthz`; HTTP/2 or HTTP/1.1 over rustls; request bodies capped; every review logged
//! with its outcome; certificate files polled for renewal; shutdown stops accepting and lets
//! requests in flight finish. Other webhook servers (`portcullis-controller`) reuse the shell
//! with their own [`Routes`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::InjectConfig;
use crate::review::{Outcome, review};
use crate::tls::CertStore;

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// An answer to a `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// `200` with a JSON body (an AdmissionReview).
    pub fn json(body: &serde_json::Value) -> Self {
        Self {
            status: StatusCode::OK,
            content_type: "application/json",
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: body.as_bytes().to_vec(),
        }
    }
}

/// The `POST` routes of a webhook server; `GET /healthz`, body limits and `404` are the
/// shell's.
pub trait Routes: Send + Sync + 'static {
    /// The answer to a `POST` of `body` (at most [`MAX_BODY`] bytes) to `path`; `None`: `404`.
    fn post(&self, path: &str, body: &[u8]) -> Option<Reply>;
}

/// The injector's routes: `POST /mutate`.
#[derive(Debug, Clone)]
pub struct Mutate(pub Arc<InjectConfig>);

impl Routes for Mutate {
    fn post(&self, path: &str, body: &[u8]) -> Option<Reply> {
        (path == "/mutate").then(|| mutate(body, &self.0))
    }
}

/// Answers a `/mutate` body: the review, logged with its outcome.
pub fn mutate(body: &[u8], cfg: &InjectConfig) -> Reply {
    let answer = review(body, cfg);
    match &answer.outcome {
        Outcome::Malformed(why) => {
            tracing::error!(%why, "malformed AdmissionReview; allowed without a patch")
        }
        Outcome::Denied(why) => tracing::warn!(%why, "pod refused"),
        Outcome::Skipped(why) => tracing::info!(%why, "pod not injected"),
        Outcome::Injected(n) => tracing::info!(operations = n, "pod injected"),
        Outcome::Ignored => tracing::debug!("not a Pod CREATE"),
    }
    Reply::json(&answer.body)
}

fn reply(r: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() = r.status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(r.content_type),
    );
    resp
}

async fn handle<R: Routes>(req: Request<Incoming>, routes: Arc<R>) -> Response<Full<Bytes>> {
    let not_found = || Reply::text(StatusCode::NOT_FOUND, "not found\n");
    match req.method().clone() {
        Method::GET if req.uri().path() == "/healthz" => reply(Reply::text(StatusCode::OK, "ok\n")),
        Method::POST => {
            let path = req.uri().path().to_string();
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable AdmissionReview body");
                    return reply(Reply::text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body too large or unreadable\n",
                    ));
                }
            };
            reply(routes.post(&path, &body).unwrap_or_else(not_found))
        }
        _ => reply(not_found()),
    }
}

/// Serves the injector's routes until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<CertStore>,
    cfg: Arc<InjectConfig>,
    cert_poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), rustls::Error> {
    serve_routes(listener, store, Arc::new(Mutate(cfg)), cert_poll, shutdown).await
}

/// Serves `routes` until `shutdown` resolves, answering with `store`'s certificate (checked
/// for renewal every `cert_poll`).
pub async fn serve_routes<R: Routes>(
    listener: TcpListener,
    store: Arc<CertStore>,
    routes: Arc<R>,
    cert_poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), rustls::Error> {
    let acceptor = TlsAcceptor::from(Arc::new(crate::tls::server_config(store.clone())?));
    let poller = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tick = tokio::time::interval(cert_poll);
            loop {
                tick.tick().await;
                match store.reload() {
                    Ok(true) => tracing::info!("serving certificate reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        // The error with its cause (the text never repeats it).
                        let cause = std::error::Error::source(&e)
                            .map(|c| format!(": {c}"))
                            .unwrap_or_default();
                        tracing::error!(error = %format!("{e}{cause}"), "serving certificate reload failed; keeping the current one")
                    }
                }
            }
        }
    });
    let tracker = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, Infallible>(handle(req, routes).await) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    poller.abort();
    Ok(())
}
