//! The `check` and `explain` subcommands, run as the real binary on policy files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis-proxy"))
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(files: &[(&str, &str)]) -> Dir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("portcullis-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    for (name, text) in files {
        std::fs::write(d.join(name), text).expect("write");
    }
    Dir(d)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const POLICY: &str = "\
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: orders}
spec:
  inbound:
    default: deny
    rules:
      - name: office
        action: allow
        from: [{cidr: 10.0.0.0/16}]
        ports: [8080]
      - name: no-admin
        action: deny
        http: [{paths: [\"/admin/*\"]}]
      - name: reads
        action: allow
        http: [{methods: [GET], paths: [\"/api/*\"]}]
";

const NETPOL: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
";

#[test]
fn check_summarizes_valid_sources_and_warns_about_unseeable_selectors() {
    let d = dir(&[
        ("a.yaml", POLICY),
        ("b.yml", NETPOL),
        ("labels", "app=\"web\"\n"),
    ]);
    let o = bin()
        .arg("check")
        .arg(&d.0)
        .arg("--workload-labels")
        .arg(d.0.join("labels"))
        .output()
        .expect("run");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("a.yaml: AccessPolicy \"orders\": 3 inbound rules, 0 outbound rules\n"),
        "{out}"
    );
    assert!(
        out.contains("b.yml: NetworkPolicy \"web\": 1 inbound rule, 0 outbound rules\n"),
        "{out}"
    );
    assert!(out.contains("valid (2 documents, hash "), "{out}");
    assert!(
        err.contains("b.yml:7:14: warning: podSelector with labels: a sidecar cannot see it"),
        "{err}"
    );
}

#[test]
fn check_reports_every_error_with_its_location_and_exits_1() {
    let bad = POLICY
        .replace("10.0.0.0/16", "10.0.0.0/99")
        .replace("[8080]", "[0]");
    let d = dir(&[("bad.yaml", &bad), ("good.yaml", NETPOL)]);
    let o = bin().arg("check").arg(&d.0).output().expect("run");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let file = d.0.join("bad.yaml").display().to_string();
    assert!(
        err.contains(&format!("{file}:10:23: invalid CIDR \"10.0.0.0/99\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:11:17: invalid port")),
        "{err}"
    );
    assert!(err.contains("invalid (2 errors)"), "{err}");
    assert!(out.is_empty(), "nothing is reported as loaded: {out}");
}

fn explain(d: &Dir, args: &[&str]) -> (i32, String) {
    let o = bin()
        .arg("explain")
        .arg("--policy")
        .arg(d.0.join("p.yaml"))
        .args(args)
        .output()
        .expect("run");
    (o.status.code().unwrap_or(-1), text(&o).0)
}

#[test]
fn explain_allows_denies_and_errors_with_a_trace() {
    let d = dir(&[("p.yaml", POLICY)]);
    let base = [
        "--direction",
        "inbound",
        "--src",
        "10.0.1.1:5555",
        "--dst",
        "10.9.9.9:8080",
    ];
    let (code, out) = explain(
        &d,
        &[&base[..], &["--method", "GET", "--path", "/api/x"]].concat(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allow\nrule: orders/office\n"), "{out}");
    assert!(
        out.contains("orders/no-admin (Deny): no http entry matches GET /api/x"),
        "{out}"
    );

    let (code, out) = explain(
        &d,
        &[&base[..], &["--method", "GET", "--path", "/api/../admin/x"]].concat(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("deny\nrule: orders/no-admin\n"), "{out}");
    assert!(out.contains("normalized from \"/api/../admin/x\""), "{out}");

    let (code, out) = explain(&d, &[&base[..], &["--path", "/a%2Fb"]].concat());
    assert_eq!((code, out.lines().next()), (1, Some("deny")), "{out}");
    assert!(out.contains("rejected with 400: encoded slash"), "{out}");

    // Without request details the connection is judged as non-HTTP traffic: fail closed.
    let (code, out) = explain(&d, &base);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("deny\nrule: orders/no-admin\n"), "{out}");

    let (code, out) = explain(
        &d,
        &[
            "--direction",
            "inbound",
            "--src",
            "nope",
            "--dst",
            "10.0.0.1:1",
        ],
    );
    assert_eq!((code, out.lines().next()), (2, Some("error")), "{out}");
    let missing = dir(&[]);
    let o = bin()
        .args([
            "explain",
            "--direction",
            "inbound",
            "--src",
            "1.1.1.1",
            "--dst",
            "1.1.1.1:1",
            "--policy",
        ])
        .arg(missing.0.join("none.yaml"))
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).0.starts_with("error\n"));
}

#[test]
fn run_refuses_an_invalid_policy_before_binding_anything() {
    let d = dir(&[(
        "bad.yaml",
        "apiVersion: portcullis.dev/v1alpha1\nkind: Nope\nmetadata: {name: x}\nspec: {}\n",
    )]);
    // Ports that would collide if anything were bound: nothing is.
    let o = bin()
        .args(["run", "--admin-addr", "127.0.0.1:1", "--policy"])
        .arg(d.0.join("bad.yaml"))
        .output()
        .expect("run");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.yaml:2:7: unsupported kind \"Nope\""),
        "{err}"
    );
    assert!(!err.contains("bind"), "{err}");
    let o = bin().args(["run"]).output().expect("run");
    assert_eq!(o.status.code(), Some(2), "--policy is required");
    // A missing source is an error, never an allow-all.
    let o = bin()
        .args(["run", "--admin-addr", "127.0.0.1:1", "--policy"])
        .arg(d.0.join("missing.yaml"))
        .output()
        .expect("run");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missing.yaml: No such file or directory"),
        "{err}"
    );
}

/// How often `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn errors_name_each_cause_once() {
    let d = dir(&[("p.yaml", POLICY)]);
    // A missing identity directory: the file, then the OS error, once.
    let o = bin()
        .args([
            "run",
            "--inbound-port",
            "0",
            "--outbound-port",
            "1",
            "--admin-addr",
            "127.0.0.1:0",
            "--access-log",
            "off",
            "--policy",
        ])
        .arg(d.0.join("p.yaml"))
        .arg("--identity-dir")
        .arg(d.0.join("no-such-dir"))
        .output()
        .expect("run");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("portcullis-proxy: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(line.contains("no-such-dir/tls.crt"), "{line}");
    assert_eq!(count(line, "No such file or directory"), 1, "{line}");
    // A missing policy source through `check`: once too.
    let o = bin()
        .arg("check")
        .arg(d.0.join("missing.yaml"))
        .output()
        .expect("check");
    let (_, err) = text(&o);
    assert_eq!(count(&err, "No such file or directory"), 1, "{err}");
    // dev-certs into a path that cannot be a directory.
    let o = bin()
        .args(["dev-certs", "--out"])
        .arg(d.0.join("p.yaml").join("sub"))
        .arg("a/b")
        .output()
        .expect("dev-certs");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(count(&err, "Not a directory"), 1, "{err}");
}

#[test]
fn sigterm_drains_even_after_stderr_is_gone_and_piped_logs_have_no_colours() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let d = dir(&[("p.yaml", POLICY)]);
    // Two ports free now (the listeners bind every address, so loopback ones will not do).
    let free = || {
        std::net::TcpListener::bind("0.0.0.0:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
            .to_string()
    };
    /// Kills the proxy however the test ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Another test may take a "free" port before the proxy binds it: then try other ports.
    let (mut child, stderr) = (0..5)
        .find_map(|_| {
            let (inbound, outbound) = (free(), free());
            let mut child = bin()
                .args([
                    "run",
                    "--inbound-port",
                    &inbound,
                    "--outbound-port",
                    &outbound,
                ])
                .args([
                    "--admin-addr",
                    "127.0.0.1:0",
                    "--access-log",
                    "off",
                    "--policy",
                ])
                .arg(d.0.join("p.yaml"))
                .stderr(Stdio::piped())
                .spawn()
                .map(Reap)
                .expect("spawn");
            let mut stderr = BufReader::new(child.0.stderr.take().expect("stderr"));
            let mut line = String::new();
            while !line.contains("serving") {
                line.clear();
                if stderr.read_line(&mut line).expect("read") == 0 {
                    return None; // exited early (a port was taken)
                }
                assert!(
                    !line.contains('\u{1b}'),
                    "ANSI escape in a piped log: {line:?}"
                );
            }
            Some((child, stderr))
        })
        .expect("the proxy started on one of five port pairs");
    // `run … 2>&1 | head -2`: the reader goes away, then the operator asks it to stop.
    drop(stderr);
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM did not drain: {status:?}"
    );
}

/// The upstream e2e layout as `kubectl get -A -o yaml` writes it: namespaces x, y, z (label
/// `ns`), pods a, b, c in each (label `pod`) at 10.9.<ns>.<pod>, and two policies: the two
/// examples users bring — a podSelector ingress policy and a namespaceSelector one.
fn e2e_snapshot() -> String {
    let mut items = String::new();
    for (i, ns) in ["x", "y", "z"].into_iter().enumerate() {
        items.push_str(&format!(
            "  - {{apiVersion: v1, kind: Namespace, metadata: {{name: {ns}, labels: {{ns: {ns}}}}}}}\n"
        ));
        for (j, pod) in ["a", "b", "c"].into_iter().enumerate() {
            let ip = format!("10.9.{}.{}", i + 1, j + 1);
            items.push_str(&format!(
                "  - apiVersion: v1\n    kind: Pod\n    metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\n    spec: {{serviceAccountName: sa-{pod}, containers: [{{name: app, image: agnhost, ports: [{{name: serve-80-tcp, containerPort: 80}}]}}]}}\n    status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
            ));
        }
    }
    items.push_str(
        "  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: allow-from-b, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: a}}
      ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: allow-from-y, namespace: x}
    spec:
      podSelector: {matchLabels: {pod: c}}
      ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: serve-80-tcp}]}]
