//! `portcullis-controller`: parse the flags, log, serve.

use anyhow::Context as _;
use clap::Parser;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{Cli, Settings};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let settings = Settings::from_cli(&cli)?;
    let runtime = tokio::runtime::Runtime::new().context("building the runtime")?;
    runtime.block_on(async {
        let controller = Controller::bind(settings).await?;
        controller.run().await.map_err(anyhow::Error::from)
    })
}
