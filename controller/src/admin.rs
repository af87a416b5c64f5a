//! `/live`, `/ready` (200 once a first snapshot is applied, 503 before) and `/metrics` on the
//! admin port (15014).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::publish::Publisher;

fn answer(publisher: &Publisher, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/live" => (StatusCode::OK, "live\n".to_string()),
        "/ready" if publisher.is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no snapshot applied yet\n".to_string(),
        ),
        "/metrics" => (StatusCode::OK, publisher.metrics.encode()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Serves the admin endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, publisher: Arc<Publisher>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&publisher, req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
