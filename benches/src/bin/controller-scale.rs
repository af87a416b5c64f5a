//! The control plane at scale: a generated cluster (default 10 000 pods in 100 namespaces, 1 000
//! NetworkPolicies) read by the real `portcullis-controller` binary (its own process) from a `dir`
//! source, 1 000 subscribers on the real gRPC API (lightweight tonic clients in this process),
//! then one label change. Prints: time to read and index the snapshot, time until every
//! subscriber holds its first full view, p50/p99/max from the label change (the file rename) to
//! every affected subscriber holding the new version, the controller's own RSS and CPU (from
//! `/proc/<pid>`), the size of the largest view, and the memory of two real `portcullis-proxy`
//! sidecars side by side: one whose view selects every pod of the cluster, one with no peers.
//! `--meshed` annotates every pod as meshed, so that every view lists every pod (mTLS targets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use portcullis_api::v1;
use portcullis_api::v1::sidecar_client::SidecarClient;
use prost::Message as _;
use tokio::sync::Mutex;
use tokio_stream::StreamExt as _;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
    /// Annotate every pod as meshed (injected, `portcullis.dev/mtls: enabled`): every view then
    /// lists every pod's addresses and identity.
    #[arg(long)]
    meshed: bool,
}

/// Pod `i` of namespace `n`: labels app (10 per namespace), tier (3), team (of the namespace).
fn cluster(args: &Args, relabel: Option<usize>) -> String {
    let mut out = String::with_capacity(args.pods * 300);
    let per_ns = args.pods / args.namespaces;
    let mesh = if args.meshed {
        ", annotations: {portcullis.dev/injected: v1, portcullis.dev/mtls: enabled}"
    } else {
        ""
    };
    for n in 0..args.namespaces {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{team: t{}, env: {}}}}}\n",
            n % 10,
            if n % 2 == 0 { "prod" } else { "dev" }
        ));
        for i in 0..per_ns {
            let k = n * per_ns + i;
            let app = if relabel == Some(k) {
                "moved".to_string()
            } else {
                format!("app-{}", i % 10)
            };
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns-{n}, labels: {{app: {app}, tier: t{}}}{mesh}}}\nspec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{phase: Running, podIP: 10.{}.{}.{}}}\n",
                i % 3,
                k / 65536 % 256,
                k / 256 % 256,
                k % 256
            ));
        }
    }
    let per_ns_policies = args.policies / args.namespaces;
    for n in 0..args.namespaces {
        for j in 0..per_ns_policies {
            out.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np-{j}, namespace: ns-{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: app-{j}}}}}\n  ingress:\n    - from: [{{podSelector: {{matchLabels: {{app: app-{}}}}}}}]\n      ports: [{{port: http}}]\n    - from: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}, podSelector: {{matchLabels: {{tier: t0}}}}}}]\n",
                (j + 1) % 10,
                (n + 1) % 10
            ));
        }
    }
    // A sidecar whose view holds every pod (ns wide), and one with no peers (ns empty).
    out.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: wide}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: empty}\n");
    for (ns, ip) in [("wide", "10.255.0.1"), ("empty", "10.255.0.2")] {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: sidecar, namespace: {ns}}}\nspec: {{containers: []}}\nstatus: {{phase: Running, podIP: {ip}}}\n"
        ));
    }
    out.push_str("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-everyone, namespace: wide}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}}]}]\n");
    out
}

fn write(dir: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("cluster.yaml"))?;
    Ok(())
}

