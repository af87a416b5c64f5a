//! `load`: Portcullis side by side with the proxies users would pick instead, in one run.
//!
//! On the namespace testbed (client ns → pod ns), one nginx upstream in the pod serves a small
//! fixed body. The client runs wrk / h2load / iperf3 pinned to CPU 0; every proxy under test is
//! pinned to CPU 1 with one worker: Portcullis transparently through `portcullis-init`'s
//! REDIRECT in L4 mode (a port the policy admits whole) and in L7 mode (a port judged by a
//! 50-rule HTTP policy), haproxy (mode http and mode tcp) and nginx `proxy_pass`; "direct" is an
//! excluded port of the same nginx. Runs are interleaved (every target once per round), medians
//! are reported with ratios to direct and to haproxy, p50/p99 latency, CPU seconds per 10 000
//! requests of the proxy process, and Portcullis' RSS idle, at peak, and holding idle
//! keep-alive connections. Writes `report.md` and `results.csv` to `--out`.
//!
//! `cargo build --release --workspace --bins && target/release/load` (root); `--quick` is the
//! smoke run CI does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use portcullis_benches::load::{
    Results, Sample, parse_h2load, parse_iperf, parse_wrk, stat_ppid, stat_ticks,
};
use portcullis_testbed::process::Process;
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Capture, Testbed, TestbedOptions};

const DIRECT: u16 = 9999;
const DIRECT_H2: u16 = 9998;
const L4: u16 = 8090;
const L7: u16 = 8091;
const L4_H2: u16 = 8092;
const L7_H2: u16 = 8093;
const HAPROXY_HTTP: u16 = 9001;
const HAPROXY_TCP: u16 = 9002;
const NGINX_PROXY: u16 = 9003;
const HAPROXY_TCP_H2: u16 = 9004;
const IPERF_CAPTURED: u16 = 5201;
const IPERF_DIRECT: u16 = 5202;
const IPERF_HAPROXY: u16 = 5203;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Interleaved rounds (medians are taken over them).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Idle keep-alive connections held for the memory measurement.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Smoke run: 1 round of 1 s, 500 idle connections.
    #[arg(long)]
    quick: bool,
    /// Portcullis runtime workers (1 = current-thread runtime).
    #[arg(long, default_value_t = 1)]
    proxy_workers: usize,
    /// Extra flags for Portcullis (repeatable), e.g. `--proxy-arg=--access-log=off`.
    #[arg(long, allow_hyphen_values = true)]
    proxy_arg: Vec<String>,
    /// Only these targets (comma list of names), e.g. for profiling one path.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only loads whose name contains this text.
    #[arg(long)]
    load: Option<String>,
    /// Where report.md and results.csv go.
    #[arg(long, default_value = "target/load-report")]
    out: PathBuf,
}

/// 50 inbound rules: an L4 rule admitting the L4 ports whole, and 49 HTTP rules plus the
/// benchmark's `GET /` on the L7 ports, so every request there is parsed and judged.
fn policy() -> String {
    let l7 = format!("[{L7}, {L7_H2}]");
    let mut s = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: bench}}\nspec:\n  inbound:\n    default: deny\n    rules:\n      - {{name: l4, action: allow, ports: [{L4}, {L4_H2}, {IPERF_CAPTURED}]}}\n"
    );
    for i in 0..48 {
        let rule = match i % 4 {
            0 => format!(
                "{{name: r{i}, action: deny, ports: {l7}, http: [{{paths: [\"/admin{i}/*\"]}}]}}"
            ),
            1 => format!(
                "{{name: r{i}, action: allow, ports: {l7}, http: [{{methods: [POST], paths: [\"/api/v{i}/*\"]}}]}}"
            ),
            2 => format!(
                "{{name: r{i}, action: allow, ports: {l7}, from: [{{cidr: 10.{i}.0.0/16}}], http: [{{paths: [\"~/items/[0-9]+/{i}\"]}}]}}"
            ),
            _ => format!(
                "{{name: r{i}, action: allow, ports: {l7}, http: [{{paths: [\"/p{i}\"], headers: {{x-tenant: t{i}}}}}]}}"
            ),
        };
        let _ = writeln!(s, "      - {rule}");
    }
    let _ = writeln!(
        s,
        "      - {{name: root, action: allow, ports: {l7}, http: [{{methods: [GET], paths: [\"/\"]}}]}}"
    );
    s
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.to_str().context("path")?.to_string())
}

