//! The admission webhooks over real HTTPS, as the API server calls them: a controller on a
//! `dir` source serving `--webhook-addr` with a self-signed certificate, and a hyper client
//! that verifies it, POSTing AdmissionReviews — a Pod to `/mutate` (patched with the sidecar),
//! NetworkPolicies to `/validate` (one admitted, one refused with its error) — plus `/healthz`,
//! a body that is no review (`400`) and an unknown path (`404`); and the PolicyGuardrails of the
//! cluster source held to policy writes as they change; and the AdmissionReviews recorded in
//! `tests/recorded/` (as the API server sends them: CREATE, UPDATE with `oldObject`, DELETE,
//! dry runs; valid, invalid, guardrail-breaking and foreign objects) answered field by field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{ApiSecurity, Settings, Source, WebhookSettings};
use portcullis_injector::config::InjectConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// The name the webhook configurations reach the controller by.
const NAME: &str = "portcullis-controller.portcullis-system.svc";

/// A temporary directory, removed when dropped (also when an assertion fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "portcullis-controller-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Settings of a controller on `dir` (plaintext sidecar API; every port on loopback).
fn settings(dir: &TempDir, webhooks: Option<WebhookSettings>) -> Settings {
    Settings {
        source: Source::Dir(dir.0.join("cluster.yaml")),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        source_poll: Duration::from_secs(2),
        api_security: ApiSecurity::Plaintext,
        webhooks,
        ca: None,
    }
}

/// One request over TLS trusting only `root` (HTTP/1.1, hyper's client); (status, body).
async fn call(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
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
        .method(method)
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

async fn review(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
    review: &Value,
) -> Value {
    let body = serde_json::to_vec(review).expect("json");
    let (status, answer) = call(addr, root, "POST", path, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    serde_json::from_slice(&answer).expect("an AdmissionReview")
}

/// An AdmissionReview v1 CREATE of `object` in namespace shop.
fn create(uid: &str, gvk: (&str, &str, &str), resource: &str, object: Value) -> Value {
    let (group, version, kind) = gvk;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

fn network_policy(cidr: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}], "ports": [{"port": 8080}]}],
        },
    })
}

/// Whether a JSON Patch operation adds a container named `name` (alone or in a list).
fn adds_container(op: &Value, name: &str) -> bool {
    let value = &op["value"];
    op["op"] == "add"
        && (value["name"] == name
            || value
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c["name"] == name)))
}

/// The controller's task.
type Run = tokio::task::JoinHandle<Result<(), portcullis_controller::server::RunError>>;

/// A controller on `dir` serving the webhooks with a fresh self-signed certificate: its
/// webhook address, the certificate to trust, and its task; `admin` gets its admin address.
async fn start_with_admin(
    dir: &TempDir,
    admin: &mut Option<SocketAddr>,
) -> (SocketAddr, CertificateDer<'static>, Run) {
    let key = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).expect("cert");
    std::fs::write(dir.0.join("tls.crt"), key.cert.pem()).expect("write");
    std::fs::write(dir.0.join("tls.key"), key.signing_key.serialize_pem()).expect("write");
    let root = key.cert.der().clone();
    let mut inject = InjectConfig::defaults();
    inject.proxy_image = "registry.test/portcullis/proxy:1".into();
    let controller = Controller::bind(settings(
        dir,
        Some(WebhookSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            cert: dir.0.join("tls.crt"),
            key: dir.0.join("tls.key"),
            inject,
        }),
    ))
    .await
    .expect("bind");
    let addr = controller
        .webhook_addr()
        .expect("webhooks on")
        .expect("bound");
    *admin = controller.admin_addr().ok();
    (addr, root, tokio::spawn(controller.run_with(None)))
}

async fn start(dir: &TempDir) -> (SocketAddr, CertificateDer<'static>, Run) {
    start_with_admin(dir, &mut None).await
}

