//! The HTTPS shell: `POST /mutate` (AdmissionReview), `GET /healthz`; HTTP/2 or HTTP/1.1 over
//! rustls; request bodies capped; every review logged with its outcome; certificate files
//! polled for renewal; SIGTERM stops accepting and lets requests in flight finish.

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

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(req: Request<Incoming>, cfg: Arc<InjectConfig>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::POST, "/mutate") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable AdmissionReview body");
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "text/plain",
                        b"body too large or unreadable\n".to_vec(),
                    );
                }
            };
            let answer = review(&body, &cfg);
            match &answer.outcome {
                Outcome::Malformed(why) => {
                    tracing::error!(%why, "malformed AdmissionReview; allowed without a patch")
                }
                Outcome::Denied(why) => tracing::warn!(%why, "pod refused"),
                Outcome::Skipped(why) => tracing::info!(%why, "pod not injected"),
                Outcome::Injected(n) => tracing::info!(operations = n, "pod injected"),
                Outcome::Ignored => tracing::debug!("not a Pod CREATE"),
            }
            let bytes = serde_json::to_vec(&answer.body).unwrap_or_default();
            reply(StatusCode::OK, "application/json", bytes)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    store: Arc<CertStore>,
    cfg: Arc<InjectConfig>,
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
        let cfg = cfg.clone();
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
                let cfg = cfg.clone();
                async move { Ok::<_, Infallible>(handle(req, cfg).await) }
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
