//! Where outbound connections go when the controller knows the cluster: a Service's ClusterIP
//! leads to its ready endpoints in turn, each judged as the pod it is (its labels, its named
//! port); a Service without a ready endpoint answers HTTP 503 and refuses TCP; and a meshed pod
//! (`portcullis.dev/mtls: enabled`) is reached over mutual TLS without any `--mesh-cidrs`, its
//! sidecar held to that pod's identity.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis_proxy::AccessLogTarget;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::controller::{running, sidecar, temp, write_text};
use crate::support::{eventually, get};

/// Namespace x: the workloads a and b; pods d1, d2 (tier ok) and d3 (tier no) behind Service
/// api (127.0.96.1:80 → endpoint port `http` = `port`); Service empty with no endpoint. a may
/// send only to tier ok on their port `http`.
fn cluster(port: u16) -> String {
    let pod = |name: &str, ip: &str, tier: &str| {
        format!(
            "  - {{apiVersion: v1, kind: Pod, metadata: {{name: {name}, namespace: x, labels: {{tier: {tier}}}}}, spec: {{containers: [{{name: app, ports: [{{name: http, containerPort: {port}}}]}}]}}, status: {{phase: Running, podIP: {ip}}}}}\n"
        )
    };
    let mut text = String::from(
        "apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n",
    );
    text.push_str(&pod("a", "127.0.0.10", "client"));
    text.push_str(&pod("b", "127.0.0.11", "client"));
    text.push_str(&pod("d1", "127.0.0.2", "ok"));
    text.push_str(&pod("d2", "127.0.0.3", "ok"));
    text.push_str(&pod("d3", "127.0.0.4", "no"));
    text.push_str(&format!(
        "  - {{apiVersion: v1, kind: Service, metadata: {{name: api, namespace: x}}, spec: {{clusterIP: 127.0.96.1, ports: [{{name: http, port: 80}}]}}}}
  - {{apiVersion: v1, kind: Service, metadata: {{name: empty, namespace: x}}, spec: {{clusterIP: 127.0.96.2, ports: [{{port: 80}}]}}}}
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {{name: api-1, namespace: x, labels: {{kubernetes.io/service-name: api}}}}
    addressType: IPv4
    ports: [{{name: http, port: {port}}}]
    endpoints:
      - {{addresses: [127.0.0.2], targetRef: {{kind: Pod, name: d1}}}}
      - {{addresses: [127.0.0.3], targetRef: {{kind: Pod, name: d2}}}}
      - {{addresses: [127.0.0.4], targetRef: {{kind: Pod, name: d3}}}}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: to-ok, namespace: x}}
    spec:
      podSelector: {{matchLabels: {{tier: client}}}}
      policyTypes: [Egress]
      egress: [{{to: [{{podSelector: {{matchLabels: {{tier: ok}}}}}}], ports: [{{port: http}}]}}]
"
    ));
    text.replace(
        "podSelector: {matchLabels: {tier: client}}",
        "podSelector: {matchLabels: {tier: client}, matchExpressions: [{key: policy, operator: DoesNotExist}]}",
    )
}

/// Three HTTP servers on 127.0.0.2–4 on one port, each answering its own name.
async fn endpoints() -> u16 {
    // A port free on all three addresses (another socket may hold one of them: try again).
    let (port, listeners) = 'found: {
        for _ in 0..20 {
            let first = TcpListener::bind("127.0.0.2:0").await.expect("bind");
            let port = first.local_addr().expect("addr").port();
            let mut listeners = vec![first];
            for ip in ["127.0.0.3", "127.0.0.4"] {
                match TcpListener::bind((ip, port)).await {
                    Ok(l) => listeners.push(l),
                    Err(_) => break,
                }
            }
            if listeners.len() == 3 {
                break 'found (port, listeners);
            }
        }
        panic!("no port free on 127.0.0.2-4");
    };
    for (l, name) in listeners.into_iter().zip(["d1", "d2", "d3"]) {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{name}"
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
    }
    port
}

/// A sidecar for pod x/`pod` following the controller at `url`, every connection dialled to
/// `dialled`, logging to `log`, as `more` adds; its outbound listener, once its first view is in
/// force.
async fn sidecar_for(
    (pod, url, creds): (&str, &str, &Path),
    dialled: &str,
    log: &Path,
    more: impl FnOnce(&mut ProxyConfig),
) -> SocketAddr {
    let mut config = ProxyConfig::for_tests(dialled.parse().expect("addr"));
    config.controller = Some(sidecar(url.to_string(), creds, pod));
    config.access_log = AccessLogTarget::File(log.to_path_buf());
    more(&mut config);
    let proxy =
        Proxy::bind(config, portcullis_proxy::policy::waiting_for_controller()).expect("bind");
    let outbound = proxy.addrs(Direction::Outbound)[0];
    let admin = proxy.admin_addr().expect("admin");
    tokio::spawn(async move { proxy.run(Drain::new()).await.expect("run") });
    eventually("the first view is in force", async || {
        get(admin, "/ready", None).await.starts_with("HTTP/1.1 200")
    })
    .await;
    outbound
}