/// Waits until `port` accepts connections in the pod.
fn wait_port(tb: &Testbed, port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let up = tb
            .pod
            .command("bash")
            .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if up {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} did not listen on {port}")
}

/// The peers and the upstream, started in the pod namespace.
struct Peers {
    _procs: Vec<Process>,
    haproxy: u32,
    nginx_proxy: u32,
}

fn start_peers(tb: &Testbed, dir: &Path) -> Result<Peers> {
    let d = dir.display();
    let upstream = write(
        dir,
        "upstream.conf",
        &format!(
            "worker_processes 2; worker_rlimit_nofile 20000; pid {d}/up.pid; error_log {d}/up.err;\n\
             events {{ worker_connections 16000; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {DIRECT} reuseport; listen {L4}; listen {L7};\n\
                 location / {{ return 200 \"ok\\n\"; }} }}\n\
               server {{ listen {DIRECT_H2} http2; listen {L4_H2} http2; listen {L7_H2} http2;\n\
                 location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )?;
    let nginx_proxy = write(
        dir,
        "nginx-proxy.conf",
        &format!(
            "worker_processes 1; worker_rlimit_nofile 20000; pid {d}/np.pid; error_log {d}/np.err;\n\
             events {{ worker_connections 16000; }}\n\
             http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}; proxy_temp_path {d};\n\
               fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               upstream up {{ server 127.0.0.1:{DIRECT}; keepalive 64; }}\n\
               server {{ listen {NGINX_PROXY}; location / {{ proxy_pass http://up;\n\
                 proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }} }}\n"
        ),
    )?;
    let haproxy = write(
        dir,
        "haproxy.cfg",
        &format!(
            "global\n  nbthread 1\n  maxconn 9000\n\
             defaults\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend fh\n  mode http\n  bind :{HAPROXY_HTTP}\n  default_backend bh\n\
             backend bh\n  mode http\n  http-reuse always\n  server s1 127.0.0.1:{DIRECT}\n\
             frontend ft\n  mode tcp\n  bind :{HAPROXY_TCP}\n  default_backend bt\n\
             backend bt\n  mode tcp\n  server s1 127.0.0.1:{DIRECT}\n\
             frontend ft2\n  mode tcp\n  bind :{HAPROXY_TCP_H2}\n  default_backend bt2\n\
             backend bt2\n  mode tcp\n  server s1 127.0.0.1:{DIRECT_H2}\n\
             frontend fi\n  mode tcp\n  bind :{IPERF_HAPROXY}\n  default_backend bi\n\
             backend bi\n  mode tcp\n  server s1 127.0.0.1:{IPERF_DIRECT}\n"
        ),
    )?;
    let quiet = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    // Each under a raised open-file limit, stopped by PID with the harness.
    let daemon = |name: &str, line: String| -> Result<Process> {
        let mut cmd = tb.pod.command("bash");
        cmd.args(["-c", &format!("ulimit -n 20000; exec {line}")]);
        quiet(&mut cmd);
        Process::spawn(name, &mut cmd)
    };
    let mut procs = vec![daemon(
        "upstream nginx",
        format!("nginx -c {upstream} -g 'daemon off;'"),
    )?];
    let np = daemon(
        "nginx proxy_pass",
        format!("taskset -c 1 nginx -c {nginx_proxy} -g 'daemon off;'"),
    )?;
    let nginx_proxy = np.pid();
    procs.push(np);
    let hp = daemon("haproxy", format!("taskset -c 1 haproxy -db -f {haproxy}"))?;
    let haproxy = hp.pid();
    procs.push(hp);
    for port in [IPERF_CAPTURED, IPERF_DIRECT] {
        let mut cmd = tb.pod.command("iperf3");
        cmd.args(["-s", "-p", &port.to_string()]);
        quiet(&mut cmd);
        procs.push(Process::spawn("iperf3 server", &mut cmd)?);
    }
    for (port, what) in [
        (DIRECT, "upstream nginx"),
        (NGINX_PROXY, "nginx proxy_pass"),
        (HAPROXY_HTTP, "haproxy"),
    ] {
        wait_port(tb, port, what)?;
    }
    // iperf3 servers take a stray probe connection badly: give them a moment instead.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Peers {
        _procs: procs,
        haproxy,
        nginx_proxy,
    })
}

