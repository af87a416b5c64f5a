//! End-to-end tests on the namespace testbed: real iptables rules from `portcullis-init`, the
//! real proxy as UID 1337, real curl and real servers. They need root and fail (never skip)
//! without it.

use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use portcullis_testbed::testbed::{
    CLIENT_V4, CLIENT_V6, POD_UPLINK_V4, POD_UPLINK_V6, POD_V4, POD_V6, UPSTREAM_V4, UPSTREAM_V6,
};
use portcullis_testbed::{Capture, Testbed, TestbedOptions};
use serde_json::Value;

fn testbed(capture: Capture, init: &[&str]) -> Result<Testbed> {
    Testbed::start(TestbedOptions {
        capture,
        init_args: Some(init.iter().map(|s| s.to_string()).collect()),
        ..TestbedOptions::default()
    })
}

fn entries<'a>(log: &'a [Value], direction: &str, dst: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|l| l["direction"] == direction && l["dst"] == dst)
        .collect()
}

fn app_client_ip(tb: &Testbed, url: &str) -> Result<String> {
    let v = tb.curl(&tb.client, url).json()?;
    Ok(v["client_ip"].as_str().unwrap_or_default().to_string())
}

#[test]
fn redirect_inbound_and_outbound_flow_through_the_proxy_v4_and_v6() -> Result<()> {
    let tb = testbed(Capture::Redirect, &[])?;
    // Inbound: delivered on the original address and port, from the proxy's delivery source.
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/in"))?,
        "127.0.0.6"
    );
    assert_eq!(
        app_client_ip(&tb, &format!("http://[{POD_V6}]:8080/in"))?,
        "::6"
    );
    // Outbound from the application (root, not the proxy's UID).
    let up4 = tb
        .curl(&tb.pod, &format!("http://{UPSTREAM_V4}/out"))
        .json()?;
    assert_eq!(up4["client_ip"], POD_UPLINK_V4);
    let up6 = tb
        .curl(&tb.pod, &format!("http://[{UPSTREAM_V6}]/out"))
        .json()?;
    assert_eq!(up6["client_ip"], POD_UPLINK_V6);

    let log = tb.wait_access_log(4)?;
    let in4 = entries(&log, "inbound", &format!("{POD_V4}:8080"));
    assert_eq!(in4.len(), 1, "{log:#?}");
    assert!(
        in4[0]["src"]
            .as_str()
            .unwrap_or_default()
            .starts_with(CLIENT_V4)
    );
    assert_eq!(in4[0]["verdict"], "allow");
    assert!(in4[0]["bytes_out"].as_u64().unwrap_or(0) > 100);
    assert_eq!(
        entries(&log, "inbound", &format!("[{POD_V6}]:8080")).len(),
        1
    );
    // Exactly one record per outbound connection: the proxy's own upstream connection was not
    // captured again.
    assert_eq!(
        entries(&log, "outbound", &format!("{UPSTREAM_V4}:80")).len(),
        1,
        "{log:#?}"
    );
    assert_eq!(
        entries(&log, "outbound", &format!("[{UPSTREAM_V6}]:80")).len(),
        1
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        tb.access_log()?.len(),
        4,
        "no other connection went through the proxy"
    );
    Ok(())
}

#[test]
fn tproxy_keeps_the_client_source_address_v4_and_v6() -> Result<()> {
    let tb = testbed(Capture::Tproxy, &[])?;
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        CLIENT_V4
    );
    assert_eq!(
        app_client_ip(&tb, &format!("http://[{POD_V6}]:8080/"))?,
        CLIENT_V6
    );
    // Repeated connections keep working (no 4-tuple clash with the client's own port).
    for _ in 0..20 {
        assert_eq!(
            app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
            CLIENT_V4
        );
    }
    let up = tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}/")).json()?;
    assert_eq!(up["server"], "upstream");
    let log = tb.wait_access_log(23)?;
    assert_eq!(
        entries(&log, "inbound", &format!("{POD_V4}:8080")).len(),
        21
    );
    assert_eq!(
        entries(&log, "inbound", &format!("[{POD_V6}]:8080")).len(),
        1
    );
    assert_eq!(
        entries(&log, "outbound", &format!("{UPSTREAM_V4}:80")).len(),
        1
    );
    Ok(())
}

