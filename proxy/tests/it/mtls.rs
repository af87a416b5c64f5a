//! Mutual TLS between in-process sidecars: a calling sidecar (outbound, `mesh_cidrs` covering
//! the destination) wraps the application's plaintext in TLS with its workload certificate; the
//! destination sidecar terminates it, verifies the certificate against the trust bundle, and
//! judges the connection by the caller's SPIFFE ID. Certificates come from `dev-certs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_config::LoadedPolicy;
use portcullis_proxy::AccessLogTarget;
use portcullis_proxy::commands::dev_certs::write_dev_certs;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support;
use crate::support::{get, http_upstream};

const TD: &str = "cluster.local";

/// A policy whose inbound side is `default: deny` plus `rules`.
fn policy(rules: &str) -> LoadedPolicy {
    compiled(&format!(
        "spec:\n  inbound:\n    default: deny\n    rules:\n{rules}"
    ))
}

fn compiled(spec: &str) -> LoadedPolicy {
    let yaml = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: mesh}}\n{spec}"
    );
    support::loaded(&yaml)
}

struct Sidecar {
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
    drain: Drain,
    task: JoinHandle<()>,
}

impl Sidecar {
    /// A sidecar whose every connection goes to `target`; `mesh` wraps outbound ones in mTLS.
    fn start(
        target: SocketAddr,
        identity: Option<&Path>,
        mesh: bool,
        loaded: LoadedPolicy,
        log: Option<PathBuf>,
    ) -> Self {
        let mut config = ProxyConfig::for_tests(target);
        config.identity_dir = identity.map(Path::to_path_buf);
        if mesh {
            config.mesh_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
        }
        if let Some(log) = log {
            config.access_log = AccessLogTarget::File(log);
        }
        let proxy = Proxy::bind(config, loaded).expect("bind");
        let inbound = proxy.addrs(Direction::Inbound)[0];
        let outbound = proxy.addrs(Direction::Outbound)[0];
        let admin = proxy.admin_addr().expect("admin");
        let drain = Drain::new();
        let d = drain.clone();
        let task = tokio::spawn(async move { proxy.run(d).await.expect("run") });
        Self {
            inbound,
            outbound,
            admin,
            drain,
            task,
        }
    }

    async fn stop(self) {
        self.drain.start();
        self.task.await.expect("proxy");
    }
}

fn certs(root: &Path, name: &str, workloads: &[&str]) -> Vec<PathBuf> {
    let workloads: Vec<String> = workloads.iter().map(|w| w.to_string()).collect();
    write_dev_certs(&root.join(name), TD, &workloads, Duration::from_secs(3600)).expect("certs")
}

/// The calling side: outbound HTTP is judged (so it is proxied as HTTP inside the tunnel).
fn open_policy() -> LoadedPolicy {
    compiled(
        "spec:\n  outbound:\n    default: allow\n    rules:\n      - {name: no-blocked, action: deny, http: [{paths: [/blocked]}]}\n",
    )
}

