//! In-process tests of HTTP enforcement: the proxy on loopback with an injected original
//! destination, a real hyper upstream (HTTP/1.1 and h2c) and real hyper clients.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_proxy::drain::Drain;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: api}
spec:
  inbound:
    default: deny
    rules:
      - {name: no-admin, action: deny, http: [{paths: ["/admin", "/admin/*"]}]}
      - {name: public, action: allow, http: [{paths: ["/public/*", "/upload"]}]}
      - {name: grpc-get, action: allow, http: [{methods: [POST], paths: ["/pkg.Svc/Get"]}]}
      - {name: tunnel, action: allow, http: [{methods: [CONNECT], hosts: [tunnel.example]}]}
"#;

/// Upstream: answers `METHOD PATH host=HOST bytes=N te=TE` for every request, HTTP/1 or h2c.
async fn upstream() -> SocketAddr {
    counting_upstream().await.0
}

/// [`upstream`], also counting the connections it accepted.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    if req.method() == http::Method::CONNECT {
                        // Accept the tunnel and echo whatever comes through it.
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = upgrade.await {
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())));
                    }
                    let (parts, body) = req.into_parts();
                    let n = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes().len())
                        .unwrap_or(0);
                    let host = parts
                        .headers
                        .get("host")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    let te = parts
                        .headers
                        .get("te")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    let secret = parts.headers.contains_key("x-secret");
                    let text = format!(
                        "{} {} host={host} bytes={n} te={te} secret={secret}",
                        parts.method,
                        parts.uri.path_and_query().map_or("", |p| p.as_str())
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    drain: Drain,
}

async fn start(upstream: SocketAddr) -> Running {
    let proxy =
        Proxy::bind(ProxyConfig::for_tests(upstream), support::loaded(POLICY)).expect("bind");
    let r = Running {
        addr: proxy.addrs(Direction::Inbound)[0],
        admin: proxy.admin_addr().expect("admin"),
        drain: Drain::new(),
    };
    let drain = r.drain.clone();
    tokio::spawn(async move { proxy.run(drain).await.expect("run") });
    r
}

async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn text(resp: Response<Incoming>) -> (StatusCode, String) {
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "api.local")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

