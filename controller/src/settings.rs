//! Flags (clap, each with a `PORTCULLIS_` env twin), parsed and validated once into [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `portcullis-controller`: the control plane.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Where cluster state comes from: `kube` (the API server: in-cluster service account, or
    /// the kubeconfig) or `dir:PATH` (manifests as `kubectl get -A -o yaml` writes them,
    /// watched).
    #[arg(long, default_value = "kube", env = "PORTCULLIS_SOURCE")]
    pub source: String,
    /// The mesh's SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local", env = "PORTCULLIS_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// The sidecar API (gRPC).
    #[arg(long, default_value = "0.0.0.0:15012", env = "PORTCULLIS_API_ADDR")]
    pub api_addr: SocketAddr,
    /// `/metrics`, `/ready`, `/live`.
    #[arg(long, default_value = "0.0.0.0:15014", env = "PORTCULLIS_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// How often a `dir` source is re-read even without a change event.
    #[arg(long, default_value = "2s", env = "PORTCULLIS_SOURCE_POLL")]
    pub source_poll: humantime::Duration,
    /// `json` or `text` logs.
    #[arg(long, default_value = "text", value_parser = ["json", "text"], env = "PORTCULLIS_LOG_FORMAT")]
    pub log_format: String,
}

/// Where cluster state comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A directory (or file) of manifests.
    Dir(PathBuf),
    /// The API server.
    Kube,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The source.
    pub source: Source,
    /// Trust domain.
    pub trust_domain: String,
    /// gRPC address.
    pub api_addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// Poll interval of a `dir` source.
    pub source_poll: Duration,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--source`.
    #[error("--source {0:?}: expected kube or dir:PATH")]
    Source(String),
}

impl Settings {
    /// Validates the flags.
    pub fn from_cli(cli: &Cli) -> Result<Self, SettingsError> {
        let source = match (cli.source.as_str(), cli.source.strip_prefix("dir:")) {
            ("kube", _) => Source::Kube,
            (_, Some(path)) if !path.is_empty() => Source::Dir(PathBuf::from(path)),
            _ => return Err(SettingsError::Source(cli.source.clone())),
        };
        Ok(Self {
            source,
            trust_domain: cli.trust_domain.clone(),
            api_addr: cli.api_addr,
            admin_addr: cli.admin_addr,
            source_poll: cli.source_poll.into(),
        })
    }
}
