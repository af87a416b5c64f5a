//! In-process tests of the L4 data path: the proxy on loopback with an injected original
//! destination (no iptables, no root), real sockets on both sides.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_config::{CompiledPolicy, LoadedPolicy};
use portcullis_proxy::drain::Drain;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An upstream that reads until EOF, then answers `got N bytes: <data>` and closes.
async fn half_close_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.expect("read");
                let reply = format!("got {} bytes: {}", buf.len(), String::from_utf8_lossy(&buf));
                s.write_all(reply.as_bytes()).await.expect("write");
            });
        }
    });
    addr
}

struct Running {
    proxy_in: SocketAddr,
    proxy_out: SocketAddr,
    admin: SocketAddr,
    drain: Drain,
    task: JoinHandle<()>,
}

fn allow_all() -> LoadedPolicy {
    LoadedPolicy {
        policy: CompiledPolicy::default(),
        warnings: Vec::new(),
        hash: "test".into(),
    }
}

fn policy(yaml: &str) -> LoadedPolicy {
    let docs = portcullis_config::parse_str("test.yaml", yaml).expect("parse");
    let (policy, warnings) =
        portcullis_config::compile::compile(&docs, &Default::default()).expect("compile");
    LoadedPolicy {
        policy,
        warnings,
        hash: "test".into(),
    }
}

fn start(config: ProxyConfig) -> Running {
    start_with(config, allow_all())
}

