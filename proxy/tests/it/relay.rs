//! In-process tests of the HTTP/1.1 relay's framing against an upstream that answers with
//! exactly the bytes each test scripts (a real socket peer): chunked and close-delimited bodies,
//! informational responses, upstream connection reuse and its stale-connection retry, pipelined
//! requests, and requests the relay hands to the full server.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
      - {name: public, action: allow, http: [{paths: ["/public/*", "/upload"]}]}
"#;

/// What the upstream does with the n-th request on a connection.
#[derive(Clone, Copy)]
enum Act {
    /// Writes these bytes.
    Answer(&'static str),
    /// Writes these bytes, then closes.
    AnswerClose(&'static str),
    /// Closes without answering.
    Close,
}

/// The scripted upstream: every connection plays `script` (one act per request); every request
/// it reads (head and body) is recorded, and so is every connection.
struct Upstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
}

/// Reads one request (head plus Content-Length body) from `s`, or `None` at EOF.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let whole = String::from_utf8_lossy(&buf[..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            return Some(whole);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn scripted(script: &'static [Act]) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = Upstream {
        addr: l.local_addr().expect("addr"),
        requests: Arc::default(),
        connections: Arc::default(),
    };
    let (requests, connections) = (up.requests.clone(), up.connections.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            *connections.lock().expect("lock") += 1;
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for act in script {
                    let Some(req) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    requests.lock().expect("lock").push(req);
                    match act {
                        Act::Answer(r) => {
                            if s.write_all(r.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Act::AnswerClose(r) => {
                            let _ = s.write_all(r.as_bytes()).await;
                            return;
                        }
                        Act::Close => return,
                    }
                }
            });
        }
    });
    up
}

async fn start(upstream: SocketAddr) -> (SocketAddr, Drain) {
    let proxy =
        Proxy::bind(ProxyConfig::for_tests(upstream), support::loaded(POLICY)).expect("bind");
    let addr = proxy.addrs(Direction::Inbound)[0];
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });
    (addr, drain)
}

/// The proxy in front of an upstream playing `script`, and a client connection to the proxy.
async fn through(script: &'static [Act]) -> (Upstream, TcpStream, Drain) {
    let up = scripted(script).await;
    let (addr, drain) = start(up.addr).await;
    let client = TcpStream::connect(addr).await.expect("connect");
    (up, client, drain)
}

/// Sends `request` on `s` and reads until `until` is in what came back (or 5 s pass).
async fn exchange(s: &mut TcpStream, request: &str, until: &str) -> String {
    s.write_all(request.as_bytes()).await.expect("write");
    read_until(s, until).await
}

async fn read_until(s: &mut TcpStream, until: &str) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains(until) {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whether the proxy closed `s` (EOF within 5 s).
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[tokio::test]
async fn chunked_responses_keep_their_framing_and_the_connection() {
    static SCRIPT: [Act; 2] = [
        Act::Answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n\
             5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        ),
        Act::Answer(OK),
    ];
    let (up, mut c, drain) = through(&SCRIPT).await;
    let first = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "x-trailer: t\r\n\r\n",
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(
        first.ends_with("\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"),
        "{first}"
    );
    assert!(
        !first.to_ascii_lowercase().contains("connection:"),
        "{first}"
    );
    let second = exchange(&mut c, "GET /public/b HTTP/1.1\r\nHost: a\r\n\r\n", "ok").await;
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("\r\n\r\nok"),
        "{second}"
    );
    assert_eq!(
        *up.connections.lock().expect("lock"),
        1,
        "one upstream connection"
    );
    drain.start();
}

#[tokio::test]
async fn a_close_delimited_response_closes_the_client_connection() {
    static SCRIPT: [Act; 1] = [Act::AnswerClose("HTTP/1.1 200 OK\r\n\r\nuntil the end")];
    let (_up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "the end",
    )
    .await;
    assert!(r.contains("\r\nconnection: close\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\nuntil the end"), "{r}");
    assert!(closed(&mut c).await);
    drain.start();
}

