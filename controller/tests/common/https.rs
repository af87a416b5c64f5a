//! A real controller serving its admission webhooks over HTTPS, for tests that talk to it as the
//! API server does: a `dir` source in a temporary directory, a fresh self-signed serving
//! certificate, and a client that trusts only that certificate. Dropping [`Running`] aborts the
//! controller and removes the directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use portcullis_controller::server::{Controller, RunError};
use portcullis_controller::settings::{ApiSecurity, Settings, Source, WebhookSettings};
use portcullis_injector::config::InjectConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// The name the webhook configurations reach the controller by.
const NAME: &str = "portcullis-controller.portcullis-system.svc";

/// A temporary directory, removed when dropped (also when an assertion fails).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory whose name carries `tag`.
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "portcullis-admission-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A controller serving the webhooks; aborted (and its directory removed) when dropped.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    root: CertificateDer<'static>,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
    _dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A controller whose `dir` source holds `cluster` (as `cluster.yaml`), serving the webhooks on
/// loopback with a fresh self-signed certificate for [`NAME`].
pub async fn start(cluster: &str) -> Running {
    let dir = TempDir::new("controller");
    std::fs::write(dir.path().join("cluster.yaml"), cluster).expect("write");
    let key = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).expect("cert");
    std::fs::write(dir.path().join("tls.crt"), key.cert.pem()).expect("write");
    std::fs::write(dir.path().join("tls.key"), key.signing_key.serialize_pem()).expect("write");
    let settings = Settings {
        source: Source::Dir(dir.path().join("cluster.yaml")),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        source_poll: Duration::from_secs(2),
        api_security: ApiSecurity::Plaintext,
        webhooks: Some(WebhookSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            inject: InjectConfig::defaults(),
        }),
        ca: None,
    };
    let controller = Controller::bind(settings).await.expect("bind");
    let addr = controller
        .webhook_addr()
        .expect("webhooks on")
        .expect("bound");
    Running {
        addr,
        root: key.cert.der().clone(),
        task: tokio::spawn(controller.run_with(None)),
        _dir: dir,
    }
}

impl Running {
    /// One POST over TLS trusting only the serving certificate (HTTP/1.1); (status, body).
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = ServerName::try_from(NAME).expect("name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("TLS handshake, verifying the serving certificate");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("http/1.1");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("https://{NAME}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    }

    /// POSTs `review` to `/validate` and returns the AdmissionReview answered. Until the
    /// controller has read its source it answers policy writes `503`; that is retried for up
    /// to 10 s, anything else but `200` fails.
    pub async fn validate(&self, review: &Value) -> Value {
        let body = serde_json::to_vec(review).expect("json");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, answer) = self.post("/validate", body.clone()).await;
            match status {
                200 => return serde_json::from_slice(&answer).expect("an AdmissionReview"),
                503 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => panic!(
                    "/validate answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
    }
}
