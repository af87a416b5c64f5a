//! The admin server: `/live`, `/ready`, `/metrics`, `/policy`, `POST /shutdown` (loopback
//! only), and `/app-health/…` ([`probes`]: application probes run on the kubelet's behalf).
//! It keeps answering while the proxy drains, so that `/ready` can say 503.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub(crate) mod probes;

use self::probes::AppProbes;
use crate::drain::Drain;
use crate::mesh::identity::IdentityStore;
use crate::observe::access_log::timestamp;
use crate::observe::metrics::Metrics;
use crate::policy::store::PolicyStore;

/// What the admin endpoints report on.
#[derive(Debug)]
pub(crate) struct AdminState {
    /// Set once every listener is bound (and, with the policy engine, a policy is loaded).
    pub(crate) ready: AtomicBool,
    /// The process-wide drain.
    pub(crate) drain: Drain,
    /// Metrics to render.
    pub(crate) metrics: Arc<Metrics>,
    /// The active policy.
    pub(crate) policy: Arc<PolicyStore>,
    /// Whether the proxy runs in audit mode.
    pub(crate) audit: bool,
    /// The workload identity, when `--identity-dir` is set.
    pub(crate) identity: Option<Arc<IdentityStore>>,
    /// Kubelet probes the injector moved to the admin port.
    pub(crate) app_probes: Option<Arc<AppProbes>>,
}

/// `GET /policy`: what is enforced right now.
pub(crate) fn policy_json(state: &AdminState) -> String {
    let active = state.policy.current();
    let p = &active.loaded.policy;
    let docs: Vec<serde_json::Value> = p
        .documents
        .iter()
        .map(|d| {
            serde_json::json!({
                "file": &*d.file,
                "kind": d.kind,
                "name": d.name,
                "inbound_rules": d.inbound_rules,
                "outbound_rules": d.outbound_rules,
                "applies": d.applies,
            })
        })
        .collect();
    let dir = |r: &portcullis_config::compile::DirectionRules| {
        serde_json::json!({
            "isolated": r.mentioned,
            "default": if r.default == portcullis_config::model::Action::Allow { "allow" } else { "deny" },
            "rules": r.rules.len(),
        })
    };
    serde_json::json!({
        "hash": active.loaded.hash,
        "loaded_at": timestamp(active.loaded_at),
        "mode": if state.audit { "audit" } else { "enforce" },
        "source": state.policy.path().map(|p| p.display().to_string()),
        "documents": docs,
        "inbound": dir(&p.inbound),
        "outbound": dir(&p.outbound),
    })
    .to_string()
        + "\n"
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Routes one admin request (pure apart from starting the drain).
pub(crate) fn respond(
    state: &AdminState,
    peer: SocketAddr,
    method: &Method,
    path: &str,
) -> Response<Full<Bytes>> {
    match (method, path) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if state.drain.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/ready")
            if state
                .identity
                .as_ref()
                .is_some_and(|id| id.current().expired(std::time::SystemTime::now())) =>
        {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "identity certificate expired\n",
            )
        }
        (&Method::GET, "/ready") if state.policy.waiting_for_view() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the controller's first view\n",
        ),
        (&Method::GET, "/ready") if state.ready.load(Ordering::Acquire) => {
            text(StatusCode::OK, "ready\n")
        }
        (&Method::GET, "/ready") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(Full::new(Bytes::from(state.metrics.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        (&Method::GET, "/policy") => {
            let mut resp = Response::new(Full::new(Bytes::from(policy_json(state))));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            resp
        }
        (&Method::POST, "/shutdown") if peer.ip().is_loopback() => {
            state.drain.start();
            text(StatusCode::ACCEPTED, "draining\n")
        }
        (&Method::POST, "/shutdown") => text(StatusCode::FORBIDDEN, "only from loopback\n"),
        (_, "/live" | "/ready" | "/metrics" | "/policy" | "/shutdown") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves the admin endpoints until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let path = req.uri().path();
                    if req.method() == Method::GET
                        && path.starts_with("/app-health/")
                        && let Some(probes) = &state.app_probes
                        && let Some((status, body)) = probes.run(path).await
                    {
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        return Ok::<_, Infallible>(resp);
                    }
                    Ok::<_, Infallible>(respond(&state, peer, req.method(), path))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
