//! The webhook over real HTTPS, as the API server calls it: a recorded AdmissionReview POSTed to
//! `/mutate`, `/healthz`, and a certificate renewal picked up without a restart.

use std::sync::Arc;
use std::time::Duration;

use portcullis_injector::config::InjectConfig;
use portcullis_injector::tls::CertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAME: &str = "portcullis-injector.portcullis-system.svc";

fn self_signed(dir: &std::path::Path) -> CertificateDer<'static> {
    let ck = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).expect("cert");
    std::fs::write(dir.join("tls.crt"), ck.cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), ck.signing_key.serialize_pem()).expect("write");
    ck.cert.der().clone()
}

/// One HTTP/1.1 request over TLS trusting only `root`; returns the raw response.
async fn call(
    addr: std::net::SocketAddr,
    root: &CertificateDer<'static>,
    req: &[u8],
) -> Result<String, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(std::io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(NAME).map_err(std::io::Error::other)?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    tls.write_all(req).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .map_err(std::io::Error::other)??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn mutate_over_https_and_certificate_renewal() {
    let dir =
        std::env::temp_dir().join(format!("portcullis-injector-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let first = self_signed(&dir);
    let store =
        Arc::new(CertStore::load(&dir.join("tls.crt"), &dir.join("tls.key")).expect("load"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(portcullis_injector::server::serve(
        listener,
        store,
        Arc::new(InjectConfig::defaults()),
        Duration::from_millis(100),
        async {
            let _ = stop_rx.await;
        },
    ));

    let health = call(
        addr,
        &first,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );

    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reviews/plain.json"
    ))
    .expect("review");
    let mut req = format!(
        "POST /mutate?timeout=10s HTTP/1.1\r\nHost: {NAME}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let resp = call(addr, &first, &req).await.expect("mutate");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(json["response"]["uid"], "u-1");
    assert_eq!(json["response"]["allowed"], true);
    assert_eq!(json["response"]["patchType"], "JSONPatch");
    assert!(
        json["response"]["patch"]
            .as_str()
            .is_some_and(|p| !p.is_empty())
    );

    // Renewal: new files are served to new connections; the old certificate stops working.
    let second = self_signed(&dir);
    let mut renewed = false;
    for _ in 0..100 {
        if call(
            addr,
            &second,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .is_ok()
        {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renewed, "the renewed certificate was never served");
    assert!(
        call(addr, &first, b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .is_err()
    );

    // A broken renewal keeps the current certificate.
    std::fs::write(dir.join("tls.key"), "not a key").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        call(
            addr,
            &second,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .is_ok()
    );

    let _ = stop_tx.send(());
    server.await.expect("join").expect("serve");
    let _ = std::fs::remove_dir_all(&dir);
}