#[test]
fn apps_listening_only_on_the_pod_ip_are_reached() -> Result<()> {
    for capture in [Capture::Redirect, Capture::Tproxy] {
        let tb = testbed(capture, &[])?;
        let v = tb
            .curl(&tb.client, &format!("http://{POD_V4}:8081/"))
            .json()?;
        assert_eq!(v["local_port"], 8081, "{capture:?}");
        let log = tb.wait_access_log(1)?;
        assert_eq!(entries(&log, "inbound", &format!("{POD_V4}:8081")).len(), 1);
    }
    Ok(())
}

#[test]
fn excluded_ports_and_cidrs_bypass_the_proxy() -> Result<()> {
    let tb = testbed(
        Capture::Redirect,
        &[
            "--exclude-inbound-ports",
            "9090",
            "--exclude-outbound-ports",
            "81",
            "--exclude-outbound-cidrs",
            &format!("{UPSTREAM_V6}/128"),
        ],
    )?;
    // Not captured: the app sees the client itself.
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:9090/"))?,
        CLIENT_V4
    );
    assert_eq!(
        tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}:81/"))
            .json()?["server"],
        "upstream"
    );
    assert_eq!(
        tb.curl(&tb.pod, &format!("http://[{UPSTREAM_V6}]/"))
            .json()?["server"],
        "upstream"
    );
    // Captured, as a control.
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        "127.0.0.6"
    );
    let log = tb.wait_access_log(1)?;
    std::thread::sleep(Duration::from_millis(200));
    let log = if log.len() == 1 {
        tb.access_log()?
    } else {
        log
    };
    assert_eq!(
        log.len(),
        1,
        "only the control went through the proxy: {log:#?}"
    );
    assert_eq!(log[0]["dst"], format!("{POD_V4}:8080"));
    Ok(())
}

#[test]
fn traffic_a_pod_sends_to_its_own_ip_is_judged_inbound_too() -> Result<()> {
    let tb = testbed(Capture::Redirect, &[])?;
    let v = tb
        .curl(&tb.pod, &format!("http://{POD_V4}:8080/self"))
        .json()?;
    assert_eq!(v["client_ip"], "127.0.0.6");
    let log = tb.wait_access_log(2)?;
    assert_eq!(
        entries(&log, "outbound", &format!("{POD_V4}:8080")).len(),
        1,
        "{log:#?}"
    );
    assert_eq!(
        entries(&log, "inbound", &format!("{POD_V4}:8080")).len(),
        1,
        "{log:#?}"
    );
    Ok(())
}

#[test]
fn connections_to_the_proxys_own_ports_are_refused_as_loops() -> Result<()> {
    let tb = testbed(Capture::Redirect, &[])?;
    let r = tb.curl(&tb.client, &format!("http://{POD_V4}:15006/"));
    assert!(
        matches!(r.exit, 52 | 56),
        "closed without a response: {r:?}"
    );
    let r = tb.curl(&tb.pod, &format!("http://{POD_V4}:15001/"));
    assert!(
        matches!(r.exit, 52 | 56),
        "closed without a response: {r:?}"
    );
    let log = tb.wait_access_log(2)?;
    assert!(log.iter().all(|l| l["verdict"] == "deny"), "{log:#?}");
    assert!(
        log.iter()
            .all(|l| l["reason"].as_str().unwrap_or_default().starts_with("loop"))
    );
    Ok(())
}

#[test]
fn a_dead_proxy_fails_closed_and_cleanup_restores_direct_traffic() -> Result<()> {
    let mut tb = testbed(Capture::Redirect, &[])?;
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        "127.0.0.6"
    );
    tb.kill_proxy()?;
    // Captured connections are refused, never passed around the proxy.
    for (ns, url) in [
        (&tb.client, format!("http://{POD_V4}:8080/")),
        (&tb.client, format!("http://[{POD_V6}]:8080/")),
        (&tb.pod, format!("http://{UPSTREAM_V4}/")),
        (&tb.pod, format!("http://[{UPSTREAM_V6}]/")),
    ] {
        let r = tb.curl(ns, &url);
        assert_eq!(r.exit, 7, "{url} must be refused: {r:?}");
    }
    tb.init(&["--cleanup"])?;
    assert!(!tb.rules(false)?.contains("PORTCULLIS"));
    assert!(!tb.rules(true)?.contains("PORTCULLIS"));
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        CLIENT_V4
    );
    assert_eq!(
        tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}/")).json()?["server"],
        "upstream"
    );
    Ok(())
}

