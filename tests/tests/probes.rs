//! Kubelet probes under a default-deny policy: the injector moves HTTP and TCP probes to the
//! admin port (`/app-health/…`, never captured) and hands the originals to the proxy, which runs
//! them against the application from its delivery address. Here the client namespace stands in
//! for the node: the app's own port is refused to it, its probes answer.

use anyhow::Result;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Testbed, TestbedOptions};

const DENY_ALL: &str = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: closed}
spec:
  inbound: {default: deny}
";

#[test]
fn rewritten_probes_reach_the_app_while_the_policy_denies_the_node() -> Result<()> {
    // 8081 listens on the pod IP only, like many apps; 9999 has no listener.
    let probes = r#"{"/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": 8081, "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
                     "/app-health/app/livez": {"tcpSocket": {"port": 9090}},
                     "/app-health/app/startupz": {"tcpSocket": {"port": 9999}}}"#;
    let tb = Testbed::start(TestbedOptions {
        policy: DENY_ALL.into(),
        proxy_args: vec![
            "--app-probes".into(),
            probes.into(),
            "--pod-ip".into(),
            POD_V4.into(),
        ],
        ..TestbedOptions::default()
    })?;
    let code = |url: &str| {
        let c = tb.curl_args(&tb.client, &["-o", "/dev/null", "-w", "%{http_code}", url]);
        format!("{}/{}", c.exit, c.body)
    };
    // The node itself is not allowed to the application…
    assert_ne!(code(&format!("http://{POD_V4}:8081/ready")), "0/200");
    // …but its probes, sent to the admin port, are run by the proxy.
    assert_eq!(
        code(&format!("http://{POD_V4}:15020/app-health/app/readyz")),
        "0/200"
    );
    assert_eq!(
        code(&format!("http://{POD_V4}:15020/app-health/app/livez")),
        "0/200"
    );
    assert_eq!(
        code(&format!("http://{POD_V4}:15020/app-health/app/startupz")),
        "0/503"
    );
    assert_eq!(
        code(&format!("http://{POD_V4}:15020/app-health/other/readyz")),
        "0/404"
    );
    // The app saw the probe request as sent (path and all), from the proxy.
    assert!(
        tb.app_received().iter().any(|l| l == "GET /ready"),
        "{:?}",
        tb.app_received()
    );
    Ok(())
}