/// The body of a `GET /` through `outbound` ("" when the connection was closed unanswered).
async fn body(outbound: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(outbound).await else {
        return String::new();
    };
    let _ = s
        .write_all(b"GET / HTTP/1.1\r\nHost: api.x\r\nConnection: close\r\n\r\n")
        .await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    out.rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

fn records(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[tokio::test]
async fn a_service_leads_to_its_ready_endpoints_each_judged_as_its_pod() {
    let dir = temp("routing");
    let port = endpoints().await;
    write_text(&dir, &cluster(port));
    let creds = dir.join("creds");
    let url = running(&dir, &creds).await;
    let log = dir.join("a.log");
    let a = sidecar_for(("a", &url, &creds), "127.0.96.1:80", &log, |_| {}).await;

    // In turn: d1, d2, then d3, which a's egress policy does not admit (closed), and again.
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(body(a).await);
    }
    assert_eq!(answers, ["d1", "d2", "", "d1", "d2", ""]);
    let to = |endpoint: &str, verdict: &str| {
        let dst = format!("{endpoint}:{port}");
        records(&log)
            .iter()
            .any(|r| r["service"] == "x/api" && r["dst"] == dst.as_str() && r["verdict"] == verdict)
    };
    eventually("each endpoint is logged with the Service", async || {
        to("127.0.0.2", "allow") && to("127.0.0.3", "allow") && to("127.0.0.4", "deny")
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_service_without_a_ready_endpoint_answers_503_and_refuses_tcp() {
    let dir = temp("routing-empty");
    // b is labelled policy=none, so no egress policy selects it.
    let text = cluster(8080).replace(
        "name: b, namespace: x, labels: {tier: client}",
        "name: b, namespace: x, labels: {tier: client, policy: none}",
    );
    write_text(&dir, &text);
    let creds = dir.join("creds");
    let url = running(&dir, &creds).await;
    let log = dir.join("b.log");
    let b = sidecar_for(("b", &url, &creds), "127.0.96.2:80", &log, |_| {}).await;
    let r = get(b, "/", None).await;
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(r.starts_with("HTTP/1.1 503"), "{r:?}; access log:\n{seen}");
    let mut s = TcpStream::connect(b).await.expect("connect");
    s.write_all(b"\x00\x01not http\r\n").await.expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "TCP refused: {read:?} {out:?}"
    );
    eventually("both are logged with the Service", async || {
        let rs = records(&log);
        let reasons: Vec<&str> = rs
            .iter()
            .filter(|r| r["service"] == "x/empty")
            .filter_map(|r| r["reason"].as_str())
            .collect();
        reasons.len() >= 2
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Namespace x: the workload a, and pod srv at 127.0.0.1 (where the serving sidecar listens)
/// as service account `sa`, injected and annotated `portcullis.dev/mtls: <mtls>`.
fn meshed(sa: &str, mtls: &str) -> String {
    format!(
        "apiVersion: v1
kind: List
items:
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: x}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: a, namespace: x}}, spec: {{containers: []}}, status: {{phase: Running, podIP: 127.0.0.10}}}}
  - {{apiVersion: v1, kind: Pod, metadata: {{name: srv, namespace: x, annotations: {{portcullis.dev/injected: v1, portcullis.dev/mtls: {mtls}}}}}, spec: {{serviceAccountName: {sa}, containers: []}}, status: {{phase: Running, podIP: 127.0.0.1}}}}
"
    )
}

#[tokio::test]
async fn a_meshed_pod_is_reached_over_mtls_and_must_be_that_pod() {
    let dir = temp("routing-mesh");
    write_text(&dir, &meshed("default", "enabled"));
    let creds = dir.join("creds");
    let url = running(&dir, &creds).await;

    // The serving sidecar: x/default, strict, admitting only x/default.
    let strict = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: strict}\nspec:\n  mtls: strict\n  inbound:\n    default: deny\n    rules: [{name: from-x, action: allow, from: [{identity: spiffe://cluster.local/ns/x/sa/default}]}]\n";
    let mut config = ProxyConfig::for_tests(crate::support::http_upstream().await);
    config.identity_dir = Some(creds.join("x-default"));
    config.access_log = AccessLogTarget::File(dir.join("srv.log"));
    let server = Proxy::bind(config, crate::support::loaded(strict)).expect("bind");
    let inbound = server.addrs(Direction::Inbound)[0];
    tokio::spawn(async move { server.run(Drain::new()).await.expect("run") });

    // The calling sidecar, with an identity and the controller's view, and no --mesh-cidrs.
    let log = dir.join("a.log");
    let dialled = inbound.to_string();
    let a = sidecar_for(("a", &url, &creds), &dialled, &log, |c| {
        c.identity_dir = Some(creds.join("x-default"));
        c.policy_poll = Duration::from_millis(50);
    })
    .await;

    assert_eq!(
        body(a).await,
        "upstream",
        "mutual TLS, the identity admitted"
    );
    assert_eq!(
        body(inbound).await,
        "",
        "plaintext is refused: mtls: strict"
    );

    // The controller now says the pod at that address is x/api: the sidecar there (x/default)
    // is not it, and nothing is sent.
    write_text(&dir, &meshed("api", "enabled"));
    eventually("the borrowed address is refused", async || {
        body(a).await.is_empty()
    })
    .await;
    eventually("and logged with both identities", async || {
        records(&log).iter().any(|r| {
            r["reason"].as_str().is_some_and(|s| {
                s.contains("peer is spiffe://cluster.local/ns/x/sa/default")
                    && s.contains("the pod at its address is spiffe://cluster.local/ns/x/sa/api")
            })
        })
    })
    .await;

    // Opted out: plaintext, which the strict server refuses (the second such refusal it
    // logs; the first was the direct attempt above).
    write_text(&dir, &meshed("default", "disabled"));
    let refused = || {
        records(&dir.join("srv.log"))
            .iter()
            .filter(|r| r["rule"] == "mtls" && r["policy"] == "strict")
            .count()
    };
    eventually("the opted-out pod is called in plaintext", async || {
        body(a).await.is_empty() && refused() >= 2
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
