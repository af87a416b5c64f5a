//! `testbed`: bring the namespace testbed up by hand, or run the demo (a short, narrated traffic
//! run through the real capture rules and proxy).

use std::io::BufRead as _;

use anyhow::Result;
use clap::{Parser, Subcommand};
use portcullis_testbed::testbed::{CLIENT_V4, CLIENT_V6, POD_V4, POD_V6, UPSTREAM_V4};
use portcullis_testbed::{Capture, Testbed, TestbedOptions};

#[derive(Debug, Parser)]
#[command(about = "Portcullis namespace testbed")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring the testbed up, show traffic through the proxy, tear it down.
    Demo,
    /// Bring the testbed up and keep it until Enter is pressed.
    Up {
        /// Capture inbound traffic with TPROXY instead of REDIRECT.
        #[arg(long)]
        tproxy: bool,
    },
}

fn show(title: &str, tb: &Testbed, ns: &portcullis_testbed::netns::Netns, url: &str) {
    let r = tb.curl(ns, url);
    let outcome = if r.exit == 0 {
        r.body.trim().to_string()
    } else {
        format!("curl exit {}: {}", r.exit, r.stderr.trim())
    };
    println!("  {title}\n    $ curl {url}\n    → {outcome}");
}

fn demo_policy() -> String {
    format!(
        "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: demo}}
spec:
  inbound:
    default: deny
    rules:
      - name: client-to-web
        action: allow
        from: [{{cidr: {CLIENT_V4}/32}}, {{cidr: \"{CLIENT_V6}/128\"}}]
        ports: [8080]
  outbound:
    default: allow
"
    )
}

fn demo() -> Result<()> {
    println!(
        "== Portcullis demo: a pod's traffic captured by portcullis-init and judged by the proxy ==\n"
    );
    println!("policy:\n{}", demo_policy());
    for capture in [Capture::Redirect, Capture::Tproxy] {
        println!("-- inbound capture: {capture:?} --");
        let mut tb = Testbed::start(TestbedOptions {
            capture,
            policy: demo_policy(),
            ..TestbedOptions::default()
        })?;
        show(
            "client → pod (inbound, IPv4); `client_ip` is what the app sees:",
            &tb,
            &tb.client,
            &format!("http://{POD_V4}:8080/hello"),
        );
        show(
            "client → pod (inbound, IPv6):",
            &tb,
            &tb.client,
            &format!("http://[{POD_V6}]:8080/hello"),
        );
        show(
            "pod → upstream (outbound):",
            &tb,
            &tb.pod,
            &format!("http://{UPSTREAM_V4}/out"),
        );
        show(
            "client → pod port 8081: not allowed by the policy, closed before the app sees a byte:",
            &tb,
            &tb.client,
            &format!("http://{POD_V4}:8081/"),
        );
        // The proxy writes its log in batches (every 50 ms): read it before the kill below.
        let logged = tb.wait_access_log(4)?;
        if capture == Capture::Redirect {
            tb.kill_proxy()?;
            show(
                "proxy killed: client → pod fails closed (no bypass):",
                &tb,
                &tb.client,
                &format!("http://{POD_V4}:8080/"),
            );
        }
        println!("  access log (one JSON line per connection, written by the proxy):");
        for line in logged {
            println!("    {line}");
        }
        println!();
    }
    println!(
        "In REDIRECT mode the app sees the proxy's delivery address 127.0.0.6; with TPROXY it sees the client ({CLIENT_V4})."
    );
    println!();
    mtls_demo()
}

fn mtls_policy() -> &'static str {
    "apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: mesh-demo}
spec:
  inbound:
    default: deny
    rules:
      - name: only-the-client-workload
        action: allow
        from: [{identity: spiffe://cluster.local/ns/a/sa/client}]
        ports: [8080]
"
}

/// Two sidecars: the client namespace becomes a pod with its own sidecar, certificates come
/// from `portcullis-proxy dev-certs`, and the pod admits one workload identity.
fn mtls_demo() -> Result<()> {
    println!("-- mutual TLS between two sidecars (client pod → server pod) --");
    println!("policy of the server pod:\n{}", mtls_policy());
    let mut tb = Testbed::start(TestbedOptions {
        policy: mtls_policy().to_string(),
        proxy: false,
        ..TestbedOptions::default()
    })?;
    let certs = tb.dev_certs("certs", "24h", &["a/client", "b/other", "shop/server"])?;
    println!(
        "  certificates: portcullis-proxy dev-certs --out {} a/client b/other shop/server",
        certs.display()
    );
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    tb.set_proxy_args(&["--identity-dir", &path(certs.join("shop-server"))]);
    tb.start_proxy()?;
    let mesh = format!("{POD_V4}/32,{POD_V6}/128");
    for (who, dir) in [("a/client", "a-client"), ("b/other", "b-other")] {
        tb.start_client_sidecar(
            portcullis_testbed::testbed::OPEN_POLICY,
            &[
                "--identity-dir",
                &path(certs.join(dir)),
                "--mesh-cidrs",
                &mesh,
            ],
        )?;
        show(
            &format!("client pod as {who} → server pod (the sidecars speak mTLS on the wire):"),
            &tb,
            &tb.client,
            &format!("http://{POD_V4}:8080/hello"),
        );
    }
    println!("  server pod's access log (the caller's SPIFFE ID is the `identity`):");
    for line in tb.wait_access_log(2)? {
        println!("    {line}");
    }
    Ok(())
}

fn up(tproxy: bool) -> Result<()> {
    let capture = if tproxy {
        Capture::Tproxy
    } else {
        Capture::Redirect
    };
    let tb = Testbed::start(TestbedOptions {
        capture,
        ..TestbedOptions::default()
    })?;
    println!("testbed up ({capture:?}). Try:");
    println!(
        "  ip netns exec {} curl http://{POD_V4}:8080/",
        tb.client.name()
    );
    println!(
        "  ip netns exec {} curl http://{UPSTREAM_V4}/",
        tb.pod.name()
    );
    println!("  tail -f {}", tb.access_log_path().display());
    println!("Press Enter to tear down.");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Demo => demo(),
        Cmd::Up { tproxy } => up(tproxy),
    }
}
