//! End-to-end HTTP enforcement on the namespace testbed: real capture rules, the real proxy as
//! UID 1337, real curl (HTTP/1.1 and HTTP/2 prior knowledge), real nginx and python servers.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use portcullis_testbed::testbed::{POD_V4, POD_V6, UPSTREAM_V4};
use portcullis_testbed::{Host, Testbed, TestbedOptions};
use serde_json::Value;

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: web}
spec:
  inbound:
    default: deny
    rules:
      - {name: no-admin, action: deny, http: [{paths: ["/admin", "/admin/*"]}]}
      - name: reads
        action: allow
        from: [{cidr: 10.77.1.0/24}, {cidr: "fd77:1::/64"}]
        http: [{methods: [GET, HEAD], paths: ["/public/*"]}]
  outbound:
    default: deny
    rules:
      - {name: payments, action: allow, to: [{host: api.payments.example}], ports: [8443]}
      - {name: upstream-get, action: allow, to: [{cidr: 10.77.2.2/32}], ports: [80], http: [{methods: [GET]}]}
"#;

fn start() -> Result<Testbed> {
    Testbed::start(TestbedOptions {
        policy: POLICY.to_string(),
        ..TestbedOptions::default()
    })
}

fn find<'a>(log: &'a [Value], path: &str, method: &str) -> Result<&'a Value> {
    log.iter()
        .find(|l| l["path"] == path && l["method"] == method)
        .with_context(|| format!("no log line for {method} {path}: {log:#?}"))
}

