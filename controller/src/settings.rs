//! Flags (clap, each with a `PORTCULLIS_` env twin), parsed and validated once into [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::api::tls::TlsFiles;

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
    /// The API's serving certificate chain (PEM); with --api-tls-key, the API speaks TLS.
    #[arg(long, env = "PORTCULLIS_API_TLS_CERT", requires = "api_tls_key")]
    pub api_tls_cert: Option<PathBuf>,
    /// The key of --api-tls-cert (PEM).
    #[arg(long, env = "PORTCULLIS_API_TLS_KEY", requires = "api_tls_cert")]
    pub api_tls_key: Option<PathBuf>,
    /// Trust bundle of workload certificates: a sidecar presenting one is the workload its
    /// SPIFFE ID names.
    #[arg(long, env = "PORTCULLIS_API_CLIENT_CA")]
    pub api_client_ca: Option<PathBuf>,
    /// Serve the API without TLS and without authentication: anyone who reaches the port can
    /// read any workload's view. For local testbeds only.
    #[arg(long, env = "PORTCULLIS_API_PLAINTEXT", conflicts_with_all = ["api_tls_cert", "api_client_ca"])]
    pub api_plaintext: bool,
    /// The service-account issuer's JWKS (a file, as `/openid/v1/jwks` serves it): tokens are
    /// verified offline against it instead of by TokenReview.
    #[arg(long, env = "PORTCULLIS_SA_JWKS", requires = "sa_issuer")]
    pub sa_jwks: Option<PathBuf>,
    /// The service-account tokens' issuer (`iss`), for --sa-jwks.
    #[arg(long, env = "PORTCULLIS_SA_ISSUER", requires = "sa_jwks")]
    pub sa_issuer: Option<String>,
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

/// How the sidecar API is secured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSecurity {
    /// No TLS, no authentication (`--api-plaintext`).
    Plaintext,
    /// TLS; callers authenticate with a client certificate or a service-account token.
    Tls {
        /// The certificate files.
        files: TlsFiles,
        /// How tokens are verified.
        tokens: TokenCheck,
    },
}

/// How service-account tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Offline against the issuer's JWKS.
    Jwks {
        /// The JWKS file.
        path: PathBuf,
        /// The expected `iss`.
        issuer: String,
    },
    /// By the API server (TokenReview; `kube` source).
    Review,
    /// Not at all: client certificates only.
    Refuse,
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
    /// TLS and caller authentication of the API.
    pub api_security: ApiSecurity,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--source`.
    #[error("--source {0:?}: expected kube or dir:PATH")]
    Source(String),
    /// Neither TLS nor an explicit plaintext API.
    #[error(
        "the sidecar API needs --api-tls-cert and --api-tls-key (or, for a local testbed, --api-plaintext)"
    )]
    NoTls,
    /// TLS, but no way for a sidecar to authenticate.
    #[error(
        "with a dir source, sidecars authenticate with --api-client-ca (workload certificates) or --sa-jwks and --sa-issuer (service-account tokens)"
    )]
    NoAuthentication,
}

fn api_security(cli: &Cli, source: &Source) -> Result<ApiSecurity, SettingsError> {
    if cli.api_plaintext {
        return Ok(ApiSecurity::Plaintext);
    }
    let (Some(cert), Some(key)) = (&cli.api_tls_cert, &cli.api_tls_key) else {
        return Err(SettingsError::NoTls);
    };
    let tokens = match (&cli.sa_jwks, &cli.sa_issuer, source) {
        (Some(path), Some(issuer), _) => TokenCheck::Jwks {
            path: path.clone(),
            issuer: issuer.clone(),
        },
        (_, _, Source::Kube) => TokenCheck::Review,
        _ if cli.api_client_ca.is_some() => TokenCheck::Refuse,
        _ => return Err(SettingsError::NoAuthentication),
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: cli.api_client_ca.clone(),
    };
    Ok(ApiSecurity::Tls { files, tokens })
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
            api_security: api_security(cli, &source)?,
            source,
            trust_domain: cli.trust_domain.clone(),
            api_addr: cli.api_addr,
            admin_addr: cli.admin_addr,
            source_poll: cli.source_poll.into(),
        })
    }
}
