//! `portcullis-injector`: flags → certificate → HTTPS server until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use portcullis_injector::config::{Args, InjectConfig};
use portcullis_injector::tls::CertStore;

async fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = InjectConfig::load(&args.inject)?;
    cfg.trust_domain.clone_from(&args.trust_domain);
    let cfg = Arc::new(cfg);
    let store = Arc::new(CertStore::load(&args.tls_cert, &args.tls_key)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving /mutate and /healthz");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    portcullis_injector::server::serve(
        listener,
        store,
        cfg,
        Duration::from_secs(args.cert_poll.max(1)),
        shutdown,
    )
    .await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-injector: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-injector: {e:#}");
            ExitCode::FAILURE
        }
    }
}