#[test]
fn http1_and_h2c_requests_are_judged_one_by_one() -> Result<()> {
    let mut tb = start()?;
    tb.nginx(
        Host::Pod,
        "h2c",
        "server { listen 8082 http2; location / { return 200 \"h2 $request_uri\\n\"; } }",
        8082,
    )?;
    let base = format!("http://{POD_V4}:8080");
    let app =
        |path: &str| -> Result<Value> { tb.curl(&tb.client, &format!("{base}{path}")).json() };
    assert_eq!(app("/public/a")?["path"], "/public/a");
    // The app receives the normalized path the policy judged.
    assert_eq!(app("/public/x/../y")?["path"], "/public/y");
    assert_eq!(app("/public/%7Euser")?["path"], "/public/~user");
    let status = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        tb.curl_args(&tb.client, &a).body
    };
    assert_eq!(status(&[&format!("{base}/admin")]), "403");
    assert_eq!(
        status(&["--path-as-is", &format!("{base}/public/../admin/x")]),
        "403"
    );
    assert_eq!(status(&[&format!("{base}/public/a%2Fb")]), "400");
    assert_eq!(status(&["-X", "POST", &format!("{base}/public/a")]), "403");
    assert_eq!(
        status(&[&format!("http://[{POD_V6}]:8080/public/v6")]),
        "200"
    );
    let body = tb.curl(&tb.client, &format!("{base}/admin")).body;
    assert_eq!(body, "access denied\n", "no rule names leak to the client");

    // HTTP/2 with prior knowledge, to nginx speaking h2c.
    let h2 = |path: &str, extra: &[&str]| {
        let mut a = vec![
            "--http2-prior-knowledge",
            "-sS",
            "-w",
            " %{http_version} %{http_code}",
        ];
        a.extend_from_slice(extra);
        let url = format!("http://{POD_V4}:8082{path}");
        a.push(&url);
        tb.curl_args(&tb.client, &a).body
    };
    assert_eq!(h2("/public/z", &[]), "h2 /public/z\n 2 200");
    assert_eq!(
        h2("/public/q/../z", &["--path-as-is"]),
        "h2 /public/z\n 2 200"
    );
    assert_eq!(h2("/admin", &[]), "access denied\n 2 403");

    // Many multiplexed streams on one connection (nghttp), then a small load (h2load): every
    // stream is judged, allowed ones all succeed.
    let out = tb
        .client
        .command("nghttp")
        .args([
            "-n",
            "-m",
            "20",
            "-s",
            &format!("http://{POD_V4}:8082/public/m"),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "nghttp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tb
        .client
        .command("h2load")
        .args([
            "-n",
            "200",
            "-c",
            "2",
            "-m",
            "10",
            &format!("http://{POD_V4}:8082/public/load"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 succeeded, 0 failed"), "{text}");
    assert!(text.contains("status codes: 200 2xx"), "{text}");

    let log = tb.wait_access_log(12 + 20 + 200)?;
    assert_eq!(
        log.iter()
            .filter(|l| l["path"] == "/public/m" && l["protocol"] == "http2")
            .count(),
        20
    );
    let allowed = find(&log, "/public/y", "GET")?;
    assert_eq!(
        (
            allowed["protocol"].as_str(),
            allowed["status"].as_u64(),
            allowed["rule"].as_str()
        ),
        (Some("http1"), Some(200), Some("reads"))
    );
    assert_eq!(allowed["dst"], format!("{POD_V4}:8080"));
    let denied = find(&log, "/admin/x", "GET")?;
    assert_eq!(
        (
            denied["verdict"].as_str(),
            denied["status"].as_u64(),
            denied["rule"].as_str()
        ),
        (Some("deny"), Some(403), Some("no-admin"))
    );
    let post = find(&log, "/public/a", "POST")?;
    assert_eq!(
        (post["verdict"].as_str(), post["rule"].as_str()),
        (Some("deny"), Some("default"))
    );
    let h2_denied = log
        .iter()
        .find(|l| l["protocol"] == "http2" && l["status"] == 403)
        .context("h2 denial logged")?;
    assert_eq!(h2_denied["path"], "/admin");
    Ok(())
}

#[test]
fn outbound_tls_passes_through_and_is_judged_by_sni() -> Result<()> {
    let mut tb = start()?;
    let dir = tb.dir().to_path_buf();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=api.payments.example",
            "-addext",
            "subjectAltName=DNS:api.payments.example,DNS:evil.example",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tb.nginx(
        Host::Upstream,
        "tls",
        &format!(
            "server {{ listen 8443 ssl; ssl_certificate {}; ssl_certificate_key {}; location / {{ return 200 \"tls $ssl_server_name\\n\"; }} }}",
            cert.display(),
            key.display()
        ),
        8443,
    )?;
    let tls = |name: &str| {
        tb.curl_args(
            &tb.pod,
            &[
                "-k",
                "--resolve",
                &format!("{name}:8443:{UPSTREAM_V4}"),
                &format!("https://{name}:8443/"),
            ],
        )
    };
    let ok = tls("api.payments.example");
    assert_eq!(
        (ok.exit, ok.body.as_str()),
        (0, "tls api.payments.example\n"),
        "{ok:?}"
    );
    let denied = tls("evil.example");
    assert_ne!(denied.exit, 0, "{denied:?}");

    // Plain HTTP outbound: GET allowed by an http rule, POST falls to the default.
    assert_eq!(
        tb.curl(&tb.pod, &format!("http://{UPSTREAM_V4}/x"))
            .json()?["server"],
        "upstream"
    );
    let post = tb.curl_args(
        &tb.pod,
        &[
            "-X",
            "POST",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{UPSTREAM_V4}/x"),
        ],
    );
    assert_eq!(post.body, "403");

    let log = tb.wait_access_log(4)?;
    let tls_lines: Vec<&Value> = log.iter().filter(|l| l["protocol"] == "tls").collect();
    assert_eq!(tls_lines.len(), 2, "{log:#?}");
    let by_sni = |sni: &str| tls_lines.iter().find(|l| l["sni"] == sni).copied();
    let allowed = by_sni("api.payments.example").context("allowed tls line")?;
    assert_eq!(
        (allowed["verdict"].as_str(), allowed["rule"].as_str()),
        (Some("allow"), Some("payments"))
    );
    assert!(
        allowed["bytes_out"].as_u64().unwrap_or(0) > 500,
        "the TLS handshake crossed the proxy untouched"
    );
    let denied = by_sni("evil.example").context("denied tls line")?;
    assert_eq!(
        (denied["verdict"].as_str(), denied["rule"].as_str()),
        (Some("deny"), Some("default"))
    );
    Ok(())
}

#[test]
fn server_first_protocols_do_not_stall_and_skip_detection_on_opaque_ports() -> Result<()> {
    // Outbound is open by default and one HTTP rule could apply to any port, so connections
    // would be sniffed for HTTP — except on --opaque-ports.
    let policy = "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p}
spec:
  outbound:
    default: allow
    rules:
      - {name: gets, action: allow, http: [{methods: [GET]}]}
";
    let mut tb = Testbed::start(TestbedOptions {
        policy: policy.into(),
        proxy_args: vec![
            "--opaque-ports".into(),
            "2525".into(),
            "--detect-timeout".into(),
            "1s".into(),
        ],
        ..TestbedOptions::default()
    })?;
    for port in ["2525", "2526"] {
        tb.spawn(
            Host::Upstream,
            &format!("banner-{port}"),
            "socat",
            &[
                &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                "SYSTEM:echo 220 banner ready",
            ],
        )?;
    }
    std::thread::sleep(Duration::from_millis(200));
    // A client that waits for the server to speak first, without sending or closing.
    let banner = |port: &str| -> Result<(String, Duration)> {
        let started = Instant::now();
        let out = tb
            .pod
            .command("timeout")
            .args([
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{UPSTREAM_V4}/{port}; head -1 <&3"),
            ])
            .output()?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            started.elapsed(),
        ))
    };
    let (text, fast) = banner("2525")?;
    assert_eq!(text, "220 banner ready\n");
    assert!(
        fast < Duration::from_millis(800),
        "opaque port: no detection wait ({fast:?})"
    );
    let (text, slow) = banner("2526")?;
    assert_eq!(
        text, "220 banner ready\n",
        "server-first protocol passes after the detection timeout"
    );
    assert!(
        slow >= Duration::from_millis(900) && slow < Duration::from_secs(4),
        "{slow:?}"
    );
    Ok(())
}

#[test]
fn bypass_corpus_never_reaches_a_denied_path() -> Result<()> {
    let tb = start()?;
    let base = format!("http://{POD_V4}:8080");
    // Each attempt targets /admin on a server where only GET /public/* is allowed.
    let attempts: &[(&[&str], &str)] = &[
        (&["--path-as-is", "/public/../admin"], "403"),
        (&["--path-as-is", "/public/./../admin/"], "403"),
        (&["--path-as-is", "/public/%2e%2e/admin"], "403"),
        (&["--path-as-is", "/public/.%2E/admin"], "403"),
        (&["--path-as-is", "/public/%2E%2e/%61dmin"], "403"),
        (&["--path-as-is", "//admin"], "403"),
        (&["--path-as-is", "/public/..%2fadmin"], "400"),
        (&["--path-as-is", "/public/..%2Fadmin"], "400"),
        (&["--path-as-is", "/public/..%5cadmin"], "400"),
        (&["--path-as-is", "/public/..\\admin"], "400"),
        (&["--path-as-is", "/public/..;/admin"], "400"),
        (&["--path-as-is", "/public/x;jsessionid=1"], "400"),
        (&["--path-as-is", "/public/%00/../../admin"], "400"),
        (&["--path-as-is", "/../admin"], "400"),
        (&["--path-as-is", "/public/%zz"], "400"),
        (&["--path-as-is", "/ADMIN"], "403"),
        (&["--path-as-is", "/public/a?x=/../../admin"], "200"),
    ];
    for (args, want) in attempts {
        let url = format!("{base}{}", args[1]);
        let r = tb.curl_args(
            &tb.client,
            &[args[0], "-o", "/dev/null", "-w", "%{http_code}", &url],
        );
        assert_eq!(r.body, *want, "{url}: {r:?}");
    }
    // Raw request lines curl will not send: absolute-form, fragments, and a Host that lies.
    let raw = |req: &str| -> Result<String> {
        let out = tb
            .client
            .command("bash")
            .args([
                "-c",
                &format!(
                    "exec 3<>/dev/tcp/{POD_V4}/8080; printf '{req}' >&3; timeout 3 head -1 <&3"
                ),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    assert_eq!(
        raw("GET http://pod/public/../admin HTTP/1.1\\r\\nHost: pod\\r\\n\\r\\n")?,
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        raw("GET /admin HTTP/1.1\\r\\nHost: public\\r\\nX-Forwarded-For: 10.77.1.2\\r\\n\\r\\n")?,
        "HTTP/1.1 403 Forbidden"
    );
    let frag = raw("GET /public/a#/../../admin HTTP/1.1\\r\\nHost: pod\\r\\n\\r\\n")?;
    assert!(
        frag == "HTTP/1.1 200 OK" || frag == "HTTP/1.1 400 Bad Request",
        "{frag}"
    );
    // Smuggling: a request hidden behind ambiguous framing never reaches the application.
    let smuggle = |req: &str| -> Result<String> {
        let out = tb
            .client
            .command("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/{POD_V4}/8080; printf '{req}' >&3; timeout 3 cat <&3"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let cl_te = smuggle(
        "GET /public/s HTTP/1.1\r\nHost: pod\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: pod\r\n\r\n",
    )?;
    assert!(
        cl_te.starts_with("HTTP/1.1 200") && !cl_te.contains("HTTP/1.1 403"),
        "{cl_te}"
    );
    let dup_cl = smuggle(
        "GET /public/s HTTP/1.1\r\nHost: pod\r\nContent-Length: 1\r\nContent-Length: 40\r\n\r\nxGET /admin/dup HTTP/1.1\r\nHost: pod\r\n\r\n",
    )?;
    // 400, or a reset that beat it: the proxy closes with the smuggled bytes unread, and the
    // kernel's RST may discard the response. Either way the app must not see /admin (below).
    assert!(
        dup_cl.is_empty() || dup_cl.starts_with("HTTP/1.1 400"),
        "{dup_cl}"
    );
    let fold =
        smuggle("GET /public/s HTTP/1.1\r\nHost: pod\r\nX-A: 1\r\n X-Admin: /admin\r\n\r\n")?;
    assert!(
        fold.is_empty() || fold.starts_with("HTTP/1.1 400"),
        "{fold}"
    );

    // What the application itself received: only allowed /public paths, and never anything
    // under /admin, however it was spelled.
    let received = tb.app_received();
    assert!(!received.is_empty());
    for line in &received {
        let target = line.split_whitespace().nth(1).unwrap_or_default();
        assert!(
            target.starts_with("/public/"),
            "the app received {line:?}; all: {received:#?}"
        );
        assert!(
            !target.to_ascii_lowercase().contains("admin") || target.contains('?'),
            "{line}"
        );
    }
    let log = tb.wait_access_log(attempts.len() + 3)?;
    for l in &log {
        if l["verdict"] == "allow" {
            let path = l["path"].as_str().unwrap_or_default();
            assert!(path.starts_with("/public/"), "allowed {path}: {l}");
        }
    }
    Ok(())
}

#[test]
fn http_1_0_clients_never_see_a_502_from_a_closed_pooled_connection() -> Result<()> {
    // ApacheBench speaks HTTP/1.0 without keep-alive: every request is served by the full
    // server, whose upstream connections the Python app closes after each HTTP/1.0 exchange.
    let tb = start()?;
    let out = tb
        .client
        .command("ab")
        .args([
            "-q",
            "-n",
            "1000",
            "-c",
            "1",
            &format!("http://{POD_V4}:8080/public/ab"),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(
        field("Complete requests:").as_deref(),
        Some("1000"),
        "{text}"
    );
    assert_eq!(field("Failed requests:").as_deref(), Some("0"), "{text}");
    assert_eq!(
        field("Non-2xx responses:"),
        None,
        "every answer was a 200: {text}"
    );
    Ok(())
}
