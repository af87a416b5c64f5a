//! Two pods, each with its sidecar, talking mutual TLS on the namespace testbed: the client
//! namespace becomes a second pod (its own `portcullis-init` and proxy as UID 1337, identity
//! `a/client`, `--mesh-cidrs` covering the pod); the pod's proxy terminates the TLS and judges
//! the caller by its SPIFFE ID. The wire is checked with iptables string-match counters in the
//! pod's network namespace: plaintext never crosses the client↔pod link, the mesh ALPN does.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use portcullis_testbed::testbed::{POD_UPLINK_V4, POD_V4, POD_V6};
use portcullis_testbed::{Host, Testbed, TestbedOptions};
use serde_json::Value;

const SERVER_POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: server}
spec:
  inbound:
    default: deny
    rules:
      - name: web-from-client
        action: allow
        from: [{identity: spiffe://cluster.local/ns/a/sa/client}]
        ports: [8080]
        http: [{methods: [GET]}]
      - name: metrics-from-ns-b
        action: allow
        from: [{namespace: b}]
        ports: [9090]
        http: [{methods: [GET]}]
"#;

/// The calling pod judges its outbound HTTP, so HTTP is proxied as HTTP inside the tunnel.
const CLIENT_POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: caller}
spec:
  outbound:
    default: allow
    rules:
      - {name: no-blocked, action: deny, http: [{paths: [/blocked]}]}
"#;

const MESH: &str = "10.77.1.0/24,fd77:1::/64";

/// Starts the testbed with the pod's proxy holding `shop/server` and returns it with the
/// certificate directory.
fn start() -> Result<(Testbed, std::path::PathBuf)> {
    let mut tb = Testbed::start(TestbedOptions {
        policy: SERVER_POLICY.to_string(),
        proxy: false,
        ..TestbedOptions::default()
    })?;
    let certs = tb.dev_certs("certs", "24h", &["a/client", "b/other", "shop/server"])?;
    let server = certs.join("shop-server");
    tb.set_proxy_args(&[
        "--identity-dir",
        server.to_str().context("path")?,
        "--policy-poll",
        "200ms",
    ]);
    tb.start_proxy()?;
    Ok((tb, certs))
}

fn client_sidecar(tb: &mut Testbed, identity: &std::path::Path) -> Result<()> {
    let id = identity.to_str().context("path")?;
    tb.start_client_sidecar(
        CLIENT_POLICY,
        &[
            "--identity-dir",
            id,
            "--mesh-cidrs",
            MESH,
            "--policy-poll",
            "200ms",
        ],
    )
}

/// Adds a counting rule to the pod's raw PREROUTING for packets on `dev` carrying `text`.
fn count_on_wire(tb: &Testbed, dev: &str, text: &str) -> Result<()> {
    tb.pod.exec(
        "iptables",
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-i",
            dev,
            "-p",
            "tcp",
            "-m",
            "string",
            "--string",
            text,
            "--algo",
            "bm",
            "-j",
            "ACCEPT",
        ],
    )?;
    Ok(())
}

