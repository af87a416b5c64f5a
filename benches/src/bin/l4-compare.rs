//! `l4-compare`: on the namespace testbed, the same nginx in the pod measured with wrk from the
//! client namespace, directly (an excluded port) and through the proxy (a captured port), in
//! interleaved rounds (A B A B …) so that machine noise hits both alike. Prints medians and ratios.
//!
//! With `--mtls`, the client namespace becomes a second pod with its own sidecar and the
//! comparison is between two sidecar-to-sidecar paths to the same nginx: plaintext (to the pod's
//! second address, outside `--mesh-cidrs`) and mutual TLS (to the pod IP, inside it).
//!
//! Build in release first: `cargo build --release --workspace --bins`, then
//! `target/release/l4-compare [--rounds N] [--seconds S] [--l7 | --mtls]`.

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use portcullis_benches::load::parse_wrk;
use portcullis_testbed::process::Process;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Capture, Testbed, TestbedOptions};

const CAPTURED: u16 = 8090;
const DIRECT: u16 = 9999;

#[derive(Debug, Parser)]
#[command(version, about)]
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
    /// Compare plaintext and mutual TLS between two sidecars instead of direct vs proxied.
    #[arg(long, conflicts_with = "l7")]
    mtls: bool,
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

/// (name, connections, `Connection: close`) of every comparison.
const SCENARIOS: [(&str, u32, bool); 3] = [
    (
        "new connection per request (Connection: close), c=50",
        50,
        true,
    ),
    ("keep-alive, c=50", 50, false),
    ("keep-alive, c=1", 1, false),
];

/// What one wrk run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_us: f64,
}

/// Requests per second and median latency reported by wrk against `host:port`.
fn wrk(tb: &Testbed, host: &str, port: u16, conns: u32, close: bool, seconds: u32) -> Result<Run> {
    let mut cmd = tb.client.command("wrk");
    cmd.args([
        "-t1",
        "--latency",
        &format!("-c{conns}"),
        &format!("-d{seconds}s"),
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{host}:{port}/"));
    let out = cmd.output().context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(errors) = text.lines().find(|l| l.contains("Socket errors")) {
        eprintln!("note: {host}:{port} c={conns}: {}", errors.trim());
    }
    let s = parse_wrk(&text).map_err(anyhow::Error::msg)?;
    let p50_us = s
        .p50_us
        .with_context(|| format!("no 50% latency in wrk output: {text}"))?;
    Ok(Run {
        rps: s.rate,
        p50_us,
    })
}

/// Two sidecars: the pod's with `shop/server`, the client's with `a/client` and the pod IP as
/// its mesh. The pod's second address (10.77.2.1) is routed from the client over the same link
/// and stays plaintext.
fn mtls_testbed() -> Result<Testbed> {
    let mut tb = Testbed::start(TestbedOptions {
        capture: Capture::Redirect,
        proxy: false,
        ..TestbedOptions::default()
    })?;
    let certs = tb.dev_certs("certs", "24h", &["a/client", "shop/server"])?;
    let server = certs.join("shop-server");
    tb.set_proxy_args(&["--identity-dir", server.to_str().context("path")?]);
    tb.start_proxy()?;
    let client = certs.join("a-client");
    tb.start_client_sidecar(
        portcullis_testbed::testbed::OPEN_POLICY,
        &[
            "--identity-dir",
            client.to_str().context("path")?,
            "--mesh-cidrs",
            &format!("{POD_V4}/32"),
        ],
    )?;
    tb.client.ip(&[
        "route",
        "add",
        &format!("{PLAIN_V4}/32"),
        "via",
        POD_V4,
        "dev",
        "eth0",
    ])?;
    Ok(tb)
}

/// The pod's second address, reached plaintext in `--mtls` mode.
const PLAIN_V4: &str = portcullis_testbed::testbed::POD_UPLINK_V4;

fn median(v: Vec<f64>) -> f64 {
    portcullis_benches::load::median(v).unwrap_or(0.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.mtls {
        return mtls(&args);
    }
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
    for (name, conns, close) in SCENARIOS {
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            direct.push(wrk(&tb, POD_V4, DIRECT, conns, close, args.seconds)?.rps);
            proxied.push(wrk(&tb, POD_V4, CAPTURED, conns, close, args.seconds)?.rps);
        }
        let (d, p) = (median(direct), median(proxied));
        println!("| {name} | {d:.0} | {p:.0} | {:.2} |", p / d);
    }
    Ok(())
}

fn mtls(args: &Args) -> Result<()> {
    let tb = mtls_testbed()?;
    let dir = tb.dir().to_path_buf();
    let _nginx = nginx(&tb, &dir)?;
    println!("mode: two sidecars, plaintext vs mutual TLS between them (L4, open policy)");
    println!(
        "| scenario | plaintext req/s | mTLS req/s | mTLS/plaintext | plaintext p50 | mTLS p50 | p50 mTLS/plaintext |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, conns, close) in SCENARIOS {
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            plain.push(wrk(&tb, PLAIN_V4, CAPTURED, conns, close, args.seconds)?);
            tls.push(wrk(&tb, POD_V4, CAPTURED, conns, close, args.seconds)?);
        }
        let rps = |v: &[Run]| median(v.iter().map(|r| r.rps).collect());
        let p50 = |v: &[Run]| median(v.iter().map(|r| r.p50_us).collect());
        let (pr, tr, pl, tl) = (rps(&plain), rps(&tls), p50(&plain), p50(&tls));
        println!(
            "| {name} | {pr:.0} | {tr:.0} | {:.2} | {pl:.0} µs | {tl:.0} µs | {:.2} |",
            tr / pr,
            tl / pl
        );
    }
    let log = std::fs::read_to_string(tb.access_log_path())?;
    let mtls_records = log
        .lines()
        .filter(|l| l.contains("spiffe://cluster.local/ns/a/sa/client"))
        .count();
    if mtls_records == 0 {
        bail!("the pod's sidecar saw no mTLS peer: the comparison is not what it claims");
    }
    Ok(())
}