/// A field of `/proc/<pid>/status` in MB.
fn rss_mb(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU seconds of `pid` (`self` for this process).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A child process, killed (by its PID) and reaped when dropped, also on errors.
struct Child(std::process::Child);

impl Child {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary built next to this one (`cargo build --release` builds them together).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: cargo build --release -p portcullis-controller -p portcullis-proxy",
        path.display()
    );
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` on `port` of loopback: the status line ("" when nothing answers).
fn status(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or_default().to_string()
}

/// Waits until `GET /ready` on `port` answers 200.
async fn ready(what: &str, port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !status(port, "/ready").contains(" 200") {
        anyhow::ensure!(child.0.try_wait()?.is_none(), "{what} exited");
        anyhow::ensure!(Instant::now() < deadline, "{what} never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The last `snapshot applied` line of the controller's log: (parse ms, index ms).
fn last_load(log: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |line: &str, name: &str| {
        line.split(&format!("\"{name}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    text.lines()
        .rev()
        .find(|l| l.contains("snapshot applied"))
        .map_or((0, 0), |l| (field(l, "parse_ms"), field(l, "index_ms")))
}

/// The controller binary on a `dir` source in `dir`, plaintext API on a free port.
fn start_controller(dir: &Path) -> anyhow::Result<(Child, u16, u16)> {
    let (api, admin) = (free_port()?, free_port()?);
    let child = std::process::Command::new(sibling("portcullis-controller")?)
        .args([
            "--source",
            &format!("dir:{}", dir.join("cluster.yaml").display()),
        ])
        .args([
            "--api-plaintext",
            "--log-format",
            "json",
            "--source-poll",
            "3600s",
        ])
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log"))?)
        .spawn()
        .context("starting portcullis-controller")?;
    Ok((Child(child), api, admin))
}

/// A real sidecar following the controller as `ns/sidecar` (loopback ports, no capture).
async fn sidecar(dir: &Path, api: u16, ns: &str) -> anyhow::Result<(Child, u16)> {
    let [inbound, outbound, admin] = [free_port()?, free_port()?, free_port()?];
    let child = std::process::Command::new(sibling("portcullis-proxy")?)
        .args(["run", "--access-log", "off"])
        .args(["--controller", &format!("http://127.0.0.1:{api}")])
        .args(["--pod-name", "sidecar", "--pod-namespace", ns])
        .args(["--inbound-port", &inbound.to_string()])
        .args(["--outbound-port", &outbound.to_string()])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            dir.join(format!("sidecar-{ns}.log")),
        )?)
        .spawn()
        .context("starting portcullis-proxy")?;
    let mut child = Child(child);
    ready(&format!("sidecar {ns}"), admin, &mut child).await?;
    Ok((child, admin))
}

/// What each subscriber has seen: (version, when it arrived).
type Seen = Arc<Mutex<BTreeMap<usize, (u64, Instant)>>>;

/// Subscribes the first pod of each of `args.subscribers` spread evenly over the cluster;
/// returns the largest first view's size.
async fn subscribe(args: &Args, url: String, seen: &Seen) -> anyhow::Result<usize> {
    let per_ns = args.pods / args.namespaces;
    let mut largest = 0usize;
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await
        .context("connect")?;
    for s in 0..args.subscribers {
        let k = s * args.pods / args.subscribers;
        let (ns, pod) = (format!("ns-{}", k / per_ns), format!("p{}", k % per_ns));
        let mut client = SidecarClient::new(channel.clone());
        let mut stream = client
            .watch(v1::WatchRequest { namespace: ns, pod })
            .await?
            .into_inner();
        let first = stream.next().await.context("first view")??;
        largest = largest.max(first.encoded_len());
        seen.lock().await.insert(k, (first.version, Instant::now()));
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(view)) = stream.next().await {
                seen.lock().await.insert(k, (view.version, Instant::now()));
            }
        });
    }
    Ok(largest)
}

/// Waits until some view moved and nothing arrived for 1.5 s (or a minute passed); the
/// delays from `changed_at` of the subscribers whose version moved, sorted.
async fn settle(seen: &Seen, before: &BTreeMap<usize, u64>, changed_at: Instant) -> Vec<Duration> {
    let deadline = changed_at + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = seen.lock().await;
        let moved = now.iter().any(|(k, (v, _))| before.get(k) != Some(v));
        let quiet = now
            .values()
            .all(|(_, t)| t.elapsed() > Duration::from_millis(1500));
        if (moved && quiet) || Instant::now() > deadline {
            let mut delays: Vec<Duration> = now
                .iter()
                .filter(|(k, (v, _))| before.get(k) != Some(v))
                .map(|(_, (_, t))| t.duration_since(changed_at))
                .collect();
            delays.sort();
            return delays;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("portcullis-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let generated = Instant::now();
    write(dir, &cluster(args, None))?;
    println!(
        "generated {} pods, {} namespaces, {} policies in {:?}",
        args.pods,
        args.namespaces,
        args.policies,
        generated.elapsed()
    );
    let started = Instant::now();
    let (mut controller, api, admin) = start_controller(dir)?;
    let pid = controller.pid();
    ready("the controller", admin, &mut controller).await?;
    // Ready comes a moment before the load's log line.
    let mut load = last_load(&dir.join("controller.log"));
    for _ in 0..100 {
        if load != (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        load = last_load(&dir.join("controller.log"));
    }
    let (parse_ms, index_ms) = load;
    println!(
        "snapshot read and indexed: {:?} (parse {parse_ms} ms, index {index_ms} ms; controller cpu {:.2} s), controller RSS {:.0} MB",
        started.elapsed(),
        cpu_seconds(&pid),
        rss_mb(&pid)
    );

    let seen: Seen = Arc::default();
    let subscribed = Instant::now();
    let largest = subscribe(args, format!("http://127.0.0.1:{api}"), &seen).await?;
    println!(
        "{} subscribers hold their first full view after {:?}; largest view {:.1} KiB; controller RSS {:.0} MB, subscribers' process RSS {:.0} MB",
        args.subscribers,
        subscribed.elapsed(),
        largest as f64 / 1024.0,
        rss_mb(&pid),
        rss_mb("self")
    );

    // One label change: pod 1 of namespace 0 changes app; affected are the views that select it.
    let before: BTreeMap<usize, u64> = seen
        .lock()
        .await
        .iter()
        .map(|(k, (v, _))| (*k, *v))
        .collect();
    let cpu1 = cpu_seconds(&pid);
    let changed_at = Instant::now();
    write(dir, &cluster(args, Some(1)))?;
    // The poll is an hour: the directory watch must see it.
    let delays = settle(&seen, &before, changed_at).await;
    let (parse_ms, index_ms) = last_load(&dir.join("controller.log"));
    println!(
        "label change: {} of {} subscribers got a new version; from the file rename to holding it p50 {:?} p99 {:?} max {:?} (controller: parse {parse_ms} ms, index {index_ms} ms, cpu {:.2} s)",
        delays.len(),
        args.subscribers,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default(),
        cpu_seconds(&pid) - cpu1,
    );
    println!("controller RSS {:.0} MB", rss_mb(&pid));

    // Two real sidecars side by side: every pod of the cluster a peer, and none.
    let (wide, _) = sidecar(dir, api, "wide").await?;
    let (empty, _) = sidecar(dir, api, "empty").await?;
    let (w, e) = (rss_mb(&wide.pid()), rss_mb(&empty.pid()));
    println!(
        "sidecar RSS with a {}-peer view {w:.1} MB, with no peers {e:.1} MB (ratio {:.2})",
        args.pods + 2,
        w / e.max(0.1)
    );
    Ok(())
}