/// CPU ticks of `pid` and (for nginx) its children.
fn cpu_ticks(pids: &[u32], with_children: bool) -> u64 {
    let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let mut total: u64 = pids
        .iter()
        .filter_map(|p| stat(*p))
        .filter_map(|s| stat_ticks(&s))
        .sum();
    if with_children && let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(s) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(stat)
            else {
                continue;
            };
            if stat_ppid(&s).is_some_and(|pp| pids.contains(&pp)) {
                total += stat_ticks(&s).unwrap_or(0);
            }
        }
    }
    total
}

fn clk_tck() -> f64 {
    nix_like_sysconf().unwrap_or(100.0)
}

fn nix_like_sysconf() -> Option<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// KiB of a /proc/<pid>/status field.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[derive(Clone, Copy)]
enum Tool {
    Wrk { conns: u32, close: bool },
    H2load,
    Iperf,
}

struct Target {
    name: &'static str,
    port: u16,
    /// PIDs whose CPU counts, and whether their children count too.
    cpu: Option<(Vec<u32>, bool)>,
}

fn run_tool(tb: &Testbed, tool: Tool, port: u16, seconds: u32) -> Result<Sample> {
    let url = format!("http://{POD_V4}:{port}/");
    let mut cmd = tb.client.command("taskset");
    cmd.args(["-c", "0"]);
    match tool {
        Tool::Wrk { conns, close } => {
            cmd.args([
                "wrk",
                "-t1",
                "--latency",
                &format!("-c{conns}"),
                &format!("-d{seconds}s"),
            ]);
            if close {
                cmd.args(["-H", "Connection: close"]);
            }
            cmd.arg(&url);
        }
        Tool::H2load => {
            cmd.args([
                "h2load",
                "-c10",
                "-m10",
                "-t1",
                "-D",
                &seconds.to_string(),
                &url,
            ]);
        }
        Tool::Iperf => {
            cmd.args([
                "iperf3",
                "-J",
                "-c",
                POD_V4,
                "-p",
                &port.to_string(),
                "-t",
                &seconds.to_string(),
            ]);
        }
    }
    let out = cmd
        .output()
        .context("running the load tool (scripts/install-deps.sh)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(errors) = text.lines().find(|l| l.contains("Socket errors")) {
        eprintln!("note: port {port}: {}", errors.trim());
    }
    let parsed = match tool {
        Tool::Wrk { .. } => parse_wrk(&text),
        Tool::H2load => parse_h2load(&text),
        Tool::Iperf => parse_iperf(&text),
    };
    parsed.map_err(|e| anyhow::anyhow!("port {port}: {e}"))
}

