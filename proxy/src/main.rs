//! `portcullis-proxy`: parses flags, sets up tracing and the runtime, runs the chosen
//! subcommand and maps errors to exit codes.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use portcullis_proxy::drain::Drain;
use portcullis_proxy::policy::store::PolicyStore;
use portcullis_proxy::settings::cli::{Cli, Command, LogFormat, RunArgs};
use portcullis_proxy::vocab::CaptureMode;
use portcullis_proxy::{Proxy, ProxyConfig};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal; and a log line that cannot be written (stderr's reader went
    // away) is dropped, never reported on stderr again — that report would panic whichever
    // task logged, the signal task included.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM, SIGINT and SIGHUP, registered before anything is served (a signal that arrives
/// early must drain, not kill).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// SIGHUP reloads; SIGTERM or SIGINT starts the drain.
async fn signals(mut s: Signals, drain: Drain, store: std::sync::Arc<PolicyStore>) {
    let Signals { term, int, hup } = &mut s;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the policy");
                store.reload_async().await;
            }
        }
    }
    tracing::info!("signal received: draining");
    drain.start();
}

/// Every connection costs a descriptor (two when forwarded): lift the soft limit to the hard
/// one, as proxies do, rather than failing at the default 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let config = ProxyConfig::from_args(&args)?;
    // The policy is compiled completely before any port is bound; an invalid one exits here.
    let policy = match &args.policy {
        Some(path) => portcullis_proxy::policy::load(path, &args.workload.workload())?,
        // Controller only: nothing is admitted until its first view.
        None => portcullis_proxy::policy::waiting_for_controller(),
    };
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(hash = %policy.hash, documents = policy.policy.documents.len(), "policy loaded");
    raise_fd_limit();
    if config.capture == CaptureMode::Tproxy {
        // Before any thread exists: every runtime thread inherits the raised capability.
        portcullis_proxy::privileges::raise_for_tproxy()?;
    }
    // One worker: a current-thread runtime does the same work without cross-thread wake-ups
    // and work-stealing bookkeeping.
    let mut builder = if args.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if args.worker_threads > 1 {
        builder.worker_threads(args.worker_threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("building the runtime")?;
    runtime.block_on(async {
        let registered = Signals::register().context("installing signal handlers")?;
        if let Some(enrollment) = &config.enrollment {
            // The identity is needed before the proxy starts: wait for the first certificate.
            enrollment.first().await;
        }
        let proxy = Proxy::bind(config, policy)?;
        let drain = Drain::new();
        tokio::spawn(signals(registered, drain.clone(), proxy.policy_store()));
        proxy.run(drain).await?;
        tracing::info!("drained; exiting");
        Ok(())
    })
}

/// `dev-certs`: workload certificates, a serving certificate, service-account tokens.
fn dev_certs(
    args: &portcullis_proxy::settings::cli::DevCertsArgs,
    validity: std::time::Duration,
) -> anyhow::Result<()> {
    use portcullis_proxy::commands::{dev_certs, dev_tokens};
    let mut written = Vec::new();
    if !args.workloads.is_empty() {
        written.extend(dev_certs::write_dev_certs(
            &args.out,
            &args.trust_domain,
            &args.workloads,
            validity,
        )?);
    }
    if !args.server.is_empty() {
        written.push(dev_certs::write_server_cert(
            &args.out,
            &args.server,
            validity,
        )?);
    }
    if !args.token_for.is_empty() {
        let issuer = dev_tokens::Issuer {
            iss: &args.token_issuer,
            aud: &args.token_audience,
        };
        let tokens = dev_tokens::write_tokens_of(&args.out, issuer, &args.token_for, validity)?;
        written.extend(tokens);
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => {
            let r = portcullis_proxy::commands::check::run(&args);
            print!("{}", r.out);
            eprint!("{}", r.err);
            return ExitCode::from(r.code);
        }
        Command::DevCerts(args) => {
            portcullis_proxy::settings::parse_duration("validity", &args.validity)
                .map_err(anyhow::Error::from)
                .and_then(|validity| dev_certs(&args, validity))
        }
        Command::Explain(args) => {
            let r = portcullis_proxy::commands::explain::run(&args);
            print!("{}", r.out);
            return ExitCode::from(r.code);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
