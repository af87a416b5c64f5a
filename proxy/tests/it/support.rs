//! Helpers shared by the proxy's in-process integration tests: a compiled policy, a real HTTP
//! upstream, a raw HTTP/1 client, and a bounded wait.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `yaml` parsed and compiled, as the proxy loads it.
pub(crate) fn loaded(yaml: &str) -> portcullis_config::LoadedPolicy {
    let docs = portcullis_config::parse_str("p.yaml", yaml).expect("parse");
    let (policy, warnings) =
        portcullis_config::compile::compile(&docs, &Default::default()).expect("compile");
    portcullis_config::LoadedPolicy {
        policy,
        warnings,
        hash: "t".into(),
    }
}

/// An HTTP/1 upstream answering 200 `upstream` to everything.
pub(crate) async fn http_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"upstream",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// `GET path` on a fresh connection (`Connection: close`), with an optional bearer token;
/// returns the raw response. Fails the test if no complete response arrives within 10 s.
pub(crate) async fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await;
    assert!(
        read.is_ok(),
        "GET {path}: no complete response within 10 s; got {out:?}"
    );
    out
}

/// Polls `check` every 20 ms, failing the test after 6 s.
pub(crate) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

/// Sends raw `request` bytes on a fresh connection and returns the whole raw response (the
/// request should say `Connection: close`). Fails the test if it does not end within 5 s.
pub(crate) async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out));
    read.await.expect("answered in time").expect("read");
    String::from_utf8_lossy(&out).into_owned()
}