/// The controller's `/metrics` text.
async fn metrics(admin: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(admin).await.expect("admin");
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: admin\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn the_controller_serves_injection_and_policy_validation_over_https() {
    let dir = TempDir::new("webhooks");
    std::fs::write(
        dir.0.join("cluster.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    )
    .expect("write");
    let (addr, root, run) = start(&dir).await;

    let (status, body) = call(addr, &root, "GET", "/healthz", Vec::new()).await;
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));

    // /mutate: a Pod is patched with the sidecar, with the image the flags name.
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let answer = review(
        addr,
        &root,
        "/mutate",
        &create("pod-1", ("", "v1", "Pod"), "pods", pod),
    )
    .await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "pod-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let ops: Vec<Value> = serde_json::from_slice(&patch).expect("JSON Patch");
    let proxy = ops
        .iter()
        .find(|op| adds_container(op, "portcullis-proxy"))
        .unwrap_or_else(|| panic!("no op adds portcullis-proxy: {ops:#?}"));
    assert!(
        proxy
            .to_string()
            .contains("registry.test/portcullis/proxy:1"),
        "{proxy}"
    );

    // /validate: a valid NetworkPolicy is admitted…
    let np = ("networking.k8s.io", "v1", "NetworkPolicy");
    let answer = review(
        addr,
        &root,
        "/validate",
        &create("np-1", np, "networkpolicies", network_policy("10.0.0.0/8")),
    )
    .await;
    assert_eq!(answer["response"]["uid"], "np-1");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // …and one sidecars could not load is refused, naming the object and the error.
    let answer = review(
        addr,
        &root,
        "/validate",
        &create("np-2", np, "networkpolicies", network_policy("10.0.0.0/33")),
    )
    .await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "np-2");
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("NetworkPolicy shop/web is not a valid Portcullis policy:")
            && message.contains("invalid CIDR \"10.0.0.0/33\"")
            && message.contains("spec.ingress[0].from[0].ipBlock.cidr"),
        "{message}"
    );

    // What is no AdmissionReview, and what is not a route.
    let (status, _) = call(addr, &root, "POST", "/validate", b"{\"kind\":1}".to_vec()).await;
    assert_eq!(status, 400);
    let (status, _) = call(addr, &root, "POST", "/elsewhere", b"{}".to_vec()).await;
    assert_eq!(status, 404);

    assert!(!run.is_finished(), "the controller is still serving");
    run.abort();
}

#[tokio::test]
async fn without_certificate_flags_no_webhooks_are_served() {
    let dir = TempDir::new("no-webhooks");
    let controller = Controller::bind(settings(&dir, None)).await.expect("bind");
    assert!(controller.webhook_addr().is_none());
}

const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n";

fn guardrail(mode: &str) -> String {
    format!(
        "{SHOP}---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {{name: no-open-doors}}\nspec:\n  mode: {mode}\n  namespaceSelector: {{matchLabels: {{team: a}}}}\n  rules: {{forbidAllowAll: true}}\n"
    )
}

/// POSTs `review` to /validate until it is answered (the first snapshot read) and `done`
/// holds for the answer, or panics after 10 s.
async fn validate_until(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    review: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = serde_json::to_vec(review).expect("json");
        let (status, answer) = call(addr, root, "POST", "/validate", body).await;
        let answer: Option<Value> =
            (status == 200).then(|| serde_json::from_slice(&answer).expect("an AdmissionReview"));
        match answer {
            Some(a) if done(&a) => return a,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "still {status}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn guardrails_follow_the_cluster_and_a_bad_one_keeps_the_last_good() {
    let dir = TempDir::new("guardrails");
    let cluster = dir.0.join("cluster.yaml");
    std::fs::write(&cluster, guardrail("enforce")).expect("write");
    let mut admin = None;
    let (addr, root, run) = start_with_admin(&dir, &mut admin).await;
    let admin = admin.expect("admin address");
    let open = json!({
        "apiVersion": "portcullis.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "open", "namespace": "shop"},
        "spec": {"inbound": {"default": "allow"}},
    });
    let write = create(
        "ap-1",
        ("portcullis.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
        open,
    );
    // Enforced: refused with the guardrail, its rule and the field.
    let answer = validate_until(addr, &root, &write, |_| true).await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "ap-1");
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    let message = response["status"]["message"].as_str().expect("message");
    assert!(
        message.contains("guardrail no-open-doors: forbidAllowAll: `default: allow` lets every inbound peer through (at spec.inbound.default)"),
        "{message}"
    );
    let text = metrics(admin).await;
    for line in [
        "portcullis_controller_admission_reviews_total{outcome=\"forbidden\"} 1",
        "portcullis_controller_guardrail_violations_total{guardrail=\"no-open-doors\",rule=\"forbidAllowAll\",mode=\"enforce\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    // Rolled back to audit: admitted, with the finding as a warning.
    std::fs::write(&cluster, guardrail("audit")).expect("write");
    let audited = |a: &Value| a["response"]["allowed"] == true;
    let answer = validate_until(addr, &root, &write, audited).await;
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("guardrail no-open-doors (audit): forbidAllowAll"),
        "{warnings}"
    );
    // A guardrail that does not read is not applied: the last good snapshot (audit) stays.
    std::fs::write(&cluster, guardrail("warn")).expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answer = validate_until(addr, &root, &write, |_| true).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"]["warnings"]
            .to_string()
            .contains("(audit)")
    );
    run.abort();
}