",
    );
    format!("apiVersion: v1\nkind: List\nitems:\n{items}")
}

#[test]
fn explain_and_check_judge_a_cluster_snapshot_pod_to_pod() {
    let d = dir(&[("cluster.yaml", &e2e_snapshot())]);
    let snapshot = d.0.join("cluster.yaml");
    let snapshot = snapshot.to_str().expect("utf-8");
    let ask = |src: &str, dst: &str| {
        let o = bin()
            .args(["explain", "--cluster", snapshot, "--direction", "inbound"])
            .args(["--src", src, "--dst", dst])
            .output()
            .expect("explain");
        (o.status.code().unwrap_or(-1), text(&o).0)
    };
    // x/a admits only pods labelled pod=b of its own namespace.
    let (code, out) = ask("10.9.1.2", "10.9.1.1:80");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("allow\nrule: allow-from-b/ingress[0]\n"),
        "{out}"
    );
    assert!(out.contains("workload: pod x/a"), "{out}");
    assert!(
        out.contains("peer: pod x/b (spiffe://cluster.local/ns/x/sa/sa-b)"),
        "{out}"
    );
    assert_eq!(
        ask("10.9.2.2", "10.9.1.1:80").0,
        1,
        "y/b is pod=b of another namespace"
    );
    assert_eq!(ask("10.9.1.3", "10.9.1.1:80").0, 1, "x/c is not pod=b");
    // x/c admits every pod of namespace y on its named port serve-80-tcp.
    for src in ["10.9.2.1", "10.9.2.2", "10.9.2.3"] {
        assert_eq!(ask(src, "10.9.1.3:80").0, 0, "{src}");
    }
    assert_eq!(ask("10.9.3.1", "10.9.1.3:80").0, 1, "z is not selected");
    assert_eq!(ask("10.9.2.1", "10.9.1.3:81").0, 1, "only the named port");
    // x/b is selected by no policy: open.
    assert_eq!(ask("10.9.3.3", "10.9.1.2:80").0, 0);
    let (code, out) = ask("10.9.3.3", "10.9.7.7:80");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no pod of the snapshot has the address 10.9.7.7"),
        "{out}"
    );

    let o = bin()
        .args(["check", "--cluster", snapshot])
        .output()
        .expect("check");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("x/a: inbound isolated, 1 rule, outbound open; selected by: allow-from-b\n"),
        "{out}"
    );
    assert!(
        out.contains("x/b: inbound open, outbound open; selected by: none\n"),
        "{out}"
    );
    assert!(
        out.contains("x/c: inbound isolated, 1 rule, outbound open; selected by: allow-from-y\n"),
        "{out}"
    );
    assert!(
        out.contains("valid (3 namespaces, 9 pods, 2 policy documents)"),
        "{out}"
    );
    assert!(
        err.is_empty(),
        "nothing unseeable once the cluster is known: {err}"
    );
}