/// Opens `n` keep-alive connections to the L7 port, each with one answered request, and holds
/// them; returns the holder (stopped by PID when dropped) once all are open.
fn hold_idle(tb: &Testbed, dir: &Path, n: usize) -> Result<Process> {
    let script = write(
        dir,
        "idle.py",
        "import socket, sys\n\
         host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n\
         socks = []\n\
         for i in range(n):\n\
         \x20   s = socket.create_connection((host, port))\n\
         \x20   s.sendall(b'GET / HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n')\n\
         \x20   got = b''\n\
         \x20   while b'\\r\\n\\r\\n' not in got or not got.endswith(b'ok\\n'):\n\
         \x20       chunk = s.recv(4096)\n\
         \x20       if not chunk: raise SystemExit('closed after %d' % i)\n\
         \x20       got += chunk\n\
         \x20   socks.append(s)\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n",
    )?;
    let mut cmd = tb.client.command("bash");
    cmd.args([
        "-c",
        &format!("ulimit -n 20000; exec python3 {script} {POD_V4} {L7} {n}"),
    ])
    .stdin(Stdio::piped())
    .stderr(Stdio::inherit());
    Process::spawn_until_ready("idle connections", &mut cmd, Duration::from_secs(180))
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.seconds = 1;
        args.idle = 500;
    }
    std::fs::create_dir_all(&args.out)?;
    let mut tb = Testbed::start(TestbedOptions {
        capture: Capture::Redirect,
        init_args: Some(vec![
            "--exclude-inbound-ports".into(),
            format!(
                "{DIRECT},{DIRECT_H2},{HAPROXY_HTTP},{HAPROXY_TCP},{NGINX_PROXY},{HAPROXY_TCP_H2},{IPERF_DIRECT},{IPERF_HAPROXY}"
            ),
        ]),
        policy: policy(),
        // The access log stays on (to a file), as deployed.
        proxy_args: [
            vec!["--worker-threads".into(), args.proxy_workers.to_string()],
            args.proxy_arg.clone(),
        ]
        .concat(),
        ..TestbedOptions::default()
    })?;
    // Connection-per-request runs leave tens of thousands of TIME_WAIT sockets. One client
    // address makes it worse than life: every captured port is REDIRECTed to the same local
    // 15006, so a run through Portcullis leaves TIME_WAITs on exactly the 4-tuples the next
    // Portcullis run will use, and its SYNs stall on them. Reuse, a wide port range and a small
    // TIME_WAIT table (the kernel then drops the oldest) keep one run from taxing the next.
    for ns in [&tb.client, &tb.pod] {
        for (key, value) in [
            ("net.ipv4.tcp_tw_reuse", "1"),
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.ipv4.tcp_max_tw_buckets", "4096"),
        ] {
            ns.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        }
    }
    let dir = tb.dir().to_path_buf();
    let proxy = tb.proxy()?.pid();
    let pin = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &proxy.to_string()])
        .output()?;
    if !pin.status.success() {
        bail!(
            "pinning the proxy: {}",
            String::from_utf8_lossy(&pin.stderr)
        );
    }
    let peers = start_peers(&tb, &dir)?;
    // Settle, then the idle footprint.
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle = status_kib(proxy, "VmRSS:").unwrap_or(0);
    let haproxy_rss_idle = status_kib(peers.haproxy, "VmRSS:").unwrap_or(0);

    let http1 =
        |name: &'static str, port: u16, cpu: Option<(Vec<u32>, bool)>| Target { name, port, cpu };
    let px = || Some((vec![proxy], false));
    let hp = || Some((vec![peers.haproxy], false));
    let np = || Some((vec![peers.nginx_proxy], true));
    let http_targets = || {
        vec![
            http1("direct", DIRECT, None),
            http1("portcullis-l4", L4, px()),
            http1("portcullis-l7", L7, px()),
            http1("haproxy-http", HAPROXY_HTTP, hp()),
            http1("haproxy-tcp", HAPROXY_TCP, hp()),
            http1("nginx-proxy", NGINX_PROXY, np()),
        ]
    };
    let loads: Vec<(&str, Tool, Vec<Target>)> = vec![
        (
            "HTTP/1.1 keep-alive, c=50",
            Tool::Wrk {
                conns: 50,
                close: false,
            },
            http_targets(),
        ),
        (
            "HTTP/1.1 keep-alive, c=1",
            Tool::Wrk {
                conns: 1,
                close: false,
            },
            http_targets(),
        ),
        (
            "HTTP/1.1 new connection per request (Connection: close), c=50",
            Tool::Wrk {
                conns: 50,
                close: true,
            },
            http_targets(),
        ),
        (
            "HTTP/2 (h2c, h2load c=10 m=10)",
            Tool::H2load,
            vec![
                http1("direct", DIRECT_H2, None),
                http1("portcullis-l4", L4_H2, px()),
                http1("portcullis-l7", L7_H2, px()),
                http1("haproxy-tcp", HAPROXY_TCP_H2, hp()),
            ],
        ),
        (
            "opaque TCP bulk (iperf3, Mbit/s)",
            Tool::Iperf,
            vec![
                http1("direct", IPERF_DIRECT, None),
                http1("portcullis-l4", IPERF_CAPTURED, px()),
                http1("haproxy-tcp", IPERF_HAPROXY, hp()),
            ],
        ),
    ];

    let tck = clk_tck();
    let mut results = Results::default();
    let started = Instant::now();
    for round in 0..args.rounds {
        for (name, tool, targets) in &loads {
            if args
                .load
                .as_ref()
                .is_some_and(|f| !name.contains(f.as_str()))
            {
                continue;
            }
            let l = results.load(name);
            // Each round starts one target later: whatever one run leaves behind (TIME_WAIT,
            // caches) falls on a different successor every round.
            let n = targets.len();
            for t in (0..n).map(|i| &targets[(i + round) % n]) {
                if !args.only.is_empty() && !args.only.iter().any(|o| o == t.name) {
                    continue;
                }
                let ti = results.target(t.name);
                let before = t.cpu.as_ref().map(|(p, c)| cpu_ticks(p, *c));
                let mut s = run_tool(&tb, *tool, t.port, args.seconds)?;
                if let (Some(b), Some((p, c))) = (before, &t.cpu) {
                    s.cpu_s = Some((cpu_ticks(p, *c).saturating_sub(b)) as f64 / tck);
                }
                results.add(l, ti, s);
            }
        }
        eprintln!(
            "round {}/{} done ({:.0?})",
            round + 1,
            args.rounds,
            started.elapsed()
        );
    }
    let rss_peak = status_kib(proxy, "VmHWM:").unwrap_or(0);
    let holder = hold_idle(&tb, &dir, args.idle)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle_conns = status_kib(proxy, "VmRSS:").unwrap_or(0);
    let haproxy_rss_conns = status_kib(peers.haproxy, "VmRSS:").unwrap_or(0);
    drop(holder);

    let unit = |load: &str| {
        if load.contains("iperf3") {
            "Mbit/s"
        } else {
            "req/s"
        }
    };
    let peer = |load: &str| {
        if load.contains("iperf3") || load.contains("HTTP/2") {
            "haproxy-tcp"
        } else {
            "haproxy-http"
        }
    };
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# Load comparison\n\n{} round(s) × {} s per run, interleaved; medians. Client tools on CPU 0; \
         every proxy on CPU 1 with one worker (Portcullis `--worker-threads 1`, haproxy `nbthread 1`, \
         nginx `worker_processes 1`); upstream nginx on both CPUs. CPU = user+system seconds of the \
         proxy process(es) per 10 000 requests.",
        args.rounds, args.seconds
    );
    report.push_str(&results.markdown(unit, peer));
    let _ = writeln!(
        report,
        "\n### Memory (RSS)\n\n| | Portcullis | haproxy |\n|---|---:|---:|\n\
         | idle, after start | {:.1} MB | {:.1} MB |\n| peak during the loads (VmHWM) | {:.1} MB | – |\n\
         | holding {} idle keep-alive connections | {:.1} MB | {:.1} MB (not connected) |",
        rss_idle as f64 / 1024.0,
        haproxy_rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        args.idle,
        rss_idle_conns as f64 / 1024.0,
        haproxy_rss_conns as f64 / 1024.0,
    );
    report.push_str(&targets(&results, rss_idle, rss_idle_conns, args.idle));
    std::fs::write(args.out.join("report.md"), &report)?;
    std::fs::write(args.out.join("results.csv"), results.csv())?;
    println!("{report}");
    eprintln!("wrote {}/report.md and results.csv", args.out.display());
    drop(peers);
    tb.proxy()?.stop();
    Ok(())
}

