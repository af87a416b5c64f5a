//! Bearer tokens in the request path, in-process: a real JWKS file, tokens signed with
//! jsonwebtoken, a real upstream.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis_proxy::AccessLogTarget;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};

use crate::support;
use crate::support::{get, http_upstream, raw};
use serde_json::json;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: auth}
spec:
  inbound:
    default: deny
    rules:
      - name: admins
        action: allow
        http: [{paths: ["/admin/*"], jwt: {issuer: "https://issuer.example", claims: {groups: admins}}}]
"#;

fn token(claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    encode(&h, &claims, &EncodingKey::from_secret(SECRET)).expect("sign")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A proxy judging `POLICY` with a JWKS holding `SECRET` as `k1`, logging to `dir`.
async fn start(
    dir: &std::path::Path,
) -> (std::net::SocketAddr, Drain, tokio::task::JoinHandle<()>) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(SECRET);
    std::fs::write(
        dir.join("jwks.json"),
        json!({"keys": [{"kty": "oct", "kid": "k1", "k": k}]}).to_string(),
    )
    .expect("jwks");
    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.jwks = Some(dir.join("jwks.json"));
    config.access_log = AccessLogTarget::File(dir.join("access.log"));
    let proxy = Proxy::bind(config, support::loaded(POLICY)).expect("bind");
    let addr = proxy.addrs(Direction::Inbound)[0];
    let drain = Drain::new();
    let d = drain.clone();
    let task = tokio::spawn(async move { proxy.run(d).await.expect("run") });
    (addr, drain, task)
}

#[tokio::test]
async fn tokens_are_validated_and_invalid_ones_get_401() {
    let dir = std::env::temp_dir().join(format!("portcullis-jwt-{}", std::process::id()));
    let (addr, drain, task) = start(&dir).await;

    let admin =
        token(json!({"iss": "https://issuer.example", "groups": ["admins"], "exp": now() + 60}));
    let user =
        token(json!({"iss": "https://issuer.example", "groups": ["users"], "exp": now() + 60}));
    let expired =
        token(json!({"iss": "https://issuer.example", "groups": ["admins"], "exp": now() - 3600}));
    let forged = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        encode(
            &h,
            &json!({"iss": "https://issuer.example", "groups": ["admins"], "exp": now() + 60}),
            &EncodingKey::from_secret(b"not-the-secret-not-the-secret!!!"),
        )
        .expect("sign")
    };
    assert!(
        get(addr, "/admin/x", Some(&admin))
            .await
            .ends_with("upstream")
    );
    assert!(
        get(addr, "/admin/x", Some(&user))
            .await
            .starts_with("HTTP/1.1 403"),
        "valid token, wrong claim"
    );
    assert!(
        get(addr, "/admin/x", None)
            .await
            .starts_with("HTTP/1.1 403"),
        "no token"
    );
    for bad in [&expired, &forged] {
        let r = get(addr, "/admin/x", Some(bad)).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(
            r.contains("www-authenticate: Bearer error=\"invalid_token\""),
            "{r}"
        );
    }
    drain.start();
    task.await.expect("proxy");
    let log = std::fs::read_to_string(dir.join("access.log")).expect("log");
    assert_eq!(log.lines().count(), 5, "{log}");
    for t in [&admin, &user, &expired, &forged] {
        assert!(!log.contains(t.as_str()), "the token never reaches the log");
        let signature = t.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(signature));
    }
    assert!(
        log.contains("invalid token: ExpiredSignature") || log.contains("invalid token: Expired"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_authorization_headers_are_refused_on_every_path() {
    // A valid token beside an unsigned `alg: none` one: the proxy must not validate one while
    // the application reads the other.
    let dir = std::env::temp_dir().join(format!("portcullis-jwt2-{}", std::process::id()));
    let (addr, drain, task) = start(&dir).await;
    let admin =
        token(json!({"iss": "https://issuer.example", "groups": ["admins"], "exp": now() + 60}));
    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"iss":"https://issuer.example","groups":["admins"]}"#),
    );
    for (first, second) in [(&admin, &unsigned), (&unsigned, &admin)] {
        let auth = format!("Authorization: Bearer {first}\r\nAuthorization: Bearer {second}\r\n");
        // The relay (a plain request) and the full server (a chunked body goes there).
        for request in [
            format!("GET /admin/x HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n"),
            format!(
                "POST /admin/x HTTP/1.1\r\nHost: a\r\n{auth}Transfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n0\r\n\r\n"
            ),
        ] {
            let r = raw(addr, &request).await;
            assert!(r.starts_with("HTTP/1.1 400"), "{request}\n{r}");
        }
    }
    // One valid token still works on both paths.
    let one = format!("Authorization: Bearer {admin}\r\n");
    let r = raw(
        addr,
        &format!("GET /admin/x HTTP/1.1\r\nHost: a\r\n{one}Connection: close\r\n\r\n"),
    )
    .await;
    assert!(r.ends_with("upstream"), "{r}");
    drain.start();
    task.await.expect("proxy");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_empty_bearer_gets_the_same_answer_on_every_path() {
    let dir = std::env::temp_dir().join(format!("portcullis-jwt3-{}", std::process::id()));
    let (addr, drain, task) = start(&dir).await;
    let mut answers = Vec::new();
    for auth in ["Authorization: Bearer \r\n", "Authorization: Bearer\r\n"] {
        for request in [
            format!("GET /admin/x HTTP/1.1\r\nHost: a\r\n{auth}Connection: close\r\n\r\n"),
            format!(
                "POST /admin/x HTTP/1.1\r\nHost: a\r\n{auth}Transfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n0\r\n\r\n"
            ),
        ] {
            let r = raw(addr, &request).await;
            answers.push(r.lines().next().unwrap_or_default().to_string());
        }
    }
    // No token to validate: the plain denial, the same from the relay and the full server.
    assert!(
        answers.iter().all(|a| a == "HTTP/1.1 403 Forbidden"),
        "{answers:?}"
    );
    // And over HTTP/2 (prior knowledge), whose header values hyper hands over as sent.
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut c, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    for value in ["Bearer ", "Bearer", "bearer "] {
        let req = http::Request::get("http://a/admin/x")
            .header("authorization", value)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = c.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 403, "HTTP/2 {value:?}");
        assert!(
            resp.headers().get("www-authenticate").is_none(),
            "{value:?}: no challenge"
        );
    }
    drain.start();
    task.await.expect("proxy");
    let _ = std::fs::remove_dir_all(&dir);
}
