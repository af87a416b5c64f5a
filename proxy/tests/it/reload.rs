//! Hot reload and audit mode, in-process: a real policy file rewritten under a running proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use portcullis_proxy::drain::Drain;
use portcullis_proxy::policy::Workload;
use portcullis_proxy::vocab::Direction;
use portcullis_proxy::{Proxy, ProxyConfig};

use crate::support::{eventually, get, http_upstream};

fn policy(allow: bool) -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p}}\nspec:\n  inbound:\n    default: deny\n    rules:\n      - {{name: gate, action: {}, http: [{{paths: [\"/x\"]}}]}}\n",
        if allow { "allow" } else { "deny" }
    )
}

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(audit: bool, dir: &Dir) -> (SocketAddr, SocketAddr, Drain) {
    start_as(audit, dir, Workload::default()).await
}

async fn start_as(audit: bool, dir: &Dir, workload: Workload) -> (SocketAddr, SocketAddr, Drain) {
    let file = dir.0.join("policy.yaml");
    let loaded = portcullis_proxy::policy::load(&file, &workload).expect("initial policy");
    let mut config = ProxyConfig::for_tests(http_upstream().await);
    config.audit = audit;
    config.policy_source = Some((file, workload));
    config.policy_poll = Duration::from_millis(50);
    let proxy = Proxy::bind(config, loaded).expect("bind");
    let addr = proxy.addrs(Direction::Inbound)[0];
    let admin = proxy.admin_addr().expect("admin");
    let drain = Drain::new();
    let d = drain.clone();
    tokio::spawn(async move { proxy.run(d).await.expect("run") });
    (addr, admin, drain)
}

fn temp_dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("portcullis-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    Dir(d)
}

#[tokio::test]
async fn rewritten_policies_take_effect_and_broken_ones_keep_the_last_good() {
    let dir = temp_dir("swap");
    std::fs::write(dir.0.join("policy.yaml"), policy(false)).expect("write");
    let (addr, admin, drain) = start(false, &dir).await;
    assert!(get(addr, "/x", None).await.starts_with("HTTP/1.1 403"));
    let hash_before = get(admin, "/policy", None).await;

    std::fs::write(dir.0.join("policy.yaml"), policy(true)).expect("write");
    eventually("the allow policy is active", async || {
        get(addr, "/x", None).await.ends_with("upstream")
    })
    .await;
    let hash_after = get(admin, "/policy", None).await;
    assert_ne!(
        hash_before.split("\"hash\"").nth(1),
        hash_after.split("\"hash\"").nth(1)
    );
    assert!(hash_after.contains("\"mode\":\"enforce\""), "{hash_after}");

    // A broken policy: counted, logged, and the last good one stays.
    std::fs::write(
        dir.0.join("policy.yaml"),
        "apiVersion: portcullis.dev/v1alpha1\nkind: Nope\n",
    )
    .expect("write");
    eventually("the failure is counted", async || {
        get(admin, "/metrics", None)
            .await
            .contains("portcullis_policy_reloads_total{result=\"failure\"} 1")
    })
    .await;
    assert!(
        get(addr, "/x", None).await.ends_with("upstream"),
        "the last good policy still applies"
    );
    let metrics = get(admin, "/metrics", None).await;
    assert!(
        metrics.contains("portcullis_policy_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_process_resident_memory_bytes "),
        "{metrics}"
    );
    assert!(
        metrics.contains("portcullis_policy_info{hash="),
        "{metrics}"
    );
    drain.start();
}

#[tokio::test]
async fn audit_mode_logs_would_be_denials_and_lets_traffic_pass() {
    let dir = temp_dir("audit");
    std::fs::write(dir.0.join("policy.yaml"), policy(false)).expect("write");
    let (addr, admin, drain) = start(true, &dir).await;
    assert!(
        get(addr, "/x", None).await.ends_with("upstream"),
        "audit mode passes denied traffic"
    );
    assert!(get(addr, "/y", None).await.ends_with("upstream"));
    let metrics = get(admin, "/metrics", None).await;
    assert!(
        metrics.contains(r#"portcullis_requests_total{direction="inbound",verdict="audit_deny",policy="p",rule="gate",status_class="2xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"portcullis_requests_total{direction="inbound",verdict="audit_deny",policy="",rule="default",status_class="2xx"} 1"#));
    assert!(
        get(admin, "/policy", None)
            .await
            .contains("\"mode\":\"audit\"")
    );
    drain.start();
}

#[tokio::test]
async fn relabelling_the_workload_re_evaluates_which_network_policies_select_it() {
    let dir = temp_dir("labels");
    let podinfo = dir.0.join("podinfo");
    std::fs::create_dir_all(&podinfo).expect("mkdir");
    let labels = podinfo.join("labels");
    std::fs::write(&labels, "app=\"open\"\n").expect("write labels");
    std::fs::write(
        dir.0.join("policy.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: lock, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: locked}}\n  policyTypes: [Ingress]\n",
    )
    .expect("write");
    let workload = Workload {
        labels_file: Some(labels.clone()),
        namespace: Some("shop".into()),
        ..Workload::default()
    };
    let (addr, admin, drain) = start_as(false, &dir, workload).await;
    assert!(
        get(addr, "/x", None).await.ends_with("upstream"),
        "not selected yet"
    );

    // The Downward API rewrites the file when the pod's labels change; the policy file does not.
    std::fs::write(&labels, "app=\"locked\"\n").expect("relabel");
    eventually("the policy now selects the workload", async || {
        !get(addr, "/x", None).await.ends_with("upstream")
    })
    .await;
    assert!(
        get(admin, "/policy", None)
            .await
            .contains("\"applies\":true"),
        "/policy shows the policy as applying"
    );
    std::fs::write(&labels, "app=\"open\"\n").expect("relabel back");
    eventually("the policy lets go again", async || {
        get(addr, "/x", None).await.ends_with("upstream")
    })
    .await;
    drain.start();
}