/// The targets, each as a same-run ratio.
fn targets(r: &Results, rss_idle: u64, rss_conns: u64, idle: usize) -> String {
    let ka50 = "HTTP/1.1 keep-alive, c=50";
    let ka1 = "HTTP/1.1 keep-alive, c=1";
    let close = "HTTP/1.1 new connection per request (Connection: close), c=50";
    let get = |l: &str, t: &str| r.summary(l, t);
    let mut out =
        String::from("\n### Targets\n\n| target | measured | goal | |\n|---|---:|---:|---|\n");
    let mut row = |what: &str, v: Option<f64>, goal: &str, ok: Option<bool>| {
        let shown = v.map_or("–".into(), |v| format!("{v:.2}"));
        let mark = match ok {
            Some(true) => "met",
            Some(false) => "missed",
            None => "n/a",
        };
        let _ = writeln!(out, "| {what} | {shown} | {goal} | {mark} |");
    };
    let ratio =
        |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    let l7 = get(ka50, "portcullis-l7");
    let v = ratio(
        l7.map(|s| s.rate),
        get(ka50, "haproxy-http").map(|s| s.rate),
    );
    row(
        "L7 keep-alive c=50 req/s ÷ haproxy-http",
        v,
        "≥ 1.30",
        v.map(|v| v >= 1.3),
    );
    let v = ratio(l7.map(|s| s.rate), get(ka50, "direct").map(|s| s.rate));
    row(
        "L7 keep-alive c=50 req/s ÷ direct",
        v,
        "≥ 0.55",
        v.map(|v| v >= 0.55),
    );
    let v = ratio(
        l7.and_then(|s| s.cpu_per_10k),
        get(ka50, "haproxy-http").and_then(|s| s.cpu_per_10k),
    );
    row(
        "L7 CPU per request ÷ haproxy-http (c=50)",
        v,
        "≤ 0.70",
        v.map(|v| v <= 0.7),
    );
    let added = |t: &str| {
        get(ka1, t)
            .and_then(|s| s.p50_us)
            .zip(get(ka1, "direct").and_then(|s| s.p50_us))
            .map(|(a, d)| a - d)
    };
    let v = ratio(added("portcullis-l7"), added("haproxy-http"));
    row(
        "L7 added median latency c=1 ÷ haproxy-http's",
        v,
        "≤ 0.60",
        v.map(|v| v <= 0.6),
    );
    let v = ratio(
        get(ka50, "portcullis-l4").map(|s| s.rate),
        get(ka50, "haproxy-tcp").map(|s| s.rate),
    );
    row(
        "L4 keep-alive c=50 req/s ÷ haproxy-tcp",
        v,
        "≥ 1.20",
        v.map(|v| v >= 1.2),
    );
    let v = ratio(
        get(close, "portcullis-l4").map(|s| s.rate),
        get(close, "direct").map(|s| s.rate),
    );
    row(
        "L4 new connections/s ÷ direct",
        v,
        "≥ 0.95",
        v.map(|v| v >= 0.95),
    );
    let mb = |k: u64| k as f64 / 1024.0;
    row(
        "RSS idle (MB)",
        Some(mb(rss_idle)),
        "≤ 12",
        Some(mb(rss_idle) <= 12.0),
    );
    let full = idle >= 10_000;
    row(
        &format!("RSS holding {idle} idle connections (MB)"),
        Some(mb(rss_conns)),
        "≤ 60 at 10 000",
        full.then_some(mb(rss_conns) <= 60.0),
    );
    out
}
