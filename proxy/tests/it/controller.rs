//! The sidecar following a real controller (in-process, over real gRPC and TLS on loopback):
//! not ready and admitting nothing before the first view; a NetworkPolicy written in pod
//! labels enforced by address once the view arrives; a label change in the controller's source
//! flipping the decision within a second. And the API's side of it: a caller is served only
//! its own workload's view, proven by its projected token or its workload certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_api::v1;
use portcullis_api::v1::sidecar_client::SidecarClient;
use portcullis_controller::api::tls::TlsFiles;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{
    ApiSecurity, CaRoot, CaSettings, Settings, Source, TokenCheck,
};
use portcullis_proxy::commands::dev_certs::{write_dev_certs, write_server_cert};
use portcullis_proxy::commands::dev_tokens::write_tokens;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::policy::controller::{ControllerTarget, ControllerTls};
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::support::{eventually, get, http_upstream};

/// Namespace x with pods a (the workload), b at 127.0.0.2 and c at 127.0.0.3; `c_label` is c's
/// `pod` label. x's policy admits to a only pods labelled pod=b.
fn snapshot(c_label: &str) -> String {
    format!(
        "apiVersion: v1
kind: List
items:
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: x}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: a, namespace: x, labels: {{pod: a}}}}, spec: {{containers: []}}, status: {{phase: Running, podIP: 127.0.0.10}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: b, namespace: x, labels: {{pod: b}}}}, spec: {{containers: []}}, status: {{phase: Running, podIP: 127.0.0.2}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: c, namespace: x, labels: {{pod: {c_label}}}}}, spec: {{containers: []}}, status: {{phase: Running, podIP: 127.0.0.3}}}}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: from-b, namespace: x}}
    spec:
      podSelector: {{matchLabels: {{pod: a}}}}
      ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]
"
    )
}

/// `GET /` from `src`; the raw answer ("" when the connection was refused).
async fn from(src: &str, addr: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{src}:0").parse().expect("addr"))
        .expect("bind");
    let Ok(mut s) = socket.connect(addr).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out
}

fn write(dir: &Path, c_label: &str) {
    write_text(dir, &snapshot(c_label));
}

pub(crate) fn write_text(dir: &Path, text: &str) {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join("cluster.yaml")).expect("rename");
}

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Throwaway credentials in `creds`: a CA, the API's serving certificate for 127.0.0.1,
/// workload certificates for x/default and y/default, and tokens for pods x/a and x/b.
fn credentials(creds: &Path) -> ApiSecurity {
    let day = Duration::from_secs(86_400);
    write_server_cert(creds, &["127.0.0.1".into()], day).expect("server cert");
    write_dev_certs(
        creds,
        "cluster.local",
        &["x/default".into(), "y/default".into()],
        day,
    )
    .expect("workload certs");
    let pods = [
        "x/a=default".parse().expect("pod"),
        "x/b=default".parse().expect("pod"),
    ];
    write_tokens(creds, ISSUER, &pods, day).expect("tokens");
    ApiSecurity::Tls {
        files: TlsFiles {
            cert: creds.join("server/tls.crt"),
            key: creds.join("server/tls.key"),
            client_ca: Some(creds.join("ca.crt")),
        },
        tokens: TokenCheck::Jwks {
            path: creds.join("sa/jwks.json"),
            issuer: ISSUER.into(),
        },
    }
}

/// A controller on a `dir` source in `dir`, TLS with `creds`; its API URL.
async fn controller(dir: &Path, creds: &Path) -> (Controller, String) {
    controller_with(dir, creds, CaRoot::Generate).await
}

/// [`controller`], its mesh CA's root from `root`.
async fn controller_with(dir: &Path, creds: &Path, root: CaRoot) -> (Controller, String) {
    let controller = Controller::bind(Settings {
        source: Source::Dir(dir.to_path_buf()),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        source_poll: Duration::from_millis(50),
        api_security: credentials(creds),
        webhooks: None,
        ca: Some(CaSettings {
            root,
            ttl: Duration::from_secs(3600),
        }),
    })
    .await
    .expect("controller");
    let url = format!("https://{}", controller.api_addr().expect("addr"));
    (controller, url)
}

