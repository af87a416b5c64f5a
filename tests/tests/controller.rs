//! The controller end to end on the namespace testbed: the real `portcullis-controller` on a
//! `dir` source in the upstream namespace, the real sidecar (UID 1337, real capture rules) in
//! the pod following it with `--controller`, real curl from the client. The two NetworkPolicies
//! users bring — a `podSelector` ingress policy and a `namespaceSelector` one — are enforced by
//! the client's address, and a label change in the source flips the answer within a second.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use portcullis_testbed::credentials::ApiCredentials;
use portcullis_testbed::testbed::{CLIENT_V4, POD_V4, UPSTREAM_V4};
use portcullis_testbed::tools;
use portcullis_testbed::{Host, Testbed, TestbedOptions};

/// The cluster as the controller sees it: the testbed pod is `shop/web` (app=web); the client
/// is `clients/frontend` (app=`client_app`) in a namespace labelled env=`env`.
fn snapshot(client_app: &str, env: &str) -> String {
    format!(
        "apiVersion: v1
kind: List
items:
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: shop}}}}
  - {{apiVersion: v1, kind: Namespace, metadata: {{name: clients, labels: {{env: {env}}}}}}}
  - apiVersion: v1
    kind: Pod
    metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
    spec: {{containers: [{{name: app, image: web, ports: [{{name: http, containerPort: 8080}}]}}]}}
    status: {{phase: Running, podIP: {POD_V4}}}
  - apiVersion: v1
    kind: Pod
    metadata: {{name: frontend, namespace: clients, labels: {{app: {client_app}}}}}
    spec: {{containers: []}}
    status: {{phase: Running, podIP: {CLIENT_V4}}}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: web-from-frontend, namespace: shop}}
    spec:
      podSelector: {{matchLabels: {{app: web}}}}
      ingress:
        - from:
            - namespaceSelector: {{}}
              podSelector: {{matchLabels: {{app: frontend}}}}
          ports: [{{port: http}}]
        - from: [{{namespaceSelector: {{matchLabels: {{env: production}}}}}}]
          ports: [{{port: 8081}}]
"
    )
}

fn write(dir: &Path, client_app: &str, env: &str) -> Result<()> {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, snapshot(client_app, env))?;
    std::fs::rename(&tmp, dir.join("cluster.yaml"))?;
    Ok(())
}

/// Polls `url` from the client until its HTTP status is `want` (000 when refused); returns how
/// long that took, or fails after 5 s.
fn until(tb: &Testbed, url: &str, want: &str) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let got = tb
            .curl_args(
                &tb.client,
                &[
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "1",
                    url,
                ],
            )
            .body;
        if got == want {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "{url}: still {got}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes a directory when dropped (also when the test fails).
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_sidecar_enforces_network_policies_written_in_labels_via_the_controller() -> Result<()> {
    // TLS and tokens as in a cluster: the sidecar proves it is shop/web.
    let creds_dir = std::env::temp_dir().join(format!("portcullis-e2e-ctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&creds_dir);
    let creds = ApiCredentials::make(&creds_dir, UPSTREAM_V4, &[("shop".into(), "web".into())])?;
    let _cleanup = RemoveOnDrop(creds_dir.clone());
    let mut tb = Testbed::start(TestbedOptions {
        proxy: false,
        proxy_args: creds.proxy_args(&format!("https://{UPSTREAM_V4}:15012"), "shop", "web"),
        ..TestbedOptions::default()
    })?;
    // The pod's app answers on 8080 and 8081 already.
    let source = tb.dir().join("cluster");
    std::fs::create_dir_all(&source)?;
    write(&source, "frontend", "production")?;
    let controller = tools::binary("portcullis-controller")?;
    let mut args: Vec<String> = [
        "--source",
        &format!("dir:{}", source.display()),
        "--api-addr",
        &format!("{UPSTREAM_V4}:15012"),
        "--admin-addr",
        &format!("{UPSTREAM_V4}:15014"),
        "--source-poll",
        "200ms",
    ]
    .map(String::from)
    .to_vec();
    args.extend(creds.controller_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tb.spawn(
        Host::Upstream,
        "controller",
        controller.to_str().context("path")?,
        &args,
    )?;
    // Ready only once the controller's first view is in force.
    tb.start_proxy()?;

    let web = format!("http://{POD_V4}:8080/hello");
    let other = format!("http://{POD_V4}:8081/hello");
    until(&tb, &web, "200").context("podSelector peer: app=frontend reaches web:http")?;
    until(&tb, &other, "200").context("namespaceSelector peer: env=production reaches 8081")?;

    // Relabel the client pod: the podSelector rule lets go within a second.
    write(&source, "other", "production")?;
    let took = until(&tb, &web, "000")?;
    assert!(took < Duration::from_secs(1), "pod relabel took {took:?}");
    until(&tb, &other, "200")?;

    // Relabel the client's namespace: the namespaceSelector rule lets go too.
    write(&source, "other", "staging")?;
    let took = until(&tb, &other, "000")?;
    assert!(
        took < Duration::from_secs(1),
        "namespace relabel took {took:?}"
    );

    // And back: the pod is admitted again on both ports.
    write(&source, "frontend", "production")?;
    until(&tb, &web, "200")?;
    until(&tb, &other, "200")?;
    // Fail static: with the controller gone, the last good view stays in force.
    tb.stop_spawned("controller")?;
    std::thread::sleep(Duration::from_millis(300));
    until(&tb, &web, "200").context("still admitted with the controller away")?;
    write(&source, "other", "staging")?;
    std::thread::sleep(Duration::from_millis(500));
    until(&tb, &web, "200")
        .context("nothing changes for a running pod while the controller is away")?;
    let metrics = tb
        .curl(&tb.client, &format!("http://{POD_V4}:15020/metrics"))
        .body;
    assert!(
        metrics.contains("portcullis_controller_connected 0"),
        "{metrics}"
    );
    let log = tb.access_log()?;
    assert!(
        log.iter()
            .any(|l| l["policy"] == "web-from-frontend" && l["rule"] == "ingress[0]"),
        "decisions name the NetworkPolicy: {log:#?}"
    );
    Ok(())
}