#[tokio::test]
async fn http1_requests_are_judged_one_by_one_on_a_kept_alive_connection() {
    let p = start(upstream().await).await;
    let mut c = h1(p.addr).await;
    let cases = [
        (
            "/public/a",
            StatusCode::OK,
            "GET /public/a host=api.local bytes=0",
        ),
        ("/admin/users", StatusCode::FORBIDDEN, "access denied\n"),
        (
            "/public/x/../../admin/users",
            StatusCode::FORBIDDEN,
            "access denied\n",
        ),
        (
            "/public/%2e%2e/admin",
            StatusCode::FORBIDDEN,
            "access denied\n",
        ),
        (
            "/public/./b//c?q=1",
            StatusCode::OK,
            "GET /public/b/c?q=1 host=api.local",
        ),
        (
            "/public/%61bc",
            StatusCode::OK,
            "GET /public/abc host=api.local",
        ),
        ("/public/a%2Fb", StatusCode::BAD_REQUEST, "bad request\n"),
        ("/elsewhere", StatusCode::FORBIDDEN, "access denied\n"),
    ];
    for (path, status, body) in cases {
        let (s, b) = text(c.send_request(get(path)).await.expect("response")).await;
        assert_eq!(s, status, "{path}: {b}");
        assert!(b.starts_with(body), "{path}: {b:?}");
    }
    let (_, metrics) = admin(p.admin, "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_requests_total{direction="inbound",verdict="deny",policy="api",rule="no-admin",status_class="4xx"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portcullis_requests_total{direction="inbound",verdict="allow",policy="api",rule="public",status_class="2xx"} 3"#));
    assert!(metrics.contains(r#"portcullis_requests_total{direction="inbound",verdict="deny",policy="",rule="default",status_class="4xx"} 1"#));
    p.drain.start();
}

#[tokio::test]
async fn bodies_stream_through_and_hop_by_hop_headers_are_dropped() {
    let p = start(upstream().await).await;
    let mut c = h1(p.addr).await;
    let body = Bytes::from(vec![b'x'; 3 << 20]);
    let req = Request::post("/upload")
        .header("host", "api.local")
        .header("connection", "x-secret")
        .header("x-secret", "1")
        .body(Full::new(body))
        .expect("request");
    let (s, b) = text(c.send_request(req).await.expect("response")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        "POST /upload host=api.local bytes=3145728 te= secret=false"
    );
    p.drain.start();
}

#[tokio::test]
async fn h2c_and_grpc_denials() {
    let p = start(upstream().await).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (mut c, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = |path: &str, grpc: bool| {
        let mut b = Request::post(format!("http://api.local{path}"));
        if grpc {
            b = b
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        }
        b.body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .expect("request")
    };
    let resp = c
        .send_request(req("/pkg.Svc/Get", true))
        .await
        .expect("response");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (s, b) = text(resp).await;
    assert_eq!(
        (s, b.as_str()),
        (
            StatusCode::OK,
            "POST /pkg.Svc/Get host=api.local bytes=5 te=trailers secret=false"
        )
    );
    let resp = c
        .send_request(req("/pkg.Svc/Delete", true))
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["grpc-status"], "7");
    let resp = c
        .send_request(req("/admin", false))
        .await
        .expect("response");
    assert_eq!(
        text(resp).await,
        (StatusCode::FORBIDDEN, "access denied\n".into())
    );
    p.drain.start();
}

async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn admin(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (
        r[9..12].parse().unwrap_or(0),
        r.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn smuggling_attempts_are_refused() {
    let p = start(upstream().await).await;
    let both = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n";
    let r = raw(p.addr, both).await;
    // Chunked framing wins, Content-Length is dropped, and the connection closes after the
    // response: the request hidden in the body never reaches the upstream.
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("connection: close"), "{r}");
    assert!(r.contains("POST /upload host=a bytes=0"), "{r}");
    assert!(!r.contains("/admin") && !r.contains("access denied"), "{r}");
    let bad_te = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert!(raw(p.addr, bad_te).await.starts_with("HTTP/1.1 400"));
    // No body bytes follow the head, so nothing is left unread and the 400 is not lost to a RST.
    let dup = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    assert!(raw(p.addr, dup).await.starts_with("HTTP/1.1 400"));
    let fold = "GET /public/a HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n";
    assert!(raw(p.addr, fold).await.starts_with("HTTP/1.1 400"));
    p.drain.start();
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_503_without_details() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let p = start(closed).await;
    let mut c = h1(p.addr).await;
    let (s, b) = text(c.send_request(get("/public/a")).await.expect("response")).await;
    assert_eq!(
        (s, b.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "upstream unavailable\n")
    );
    p.drain.start();
}

#[tokio::test]
async fn oversized_and_overlong_heads_are_refused() {
    let p = start(upstream().await).await;
    let big = format!(
        "GET /public/a HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = raw(p.addr, &big).await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(100)]);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        p.addr,
        &format!("GET /public/a HTTP/1.1\r\nHost: a\r\n{many}\r\n"),
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 431"), "{}", &r[..r.len().min(100)]);
    p.drain.start();
}

#[tokio::test(start_paused = true)]
async fn slow_request_heads_are_cut_off() {
    let p = start(upstream().await).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    // A head that never ends (slowloris): the header read timeout closes the connection.
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let limit = portcullis_proxy::http::limits::HEADER_READ_TIMEOUT * 3;
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "the connection was never closed");
    let waited = started.elapsed();
    assert!(
        waited >= portcullis_proxy::http::limits::HEADER_READ_TIMEOUT
            && waited < portcullis_proxy::http::limits::HEADER_READ_TIMEOUT * 2,
        "closed after {waited:?}"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    p.drain.start();
}

#[tokio::test]
async fn upstream_connections_are_reused_across_client_connections() {
    let (addr, accepted) = counting_upstream().await;
    let p = start(addr).await;
    for _ in 0..5 {
        let mut c = h1(p.addr).await;
        let (s, _) = text(c.send_request(get("/public/a")).await.expect("response")).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "HTTP/1: one upstream connection, reused"
    );
    for _ in 0..3 {
        let s = TcpStream::connect(p.addr).await.expect("connect");
        let (mut c, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let req = Request::get("http://api.local/public/b")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (s, _) = text(c.send_request(req).await.expect("response")).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "HTTP/2: one probe (does the app speak HTTP/2?), then one connection shared by every client"
    );
    p.drain.start();
}

#[tokio::test]
async fn connect_tunnels_only_once_allowed() {
    let p = start(upstream().await).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"CONNECT tunnel.example:443 HTTP/1.1\r\nHost: tunnel.example:443\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("response head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    s.write_all(b"ping through the tunnel")
        .await
        .expect("write");
    let mut echo = vec![0u8; 23];
    s.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping through the tunnel");

    let denied = raw(
        p.addr,
        "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    p.drain.start();
}

#[tokio::test(start_paused = true)]
async fn idle_keep_alive_connections_are_closed() {
    let p = start(upstream().await).await;
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.expect("response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let limit = portcullis_proxy::http::limits::HEADER_READ_TIMEOUT * 3;
    let closed = tokio::time::timeout(limit, s.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection is closed: {closed:?}"
    );
    assert!(started.elapsed() <= portcullis_proxy::http::limits::HEADER_READ_TIMEOUT * 2);
    p.drain.start();
}

#[tokio::test]
async fn http2_limits_streams_and_stops_rapid_reset_floods() {
    let p = start(upstream().await).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    // One full exchange, so the server's SETTINGS have arrived.
    let req = Request::get("http://api.local/public/a")
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    assert_eq!(resp.await.expect("response").status(), StatusCode::OK);
    let mut client = client.ready().await.expect("ready");
    assert_eq!(
        client.current_max_send_streams(),
        256,
        "the advertised stream limit"
    );
    // Open and immediately cancel streams, as fast as the client can (CVE-2023-44487).
    let mut refused = false;
    for _ in 0..5000 {
        let req = Request::get("http://api.local/public/a")
            .body(())
            .expect("request");
        match client.send_request(req, true) {
            Ok((resp, _)) => drop(resp), // dropping the response future resets the stream
            Err(_) => {
                refused = true;
                break;
            }
        }
        match client.clone().ready().await {
            Ok(c) => client = c,
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
    assert!(
        refused || matches!(ended, Ok(Ok(Err(_)))),
        "the flood must end the connection: {ended:?}"
    );
    p.drain.start();
}

#[tokio::test(start_paused = true)]
async fn idle_http2_connections_get_goaway() {
    let p = start(upstream().await).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = Request::get("http://api.local/public/a")
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    assert_eq!(resp.await.expect("response").status(), StatusCode::OK);
    let started = tokio::time::Instant::now();
    let idle = portcullis_proxy::http::limits::IDLE_TIMEOUT;
    let ended = tokio::time::timeout(idle * 2, conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
    let waited = started.elapsed();
    assert!(
        waited >= idle - std::time::Duration::from_secs(1) && waited < idle * 2,
        "{waited:?}"
    );
    p.drain.start();
}

#[tokio::test]
async fn the_host_that_was_judged_is_the_only_host_the_app_receives() {
    let p = start(upstream().await).await;
    let ask = |req: &'static str| support::raw(p.addr, req);
    // Absolute form: the authority replaces Host (RFC 9112 §3.2.2).
    let r = ask(
        "GET http://a.example/public/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("host=a.example bytes=0 te= secret=false"),
        "{r}"
    );
    // `Connection: host` cannot remove Host after the decision, on either server.
    for req in [
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nConnection: host, close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nConnection: host, close\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let r = ask(req).await;
        assert!(r.contains("host=a.example "), "{req}\n{r}");
    }
    // Refused with 400: two Hosts, userinfo, no Host at all (HTTP/1.1).
    for req in [
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: b.example@a.example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: b.example#@a.example\r\nConnection: close\r\n\r\n",
        "GET http://b.example@a.example/public/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    ] {
        let r = ask(req).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{req}\n{r}");
    }
    // HTTP/1.0 may omit Host.
    let r = ask("GET /public/x HTTP/1.0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"),
        "{r}"
    );
    p.drain.start();
}

#[tokio::test]
async fn http2_authority_and_a_different_host_header_are_refused() {
    let p = start(upstream().await).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let mut send = |host: &'static str| {
        let req = Request::get("http://a.example/public/x")
            .header("host", host)
            .body(())
            .expect("request");
        client.send_request(req, true).expect("send").0
    };
    let same = send("a.example:443").await.expect("response");
    assert_eq!(same.status(), StatusCode::OK);
    let other = send("b.example").await.expect("response");
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
    p.drain.start();
}

#[tokio::test]
async fn h2c_to_an_http1_only_app_is_translated() {
    // `support::http_upstream` speaks HTTP/1.1 only, as most applications do.
    let p = start(crate::support::http_upstream().await).await;
    for round in 0..2 {
        let s = TcpStream::connect(p.addr).await.expect("connect");
        let (mut c, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
                .await
                .expect("h2");
        tokio::spawn(conn);
        let req = Request::post("http://api.local/public/b")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        let resp = c.send_request(req).await.expect("response");
        assert_eq!(resp.version(), http::Version::HTTP_2, "round {round}");
        let (s, b) = text(resp).await;
        assert_eq!(
            (s, b.as_str()),
            (StatusCode::OK, "upstream"),
            "round {round}"
        );
        // Denials are still judged on the HTTP/2 request.
        let denied = Request::get("http://api.local/private")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (s, _) = text(c.send_request(denied).await.expect("response")).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    p.drain.start();
}

#[tokio::test]
async fn an_early_local_answer_on_http2_ends_the_stream_with_no_error() {
    // RFC 9113 §8.1: a complete response sent before the request ended is followed by
    // RST_STREAM(NO_ERROR), so the client stops sending without treating it as a failure.
    let p = start(upstream().await).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(s).await.expect("h2");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    for (path, grpc, want) in [
        ("/private", false, 403),
        ("/public/a%2Fb", false, 400),
        ("/pkg.Svc/Delete", true, 200),
    ] {
        let mut req = Request::post(format!("http://api.local{path}"));
        if grpc {
            req = req
                .header("content-type", "application/grpc")
                .header("te", "trailers");
        }
        let req = req.body(()).expect("request");
        let (response, mut body) = client.send_request(req, false).expect("send");
        body.send_data(Bytes::from_static(b"part of a body"), false)
            .expect("data");
        let resp = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("answered")
            .expect("response");
        assert_eq!(resp.status(), want, "{path}");
        let mut resp_body = resp.into_body();
        while let Some(chunk) = resp_body.data().await {
            chunk.expect("body");
        }
        let reset = tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| body.poll_reset(cx)),
        )
        .await
        .expect("the stream is reset")
        .expect("reason");
        assert_eq!(reset, h2::Reason::NO_ERROR, "{path}");
        client = client.ready().await.expect("the connection carries on");
    }
    p.drain.start();
}