/// A controller as [`controller`] makes it, running, its first snapshot applied; its API URL.
pub(crate) async fn running(dir: &Path, creds: &Path) -> String {
    let (controller, url) = controller(dir, creds).await;
    let publisher = controller.publisher.clone();
    tokio::spawn(controller.run());
    eventually("the controller applied its source", async || {
        publisher.is_ready()
    })
    .await;
    url
}

/// A fresh directory `name` with the source (x/c labelled c), credentials in `creds/`, and a
/// running controller on them: (directory, credentials, API URL).
async fn started(name: &str) -> (PathBuf, PathBuf, String) {
    let dir = temp(name);
    write(&dir, "c");
    let creds = dir.join("creds");
    let url = running(&dir, &creds).await;
    (dir, creds, url)
}

/// The controller as pod x/a's sidecar sees it: TLS verified by `creds/ca.crt`, its token.
fn sidecar_a(url: String, creds: &Path) -> ControllerTarget {
    sidecar(url, creds, "a")
}

/// The controller as pod x/`pod`'s sidecar sees it (pods a and b have tokens).
pub(crate) fn sidecar(url: String, creds: &Path, pod: &str) -> ControllerTarget {
    ControllerTarget {
        url,
        namespace: "x".into(),
        pod: pod.into(),
        tls: Some(ControllerTls {
            ca_pem: std::fs::read_to_string(creds.join("ca.crt")).expect("ca"),
            token: Some(creds.join("sa/tokens/x").join(pod)),
            identity_dir: None,
        }),
    }
}

pub(crate) fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

