//! Operating the proxy on the namespace testbed: policy reloads under continuous load, with the
//! policy mounted the way a ConfigMap volume mounts it.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Host, Testbed, TestbedOptions};

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
            let deadline = Instant::now() + Duration::from_secs(5);
            while metric(&tb, "portcullis_policy_reloads_total{result=\"failure\"} ") < failures {
                if Instant::now() > deadline {
                    bail!("reload {i}: the broken policy was not reported");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        } else {
            x_allowed = !x_allowed;
            tb.write_policy(&policy(x_allowed))?;
            tb.proxy()?.signal(Signal::SIGHUP)?;
            successes += 1;
        }
        let want = if x_allowed { "200" } else { "403" };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = status(&tb, "/x");
            if got == want {
                break;
            }
            if Instant::now() > deadline {
                bail!("reload {i}: /x answered {got}, expected {want}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