#[tokio::test]
async fn an_upstream_close_is_not_passed_on_to_the_client() {
    static SCRIPT: [Act; 1] = [Act::AnswerClose(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    )];
    let (up, mut c, drain) = through(&SCRIPT).await;
    for path in ["/public/a", "/public/b"] {
        let r = exchange(
            &mut c,
            &format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n"),
            "ok",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
        assert!(!r.to_ascii_lowercase().contains("connection"), "{r}");
    }
    assert_eq!(
        *up.connections.lock().expect("lock"),
        2,
        "a new upstream connection"
    );
    drain.start();
}

#[tokio::test]
async fn a_stale_pooled_connection_is_retried_only_for_idempotent_requests() {
    // Every upstream connection answers once, then closes on the next request unanswered
    // (as a server whose keep-alive timer fired just as the request arrived).
    static SCRIPT: [Act; 2] = [Act::Answer(OK), Act::Close];
    let (up, mut c, drain) = through(&SCRIPT).await;
    let get = "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(exchange(&mut c, get, "ok").await.ends_with("ok"));
    let again = exchange(&mut c, get, "ok").await;
    assert!(
        again.starts_with("HTTP/1.1 200") && again.ends_with("ok"),
        "{again}"
    );
    assert_eq!(
        *up.connections.lock().expect("lock"),
        2,
        "retried on a fresh connection"
    );
    let post = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let refused = exchange(&mut c, post, "bad gateway\n").await;
    assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");
    assert_eq!(
        *up.connections.lock().expect("lock"),
        2,
        "a POST is never resent"
    );
    drain.start();
}

#[tokio::test]
async fn informational_responses_go_through_before_the_final_one() {
    static SCRIPT: [Act; 1] = [Act::Answer(
        "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )];
    let (_up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\r\nok",
    )
    .await;
    assert!(
        r.starts_with(
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
        ),
        "{r}"
    );
    drain.start();
}

#[tokio::test]
async fn pipelined_requests_are_judged_and_answered_in_order() {
    static SCRIPT: [Act; 2] = [
        Act::Answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"),
        Act::Answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo"),
    ];
    let (up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "GET /public/./a/../one HTTP/1.1\r\nHost: a\r\n\r\n\
         GET /private HTTP/1.1\r\nHost: a\r\n\r\n\
         POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
        "two",
    )
    .await;
    let one = r.find("one").expect("first answer");
    let denied = r.find("403 Forbidden").expect("second answer");
    let two = r.find("two").expect("third answer");
    assert!(one < denied && denied < two, "{r}");
    let seen = up.requests.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "the denied request never left: {seen:?}");
    assert!(
        seen[0].starts_with("GET /public/one HTTP/1.1\r\n"),
        "normalized: {seen:?}"
    );
    assert!(seen[1].ends_with("\r\n\r\nbody"), "{seen:?}");
    drain.start();
}

#[tokio::test]
async fn framing_headers_survive_being_named_in_connection() {
    static SCRIPT: [Act; 2] = [Act::Answer(OK), Act::Answer(OK)];
    let (up, mut c, drain) = through(&SCRIPT).await;
    // Were Content-Length dropped, the body would reach the upstream as a second request.
    let hidden = "GET /private HTTP/1.1\r\nHost: a\r\n\r\n";
    let r = exchange(
        &mut c,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nConnection: content-length, x-hop\r\n\
             X-Hop: 1\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
        "ok",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = up.requests.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].ends_with(&format!("Content-Length: 34\r\n\r\n{hidden}")),
        "{seen:?}"
    );
    assert!(
        !seen[0].contains("X-Hop") && !seen[0].contains("Connection"),
        "{seen:?}"
    );
    drain.start();
}

#[tokio::test]
async fn broken_upstream_framing_is_a_502() {
    static SCRIPT: [Act; 1] = [Act::Answer(
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    )];
    let (_up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "gateway\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    drain.start();
}

#[tokio::test]
async fn an_unrequested_protocol_switch_is_a_502() {
    static SCRIPT: [Act; 1] = [Act::Answer(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\nraw bytes",
    )];
    let (_up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "gateway\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(!r.contains("raw bytes") && !r.contains("101"), "{r}");
    drain.start();
}

#[tokio::test]
async fn an_early_answer_to_an_unread_body_still_reaches_the_client() {
    // The upstream answers 413 as soon as it sees the head and closes without reading the
    // body; the proxy may fail to write the rest, but the client gets the 413.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if s.read_exact(&mut b).await.is_err() {
                        return;
                    }
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig\n")
                    .await;
            });
        }
    });
    let (addr, drain) = start(up).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let body = "y".repeat(60 * 1024);
    let r = exchange(
        &mut c,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        "big\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    drain.start();
}

