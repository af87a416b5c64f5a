//! Identity material under a running proxy: expiry shows on /ready and in metrics, rotation by
//! rewriting the files is picked up, bad material is refused at start.

use std::path::Path;
use std::time::Duration;

use portcullis_config::{CompiledPolicy, LoadedPolicy};
use portcullis_proxy::commands::dev_certs::write_dev_certs;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::policy::Workload;
use portcullis_proxy::{Proxy, ProxyConfig};

use crate::support::{eventually, get};

/// Writes fresh material valid for `validity` into `dir` (the identity directory).
fn material(root: &Path, dir: &Path, validity: Duration) {
    let made = write_dev_certs(
        &root.join("gen"),
        "cluster.local",
        &["app/web".into()],
        validity,
    )
    .expect("certs");
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(made[0].join(f), dir.join(f)).expect("copy");
    }
}

/// A running proxy with valid material in `root/identity`, re-read every 50 ms.
struct Started {
    dir: std::path::PathBuf,
    admin: std::net::SocketAddr,
    drain: Drain,
    task: tokio::task::JoinHandle<()>,
}

fn start(root: &Path) -> Started {
    let dir = root.join("identity");
    std::fs::create_dir_all(&dir).expect("mkdir");
    material(root, &dir, Duration::from_secs(3600));
    std::fs::write(root.join("policy.yaml"), "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: open}\nspec: {}\n").expect("policy");
    let mut config = ProxyConfig::for_tests("127.0.0.1:9".parse().expect("addr"));
    config.identity_dir = Some(dir.clone());
    config.policy_source = Some((root.join("policy.yaml"), Workload::default()));
    config.policy_poll = Duration::from_millis(50);
    let loaded = LoadedPolicy {
        policy: CompiledPolicy::default(),
        warnings: Vec::new(),
        hash: "x".into(),
    };
    let proxy = Proxy::bind(config, loaded).expect("bind");
    let admin = proxy.admin_addr().expect("admin");
    let drain = Drain::new();
    let d = drain.clone();
    let task = tokio::spawn(async move { proxy.run(d).await.expect("run") });
    Started {
        dir,
        admin,
        drain,
        task,
    }
}

#[tokio::test]
async fn expiry_and_rotation_are_seen_without_a_restart() {
    let root = std::env::temp_dir().join(format!("portcullis-identity-{}", std::process::id()));
    let Started {
        dir,
        admin,
        drain,
        task,
    } = start(&root);

    assert!(get(admin, "/ready", None).await.ends_with("ready\n"));
    let expiry = |m: &str| -> i64 {
        m.lines()
            .find_map(|l| l.strip_prefix("portcullis_identity_expiry_timestamp_seconds "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let first = expiry(&get(admin, "/metrics", None).await);
    assert!(first > 0);

    // Rotate to material that expires in a second: the proxy picks it up and, once it has
    // expired, says so on /ready.
    material(&root, &dir, Duration::from_secs(1));
    eventually("the short-lived material rotated in", async || {
        expiry(&get(admin, "/metrics", None).await) < first
    })
    .await;
    eventually("/ready reports the expired certificate", async || {
        get(admin, "/ready", None).await.contains("503")
            && get(admin, "/ready", None)
                .await
                .ends_with("identity certificate expired\n")
    })
    .await;

    // Rotate to valid material again: ready again, no restart.
    material(&root, &dir, Duration::from_secs(3600));
    eventually("ready again after rotation", async || {
        get(admin, "/ready", None).await.ends_with("ready\n")
    })
    .await;

    drain.start();
    task.await.expect("proxy");

    // Bad material is refused before anything is bound.
    std::fs::write(dir.join("tls.key"), "not a key").expect("write");
    let mut config = ProxyConfig::for_tests("127.0.0.1:9".parse().expect("addr"));
    config.identity_dir = Some(dir.clone());
    let loaded = LoadedPolicy {
        policy: CompiledPolicy::default(),
        warnings: Vec::new(),
        hash: "x".into(),
    };
    let err = Proxy::bind(config, loaded).expect_err("bad key");
    assert!(
        err.to_string()
            .contains("tls.key: no private key in PEM form"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn rotation_refuses_untrusted_or_expired_material_and_keeps_the_last_good() {
    let root = std::env::temp_dir().join(format!("portcullis-identity-bad-{}", std::process::id()));
    let Started {
        dir,
        admin,
        drain,
        task,
    } = start(&root);
    let metric = async |name: &str| -> String {
        let m = get(admin, "/metrics", None).await;
        m.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let expiry = metric("portcullis_identity_expiry_timestamp_seconds ").await;
    assert_eq!(
        metric("portcullis_identity_reloads_total{result=\"failure\"}").await,
        "0"
    );

    // A certificate from another CA under the pod's own ca.crt: refused, the old one kept.
    let other = write_dev_certs(
        &root.join("other"),
        "cluster.local",
        &["app/web".into()],
        Duration::from_secs(3600),
    )
    .expect("other CA");
    for f in ["tls.crt", "tls.key"] {
        std::fs::copy(other[0].join(f), dir.join(f)).expect("copy");
    }
    eventually("the untrusted material is refused", async || {
        metric("portcullis_identity_reloads_total{result=\"failure\"}").await == "1"
    })
    .await;
    assert_eq!(
        metric("portcullis_identity_expiry_timestamp_seconds ").await,
        expiry
    );
    assert!(get(admin, "/ready", None).await.ends_with("ready\n"));
    // Reported once, not on every poll.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        metric("portcullis_identity_reloads_total{result=\"failure\"}").await,
        "1"
    );

    // An expired certificate from the right CA: refused too, and /ready stays ready.
    let stale = root.join("stale");
    std::fs::create_dir_all(&stale).expect("mkdir");
    material(&root, &stale, Duration::ZERO);
    // Past its not-after (which has a one-second resolution) before it is rotated in.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for f in ["tls.crt", "tls.key", "ca.crt"] {
        std::fs::copy(stale.join(f), dir.join(f)).expect("copy");
    }
    // (Copied file by file, a half-written set may be refused on the way: at least once more.)
    eventually("the expired material is refused", async || {
        metric("portcullis_identity_reloads_total{result=\"failure\"}")
            .await
            .parse::<u32>()
            .is_ok_and(|n| n >= 2)
    })
    .await;
    assert_eq!(
        metric("portcullis_identity_expiry_timestamp_seconds ").await,
        expiry
    );
    assert!(get(admin, "/ready", None).await.ends_with("ready\n"));
    assert_eq!(
        metric("portcullis_identity_reloads_total{result=\"success\"}").await,
        "0"
    );
    drain.start();
    task.await.expect("proxy");
    let _ = std::fs::remove_dir_all(&root);
}