#[test]
fn check_cluster_holds_stored_policies_to_the_snapshots_guardrails() {
    let cluster = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: dev}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: open, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out, namespace: dev}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n";
    let enforce = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: shut}\nspec:\n  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}\n  rules: {forbidAllowAll: true}\n";
    let audit = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: ingress}\nspec: {mode: audit, rules: {requireIngress: true}}\n";
    let d = dir(&[
        ("cluster.yaml", cluster),
        ("g1.yaml", enforce),
        ("g2.yaml", audit),
    ]);
    let check = || {
        let o = bin()
            .args(["check", "--cluster"])
            .arg(&d.0)
            .output()
            .expect("check");
        let (out, err) = text(&o);
        (o.status.code(), out, err)
    };
    let (code, out, err) = check();
    assert_eq!(code, Some(1), "an enforced guardrail is broken: {out}{err}");
    assert!(
        err.contains(
            "cluster.yaml:14:13: guardrail shut: forbidAllowAll: ingress rule 1 allows every peer"
        ),
        "{err}"
    );
    assert!(
        err.contains("cluster.yaml:21:17: guardrail ingress (audit): requireIngress: NetworkPolicy \"out\" does not restrict ingress"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 2, "dev is not judged by shut: {err}");
    assert!(
        out.contains("2 guardrails: 1 violation enforced, 1 audit-only"),
        "{out}"
    );
    // Audit-only findings do not fail it.
    std::fs::remove_file(d.0.join("g1.yaml")).expect("rm");
    let (code, out, err) = check();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("1 guardrail: 0 violations enforced, 1 audit-only"),
        "{out}"
    );
}