#[tokio::test]
async fn head_responses_have_no_body_to_wait_for() {
    static SCRIPT: [Act; 2] = [
        Act::Answer("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        Act::Answer(OK),
    ];
    let (up, mut c, drain) = through(&SCRIPT).await;
    let r = exchange(
        &mut c,
        "HEAD /public/a HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("Content-Length: 1000"),
        "{r}"
    );
    let next = exchange(&mut c, "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n", "ok").await;
    assert!(next.ends_with("\r\n\r\nok"), "{next}");
    assert_eq!(*up.connections.lock().expect("lock"), 1);
    drain.start();
}

#[tokio::test]
async fn requests_the_relay_does_not_carry_are_served_by_the_full_server() {
    static SCRIPT: [Act; 3] = [Act::Answer(OK), Act::Answer(OK), Act::Answer(OK)];
    let (up, mut c, drain) = through(&SCRIPT).await;
    assert!(
        exchange(&mut c, "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n", "ok")
            .await
            .ends_with("ok")
    );
    // A body over the relay's buffer limit: streamed by hyper on the same client connection.
    let big = "x".repeat(200 * 1024);
    let r = exchange(
        &mut c,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        ),
        "ok",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok"), "{r}");
    let r = exchange(
        &mut c,
        "GET /private HTTP/1.1\r\nHost: a\r\n\r\n",
        "denied\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 403"),
        "still judged after the hand-over: {r}"
    );
    let seen = up.requests.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].ends_with(&big), "the whole body arrived");
    drain.start();
}