#[tokio::test]
async fn identity_rules_admit_only_the_named_workload() {
    let root = std::env::temp_dir().join(format!("portcullis-mtls-{}", std::process::id()));
    let ids = certs(&root, "ca", &["a/client", "b/other", "b/server"]);
    let foreign = certs(&root, "foreign", &["a/client"]);
    let app = http_upstream().await;
    let rules = "      - name: from-client\n        action: allow\n        from: [{identity: spiffe://cluster.local/ns/a/sa/client}]\n";
    let server = Sidecar::start(
        app,
        Some(&ids[2]),
        false,
        policy(rules),
        Some(root.join("server.log")),
    );
    let client = Sidecar::start(server.inbound, Some(&ids[0]), true, open_policy(), None);
    let other = Sidecar::start(server.inbound, Some(&ids[1]), true, open_policy(), None);
    let stranger = Sidecar::start(server.inbound, Some(&foreign[0]), true, open_policy(), None);
    let plain = Sidecar::start(server.inbound, None, false, open_policy(), None);

    let r = get(client.outbound, "/x", None).await;
    assert!(
        r.starts_with("HTTP/1.1 200") && r.ends_with("upstream"),
        "{r}"
    );
    let r = get(client.outbound, "/blocked", None).await;
    assert!(
        r.starts_with("HTTP/1.1 403"),
        "the caller's own outbound rules: {r}"
    );
    // Another workload of the same trust domain: authenticated, but not the one allowed.
    // (The server closes the connection; the calling sidecar answers 502.)
    let r = get(other.outbound, "/x", None).await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    // A certificate from another CA: the handshake is refused (TLS 1.3 tells the client after
    // its Finished, so the caller sees either a failed connect or a dead connection).
    let r = get(stranger.outbound, "/x", None).await;
    assert!(
        r.starts_with("HTTP/1.1 502") || r.starts_with("HTTP/1.1 503"),
        "{r}"
    );
    // A calling side without mTLS: plaintext, no identity, refused.
    let r = get(plain.outbound, "/x", None).await;
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    // Straight at the inbound listener, also plaintext.
    assert!(get(server.inbound, "/x", None).await.is_empty());

    let metrics = get(server.admin, "/metrics", None).await;
    let line = |needle: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("portcullis_mtls_handshakes_total") && l.contains(needle))
            .map(str::to_string)
    };
    assert!(
        line("result=\"success\",peer_namespace=\"a\"").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        line("result=\"success\",peer_namespace=\"b\"").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        line("result=\"failure\"").is_some_and(|l| l.ends_with(" 1")),
        "{metrics}"
    );
    for s in [client, other, stranger, plain, server] {
        s.stop().await;
    }
    let log = std::fs::read_to_string(root.join("server.log")).expect("log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let by_verdict = |id: Option<&str>, verdict: &str| {
        records.iter().any(|r| {
            r["identity"].as_str() == id && r["verdict"] == verdict && r["direction"] == "inbound"
        })
    };
    assert!(
        by_verdict(Some("spiffe://cluster.local/ns/a/sa/client"), "allow"),
        "{log}"
    );
    assert!(
        by_verdict(Some("spiffe://cluster.local/ns/b/sa/other"), "deny"),
        "{log}"
    );
    assert!(by_verdict(None, "deny"), "{log}");
    assert!(
        records.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("mTLS handshake failed"))
            && r["verdict"] == "deny"),
        "the refused handshake is logged with its reason: {log}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn namespace_rules_and_http_rules_see_the_identity() {
    let root = std::env::temp_dir().join(format!("portcullis-mtls-ns-{}", std::process::id()));
    let ids = certs(&root, "ca", &["a/client", "b/other", "b/server"]);
    let app = http_upstream().await;
    let rules = "      - name: ns-a-reads\n        action: allow\n        from: [{namespace: a}]\n        http: [{methods: [GET], paths: [\"/read/*\"]}]\n";
    let server = Sidecar::start(app, Some(&ids[2]), false, policy(rules), None);
    let a = Sidecar::start(server.inbound, Some(&ids[0]), true, open_policy(), None);
    let b = Sidecar::start(server.inbound, Some(&ids[1]), true, open_policy(), None);
    assert!(get(a.outbound, "/read/1", None).await.ends_with("upstream"));
    let r = get(a.outbound, "/write/1", None).await;
    assert!(r.starts_with("HTTP/1.1 403"), "path not allowed: {r}");
    let r = get(b.outbound, "/read/1", None).await;
    // No rule can admit namespace b, so the server refuses the whole connection.
    assert!(r.starts_with("HTTP/1.1 502"), "namespace b: {r}");
    for s in [a, b, server] {
        s.stop().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn the_wire_between_sidecars_is_tls() {
    let root = std::env::temp_dir().join(format!("portcullis-mtls-wire-{}", std::process::id()));
    let ids = certs(&root, "ca", &["a/client"]);
    // A raw listener stands where the peer sidecar would be and keeps what arrives.
    let tap = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tap_addr = tap.local_addr().expect("addr");
    let seen = tokio::spawn(async move {
        let (mut s, _) = tap.accept().await.expect("accept");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        buf.truncate(n);
        buf
    });
    let client = Sidecar::start(tap_addr, Some(&ids[0]), true, open_policy(), None);
    let caller = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(3),
            get(client.outbound, "/secret-path", None),
        )
        .await
    });
    let bytes = seen.await.expect("tap");
    assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake record");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("portcullis-mtls/1"),
        "the mesh ALPN is offered"
    );
    assert!(!text.contains("secret-path") && !text.contains("GET "));
    caller.abort();
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn namespace_and_any_peer_rules_pin_the_own_trust_domain() {
    // One CA, two trust domains (federation, or a CA shared by mistake): a partner's
    // `/ns/a/` workload is not this cluster's namespace `a`, nor "any peer" — unless a rule names
    // the partner's trust domain itself.
    let root = std::env::temp_dir().join(format!("portcullis-mtls-td-{}", std::process::id()));
    let ids = certs(&root, "ca", &["a/client", "b/server"]);
    let partner = write_dev_certs(
        &root.join("ca"),
        "partner.example",
        &["a/partner".into(), "x/named".into()],
        Duration::from_secs(3600),
    )
    .expect("partner certs");
    let app = http_upstream().await;
    let rules = "      - {name: ns-a, action: allow, from: [{namespace: a}], http: [{paths: [\"/ns/*\"]}]}\n      - {name: anyone, action: allow, from: [{identity: \"*\"}], http: [{paths: [\"/any/*\"]}]}\n      - {name: named, action: allow, from: [{identity: \"spiffe://partner.example/ns/x/*\"}], http: [{paths: [\"/named/*\"]}]}\n";
    let server = Sidecar::start(app, Some(&ids[1]), false, policy(rules), None);
    let ours = Sidecar::start(server.inbound, Some(&ids[0]), true, open_policy(), None);
    let theirs = Sidecar::start(server.inbound, Some(&partner[0]), true, open_policy(), None);
    let named = Sidecar::start(server.inbound, Some(&partner[1]), true, open_policy(), None);
    for path in ["/ns/x", "/any/x"] {
        let r = get(ours.outbound, path, None).await;
        assert!(r.starts_with("HTTP/1.1 200"), "ours {path}: {r}");
        let r = get(theirs.outbound, path, None).await;
        assert!(!r.starts_with("HTTP/1.1 200"), "partner {path}: {r}");
    }
    let r = get(named.outbound, "/named/x", None).await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "a rule naming the partner: {r}"
    );
    for s in [ours, theirs, named, server] {
        s.stop().await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
