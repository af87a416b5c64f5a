//! What an identity costs: the real controller (in this process, real gRPC over TLS on
//! loopback, the token checked against the issuer's JWKS) as the mesh CA, and a sidecar's
//! enrollment from the proxy library doing what a sidecar does at start and at every rotation —
//! a fresh P-256 key, a CSR, a new TLS connection, `Identity.Certify`, the files written.
//! Prints wall time per issuance (p50, p99, max) over `--rounds` sequential rounds and the CPU
//! this process spent per round (sidecar and controller together), then the same for the part
//! that is the sidecar's alone (key + CSR), side by side in one run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use portcullis_controller::api::tls::TlsFiles;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{
    ApiSecurity, CaRoot, CaSettings, Settings, Source, TokenCheck,
};
use portcullis_proxy::commands::dev_certs::write_server_cert;
use portcullis_proxy::commands::dev_tokens::write_tokens;
use portcullis_proxy::mesh::enroll::Enrollment;
use portcullis_proxy::policy::controller::{ControllerTarget, ControllerTls};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(usage.user_time()) + t(usage.system_time())
}

fn summary(what: &str, mut times: Vec<Duration>, cpu: Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; CPU {:.2} ms per round ({} rounds)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3 / times.len() as f64,
        times.len()
    );
}

async fn controller(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir.join("cluster"))?;
    std::fs::write(
        dir.join("cluster/cluster.yaml"),
        "apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n  - {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x}, spec: {containers: []}, status: {phase: Running, podIP: 10.0.0.1}}\n",
    )?;
    let creds = dir.join("creds");
    write_server_cert(&creds, &["127.0.0.1".into()], Duration::from_secs(86_400))?;
    write_tokens(
        &creds,
        ISSUER,
        &["x/a=default".parse().map_err(anyhow::Error::msg)?],
        Duration::from_secs(86_400),
    )?;
    let controller = Controller::bind(Settings {
        source: Source::Dir(dir.join("cluster")),
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse()?,
        admin_addr: "127.0.0.1:0".parse()?,
        source_poll: Duration::from_millis(200),
        api_security: ApiSecurity::Tls {
            files: TlsFiles {
                cert: creds.join("server/tls.crt"),
                key: creds.join("server/tls.key"),
                client_ca: Some(creds.join("ca.crt")),
            },
            tokens: TokenCheck::Jwks {
                path: creds.join("sa/jwks.json"),
                issuer: ISSUER.into(),
            },
        },
        webhooks: None,
        ca: Some(CaSettings {
            root: CaRoot::Generate,
            ttl: Duration::from_secs(86_400),
        }),
    })
    .await
    .context("controller")?;
    let url = format!("https://{}", controller.api_addr()?);
    let publisher = controller.publisher.clone();
    tokio::spawn(controller.run());
    while !publisher.is_ready() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("portcullis-identity-cost-{}", std::process::id()));
    let url = controller(&dir).await?;
    let creds = dir.join("creds");
    let enrollment = Enrollment {
        target: ControllerTarget {
            url,
            namespace: "x".into(),
            pod: "a".into(),
            tls: Some(ControllerTls {
                ca_pem: std::fs::read_to_string(creds.join("ca.crt"))?,
                token: Some(creds.join("sa/tokens/x/a")),
                identity_dir: None,
            }),
        },
        dir: dir.join("identity"),
        trust_domain: "cluster.local".into(),
    };
    enrollment.once().await.context("warm-up issuance")?;
    let (mut full, start) = (Vec::new(), cpu());
    for _ in 0..args.rounds {
        let t = Instant::now();
        enrollment.once().await.context("issuance")?;
        full.push(t.elapsed());
    }
    summary(
        "full TLS handshake + token check + key, CSR and issuance + files",
        full,
        cpu() - start,
    );
    let (mut local, start) = (Vec::new(), cpu());
    for _ in 0..args.rounds {
        let t = Instant::now();
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://cluster.local/ns/x/sa/default".try_into()?,
        )];
        std::hint::black_box(params.serialize_request(&key)?.pem()?);
        local.push(t.elapsed());
    }
    summary(
        "of which the sidecar's key and CSR alone",
        local,
        cpu() - start,
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
