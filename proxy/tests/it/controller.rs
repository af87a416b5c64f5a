//! The sidecar following a real controller (in-process, over real gRPC on loopback): not ready
//! and admitting nothing before the first view; a NetworkPolicy written in pod labels enforced
//! by address once the view arrives; a label change in the controller's source flipping the
//! decision within a second.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis_controller::server::Controller;
use portcullis_controller::settings::{Settings, Source};
use portcullis_proxy::drain::Drain;
use portcullis_proxy::policy::controller::ControllerTarget;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

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
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, snapshot(c_label)).expect("write");
    std::fs::rename(&tmp, dir.join("cluster.yaml")).expect("rename");
}

#[tokio::test]
async fn a_sidecar_enforces_its_controller_view_and_follows_label_changes() {
    let dir = std::env::temp_dir().join(format!("portcullis-ctl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    write(&dir, "c");
    let controller = Controller::bind(Settings {
        source: Source::Dir(dir.clone()),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        source_poll: Duration::from_millis(50),
    })
    .await
    .expect("controller");
    let url = format!("http://{}", controller.api_addr().expect("addr"));

    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.controller = Some(ControllerTarget {
        url,
        namespace: "x".into(),
        pod: "a".into(),
    });
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