/// Packets counted by the rule for `dev` and `text`.
fn counted(tb: &Testbed, dev: &str, text: &str) -> Result<u64> {
    let out = tb.pod.exec(
        "iptables",
        &["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
    )?;
    out.lines()
        .find(|l| l.contains(&format!("\"{text}\"")) && l.split_whitespace().any(|w| w == dev))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no counter for {dev} {text:?} in:\n{out}"))
}

fn status(tb: &Testbed, url: &str) -> String {
    let c = tb.curl_args(&tb.client, &["-o", "/dev/null", "-w", "%{http_code}", url]);
    format!("{}/{}", c.exit, c.body)
}

fn pod_log_has(tb: &Testbed, what: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = tb.access_log()?;
        if log.iter().any(&what) {
            return Ok(log);
        }
        if Instant::now() > deadline {
            bail!("no matching access log line in {log:#?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sidecars_speak_mtls_and_identity_rules_decide() -> Result<()> {
    let (mut tb, certs) = start()?;
    for (dev, text) in [
        ("eth0", "GET /wire-check"),
        ("eth0", "portcullis-mtls/1"),
        ("eth1", "GET /wire-check"),
    ] {
        count_on_wire(&tb, dev, text)?;
    }
    client_sidecar(&mut tb, &certs.join("a-client"))?;

    // a/client reaches the web port, over v4 and v6; the application gets plain HTTP.
    let body = tb
        .curl(&tb.client, &format!("http://{POD_V4}:8080/wire-check"))
        .json()?;
    assert_eq!(body["path"], "/wire-check");
    assert_eq!(
        tb.curl(&tb.client, &format!("http://[{POD_V6}]:8080/v6"))
            .json()?["path"],
        "/v6"
    );
    let log = pod_log_has(&tb, |l| l["path"] == "/wire-check")?;
    let line = log
        .iter()
        .find(|l| l["path"] == "/wire-check")
        .context("line")?;
    assert_eq!(line["identity"], "spiffe://cluster.local/ns/a/sa/client");
    assert_eq!(line["rule"], "web-from-client");
    assert_eq!(line["verdict"], "allow");
    // The calling sidecar still applies its own outbound rules.
    assert_eq!(
        status(&tb, &format!("http://{POD_V4}:8080/blocked")),
        "0/403"
    );
    // Only namespace b may use 9090.
    assert_eq!(status(&tb, &format!("http://{POD_V4}:9090/m")), "0/502");
    pod_log_has(&tb, |l| {
        l["identity"] == "spiffe://cluster.local/ns/a/sa/client"
            && l["dst"].as_str().is_some_and(|d| d.ends_with(":9090"))
            && l["verdict"] == "deny"
    })?;

    // On the wire between the pods: TLS with the mesh ALPN, never the request in clear.
    assert_eq!(counted(&tb, "eth0", "GET /wire-check")?, 0);
    assert!(counted(&tb, "eth0", "portcullis-mtls/1")? >= 1);

    // An unauthenticated peer (the upstream host, no sidecar) is refused. Its plaintext request
    // is seen by the same kind of counter on its link: the counters do see clear text.
    let c = tb.curl(
        &tb.upstream,
        &format!("http://{POD_UPLINK_V4}:8080/wire-check"),
    );
    assert_ne!(c.exit, 0, "unauthenticated peer admitted: {}", c.body);
    assert!(counted(&tb, "eth1", "GET /wire-check")? >= 1);
    pod_log_has(&tb, |l| {
        l["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("10.77.2.2:"))
            && l["verdict"] == "deny"
            && l.get("identity").is_none()
    })?;

    // Another workload's certificate (same CA): authenticated as b/other — refused on the web
    // port, admitted on 9090 by the namespace rule.
    client_sidecar(&mut tb, &certs.join("b-other"))?;
    assert_eq!(status(&tb, &format!("http://{POD_V4}:8080/x")), "0/502");
    assert_eq!(status(&tb, &format!("http://{POD_V4}:9090/m")), "0/200");
    pod_log_has(&tb, |l| {
        l["identity"] == "spiffe://cluster.local/ns/b/sa/other"
            && l["rule"] == "metrics-from-ns-b"
            && l["verdict"] == "allow"
    })?;

    // A certificate from a CA the pod does not trust: the handshake is refused and counted.
    let foreign = tb.dev_certs("foreign", "24h", &["a/client"])?;
    client_sidecar(&mut tb, &foreign.join("a-client"))?;
    assert_ne!(status(&tb, &format!("http://{POD_V4}:8080/x")), "0/200");
    pod_log_has(&tb, |l| {
        l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("mTLS handshake failed"))
    })?;
    let metrics = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "portcullis_mtls_handshakes_total{direction=\"inbound\",result=\"failure\""
        ) && !l.ends_with(" 0")),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn certificate_rotation_during_traffic_fails_no_request() -> Result<()> {
    let (mut tb, certs) = start()?;
    client_sidecar(&mut tb, &certs.join("a-client"))?;
    let expiry = |tb: &Testbed, host: Host| -> Option<String> {
        tb.curl(tb.ns(host), "http://127.0.0.1:15020/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_identity_expiry_timestamp_seconds "))
            .map(str::to_string)
    };
    let before = (expiry(&tb, Host::Client), expiry(&tb, Host::Pod));
    let url = format!("http://{POD_V4}:8080/r");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (mut ok, mut failed) = (0, Vec::new());
    std::thread::scope(|s| -> Result<()> {
        let traffic = s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match status(&tb, &url).as_str() {
                    "0/200" => ok += 1,
                    other => failed.push(other.to_string()),
                }
            }
        });
        // Re-issue both workloads' certificates (same CA, new keys, longer validity) three
        // times, rewriting the files in place under the running sidecars.
        for validity in ["48h", "72h", "96h"] {
            std::thread::sleep(Duration::from_millis(700));
            tb.dev_certs("certs", validity, &["a/client", "shop/server"])?;
        }
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        traffic
            .join()
            .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?;
        Ok(())
    })?;
    assert!(failed.is_empty(), "{ok} ok, failed: {failed:?}");
    assert!(ok >= 10, "too little traffic to mean anything: {ok}");
    let after = (expiry(&tb, Host::Client), expiry(&tb, Host::Pod));
    assert!(
        after.0 != before.0 && after.1 != before.1,
        "both sidecars rotated: {before:?} → {after:?}"
    );
    Ok(())
}
