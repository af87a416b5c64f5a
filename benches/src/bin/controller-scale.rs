//! The control plane at scale: a generated cluster (default 10 000 pods in 100 namespaces, 1 000
//! NetworkPolicies) read by the real `portcullis-controller` library from a `dir` source, 1 000
//! subscribers on the real gRPC API (lightweight tonic clients in this process), then one label
//! change. Prints: time to read and index the snapshot, time until every subscriber holds its
//! first full view, p50/p99/max from the label change (the file rename) to every affected
//! subscriber holding the new version, the controller's RSS and the process CPU, and the size of
//! the largest view (a sidecar's memory for its peers is about that).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use portcullis_api::v1;
use portcullis_api::v1::sidecar_client::SidecarClient;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{ApiSecurity, Settings, Source};
use prost::Message as _;
use tokio::sync::Mutex;
use tokio_stream::StreamExt as _;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 100)]
    namespaces: usize,
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    #[arg(long, default_value_t = 1_000)]
    subscribers: usize,
}

/// Pod `i` of namespace `n`: labels app (10 per namespace), tier (3), team (of the namespace).
fn cluster(args: &Args, relabel: Option<usize>) -> String {
    let mut out = String::with_capacity(args.pods * 300);
    let per_ns = args.pods / args.namespaces;
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
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns-{n}, labels: {{app: {app}, tier: t{}}}}}\nspec: {{containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{phase: Running, podIP: 10.{}.{}.{}}}\n",
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
    out
}

fn write(dir: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(".cluster.yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join("cluster.yaml"))?;
    Ok(())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
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

/// What each subscriber has seen: (version, when it arrived).
type Seen = Arc<Mutex<BTreeMap<usize, (u64, Instant)>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("portcullis-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let generated = Instant::now();
    write(&dir, &cluster(&args, None))?;
    println!(
        "generated {} pods, {} namespaces, {} policies in {:?}",
        args.pods,
        args.namespaces,
        args.policies,
        generated.elapsed()
    );

    let controller = Controller::bind(Settings {
        source: Source::Dir(dir.clone()),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse()?,
        admin_addr: "127.0.0.1:0".parse()?,
        source_poll: Duration::from_secs(3600),
        api_security: ApiSecurity::Plaintext,
    })
    .await?;
    let url = format!("http://{}", controller.api_addr()?);
    let publisher = controller.publisher.clone();
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    tokio::spawn(controller.run());
    while !publisher.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "snapshot read and indexed: {:?} (cpu {:.2} s), controller RSS {:.0} MB",
        started.elapsed(),
        cpu_seconds() - cpu0,
        rss_mb()
    );

    // Subscribers: the first pod of each of `subscribers` evenly spread over the cluster.
    let per_ns = args.pods / args.namespaces;
    let seen: Seen = Arc::default();
    let mut largest = 0usize;
    let subscribed = Instant::now();
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
    println!(
        "{} subscribers hold their first full view after {:?}; largest view {:.1} KiB; RSS {:.0} MB",
        args.subscribers,
        subscribed.elapsed(),
        largest as f64 / 1024.0,
        rss_mb()
    );

    // One label change: pod 1 of namespace 0 changes app; affected are the views that select it.
    let before: BTreeMap<usize, u64> = seen
        .lock()
        .await
        .iter()
        .map(|(k, (v, _))| (*k, *v))
        .collect();
    let cpu1 = cpu_seconds();
    let changed_at = Instant::now();
    write(&dir, &cluster(&args, Some(1)))?;
    // The poll is an hour: the directory watch must see it.
    // Settled: some view moved and nothing arrived for 1.5 s (or a minute passed).
    let deadline = changed_at + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = seen.lock().await;
        let moved = now.iter().any(|(k, (v, _))| before.get(k) != Some(v));
        let quiet = now
            .values()
            .all(|(_, t)| t.elapsed() > Duration::from_millis(1500));
        if (moved && quiet) || Instant::now() > deadline {
            break;
        }
    }
    let now = seen.lock().await;
    let mut delays: Vec<Duration> = now
        .iter()
        .filter(|(k, (v, _))| before.get(k) != Some(v))
        .map(|(_, (_, t))| t.duration_since(changed_at))
        .collect();
    delays.sort();
    println!(
        "label change: {} of {} subscribers got a new version; from the file rename to holding it p50 {:?} p99 {:?} max {:?} (controller cpu {:.2} s incl. re-reading the snapshot)",
        delays.len(),
        args.subscribers,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or_default(),
        cpu_seconds() - cpu1,
    );
    println!("controller process RSS {:.0} MB", rss_mb());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