#[tokio::test]
async fn a_sidecar_enforces_its_controller_view_and_follows_label_changes() {
    let dir = temp("ctl");
    write(&dir, "c");
    let creds = dir.join("creds");
    let (controller, url) = controller(&dir, &creds).await;

    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.controller = Some(sidecar_a(url, &creds));
    let proxy =
        Proxy::bind(config, portcullis_proxy::policy::waiting_for_controller()).expect("bind");
    let addr = proxy.addrs(Direction::Inbound)[0];
    let admin = proxy.admin_addr().expect("admin");
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });

    // No controller yet: not ready, nothing admitted.
    eventually("the admin server answers", async || {
        !get(admin, "/live", None).await.is_empty()
    })
    .await;
    assert!(
        get(admin, "/ready", None).await.contains("503"),
        "not ready before a view"
    );
    assert_eq!(
        from("127.0.0.2", addr).await,
        "",
        "nothing admitted before a view"
    );

    tokio::spawn(controller.run());
    eventually("the first view is in force", async || {
        get(admin, "/ready", None).await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(
        from("127.0.0.2", addr).await.ends_with("upstream"),
        "x/b is pod=b"
    );
    assert_eq!(from("127.0.0.3", addr).await, "", "x/c is not");
    let metrics = get(admin, "/metrics", None).await;
    assert!(
        metrics.contains("portcullis_controller_connected 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_controller_view_version 1"),
        "{metrics}"
    );

    // The source relabels c: the sidecar admits it within a second.
    let changed = std::time::Instant::now();
    write(&dir, "b");
    eventually("x/c is admitted after its relabel", async || {
        from("127.0.0.3", addr).await.ends_with("upstream")
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(1),
        "{:?}",
        changed.elapsed()
    );
    assert!(
        get(admin, "/metrics", None)
            .await
            .contains("portcullis_controller_view_version 2")
    );
    drain.start();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client of the API: TLS verified against `creds/ca.crt`, presenting the workload
/// certificate in `identity` if any.
async fn channel(url: &str, creds: &Path, identity: Option<&str>) -> Channel {
    let ca = std::fs::read_to_string(creds.join("ca.crt")).expect("ca");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(dir) = identity {
        let read = |f: &str| std::fs::read(creds.join(dir).join(f)).expect("identity");
        tls = tls.identity(Identity::from_pem(read("tls.crt"), read("tls.key")));
    }
    let endpoint = Endpoint::from_shared(url.to_string()).expect("url");
    endpoint
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

/// [`channel`] as a `Sidecar` client.
async fn client(url: &str, creds: &Path, identity: Option<&str>) -> SidecarClient<Channel> {
    SidecarClient::new(channel(url, creds, identity).await)
}

/// Watches `x/<pod>` with `token` (if any) as the bearer: the first message or the error.
async fn first(
    client: &mut SidecarClient<Channel>,
    pod: &str,
    token: Option<&str>,
) -> Result<v1::View, tonic::Status> {
    let mut request = tonic::Request::new(v1::WatchRequest {
        namespace: "x".into(),
        pod: pod.into(),
    });
    if let Some(t) = token {
        let bearer = format!("Bearer {t}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut stream = client.watch(request).await?.into_inner();
    stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::aborted("ended"))
}

fn code(r: &Result<v1::View, tonic::Status>) -> tonic::Code {
    r.as_ref()
        .map_or_else(tonic::Status::code, |_| tonic::Code::Ok)
}

#[tokio::test]
async fn the_api_serves_a_workload_only_its_own_view() {
    let (dir, creds, url) = started("ctl-auth").await;
    let token =
        |pod: &str| std::fs::read_to_string(creds.join("sa/tokens/x").join(pod)).expect("t");
    let mut anonymous = client(&url, &creds, None).await;

    let own = first(&mut anonymous, "a", Some(&token("a")))
        .await
        .expect("own view");
    assert!(own.known && own.workload.map(|w| w.pod) == Some("a".into()));
    let cases = [
        ("b", None, tonic::Code::Unauthenticated, "no credentials"),
        (
            "b",
            Some(token("a")),
            tonic::Code::PermissionDenied,
            "another pod's token",
        ),
        (
            "a",
            Some("not-a-token".to_string()),
            tonic::Code::Unauthenticated,
            "garbage",
        ),
    ];
    for (pod, bearer, want, what) in cases {
        let got = first(&mut anonymous, pod, bearer.as_deref()).await;
        assert_eq!(code(&got), want, "{what}: {got:?}");
    }
    // A token of another issuer's key (same claims) is refused.
    let forger = dir.join("forger");
    let pod = ["x/a=default".parse().expect("pod")];
    let forged = write_tokens(&forger, ISSUER, &pod, Duration::from_secs(600)).expect("forge");
    let forged = std::fs::read_to_string(&forged[0]).expect("token");
    let got = first(&mut anonymous, "a", Some(&forged)).await;
    assert_eq!(code(&got), tonic::Code::Unauthenticated, "forged: {got:?}");

    // Workload certificates: x/default may watch x's pods of service account default; a
    // certificate of namespace y may not.
    let mut x = client(&url, &creds, Some("x-default")).await;
    assert!(first(&mut x, "a", None).await.is_ok());
    let mut y = client(&url, &creds, Some("y-default")).await;
    assert_eq!(
        code(&first(&mut y, "a", None).await),
        tonic::Code::PermissionDenied
    );

    // Plaintext to the TLS port gets nothing.
    let plain = url.replace("https://", "http://");
    let plain = Endpoint::from_shared(plain).expect("url").connect().await;
    if let Ok(channel) = plain {
        let got = SidecarClient::new(channel)
            .watch(v1::WatchRequest {
                namespace: "x".into(),
                pod: "a".into(),
            })
            .await;
        assert!(got.is_err(), "plaintext served: {got:?}");
    }

    // The pod's service account changes under an open stream: the stream ends refused.
    let mut stream = x
        .watch(v1::WatchRequest {
            namespace: "x".into(),
            pod: "a".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    stream.message().await.expect("first").expect("view");
    write_text(&dir, &snapshot("c").replace("spec: {containers: []}, status: {phase: Running, podIP: 127.0.0.10}", "spec: {serviceAccountName: admin, containers: []}, status: {phase: Running, podIP: 127.0.0.10}"));
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("in time");
    assert_eq!(
        next.err().map(|e| e.code()),
        Some(tonic::Code::PermissionDenied)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_watch_ends_when_its_token_expires() {
    let (dir, creds, url) = started("ctl-expiry").await;
    let pod = ["x/a=default".parse().expect("pod")];
    let short = write_tokens(&creds, ISSUER, &pod, Duration::from_secs(3)).expect("token");
    let short = std::fs::read_to_string(&short[0]).expect("token");
    let mut anonymous = client(&url, &creds, None).await;
    let mut request = tonic::Request::new(v1::WatchRequest {
        namespace: "x".into(),
        pod: "a".into(),
    });
    let bearer = format!("Bearer {short}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", bearer);
    let started = std::time::Instant::now();
    let mut stream = anonymous.watch(request).await.expect("watch").into_inner();
    // Views (an unknown one first if the controller has not read its source yet) until the
    // stream ends.
    let mut known = false;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(view))) => known |= view.known,
            Ok(other) => break other,
            Err(_) => panic!("the watch did not end"),
        }
    };
    assert!(known, "the pod's view was served before the token expired");
    assert_eq!(
        end.err().map(|e| e.code()),
        Some(tonic::Code::Unauthenticated)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CSR of a fresh key for `spiffe_id` (PEM), as a sidecar makes it.
fn csr(spiffe_id: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.try_into().expect("uri"))];
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[tokio::test]
async fn the_controller_certifies_a_pod_as_its_own_service_account_only() {
    use portcullis_api::v1::identity_client::IdentityClient;
    let (dir, creds, url) = started("ctl-ca").await;
    let token = std::fs::read_to_string(creds.join("sa/tokens/x/a")).expect("token");
    let mut ca = IdentityClient::new(channel(&url, &creds, None).await);
    let certify = async |ca: &mut IdentityClient<_>, csr: String, bearer: Option<&str>| {
        let mut request = tonic::Request::new(v1::CertifyRequest { csr });
        if let Some(t) = bearer {
            let value = format!("Bearer {t}").parse().expect("ascii");
            request.metadata_mut().insert("authorization", value);
        }
        ca.certify(request).await.map(tonic::Response::into_inner)
    };
    let own = "spiffe://cluster.local/ns/x/sa/default";
    let svid = certify(&mut ca, csr(own), Some(&token))
        .await
        .expect("issued");
    assert!(
        svid.certificate.contains("BEGIN CERTIFICATE") && svid.bundle.contains("BEGIN CERTIFICATE")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        (now + 3500..=now + 3600).contains(&svid.not_after),
        "an hour: {}",
        svid.not_after
    );
    let refused = [
        (
            csr("spiffe://cluster.local/ns/x/sa/admin"),
            Some(token.as_str()),
            tonic::Code::PermissionDenied,
        ),
        (
            csr("spiffe://cluster.local/ns/y/sa/default"),
            Some(token.as_str()),
            tonic::Code::PermissionDenied,
        ),
        (csr(own), None, tonic::Code::Unauthenticated),
        (
            csr(own),
            Some("forged.token.here"),
            tonic::Code::Unauthenticated,
        ),
    ];
    for (request, bearer, want) in refused {
        let got = certify(&mut ca, request, bearer)
            .await
            .expect_err("refused");
        assert_eq!(got.code(), want, "{got:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sidecar_enrolls_with_the_controller_and_takes_in_each_renewal() {
    use portcullis_proxy::mesh::enroll::Enrollment;
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, creds, url) = started("ctl-enroll").await;
    let identity = dir.join("identity");
    let enrollment = Enrollment {
        target: sidecar_a(url, &creds),
        dir: identity.clone(),
        trust_domain: "cluster.local".into(),
    };
    // No file prepared: the first certificate comes from the controller.
    let not_after = enrollment.first().await;
    let key = identity.join("tls.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is the sidecar's alone");

    // The data path loads it as its identity (chain checked against the bundle at bind).
    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.identity_dir = Some(identity.clone());
    config.policy_poll = Duration::from_millis(50);
    let proxy =
        Proxy::bind(config, portcullis_proxy::policy::waiting_for_controller()).expect("bind");
    let admin = proxy.admin_addr().expect("admin");
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });
    let expiry = not_after
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_secs();
    eventually("the enrolled certificate is in force", async || {
        get(admin, "/metrics", None).await.contains(&format!(
            "portcullis_identity_expiry_timestamp_seconds {expiry}"
        ))
    })
    .await;

    // A renewal: a new key and certificate, taken in by the running proxy.
    let before = std::fs::read_to_string(&key).expect("key");
    enrollment.once().await.expect("renewed");
    assert_ne!(
        std::fs::read_to_string(&key).expect("key"),
        before,
        "a fresh key"
    );
    eventually("the renewal is taken in", async || {
        get(admin, "/metrics", None)
            .await
            .contains("portcullis_identity_reloads_total{result=\"success\"} 1")
    })
    .await;
    drain.start();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A self-signed CA written as `dir/tls.crt` and `dir/tls.key` (as a Secret mounts it); its
/// certificate.
fn write_root(dir: &Path) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).expect("root").pem();
    std::fs::create_dir_all(dir).expect("dir");
    // Each file renamed into place (a poll between the two renames sees half a rotation, which
    // the controller refuses and retries).
    let next = dir.with_extension("next");
    std::fs::create_dir_all(&next).expect("dir");
    std::fs::write(next.join("tls.crt"), &cert).expect("cert");
    std::fs::write(next.join("tls.key"), key.serialize_pem()).expect("key");
    for f in ["tls.crt", "tls.key"] {
        std::fs::rename(next.join(f), dir.join(f)).expect("rename");
    }
    cert
}

#[tokio::test]
async fn a_root_rotation_reaches_running_sidecars_with_the_old_root_still_trusted() {
    use portcullis_proxy::mesh::enroll::Enrollment;
    let dir = temp("ctl-rotate");
    write(&dir, "c");
    let creds = dir.join("creds");
    let ca = dir.join("mesh-ca");
    let old = write_root(&ca);
    let root = CaRoot::Files {
        cert: ca.join("tls.crt"),
        key: ca.join("tls.key"),
        bundle: None,
    };
    let (controller, url) = controller_with(&dir, &creds, root).await;
    tokio::spawn(controller.run());

    let identity = dir.join("identity");
    let enrollment = Enrollment {
        target: sidecar_a(url.clone(), &creds),
        dir: identity.clone(),
        trust_domain: "cluster.local".into(),
    };
    enrollment.first().await;
    let bundle = || std::fs::read_to_string(identity.join("ca.crt")).expect("bundle");
    assert_eq!(bundle().trim(), old.trim());
    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.controller = Some(sidecar_a(url, &creds));
    config.identity_dir = Some(identity.clone());
    config.enrollment = Some(enrollment.clone());
    config.policy_poll = Duration::from_millis(50);
    let proxy =
        Proxy::bind(config, portcullis_proxy::policy::waiting_for_controller()).expect("bind");
    let admin = proxy.admin_addr().expect("admin");
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });
    eventually("the first view is in force", async || {
        get(admin, "/ready", None).await.starts_with("HTTP/1.1 200")
    })
    .await;

    // The root rotates (cert-manager renewing the CA): within a second the running sidecar
    // trusts the new root and still the old one, and takes the bundle in.
    let new = write_root(&ca);
    let rotated = std::time::Instant::now();
    eventually("the new bundle reaches the sidecar", async || {
        let b = bundle();
        b.contains(new.trim()) && b.contains(old.trim())
    })
    .await;
    assert!(
        rotated.elapsed() < Duration::from_secs(1),
        "{:?}",
        rotated.elapsed()
    );
    eventually("the running proxy takes the bundle in", async || {
        get(admin, "/metrics", None)
            .await
            .contains("portcullis_identity_reloads_total{result=\"success\"} 1")
    })
    .await;
    // Its next certificate is signed by the new root.
    enrollment.once().await.expect("renewed");
    let cert = std::fs::read_to_string(identity.join("tls.crt")).expect("cert");
    let (_, leaf) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).expect("pem");
    let (_, root) = x509_parser::pem::parse_x509_pem(new.as_bytes()).expect("pem");
    let (leaf, root) = (
        leaf.parse_x509().expect("x509"),
        root.parse_x509().expect("x509"),
    );
    assert!(leaf.verify_signature(Some(root.public_key())).is_ok());
    drain.start();
    let _ = std::fs::remove_dir_all(&dir);
}