fn start_with(config: ProxyConfig, policy: LoadedPolicy) -> Running {
    let proxy = Proxy::bind(config, policy).expect("bind proxy");
    let running = Running {
        proxy_in: proxy.addrs(Direction::Inbound)[0],
        proxy_out: proxy.addrs(Direction::Outbound)[0],
        admin: proxy.admin_addr().expect("admin addr"),
        drain: Drain::new(),
        task: tokio::spawn(async {}),
    };
    let drain = running.drain.clone();
    Running {
        task: tokio::spawn(async move { proxy.run(drain).await.expect("run") }),
        ..running
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect admin");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    let status = resp[9..12].parse().expect("status");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Waits (bounded) until the proxy reports `n` open connections in `direction`.
async fn wait_open(admin: SocketAddr, direction: &str, n: u32) {
    let want = format!("portcullis_connections_open{{direction=\"{direction}\"}} {n}\n");
    for _ in 0..200 {
        if http(admin, "GET", "/metrics").await.1.contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {want}");
}

async fn exchange(proxy: SocketAddr, payload: &[u8]) -> String {
    let mut c = TcpStream::connect(proxy).await.expect("connect proxy");
    c.write_all(payload).await.expect("write");
    c.shutdown().await.expect("half-close");
    let mut out = String::new();
    c.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn forwards_both_directions_and_carries_half_close() {
    let upstream = half_close_upstream().await;
    let p = start(ProxyConfig::for_tests(upstream));
    for addr in [p.proxy_in, p.proxy_out] {
        assert_eq!(exchange(addr, b"hello").await, "got 5 bytes: hello");
    }
    // A larger payload crosses several buffers intact.
    let big = vec![b'x'; 1 << 20];
    assert_eq!(
        exchange(p.proxy_out, &big).await.len(),
        "got 1048576 bytes: ".len() + big.len()
    );

    let (status, metrics) = http(p.admin, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"portcullis_connections_total{direction="outbound",verdict="allow"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_connections_total{direction="inbound",verdict="allow"} 1"#)
    );
    assert!(metrics.contains(r#"portcullis_received_bytes_total{direction="inbound"} 5"#));
    p.drain.start();
    p.task.await.expect("proxy task");
}

#[tokio::test]
async fn connection_to_the_proxys_own_port_is_refused_as_a_loop() {
    // Learn a free port, then make it both the inbound listener and the original destination.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let mut config = ProxyConfig::for_tests(SocketAddr::from(([127, 0, 0, 1], port)));
    config.inbound_port = port;
    let p = start(config);
    let mut c = TcpStream::connect(p.proxy_in).await.expect("connect");
    let mut buf = Vec::new();
    // Closed without a byte.
    assert_eq!(
        c.read_to_end(&mut buf)
            .await
            .map(|_| buf.len())
            .unwrap_or(0),
        0
    );
    let (_, metrics) = http(p.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_connections_total{direction="inbound",verdict="deny"} 1"#),
        "{metrics}"
    );
    p.drain.start();
    p.task.await.expect("proxy task");
}

#[tokio::test]
async fn unreachable_destination_closes_the_client_and_counts_the_error() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("a");
    // `closed` is dropped here: nothing listens there any more.
    let p = start(ProxyConfig::for_tests(closed));
    let mut c = TcpStream::connect(p.proxy_out).await.expect("connect");
    let mut buf = Vec::new();
    // Closed (or reset) without a byte from anywhere.
    assert_eq!(
        c.read_to_end(&mut buf)
            .await
            .map(|_| buf.len())
            .unwrap_or(0),
        0
    );
    let (_, metrics) = http(p.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains(
            r#"portcullis_connection_errors_total{direction="outbound",reason="connect_refused"} 1"#
        ),
        "{metrics}"
    );
    p.drain.start();
    p.task.await.expect("proxy task");
}

#[tokio::test]
async fn admin_health_and_shutdown() {
    let upstream = half_close_upstream().await;
    let p = start(ProxyConfig::for_tests(upstream));
    assert_eq!(http(p.admin, "GET", "/live").await, (200, "live\n".into()));
    assert_eq!(
        http(p.admin, "GET", "/ready").await,
        (200, "ready\n".into())
    );
    assert_eq!(http(p.admin, "GET", "/nope").await.0, 404);
    assert_eq!(http(p.admin, "PUT", "/live").await.0, 405);
    // Hold a connection open so the proxy stays in its drain phase while we look.
    let mut held = TcpStream::connect(p.proxy_out).await.expect("connect");
    held.write_all(b"a").await.expect("write");
    assert_eq!(
        http(p.admin, "POST", "/shutdown").await,
        (202, "draining\n".into())
    );
    assert_eq!(
        http(p.admin, "GET", "/ready").await,
        (503, "draining\n".into())
    );
    held.shutdown().await.expect("half-close");
    let mut out = String::new();
    held.read_to_string(&mut out).await.expect("read");
    assert_eq!(out, "got 1 bytes: a");
    tokio::time::timeout(Duration::from_secs(5), p.task)
        .await
        .expect("exits")
        .expect("task");
}

#[tokio::test]
async fn drain_refuses_new_connections_and_lets_open_ones_finish() {
    let upstream = half_close_upstream().await;
    let p = start(ProxyConfig::for_tests(upstream));
    let mut open = TcpStream::connect(p.proxy_in).await.expect("connect");
    open.write_all(b"before").await.expect("write");
    wait_open(p.admin, "inbound", 1).await;
    p.drain.start();
    // The accept loop closes its socket; new connections are refused.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(p.proxy_in).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    refused.await.expect("listener closes after drain starts");
    assert!(
        !p.task.is_finished(),
        "the proxy waits for the open connection"
    );
    open.write_all(b" and after")
        .await
        .expect("write during drain");
    open.shutdown().await.expect("half-close");
    let mut out = String::new();
    open.read_to_string(&mut out).await.expect("read");
    assert_eq!(out, "got 16 bytes: before and after");
    tokio::time::timeout(Duration::from_secs(5), p.task)
        .await
        .expect("exits")
        .expect("task");
}

#[tokio::test]
async fn drain_returns_at_the_deadline_even_with_open_connections() {
    let upstream = half_close_upstream().await;
    let mut config = ProxyConfig::for_tests(upstream);
    config.drain_timeout = Duration::from_millis(200);
    let p = start(config);
    let mut stuck = TcpStream::connect(p.proxy_in).await.expect("connect");
    stuck.write_all(b"x").await.expect("write");
    wait_open(p.admin, "inbound", 1).await;
    p.drain.start();
    tokio::time::timeout(Duration::from_secs(5), p.task)
        .await
        .expect("exits by deadline")
        .expect("task");
}

#[tokio::test]
async fn connection_level_deny_closes_before_reaching_the_destination() {
    let upstream = half_close_upstream().await;
    // The upstream listens on 127.0.0.1:<port>; deny exactly that port outbound.
    let p = start_with(
        ProxyConfig::for_tests(upstream),
        policy(&format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p}}\nspec:\n  outbound:\n    default: allow\n    rules:\n      - {{name: no-upstream, action: deny, ports: [{}]}}\n",
            upstream.port()
        )),
    );
    let mut c = TcpStream::connect(p.proxy_out).await.expect("connect");
    c.write_all(b"x").await.expect("write");
    let mut buf = Vec::new();
    assert_eq!(
        c.read_to_end(&mut buf)
            .await
            .map(|_| buf.len())
            .unwrap_or(0),
        0
    );
    // Inbound is not mentioned by the policy: open.
    assert_eq!(exchange(p.proxy_in, b"hi").await, "got 2 bytes: hi");
    let (_, metrics) = http(p.admin, "GET", "/metrics").await;
    assert!(
        metrics.contains(r#"portcullis_connections_total{direction="outbound",verdict="deny"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"portcullis_connections_total{direction="inbound",verdict="allow"} 1"#)
    );
    p.drain.start();
    p.task.await.expect("proxy task");
}

#[tokio::test]
async fn a_request_line_without_a_target_is_judged_and_settled() {
    // `GET HTTP/1.1` once panicked protocol detection: the task died with no record and the
    // open-connections gauge grew by one for each such connection, forever.
    let upstream = half_close_upstream().await;
    let p = start_with(
        ProxyConfig::for_tests(upstream),
        policy(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec:\n  inbound:\n    default: deny\n    rules:\n      - {name: web, action: allow, http: [{paths: [\"/*\"]}]}\n",
        ),
    );
    for _ in 0..3 {
        let mut c = TcpStream::connect(p.proxy_in).await.expect("connect");
        c.write_all(b"GET HTTP/1.1\r\n\r\n").await.expect("write");
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out)).await;
        // Not HTTP where only HTTP rules allow: closed before a byte reaches the upstream.
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {out:?}");
    }
    wait_open(p.admin, "inbound", 0).await;
    let metrics = http(p.admin, "GET", "/metrics").await.1;
    assert!(
        metrics
            .contains("portcullis_connections_total{direction=\"inbound\",verdict=\"deny\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_connection_panics_total 0\n"),
        "{metrics}"
    );
    p.drain.start();
    p.task.await.expect("proxy task");
}

#[tokio::test]
async fn every_known_series_exists_from_the_start() {
    // `increase()` alerts need the series before the first event; a gauge that only means
    // something with an identity is absent without one rather than 0.
    let upstream = half_close_upstream().await;
    let p = start(ProxyConfig::for_tests(upstream));
    let metrics = http(p.admin, "GET", "/metrics").await.1;
    for direction in ["inbound", "outbound"] {
        for verdict in ["allow", "deny", "audit_deny"] {
            let want = format!(
                "portcullis_connections_total{{direction=\"{direction}\",verdict=\"{verdict}\"}} 0\n"
            );
            assert!(metrics.contains(&want), "{want}{metrics}");
        }
        let want = format!(
            "portcullis_connection_errors_total{{direction=\"{direction}\",reason=\"connect_refused\"}} 0\n"
        );
        assert!(metrics.contains(&want), "{want}{metrics}");
        let want = format!("portcullis_connections_open{{direction=\"{direction}\"}} 0\n");
        assert!(metrics.contains(&want), "{want}{metrics}");
    }
    for result in ["success", "failure"] {
        let want = format!("portcullis_policy_reloads_total{{result=\"{result}\"}} 0\n");
        assert!(metrics.contains(&want), "{want}{metrics}");
    }
    assert!(
        metrics.contains("portcullis_connection_panics_total 0\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("identity_expiry"),
        "no identity, no expiry gauge: {metrics}"
    );
    p.drain.start();
    p.task.await.expect("proxy task");
}