#[test]
fn init_is_idempotent_dry_run_changes_nothing_and_cleanup_is_exact() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        init_args: None,
        proxy: false,
        ..TestbedOptions::default()
    })?;
    // Somebody else's rule, which must survive.
    tb.pod.exec(
        "iptables",
        &[
            "-t", "nat", "-A", "OUTPUT", "-p", "udp", "--dport", "53", "-j", "RETURN",
        ],
    )?;
    let (before4, before6) = (tb.rules(false)?, tb.rules(true)?);

    let dry = tb.init(&["--mode", "tproxy", "--dry-run"])?;
    assert!(
        dry.contains("# ipv4\n*nat\n") && dry.contains("# ipv6\n"),
        "{dry}"
    );
    assert!(dry.contains("-j TPROXY --on-port 15006"));
    assert_eq!(tb.rules(false)?, before4, "--dry-run changed nothing");

    for mode in ["redirect", "tproxy"] {
        tb.init(&["--mode", mode])?;
        let (once4, once6) = (tb.rules(false)?, tb.rules(true)?);
        let rules_once = tb.pod.exec("ip", &["rule"])?;
        tb.init(&["--mode", mode])?;
        assert_eq!(tb.rules(false)?, once4, "{mode}: second run identical");
        assert_eq!(tb.rules(true)?, once6);
        assert_eq!(tb.pod.exec("ip", &["rule"])?, rules_once);
        assert_eq!(
            rules_once.contains("fwmark 0x539 lookup 133"),
            mode == "tproxy"
        );
        // A dry run against an installed namespace re-declares our chains and adds no jump.
        let dry = tb.init(&["--mode", mode, "--dry-run"])?;
        assert!(
            !dry.contains("-A PREROUTING") && !dry.contains("-A OUTPUT"),
            "{dry}"
        );
    }
    tb.init(&["--cleanup"])?;
    assert_eq!(
        tb.rules(false)?,
        before4,
        "cleanup removed exactly what was installed"
    );
    assert_eq!(tb.rules(true)?, before6);
    assert!(!tb.pod.exec("ip", &["rule"])?.contains("0x539"));
    Ok(())
}

#[test]
fn init_fails_with_one_clear_line() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        init_args: None,
        proxy: false,
        ..TestbedOptions::default()
    })?;
    let out = tb.init_output(&["--exclude-outbound-cidrs", "10.0.0.0/99"])?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("invalid CIDR \"10.0.0.0/99\""), "{err}");
    Ok(())
}

#[test]
fn sigterm_drains_open_connections_and_refuses_new_ones() -> Result<()> {
    let mut tb = testbed(Capture::Redirect, &[])?;
    // A request that takes 1.5 s is in flight when SIGTERM arrives.
    let slow = tb
        .client
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://{POD_V4}:8080/slow?ms=1500"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // Wait (bounded) until the proxy has it open.
    let metric = "portcullis_connections_open{direction=\"inbound\"} 1";
    let mut seen = false;
    for _ in 0..100 {
        if tb
            .curl(&tb.pod, "http://127.0.0.1:15020/metrics")
            .body
            .contains(metric)
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen, "the slow request never showed as open");
    tb.proxy()?.signal(Signal::SIGTERM)?;
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..100 {
        if tb.curl(&tb.client, &format!("http://{POD_V4}:8080/")).exit == 7 {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(refused, "new connections must be refused while draining");
    let out = slow.wait_with_output()?;
    assert!(out.status.success(), "the in-flight request completed");
    let body: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["path"], "/slow");
    let status = tb.proxy()?.wait_timeout(Duration::from_secs(10))?;
    assert!(
        status.success(),
        "the proxy exits 0 after draining: {status:?}"
    );
    Ok(())
}

#[test]
fn legacy_backend_works_and_auto_detection_follows_the_rules_in_use() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        init_args: Some(vec!["--backend".into(), "legacy".into()]),
        ..TestbedOptions::default()
    })?;
    assert!(
        tb.pod
            .exec("iptables-legacy-save", &[])?
            .contains("-j PORTCULLIS_OUTPUT")
    );
    assert!(
        !tb.pod
            .exec("iptables-nft-save", &[])?
            .contains("PORTCULLIS")
    );
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        "127.0.0.6"
    );
    // `auto` sees the legacy rules and keeps using legacy (no second, conflicting rule set).
    let dry = tb.init(&["--dry-run"])?;
    assert!(
        !dry.contains("-A OUTPUT"),
        "auto must pick legacy, which has the jumps: {dry}"
    );
    tb.init(&["--cleanup"])?;
    assert!(
        !tb.pod
            .exec("iptables-legacy-save", &[])?
            .contains("PORTCULLIS")
    );
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        CLIENT_V4
    );
    Ok(())
}

