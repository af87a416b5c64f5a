//! Zero-touch identity on the pod bed: namespaces x and y, pods a, b, c in each, every pod its
//! own network namespace with its app, the real `portcullis-init` and the real sidecar (UID
//! 1337) following the real controller, which is the mesh CA. No certificate is prepared for
//! any pod: each sidecar makes its key, proves its pod with its projected-style token (the bed
//! is the token issuer; the controller has its JWKS) and gets its SVID. Then, with real
//! traffic: `identity`/`namespace` rules and a NetworkPolicy `namespaceSelector` match over
//! mutual TLS (`mtls: strict` refuses plaintext), a Service with three endpoints spreads
//! connections and each endpoint is judged as its pod, a capture of our own shows TLS between
//! sidecars and plaintext between app and sidecar, tampered and wrong-audience tokens and a
//! request for an identity the token does not prove get no certificate, and the controller down for a minute under load — while every sidecar renews
//! its certificate — drops no request.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use portcullis_testbed::podnet::{MeshOptions, PodNet};
use portcullis_testbed::process::Process;
use portcullis_testbed::tools;
use serde_json::Value;

const NAMESPACES: [&str; 2] = ["x", "y"];
const PODS: [&str; 3] = ["a", "b", "c"];
const SERVICE: &str = "10.96.0.10";

