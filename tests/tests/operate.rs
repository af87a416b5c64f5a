//! Operating the proxy on the namespace testbed: policy reloads under continuous load, with the
//! policy mounted the way a ConfigMap volume mounts it.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Host, Testbed, TestbedOptions, eventually};

fn policy(x_allowed: bool) -> String {
    let x = if x_allowed {
        "\n      - {name: x, action: allow, http: [{methods: [GET], paths: [\"/x\"]}]}"
    } else {
        ""
    };
    format!(
        "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: live}}
spec:
  inbound:
    default: deny
    rules:
      - {{name: ok, action: allow, http: [{{methods: [GET], paths: [\"/ok\"]}}]}}{x}
"
    )
}

const BROKEN: &str = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: live}
spec: {inbound: {rules: [{name: a, action: maybe}]}}
";

/// A child that is interrupted (SIGINT) when dropped, also when the test fails.
struct Interrupt(Option<Child>);

impl Interrupt {
    fn stop(mut self) -> Result<String> {
        let child = self.0.take().context("child")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn status(tb: &Testbed, path: &str) -> String {
    tb.curl_args(
        &tb.client,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{POD_V4}:8083{path}"),
        ],
    )
    .body
}

fn metric(tb: &Testbed, line_start: &str) -> u64 {
    let body = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_hundred_reloads_under_load_switch_verdicts_and_fail_no_request() -> Result<()> {
    let mut tb = Testbed::start(TestbedOptions {
        policy: policy(false),
        configmap: true,
        ..TestbedOptions::default()
    })?;
    tb.nginx(
        Host::Pod,
        "app",
        "server { listen 8083; location / { return 200 \"ok\\n\"; } }",
        8083,
    )?;
    assert_eq!(status(&tb, "/x"), "403");

    let wrk = tb
        .client
        .command("wrk")
        .args(["-t1", "-c8", "-d120s", &format!("http://{POD_V4}:8083/ok")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let wrk = Interrupt(Some(wrk));
    std::thread::sleep(Duration::from_millis(300));

    let (mut x_allowed, mut successes, mut failures) = (false, 0u64, 0u64);
    let started = Instant::now();
    for i in 0..100 {
        if i % 10 == 9 {
            tb.write_policy(BROKEN)?;
            tb.proxy()?.signal(Signal::SIGHUP)?;
            failures += 1;
            eventually(
                &format!("reload {i}: the broken policy reported"),
                Duration::from_secs(5),
                || metric(&tb, "portcullis_policy_reloads_total{result=\"failure\"} ") >= failures,
            )?;
        } else {
            x_allowed = !x_allowed;
            tb.write_policy(&policy(x_allowed))?;
            tb.proxy()?.signal(Signal::SIGHUP)?;
            successes += 1;
        }
        let want = if x_allowed { "200" } else { "403" };
        eventually(
            &format!("reload {i}: /x answering {want}"),
            Duration::from_secs(5),
            || status(&tb, "/x") == want,
        )?;
    }
    let took = started.elapsed();
    let summary = wrk.stop()?;
    let requests: u64 = summary
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .with_context(|| format!("wrk summary: {summary}"))?;
    assert!(requests > 1000, "continuous load ran: {summary}");
    println!("{requests} requests during {took:?} of 100 reloads (90 good, 10 broken)");
    assert!(
        !summary.contains("Non-2xx"),
        "no failed request during {took:?} of reloads: {summary}"
    );
    assert!(
        !summary.contains("Socket errors"),
        "no socket errors: {summary}"
    );
    assert_eq!(
        metric(&tb, "portcullis_policy_reloads_total{result=\"success\"} "),
        successes
    );
    assert_eq!(
        metric(&tb, "portcullis_policy_reloads_total{result=\"failure\"} "),
        failures
    );
    Ok(())
}

const SEQUENCE_POLICY: &str = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: seq}
spec:
  inbound:
    default: deny
    rules:
      - {name: reads, action: allow, http: [{methods: [GET], paths: [\"/public/*\"]}]}
      - {name: no-admin, action: deny, http: [{paths: [\"/admin/*\"]}]}
";

/// Runs the known sequence: 3 allowed GETs, 2 requests denied by a rule, 1 by the default.
fn sequence(tb: &Testbed) -> Vec<String> {
    let base = format!("http://{POD_V4}:8080");
    [
        "/public/a",
        "/public/b",
        "/public/c",
        "/admin/x",
        "/admin/y",
        "/other",
    ]
    .iter()
    .map(|p| {
        tb.curl_args(
            &tb.client,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{base}{p}"),
            ],
        )
        .body
    })
    .collect()
}

/// The access log without the fields that vary run to run (time, ports, durations).
fn stable(log: &[serde_json::Value]) -> Vec<String> {
    log.iter()
        .map(|l| {
            let mut l = l.clone();
            if let Some(o) = l.as_object_mut() {
                o.remove("ts");
                o.remove("duration_ms");
                if let Some(src) = o.get("src").and_then(|s| s.as_str()) {
                    let ip = src.rsplit_once(':').map_or(src, |(ip, _)| ip).to_string();
                    o.insert("src".into(), ip.into());
                }
            }
            l.to_string()
        })
        .collect()
}

#[test]
fn metrics_and_access_log_match_a_known_sequence_exactly() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        policy: SEQUENCE_POLICY.into(),
        ..TestbedOptions::default()
    })?;
    assert_eq!(sequence(&tb), ["200", "200", "200", "403", "403", "403"]);
    let log = tb.wait_access_log(6)?;
    let want = [
        (r#"/public/a"#, "allow", 200, Some("reads")),
        (r#"/public/b"#, "allow", 200, Some("reads")),
        (r#"/public/c"#, "allow", 200, Some("reads")),
        (r#"/admin/x"#, "deny", 403, Some("no-admin")),
        (r#"/admin/y"#, "deny", 403, Some("no-admin")),
        (r#"/other"#, "deny", 403, None),
    ];
    let got = stable(&log);
    for (line, (path, verdict, status, rule)) in got.iter().zip(want) {
        let policy = rule.map_or(String::new(), |_| r#""policy":"seq","#.to_string());
        let reason = match verdict {
            "deny" if rule.is_some() => r#""reason":"deny rule matched the request","#,
            "deny" => r#""reason":"no rule matched: default deny","#,
            _ => "",
        };
        let expected = format!(
            r#"{{"direction":"inbound","dst":"{POD_V4}:8080","host":"{POD_V4}","method":"GET","path":"{path}",{policy}"protocol":"http1",{reason}"rule":"{}","src":"10.77.1.2","status":{status},"verdict":"{verdict}"}}"#,
            rule.unwrap_or("default")
        );
        // serde_json's Value orders keys alphabetically; compare as parsed JSON.
        let a: serde_json::Value = serde_json::from_str(line)?;
        let b: serde_json::Value = serde_json::from_str(&expected)?;
        assert_eq!(a, b, "\n got: {line}\nwant: {expected}");
    }
    assert_eq!(got.len(), 6, "exactly one line per request: {got:#?}");
    let metrics = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    for (line, n) in [
        (
            r#"portcullis_requests_total{direction="inbound",verdict="allow",policy="seq",rule="reads",status_class="2xx"}"#,
            3,
        ),
        (
            r#"portcullis_requests_total{direction="inbound",verdict="deny",policy="seq",rule="no-admin",status_class="4xx"}"#,
            2,
        ),
        (
            r#"portcullis_requests_total{direction="inbound",verdict="deny",policy="",rule="default",status_class="4xx"}"#,
            1,
        ),
        (
            r#"portcullis_connections_total{direction="inbound",verdict="allow"}"#,
            6,
        ),
        (
            r#"portcullis_protocol_detections_total{direction="inbound",protocol="http1"}"#,
            6,
        ),
        (
            r#"portcullis_request_duration_seconds_count{direction="inbound"}"#,
            6,
        ),
        (r#"portcullis_connections_open{direction="inbound"}"#, 0),
    ] {
        assert!(
            metrics.contains(&format!("{line} {n}\n")),
            "{line} {n}\n{metrics}"
        );
    }
    Ok(())
}

#[test]
fn audit_mode_passes_what_enforce_would_deny_and_logs_audit_deny() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        policy: SEQUENCE_POLICY.into(),
        proxy_args: vec!["--mode".into(), "audit".into()],
        ..TestbedOptions::default()
    })?;
    assert_eq!(
        sequence(&tb),
        ["200"; 6],
        "audit mode lets everything through"
    );
    let received = tb.app_received();
    assert!(
        received.iter().any(|l| l == "GET /admin/x"),
        "the app did receive it: {received:?}"
    );
    let log = tb.wait_access_log(6)?;
    let audit: Vec<_> = log
        .iter()
        .filter(|l| l["verdict"] == "audit_deny")
        .collect();
    assert_eq!(audit.len(), 3, "{log:#?}");
    assert!(audit.iter().all(|l| l["status"] == 200));
    let metrics = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    assert!(metrics.contains(
        "portcullis_requests_total{direction=\"inbound\",verdict=\"audit_deny\",policy=\"seq\",rule=\"no-admin\",status_class=\"2xx\"} 2\n"
    ), "{metrics}");
    Ok(())
}

#[test]
fn sigterm_under_load_finishes_every_request_in_flight() -> Result<()> {
    let policy = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: drain}
spec:
  inbound:
    default: deny
    rules:
      - {name: app, action: allow, http: [{methods: [GET], paths: [\"/slow\", \"/ok\"]}]}
";
    let mut tb = Testbed::start(TestbedOptions {
        policy: policy.into(),
        drain_timeout: "20s".into(),
        ..TestbedOptions::default()
    })?;
    tb.nginx(
        Host::Pod,
        "app",
        "server { listen 8083; location / { return 200 \"ok\\n\"; } }",
        8083,
    )?;
    let wrk = tb
        .client
        .command("wrk")
        .args(["-t1", "-c4", "-d60s", &format!("http://{POD_V4}:8083/ok")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let wrk = Interrupt(Some(wrk));
    // Twenty requests that take 1.5 s each are in flight when SIGTERM arrives.
    let slow: Vec<Child> = (0..20)
        .map(|_| {
            tb.client
                .command("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "15",
                ])
                .arg(format!("http://{POD_V4}:8080/slow?ms=1500"))
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<std::io::Result<_>>()?;
    eventually(
        "the slow requests and the load all open",
        Duration::from_secs(5),
        || metric(&tb, "portcullis_connections_open{direction=\"inbound\"} ") >= 24,
    )?;
    std::thread::sleep(Duration::from_millis(300)); // let the load run a while first
    tb.proxy()?.signal(Signal::SIGTERM)?;
    let mut codes = Vec::new();
    for c in slow {
        codes.push(String::from_utf8_lossy(&c.wait_with_output()?.stdout).into_owned());
    }
    assert_eq!(
        codes,
        vec!["200"; 20],
        "every request in flight at SIGTERM completed"
    );
    let status = tb.proxy()?.wait_timeout(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "the proxy exits 0 after draining: {status:?}"
    );
    let summary = wrk.stop()?;
    assert!(
        summary.contains("requests in"),
        "load ran during the drain: {summary}"
    );
    println!("wrk during the drain:\n{summary}");
    Ok(())
}
