//! `l4-compare`: on the namespace testbed, the same nginx in the pod measured with wrk from the
//! client namespace, directly (an excluded port) and through the proxy (a captured port), in
//! interleaved rounds (A B A B …) so that machine noise hits both alike. Prints medians and ratios.
//!
//! Build in release first: `cargo build --release --workspace --bins`, then
//! `target/release/l4-compare [--rounds N] [--seconds S]`.

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use portcullis_testbed::process::Process;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Capture, Testbed, TestbedOptions};

const CAPTURED: u16 = 8090;
const DIRECT: u16 = 9999;

#[derive(Debug, Parser)]
struct Args {
    /// Interleaved rounds per scenario.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Enforce a 50-rule HTTP policy, so every request is parsed and judged (L7 mode).
    #[arg(long)]
    l7: bool,
}

/// 50 inbound rules; only HTTP rules apply to the captured port, so requests are judged one by
/// one. The benchmark's `GET /` is allowed by the last one.
fn l7_policy() -> String {
    let mut s = String::from(
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: bench}\nspec:\n  inbound:\n    default: deny\n    rules:\n",
    );
    for i in 0..49 {
        let rule = match i % 4 {
            0 => format!("{{name: r{i}, action: deny, http: [{{paths: [\"/admin{i}/*\"]}}]}}"),
            1 => format!(
                "{{name: r{i}, action: allow, http: [{{methods: [POST], paths: [\"/api/v{i}/*\"]}}]}}"
            ),
            2 => format!(
                "{{name: r{i}, action: allow, from: [{{cidr: 10.{i}.0.0/16}}], http: [{{paths: [\"~/items/[0-9]+/{i}\"]}}]}}"
            ),
            _ => format!(
                "{{name: r{i}, action: allow, http: [{{paths: [\"/p{i}\"], headers: {{x-tenant: t{i}}}}}]}}"
            ),
        };
        s.push_str(&format!("      - {rule}\n"));
    }
    s.push_str("      - {name: root, action: allow, http: [{methods: [GET], paths: [\"/\"]}]}\n");
    s
}

fn nginx(tb: &Testbed, dir: &std::path::Path) -> Result<Process> {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx.err;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
           fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
           server {{ listen {CAPTURED}; listen {DIRECT}; location / {{ return 200 \"ok\\n\"; }} }} }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let p = Process::spawn(
        "nginx",
        tb.pod
            .command("nginx")
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]),
    )?;
    for _ in 0..100 {
        if tb
            .curl(&tb.pod, &format!("http://127.0.0.1:{DIRECT}/"))
            .exit
            == 0
        {
            return Ok(p);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    bail!("nginx did not start")
}

/// Requests per second reported by wrk.
fn wrk(tb: &Testbed, port: u16, conns: u32, close: bool, seconds: u32) -> Result<f64> {
    let mut cmd = tb.client.command("wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{seconds}s")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{POD_V4}:{port}/"));
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut options = TestbedOptions {
        capture: Capture::Redirect,
        init_args: Some(vec!["--exclude-inbound-ports".into(), DIRECT.to_string()]),
        ..TestbedOptions::default()
    };
    if args.l7 {
        options.policy = l7_policy();
    }
    let tb = Testbed::start(options)?;
    println!(
        "mode: {}",
        if args.l7 {
            "L7 (50-rule HTTP policy, every request judged)"
        } else {
            "L4 (open policy)"
        }
    );
    let dir = tb
        .access_log_path()
        .parent()
        .context("testbed dir")?
        .to_path_buf();
    let _nginx = nginx(&tb, &dir)?;
    println!("| scenario | direct req/s | via proxy req/s | proxy/direct |");
    println!("|---|---:|---:|---:|");
    for (name, conns, close) in [
        (
            "new connection per request (Connection: close), c=50",
            50,
            true,
        ),
        ("keep-alive, c=50", 50, false),
        ("keep-alive, c=1", 1, false),
    ] {
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            direct.push(wrk(&tb, DIRECT, conns, close, args.seconds)?);
            proxied.push(wrk(&tb, CAPTURED, conns, close, args.seconds)?);
        }
        let (d, p) = (median(direct), median(proxied));
        println!("| {name} | {d:.0} | {p:.0} | {:.2} |", p / d);
    }
    Ok(())
}
