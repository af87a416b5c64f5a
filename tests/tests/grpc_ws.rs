//! gRPC and WebSocket through the proxy on the namespace testbed, with Debian's python3-grpcio
//! and python3-websockets as real peers on both sides.

use anyhow::{Context as _, Result};
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::tools;
use portcullis_testbed::{Host, Testbed, TestbedOptions};

/// Debian's interpreter, where python3-grpcio and python3-websockets are installed.
const PYTHON: &str = "/usr/bin/python3";

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: svc}
spec:
  inbound:
    default: deny
    rules:
      - {name: grpc-reads, action: allow, ports: [50051], http: [{methods: [POST], paths: ["/demo.Orders/Get"]}]}
      - {name: ws-chat, action: allow, ports: [8765], http: [{methods: [GET], paths: ["/ws/chat"]}]}
"#;

fn client_output(tb: &Testbed, script: &str, args: &[&str]) -> Result<String> {
    let out = tb
        .client
        .command("timeout")
        .arg("20")
        .arg(PYTHON)
        .arg(tools::script(script))
        .args(args)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn grpc_methods_are_allowed_or_denied_with_permission_denied() -> Result<()> {
    let mut tb = Testbed::start(TestbedOptions {
        policy: POLICY.into(),
        ..TestbedOptions::default()
    })?;
    let script = tools::script("grpc_peer.py");
    let script = script.to_str().context("path")?;
    tb.spawn_ready(
        Host::Pod,
        "grpc server",
        PYTHON,
        &[script, "server", "--listen", "[::]:50051"],
    )?;
    let target = format!("{POD_V4}:50051");
    let ok = client_output(
        &tb,
        "grpc_peer.py",
        &[
            "client",
            "--target",
            &target,
            "--method",
            "/demo.Orders/Get",
        ],
    )?;
    assert_eq!(ok.trim(), "OK 24-redro", "{ok}");
    let denied = client_output(
        &tb,
        "grpc_peer.py",
        &[
            "client",
            "--target",
            &target,
            "--method",
            "/demo.Orders/Delete",
        ],
    )?;
    assert_eq!(
        denied.trim(),
        "ERR PERMISSION_DENIED access denied",
        "{denied}"
    );
    let log = tb.wait_access_log(2)?;
    let grpc: Vec<_> = log.iter().filter(|l| l["protocol"] == "grpc").collect();
    assert_eq!(grpc.len(), 2, "{log:#?}");
    assert!(grpc.iter().any(|l| l["path"] == "/demo.Orders/Delete"
        && l["verdict"] == "deny"
        && l["status"] == 200));
    assert!(
        grpc.iter()
            .any(|l| l["path"] == "/demo.Orders/Get" && l["rule"] == "grpc-reads")
    );
    Ok(())
}

#[test]
fn websockets_open_on_allowed_paths_only() -> Result<()> {
    let mut tb = Testbed::start(TestbedOptions {
        policy: POLICY.into(),
        ..TestbedOptions::default()
    })?;
    let script = tools::script("ws_peer.py");
    let script = script.to_str().context("path")?;
    tb.spawn_ready(
        Host::Pod,
        "ws server",
        PYTHON,
        &[script, "server", "--port", "8765"],
    )?;
    let chat = client_output(
        &tb,
        "ws_peer.py",
        &["client", "--url", &format!("ws://{POD_V4}:8765/ws/chat")],
    )?;
    assert_eq!(
        chat, "/ws/chat hello\n/ws/chat hello-again\n",
        "messages flow both ways after the upgrade"
    );
    let admin = client_output(
        &tb,
        "ws_peer.py",
        &["client", "--url", &format!("ws://{POD_V4}:8765/ws/admin")],
    )?;
    assert_eq!(admin.trim(), "REJECTED 403", "{admin}");
    let log = tb.wait_access_log(2)?;
    assert!(
        log.iter()
            .any(|l| l["path"] == "/ws/chat" && l["status"] == 101 && l["rule"] == "ws-chat"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l["path"] == "/ws/admin" && l["status"] == 403)
    );
    Ok(())
}