/// The cluster the recorded reviews are judged in: namespace shop with a default-deny baseline,
/// an enforced guardrail and an audit-only one.
const RECORDED_CLUSTER: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: no-open-doors}\nspec: {rules: {forbidAllowAll: true, requireDefaultDeny: true}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: narrow}\nspec: {mode: audit, rules: {minPrefixLength: {ipv4: 16}}}\n";

/// The strings of `v[key]` (an array of strings), or none.
fn strings<'v>(v: &'v Value, key: &str) -> Vec<&'v str> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// Checks one answer against a recorded expectation, field by field.
fn check_recorded(name: &str, request: &Value, answer: &Value, expect: &Value) {
    let response = &answer["response"];
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(answer["kind"], "AdmissionReview", "{name}");
    assert_eq!(response["uid"], request["request"]["uid"], "{name}");
    assert_eq!(response["allowed"], expect["allowed"], "{name}: {answer}");
    assert!(
        response.get("patch").is_none() && response.get("patchType").is_none(),
        "{name}"
    );
    let status = &response["status"];
    match expect.get("code") {
        Some(code) => {
            assert_eq!(&status["code"], code, "{name}");
            assert_eq!(status["reason"], expect["reason"], "{name}");
            assert_eq!(status["status"], "Failure", "{name}");
            let message = status["message"].as_str().unwrap_or_default();
            for f in strings(expect, "message") {
                assert!(message.contains(f), "{name}: {f:?} in\n{message}");
            }
        }
        None => assert!(status.get("code").is_none(), "{name}: {answer}"),
    }
    let warnings = strings(response, "warnings");
    let want = strings(expect, "warnings");
    assert_eq!(warnings.is_empty(), want.is_empty(), "{name}: {warnings:?}");
    for f in want {
        assert!(
            warnings.iter().any(|w| w.contains(f)),
            "{name}: {f:?} in {warnings:?}"
        );
    }
}

#[tokio::test]
async fn recorded_admission_reviews_are_answered_field_by_field_over_https() {
    let dir = TempDir::new("recorded");
    std::fs::write(dir.0.join("cluster.yaml"), RECORDED_CLUSTER).expect("write");
    let (addr, root, run) = start(&dir).await;
    let recorded = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recorded");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&recorded)
        .expect("recorded reviews")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "{files:?}");
    let mut operations = std::collections::BTreeSet::new();
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let case: Value =
            serde_json::from_slice(&std::fs::read(file).expect("read")).expect("JSON");
        let request = &case["review"];
        operations.insert(format!(
            "{}{}",
            request["request"]["operation"].as_str().unwrap_or_default(),
            if request["request"]["dryRun"] == true {
                " dry-run"
            } else {
                ""
            }
        ));
        // The first review may find the controller still reading the cluster (503): retried.
        let answer = if i == 0 {
            validate_until(addr, &root, request, |_| true).await
        } else {
            review(addr, &root, "/validate", request).await
        };
        check_recorded(name, request, &answer, &case["expect"]);
    }
    let all: Vec<&str> = operations.iter().map(String::as_str).collect();
    assert_eq!(all, ["CREATE", "CREATE dry-run", "DELETE", "UPDATE"]);
    run.abort();
}