#[test]
fn an_unanswered_connect_times_out_and_closes_the_client() -> Result<()> {
    let tb = Testbed::start(TestbedOptions {
        proxy_args: vec!["--connect-timeout".into(), "300ms".into()],
        ..TestbedOptions::default()
    })?;
    // The upstream silently drops SYNs to port 81.
    tb.upstream.exec(
        "iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "81", "-j", "DROP"],
    )?;
    let started = std::time::Instant::now();
    let r = tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}:81/"));
    assert!(
        matches!(r.exit, 52 | 56),
        "closed without a response: {r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed at the connect timeout"
    );
    let log = tb.wait_access_log(1)?;
    assert_eq!(
        log[0]["reason"],
        format!("connect {UPSTREAM_V4}:81: timed out")
    );
    let metrics = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    assert!(
        metrics.contains(
            "portcullis_connection_errors_total{direction=\"outbound\",reason=\"connect_timeout\"} 1"
        ),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn connection_level_policy_is_enforced_through_real_capture() -> Result<()> {
    let policy = format!(
        "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: pod}}
spec:
  inbound:
    default: deny
    rules:
      - {{name: client-web, action: allow, from: [{{cidr: {CLIENT_V4}/32}}, {{cidr: \"{CLIENT_V6}/128\"}}], ports: [8080]}}
  outbound:
    default: allow
    rules:
      - {{name: no-upstream-81, action: deny, to: [{{cidr: {UPSTREAM_V4}/32}}], ports: [81]}}
"
    );
    let tb = Testbed::start(TestbedOptions {
        policy,
        ..TestbedOptions::default()
    })?;
    assert_eq!(
        app_client_ip(&tb, &format!("http://{POD_V4}:8080/"))?,
        "127.0.0.6"
    );
    assert_eq!(
        app_client_ip(&tb, &format!("http://[{POD_V6}]:8080/"))?,
        "::6"
    );
    for url in [
        format!("http://{POD_V4}:8081/"),
        format!("http://{POD_V4}:9090/"),
    ] {
        let r = tb.curl(&tb.client, &url);
        assert!(matches!(r.exit, 52 | 56), "{url} denied by default: {r:?}");
    }
    assert_eq!(
        tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}:80/"))
            .json()?["server"],
        "upstream"
    );
    let r = tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}:81/"));
    assert!(matches!(r.exit, 52 | 56), "denied outbound: {r:?}");

    let log = tb.wait_access_log(6)?;
    let find = |dst: String| {
        entries(
            &log,
            if dst.contains(UPSTREAM_V4) {
                "outbound"
            } else {
                "inbound"
            },
            &dst,
        )
    };
    let allowed = find(format!("{POD_V4}:8080"));
    assert_eq!(
        (
            allowed[0]["verdict"].as_str(),
            allowed[0]["policy"].as_str(),
            allowed[0]["rule"].as_str()
        ),
        (Some("allow"), Some("pod"), Some("client-web"))
    );
    let denied = find(format!("{POD_V4}:8081"));
    assert_eq!(
        (denied[0]["verdict"].as_str(), denied[0]["rule"].as_str()),
        (Some("deny"), Some("default"))
    );
    assert_eq!(denied[0]["bytes_in"], 0, "nothing reached the app");
    let out = find(format!("{UPSTREAM_V4}:81"));
    assert_eq!(
        (out[0]["verdict"].as_str(), out[0]["rule"].as_str()),
        (Some("deny"), Some("no-upstream-81"))
    );
    let metrics = tb.curl(&tb.pod, "http://127.0.0.1:15020/metrics").body;
    assert!(
        metrics.contains("portcullis_connections_total{direction=\"inbound\",verdict=\"deny\"} 2"),
        "{metrics}"
    );
    Ok(())
}