/// x's pods a and b serve (`serving: "yes"`), c does not; Service api in x leads to all three.
/// x is strict and admits namespace y on 80 and its own namespace's identities on 81; y/c admits
/// namespace x by a NetworkPolicy namespaceSelector; y/a may send only to serving pods of x.
fn snapshot() -> String {
    let mut out = String::new();
    for (i, ns) in NAMESPACES.into_iter().enumerate() {
        out.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{kubernetes.io/metadata.name: {ns}}}}}\n"));
        for (j, pod) in PODS.into_iter().enumerate() {
            let serving = if pod == "c" { "no" } else { "yes" };
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}, serving: \"{serving}\"}}, annotations: {{portcullis.dev/injected: v1, portcullis.dev/mtls: enabled}}}}\nspec: {{containers: [{{name: app, image: app, ports: [{{name: http, containerPort: 80}}]}}]}}\nstatus: {{phase: Running, podIP: 10.0.{}.{}}}\n",
                i + 1,
                j + 1
            ));
        }
    }
    out.push_str(&format!(
        "---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: x}}
spec: {{clusterIP: {SERVICE}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-1, namespace: x, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: 80}}]
endpoints:
  - {{addresses: [10.0.1.1], targetRef: {{kind: Pod, name: a}}}}
  - {{addresses: [10.0.1.2], targetRef: {{kind: Pod, name: b}}}}
  - {{addresses: [10.0.1.3], targetRef: {{kind: Pod, name: c}}}}
---
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: x-mesh, namespace: x}}
spec:
  mtls: strict
  inbound:
    default: deny
    rules:
      - {{name: from-y, action: allow, ports: [80], from: [{{namespace: y}}]}}
      - {{name: own-namespace, action: allow, ports: [81], from: [{{identity: \"spiffe://cluster.local/ns/x/*\"}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: c-from-x, namespace: y}}
spec:
  podSelector: {{matchLabels: {{pod: c}}}}
  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: x}}}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: a-to-serving, namespace: y}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
    - to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: x}}}}, podSelector: {{matchLabels: {{serving: \"yes\"}}}}}}]
      ports: [{{port: http}}]
"
    ));
    out
}

fn pod(ns: &str, name: &str) -> usize {
    let i = NAMESPACES.iter().position(|n| *n == ns).expect("namespace");
    let j = PODS.iter().position(|p| *p == name).expect("pod");
    i * PODS.len() + j
}

/// `curl url` from inside pod `from`: (HTTP status, `000` when refused; the answering server).
fn curl(bed: &PodNet, from: usize, url: &str) -> Result<(String, String)> {
    let out = bed.pods[from]
        .netns
        .command("curl")
        .args(["-s", "--max-time", "3", "-w", "\n%{http_code}", url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let server = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["server"].as_str().map(str::to_string))
        .unwrap_or_default();
    Ok((code.to_string(), server))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn pods_in_two_namespaces_get_identities_from_the_controller_and_speak_mtls() -> Result<()> {
    let mesh = MeshOptions {
        svid_ttl: "120s".into(),
    };
    let mut bed = PodNet::start_with(&NAMESPACES, &PODS, &snapshot(), Some(mesh))?;
    let issued = metric(
        &bed.controller_admin("/metrics")?,
        "portcullis_controller_svids_issued_total",
    );
    ensure!(issued >= 6.0, "one certificate per pod: {issued}");

    rules_match_identities_over_mtls(&bed)?;
    a_service_spreads_and_judges_each_endpoint(&bed)?;
    the_wire_between_sidecars_is_tls(&bed)?;
    bad_tokens_get_no_certificate(&bed)?;
    controller_away_and_rotation_drop_nothing(&mut bed)?;
    Ok(())
}

fn rules_match_identities_over_mtls(bed: &PodNet) -> Result<()> {
    let cases = [
        (("y", "b"), "10.0.1.1:80", true, "namespace y on 80"),
        (("x", "b"), "10.0.1.1:80", false, "x is not y"),
        (("x", "b"), "10.0.1.1:81", true, "an identity of x on 81"),
        (("y", "b"), "10.0.1.1:81", false, "y's identity is not x's"),
        (
            ("x", "a"),
            "10.0.2.3:80",
            true,
            "NetworkPolicy: namespace x",
        ),
        (
            ("y", "a"),
            "10.0.2.3:80",
            false,
            "NetworkPolicy: not namespace y",
        ),
    ];
    let mut wrong = Vec::new();
    for ((ns, name), target, want, what) in cases {
        let got = bed.probe(pod(ns, name), &[target.to_string()])?[0];
        if got != want {
            wrong.push(format!("{ns}/{name} → {target} ({what}): got {got}"));
        }
    }
    // From the node (no sidecar, plaintext), strict x refuses even where an address would do.
    let plain = bed
        .node
        .command("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
        ])
        .arg("http://10.0.1.1:80/")
        .output()?;
    if String::from_utf8_lossy(&plain.stdout) != "000" {
        wrong.push("plaintext from the node reached strict x/a".into());
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

fn a_service_spreads_and_judges_each_endpoint(bed: &PodNet) -> Result<()> {
    let url = format!("http://{SERVICE}/");
    let mut servers = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..6 {
        let (code, server) = curl(bed, pod("y", "b"), &url)?;
        ensure!(code == "200", "y/b → the Service: {code}");
        *servers.entry(server).or_default() += 1;
    }
    let spread: Vec<(String, usize)> = servers.into_iter().collect();
    ensure!(
        spread == [("x/a".into(), 2), ("x/b".into(), 2), ("x/c".into(), 2)],
        "connections spread over the three endpoints: {spread:?}"
    );
    // y/a may reach only serving pods: x/c, one endpoint in three, is refused.
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(curl(bed, pod("y", "a"), &url)?);
    }
    let refused = answers.iter().filter(|(code, _)| code == "000").count();
    let served: Vec<&str> = answers
        .iter()
        .filter(|(code, _)| code == "200")
        .map(|(_, s)| s.as_str())
        .collect();
    ensure!(
        refused == 2 && served.len() == 4 && !served.contains(&"x/c"),
        "per-endpoint rules: {answers:?}"
    );
    // The log is written in batches: both refusals are in it soon.
    let path = bed.access_log_path(pod("y", "a"));
    let denied = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["service"] == "x/api" && r["dst"] == "10.0.1.3:80")
            .filter(|r| r["verdict"] == "deny")
            .count()
    };
    let logged =
        portcullis_testbed::eventually("both refusals logged", Duration::from_secs(5), || {
            denied() == 2
        });
    logged.with_context(|| {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        format!("the log names the Service and the endpoint:\n{log}")
    })?;
    Ok(())
}

/// Runs `sniff.py` in `netns` on `interface`/`port` while `traffic` runs; its summary.
fn sniffed(
    bed: &PodNet,
    netns: &portcullis_testbed::netns::Netns,
    (interface, port): (&str, u16),
    traffic: impl FnOnce() -> Result<()>,
) -> Result<Value> {
    let out = bed
        .dir()
        .join(format!("sniff-{}-{interface}-{port}.json", netns.name()));
    let mut cmd = netns.command("python3");
    cmd.arg(tools::script("sniff.py"))
        .args([interface, &port.to_string(), "3"])
        .arg(&out)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let mut sniffer = Process::spawn_until_ready("sniff", &mut cmd, Duration::from_secs(5))?;
    traffic()?;
    sniffer.wait_timeout(Duration::from_secs(10))?;
    let text = std::fs::read_to_string(&out)?;
    serde_json::from_str(&text).with_context(|| format!("sniff: {text:?}"))
}

fn the_wire_between_sidecars_is_tls(bed: &PodNet) -> Result<()> {
    let (client, server) = (pod("y", "b"), pod("x", "a"));
    let traffic = || -> Result<()> {
        for _ in 0..3 {
            let (code, _) = curl(bed, client, "http://10.0.1.1/")?;
            ensure!(code == "200", "{code}");
        }
        Ok(())
    };
    // On the server pod's eth0: the wire between the two pods.
    let wire = sniffed(bed, &bed.pods[server].netns, ("eth0", 80), traffic)?;
    ensure!(
        wire["tls_records"].as_u64() > Some(0) && wire["plaintext_http"] == 0,
        "between the sidecars: {wire}"
    );
    // App to sidecar, on the client pod's loopback (the redirected connection to 15001), and
    // sidecar to app on the server pod's.
    let app_side = sniffed(bed, &bed.pods[client].netns, ("lo", 15001), traffic)?;
    ensure!(
        app_side["plaintext_http"].as_u64() > Some(0),
        "client app → sidecar: {app_side}"
    );
    let delivered = sniffed(bed, &bed.pods[server].netns, ("lo", 80), traffic)?;
    ensure!(
        delivered["plaintext_http"].as_u64() > Some(0),
        "sidecar → server app: {delivered}"
    );
    println!("captured: between pods {wire}; app → sidecar {app_side}; sidecar → app {delivered}");
    Ok(())
}

/// The signature of `token` with one character changed.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.trim().chars().collect();
    let i = chars.len() - 5;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn bad_tokens_get_no_certificate(bed: &PodNet) -> Result<()> {
    let creds = bed.dir().join("creds");
    let good = std::fs::read_to_string(creds.join("sa/tokens/x/a"))?;
    // The bed's own issuer, but for another audience.
    let other = bed.dir().join("other-audience");
    std::fs::create_dir_all(other.join("sa"))?;
    std::fs::copy(creds.join("sa/issuer.key"), other.join("sa/issuer.key"))?;
    let made = std::process::Command::new(tools::binary("portcullis-proxy")?)
        .args(["dev-certs", "--out"])
        .arg(&other)
        .args([
            "--token-for",
            "x/a=default",
            "--token-audience",
            "kubernetes",
        ])
        .output()?;
    ensure!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let wrong_audience = std::fs::read_to_string(other.join("sa/tokens/x/a"))?;
    // A good token, but the sidecar asks for another identity than the token proves (the name
    // of another trust domain): the CSR is refused.
    let cases = [
        (
            "tampered",
            tampered(&good),
            "cluster.local",
            "unauthenticated",
        ),
        (
            "wrong audience",
            wrong_audience,
            "cluster.local",
            "unauthenticated",
        ),
        (
            "another identity",
            good.clone(),
            "other.example",
            "identity",
        ),
    ];
    for (what, token, trust_domain, reason) in cases {
        let before = refused(bed, reason)?;
        let dir = bed.dir().join(format!("bad-{}", what.replace(' ', "-")));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("token"), token)?;
        let mut cmd = bed.node.command(
            tools::binary("portcullis-proxy")?
                .to_str()
                .context("path")?,
        );
        cmd.args([
            "run",
            "--identity-from-controller",
            "--trust-domain",
            trust_domain,
        ])
        .arg("--identity-dir")
        .arg(dir.join("identity"))
        .args(["--controller", "https://10.0.0.1:15012", "--controller-ca"])
        .arg(creds.join("ca.crt"))
        .arg("--controller-token")
        .arg(dir.join("token"))
        .args([
            "--pod-name",
            "a",
            "--pod-namespace",
            "x",
            "--admin-addr",
            "127.0.0.1:25020",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let _proxy = Process::spawn(what, &mut cmd)?;
        portcullis_testbed::eventually(what, Duration::from_secs(10), || {
            refused(bed, reason).is_ok_and(|n| n > before)
        })?;
        ensure!(
            !dir.join("identity/tls.crt").exists(),
            "{what}: a certificate was written"
        );
    }
    Ok(())
}

fn refused(bed: &PodNet, reason: &str) -> Result<f64> {
    Ok(metric(
        &bed.controller_admin("/metrics")?,
        &format!("portcullis_controller_svids_refused_total{{reason=\"{reason}\"}}"),
    ))
}

fn renewals(bed: &PodNet, i: usize) -> Result<f64> {
    Ok(metric(
        &bed.admin(i, "/metrics")?,
        "portcullis_identity_reloads_total{result=\"success\"}",
    ))
}

/// `ab` from y/b to x/a for `seconds`, a new connection per request: (complete, failed,
/// non-2xx).
fn load(bed: &PodNet, seconds: u64) -> Result<Process> {
    let mut cmd = bed.pods[pod("y", "b")].netns.command("ab");
    cmd.args([
        "-q",
        "-c",
        "2",
        "-n",
        "10000000",
        "-t",
        &seconds.to_string(),
        "-s",
        "5",
    ])
    .arg("http://10.0.1.1/")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    Process::spawn("ab", &mut cmd)
}

fn controller_away_and_rotation_drop_nothing(bed: &mut PodNet) -> Result<()> {
    let before: Vec<f64> = (0..bed.pods.len())
        .map(|i| renewals(bed, i))
        .collect::<Result<_>>()?;
    bed.stop_controller();
    let started = Instant::now();
    let mut ab = load(bed, 95)?;
    // Away for a minute: every pod stays ready, and its certificate comes due meanwhile.
    while started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(10));
        for i in 0..bed.pods.len() {
            let ready = bed.admin(i, "/ready")?;
            ensure!(
                ready == "ready\n",
                "pod {i} with the controller away: {ready:?}"
            );
        }
    }
    bed.start_controller()?;
    ab.wait_timeout(Duration::from_secs(60))?;
    let report = ab.read_stdout()?;
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
    };
    let complete: u64 = field("Complete requests:").context("ab report")?.parse()?;
    let failed = field("Failed requests:").unwrap_or_default();
    let non_2xx = field("Non-2xx responses:");
    ensure!(
        complete > 500 && failed == "0" && non_2xx.is_none(),
        "under load, the controller away and every certificate renewed:\n{report}"
    );
    for (i, b) in before.iter().enumerate() {
        let now = renewals(bed, i)?;
        if now <= *b {
            bail!("pod {i} did not renew its certificate during the load ({b} → {now})");
        }
    }
    println!("{complete} requests, none failed, the controller away for 60 s, 6 renewals");
    Ok(())
}
