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
        for line in tb.wait_access_log(4)? {
            println!("    {line}");
        }
        println!();
    }
    println!(
        "In REDIRECT mode the app sees the proxy's delivery address 127.0.0.6; with TPROXY it sees the client ({CLIENT_V4})."
    );
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