/// An allowed WebSocket opening request.
const WEBSOCKET: &str = "GET /public/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// An upstream that switches to whatever protocol a request asks for (`Upgrade: X` gets
/// `101` with `Upgrade: answer.unwrap_or(X)`) and then echoes raw bytes; anything else gets
/// `200 ok`. Every request head it reads is recorded.
async fn switching_upstream(answer: Option<&'static str>) -> Upstream {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = Upstream {
        addr: l.local_addr().expect("addr"),
        requests: Arc::default(),
        connections: Arc::default(),
    };
    let requests = up.requests.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(req) = read_request(&mut s, &mut buf).await {
                    requests.lock().expect("lock").push(req.clone());
                    let asked = req.lines().find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("upgrade")
                            .then(|| v.trim().to_string())
                    });
                    let Some(asked) = asked else {
                        if s.write_all(OK.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let proto = answer.unwrap_or(asked.as_str());
                    let head = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n"
                    );
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // Whatever comes now is the new protocol: echo it, unjudged.
                    s.write_all(&buf).await.ok();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 || s.write_all(&chunk[..n]).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            });
        }
    });
    up
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_forwarded() {
    // An allowed request asking for h2c: were it forwarded and answered 101, HTTP/2 requests
    // would then reach the application through a raw tunnel, unjudged and unlogged.
    let up = switching_upstream(None).await;
    let (addr, drain) = start(up.addr).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let resp = exchange(
        &mut c,
        "GET /public/a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let seen = up.requests.lock().expect("lock").join("");
    let seen = seen.to_ascii_lowercase();
    assert!(seen.starts_with("get /public/a http/1.1\r\n"), "{seen}");
    assert!(
        !seen.contains("h2c") && !seen.contains("http2-settings"),
        "{seen}"
    );
    // The connection stays HTTP/1 and every request on it is still judged.
    let denied = exchange(
        &mut c,
        "GET /private HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    drain.start();
}

#[tokio::test]
async fn a_switch_to_a_protocol_nobody_asked_for_is_refused() {
    // A WebSocket request answered 101 with `Upgrade: h2c`: only the protocol the request asked
    // for (and the policy allowed) may follow a 101.
    let up = switching_upstream(Some("h2c")).await;
    let (addr, drain) = start(up.addr).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let resp = exchange(&mut c, WEBSOCKET, "\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 502"), "{resp}");
    drain.start();
}

#[tokio::test]
async fn a_websocket_upgrade_still_switches() {
    let up = switching_upstream(None).await;
    let (addr, drain) = start(up.addr).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let resp = exchange(&mut c, WEBSOCKET, "\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("upgrade: websocket"),
        "{resp}"
    );
    let echoed = exchange(&mut c, "frame", "frame").await;
    assert_eq!(echoed, "frame");
    drain.start();
}

#[tokio::test]
async fn the_full_server_retries_a_stale_pooled_connection_for_idempotent_requests() {
    // HTTP/1.0 clients are served by the full server (not the relay): its pool must replace a
    // pooled connection that the app closed just as the request arrived, as the relay does.
    static SCRIPT: [Act; 2] = [Act::Answer(OK), Act::Close];
    let up = scripted(&SCRIPT).await;
    let (addr, drain) = start(up.addr).await;
    let get = "GET /public/a HTTP/1.0\r\nHost: a\r\n\r\n";
    for i in 0..20 {
        let got = support::raw(addr, get).await;
        assert!(got.ends_with("ok"), "request {i}: {got}");
    }
    let post = "POST /upload HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let before = *up.connections.lock().expect("lock");
    let refused = support::raw(addr, post).await;
    assert!(refused.starts_with("HTTP/1.0 502"), "{refused}");
    assert_eq!(
        *up.connections.lock().expect("lock"),
        before,
        "a POST is never resent"
    );
    drain.start();
}

#[tokio::test]
async fn the_full_server_never_pools_a_connection_the_response_closed() {
    static SCRIPT: [Act; 2] = [
        Act::Answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
        Act::Answer(OK),
    ];
    let up = scripted(&SCRIPT).await;
    let (addr, drain) = start(up.addr).await;
    for i in 0..3 {
        let got = support::raw(addr, "GET /public/a HTTP/1.0\r\nHost: a\r\n\r\n").await;
        assert!(got.ends_with("ok"), "request {i}: {got}");
    }
    assert_eq!(
        *up.connections.lock().expect("lock"),
        3,
        "one connection per closing response"
    );
    drain.start();
}

#[tokio::test]
async fn long_request_lines_are_answered_not_reset() {
    static SCRIPT: [Act; 1] = [Act::AnswerClose(OK)];
    let up = scripted(&SCRIPT).await;
    let (addr, drain) = start(up.addr).await;
    // 9 KiB of target: past the detection window, well inside the head limit: served.
    let long = format!("/public/{}", "a".repeat(9 * 1024));
    let got = support::raw(
        addr,
        &format!("GET {long} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "{}",
        &got[..got.len().min(200)]
    );
    // Past the head limit: 431 (or 414), never a reset.
    let huge = format!("/public/{}", "a".repeat(70 * 1024));
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s
        .write_all(format!("GET {huge} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await;
    let got = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 431") || got.starts_with("HTTP/1.1 414"),
        "{got:?}"
    );
    drain.start();
}

#[tokio::test]
async fn malformed_chunk_framing_is_a_400_and_reaches_nobody() {
    static SCRIPT: [Act; 1] = [Act::AnswerClose(OK)];
    let up = scripted(&SCRIPT).await;
    let (addr, drain) = start(up.addr).await;
    for body in [
        "zz\r\nhello\r\n0\r\n\r\n",      // not a chunk size
        "5\r\nhello\r\n3\r\nabcdef\r\n", // a chunk longer than its size
        "5\r\nhelloXX0\r\n\r\n",         // no CRLF after the data
    ] {
        let got = support::raw(
            addr,
            &format!(
                "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{body}"
            ),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400"), "{body:?}: {got}");
    }
    assert!(
        up.requests.lock().expect("lock").is_empty(),
        "nothing was forwarded: {:?}",
        up.requests.lock().expect("lock")
    );
    drain.start();
}

#[tokio::test]
async fn chunk_framing_that_breaks_mid_stream_is_still_a_400() {
    // An upstream that answers only once it has the whole chunked body.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up = l.local_addr().expect("addr");
    let complete = Arc::new(Mutex::new(0usize));
    let seen = complete.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut chunk = [0u8; 4096];
                while !got.ends_with(b"0\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                *seen.lock().expect("lock") += 1;
                let _ = s.write_all(OK.as_bytes()).await;
            });
        }
    });
    let (addr, drain) = start(up).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .expect("write");
    // Past the read-ahead window: the head and first chunk are on their way to the app.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.write_all(b"zz\r\nnot a chunk\r\n0\r\n\r\n")
        .await
        .expect("write");
    let got = read_until(&mut c, "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");
    assert_eq!(
        *complete.lock().expect("lock"),
        0,
        "the app never saw a complete request"
    );
    drain.start();
}

#[tokio::test]
async fn a_client_that_connects_early_gets_an_http_servers_patience() {
    // On a port known to carry HTTP, a pool that connects and sends its first request only
    // later is answered, not closed at the detect timeout.
    static SCRIPT: [Act; 1] = [Act::AnswerClose(OK)];
    let up = scripted(&SCRIPT).await;
    let mut config = ProxyConfig::for_tests(up.addr);
    config.detect_timeout = Duration::from_millis(200);
    let proxy = Proxy::bind(config, support::loaded(POLICY)).expect("bind");
    let addr = proxy.addrs(Direction::Inbound)[0];
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });
    let get = "GET /public/a HTTP/1.1\r\nHost: a\r\n\r\n";
    // A port not yet seen speaking HTTP: silence is a server-first protocol after 200 ms.
    let mut early = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        exchange(&mut early, get, "ok").await,
        "",
        "cut at the detect timeout"
    );
    // Once it has carried HTTP, a silent client is an HTTP client that connected early.
    let mut first = TcpStream::connect(addr).await.expect("connect");
    assert!(exchange(&mut first, get, "ok").await.ends_with("ok"));
    let mut c = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = exchange(&mut c, get, "ok").await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("ok"),
        "{got:?}"
    );
    drain.start();
}
