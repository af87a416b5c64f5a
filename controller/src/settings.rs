//! Flags (clap, each with a `PORTCULLIS_` env twin), parsed and validated once into [`Settings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use portcullis_injector::config::{InjectArgs, InjectConfig, InjectConfigError};

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
    /// Be the mesh CA with this root certificate (PEM; e.g. from a cert-manager CA Secret):
    /// sidecars get short-lived workload certificates on the sidecar API (Identity.Certify).
    #[arg(
        long,
        env = "PORTCULLIS_CA_CERT",
        requires = "ca_key",
        conflicts_with = "ca_generate"
    )]
    pub ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PEM).
    #[arg(long, env = "PORTCULLIS_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// The trust bundle handed out with each certificate (PEM; default: --ca-cert). During a
    /// root rotation: the new root and the old one.
    #[arg(long, env = "PORTCULLIS_CA_BUNDLE", requires = "ca_cert")]
    pub ca_bundle: Option<PathBuf>,
    /// Be the mesh CA with a root made at start and kept in memory only: for a single replica
    /// in a testbed (replicas would each have their own, and a restart makes a new one).
    #[arg(long, env = "PORTCULLIS_CA_GENERATE")]
    pub ca_generate: bool,
    /// How long an issued workload certificate is valid (sidecars renew at half-life).
    #[arg(long, default_value = "24h", env = "PORTCULLIS_SVID_TTL")]
    pub svid_ttl: humantime::Duration,
    /// `json` or `text` logs.
    #[arg(long, default_value = "text", value_parser = ["json", "text"], env = "PORTCULLIS_LOG_FORMAT")]
    pub log_format: String,
    /// The admission webhooks (HTTPS): `POST /mutate` (sidecar injection), `POST /validate`
    /// (policies checked at admission), `GET /healthz`.
    #[arg(long, default_value = "0.0.0.0:8443", env = "PORTCULLIS_WEBHOOK_ADDR")]
    pub webhook_addr: SocketAddr,
    /// The webhooks' serving certificate chain (PEM; re-read when it changes). With
    /// --webhook-tls-key the webhooks are served; without either they are off.
    #[arg(long, env = "PORTCULLIS_WEBHOOK_TLS_CERT")]
    pub webhook_tls_cert: Option<PathBuf>,
    /// The key of --webhook-tls-cert (PEM).
    #[arg(long, env = "PORTCULLIS_WEBHOOK_TLS_KEY")]
    pub webhook_tls_key: Option<PathBuf>,
    /// What `/mutate` puts into pods: the flags `portcullis-injector` takes.
    #[command(flatten, next_help_heading = "Injection (POST /mutate)")]
    pub inject: InjectArgs,
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

/// The admission webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// HTTPS address.
    pub addr: SocketAddr,
    /// Serving certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// What `/mutate` injects (its `policy_configmap` is also the name `/validate` knows
    /// policy ConfigMaps by).
    pub inject: InjectConfig,
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
    /// The admission webhooks; `None`: not served.
    pub webhooks: Option<WebhookSettings>,
    /// The mesh CA, if this controller is one.
    pub ca: Option<CaSettings>,
}

/// Where the mesh CA's root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRoot {
    /// Certificate, key and (optionally) bundle files.
    Files {
        /// The root certificate.
        cert: PathBuf,
        /// Its key.
        key: PathBuf,
        /// What peers trust (default: the root).
        bundle: Option<PathBuf>,
    },
    /// Made at start, in memory.
    Generate,
}

/// The mesh CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSettings {
    /// Its root.
    pub root: CaRoot,
    /// How long an SVID is valid.
    pub ttl: Duration,
}

/// A flag value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// `--source`.
    #[error("--source {0:?}: expected kube or dir:PATH")]
    Source(String),
    /// The CA on a plaintext API, or with an unusable lifetime.
    #[error("{0}")]
    Ca(String),
    /// A trust domain that SPIFFE IDs cannot carry.
    #[error(
        "--trust-domain {0:?}: expected a name such as cluster.local (letters, digits, '.', '-', '_')"
    )]
    TrustDomain(String),
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
    /// One of the webhook certificate flags without the other.
    #[error("--webhook-tls-cert and --webhook-tls-key go together (neither: no webhooks)")]
    WebhookTls,
    /// Unusable injection flags.
    #[error(transparent)]
    Inject(#[from] InjectConfigError),
}

/// The webhooks, when both certificate flags are given; the injection flags are read (and
/// `--controller-ca` with them) only then.
fn webhooks(cli: &Cli) -> Result<Option<WebhookSettings>, SettingsError> {
    match (&cli.webhook_tls_cert, &cli.webhook_tls_key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(WebhookSettings {
            addr: cli.webhook_addr,
            cert: cert.clone(),
            key: key.clone(),
            inject: InjectConfig {
                trust_domain: cli.trust_domain.clone(),
                ..InjectConfig::load(&cli.inject)?
            },
        })),
        _ => Err(SettingsError::WebhookTls),
    }
}

/// The mesh CA the flags ask for: never on a plaintext API; certificates live 5 min to 30 days.
fn ca(cli: &Cli) -> Result<Option<CaSettings>, SettingsError> {
    let root = match (&cli.ca_cert, &cli.ca_key, cli.ca_generate) {
        (Some(cert), Some(key), _) => CaRoot::Files {
            cert: cert.clone(),
            key: key.clone(),
            bundle: cli.ca_bundle.clone(),
        },
        (_, _, true) => CaRoot::Generate,
        _ => return Ok(None),
    };
    if cli.api_plaintext {
        return Err(SettingsError::Ca(
            "the mesh CA issues certificates only over the TLS API, not with --api-plaintext"
                .into(),
        ));
    }
    let ttl: Duration = cli.svid_ttl.into();
    if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400)).contains(&ttl) {
        return Err(SettingsError::Ca(format!(
            "--svid-ttl {}: between 1m and 30d",
            cli.svid_ttl
        )));
    }
    Ok(Some(CaSettings { root, ttl }))
}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-`, `_`, not empty.
fn trust_domain(td: &str) -> Result<String, SettingsError> {
    let ok = !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    ok.then(|| td.to_string())
        .ok_or_else(|| SettingsError::TrustDomain(td.to_string()))
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
            webhooks: webhooks(cli)?,
            ca: ca(cli)?,
            source,
            trust_domain: trust_domain(&cli.trust_domain)?,
            api_addr: cli.api_addr,
            admin_addr: cli.admin_addr,
            source_poll: cli.source_poll.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[&str]) -> Result<Settings, SettingsError> {
        let base = [
            "portcullis-controller",
            "--source",
            "dir:x",
            "--api-plaintext",
        ];
        Settings::from_cli(&Cli::parse_from(base.iter().chain(flags)))
    }

    #[test]
    fn webhooks_are_served_with_both_certificate_flags_and_off_with_neither() {
        let on = settings(&["--webhook-tls-cert", "c", "--webhook-tls-key", "k"]).expect("on");
        let w = on.webhooks.expect("webhooks");
        assert_eq!(
            (w.addr, w.cert, w.key),
            (
                "0.0.0.0:8443".parse().expect("addr"),
                "c".into(),
                "k".into()
            )
        );
        assert_eq!(w.inject.policy_configmap, "portcullis-policy");
        assert!(settings(&[]).expect("off").webhooks.is_none());
        for half in [["--webhook-tls-cert", "c"], ["--webhook-tls-key", "k"]] {
            let e = settings(&half).expect_err("half");
            assert!(matches!(e, SettingsError::WebhookTls), "{e}");
        }
    }

    #[test]
    fn injection_flags_are_the_injectors_and_an_https_controller_needs_its_ca() {
        let tls = ["--webhook-tls-cert", "c", "--webhook-tls-key", "k"];
        let with = |more: &[&str]| settings(&[&tls[..], more].concat());
        let s = with(&["--proxy-image", "reg/proxy:1", "--legacy-sidecar"]).expect("flags");
        let inject = s.webhooks.expect("webhooks").inject;
        assert_eq!(inject.proxy_image, "reg/proxy:1");
        assert!(!inject.native_sidecar);
        let e = with(&["--controller", "https://c:15012"]).expect_err("no ca");
        assert_eq!(
            e.to_string(),
            "--controller https://c:15012: https needs --controller-ca"
        );
        let e = with(&["--controller-ca", "/nonexistent/ca.crt"]).expect_err("unreadable");
        assert_eq!(e.to_string(), "--controller-ca /nonexistent/ca.crt");
        let e = with(&[
            "--identity-from-controller",
            "--controller",
            "http://c:15012",
        ])
        .expect_err("plaintext");
        assert_eq!(
            e.to_string(),
            "--identity-from-controller needs an https:// --controller"
        );
        // Off, the injection flags are not read.
        assert!(settings(&["--controller", "https://c:15012"]).is_ok());
    }

    #[test]
    fn the_mesh_ca_is_only_on_the_tls_api_with_a_sane_lifetime() {
        let tls = [
            "--api-tls-cert",
            "c",
            "--api-tls-key",
            "k",
            "--api-client-ca",
            "ca",
        ];
        let parse = |flags: &[&str]| {
            let argv = ["portcullis-controller", "--source", "dir:x"];
            Settings::from_cli(&Cli::try_parse_from(argv.iter().chain(flags)).expect("flags"))
        };
        let ca = parse(&[&tls[..], &["--ca-generate"]].concat())
            .expect("valid")
            .ca;
        assert_eq!(
            ca.map(|c| (c.root, c.ttl)),
            Some((CaRoot::Generate, Duration::from_secs(86_400)))
        );
        assert!(
            parse(&tls).expect("valid").ca.is_none(),
            "off unless asked for"
        );
        for (flags, want) in [
            (
                vec!["--api-plaintext", "--ca-generate"],
                "only over the TLS API",
            ),
            (
                [&tls[..], &["--ca-generate", "--svid-ttl", "59s"]].concat(),
                "between 1m and 30d",
            ),
            (
                [&tls[..], &["--ca-generate", "--svid-ttl", "31d"]].concat(),
                "between 1m and 30d",
            ),
        ] {
            let err = parse(&flags).expect_err("refused");
            assert!(err.to_string().contains(want), "{flags:?}: {err}");
        }
    }

    #[test]
    fn the_api_is_tls_with_a_way_to_authenticate_unless_plaintext_is_asked_for() {
        let tls = ["--api-tls-cert", "c.pem", "--api-tls-key", "k.pem"];
        let kinds: [(&[&str], Result<&str, &str>); 7] = [
            (&["--api-plaintext"], Ok("plaintext")),
            (&[], Err("needs --api-tls-cert")),
            (&tls, Err("sidecars authenticate with")),
            (
                &[&tls[..], &["--api-client-ca", "ca.pem"]].concat(),
                Ok("refuse"),
            ),
            (
                &[&tls[..], &["--sa-jwks", "j", "--sa-issuer", "https://i"]].concat(),
                Ok("jwks"),
            ),
            (
                &["--api-plaintext", "--trust-domain", ""],
                Err("--trust-domain"),
            ),
            (
                &["--api-plaintext", "--trust-domain", "a/b"],
                Err("--trust-domain"),
            ),
        ];
        for (flags, want) in kinds {
            let argv = ["portcullis-controller", "--source", "dir:x"];
            let cli = Cli::try_parse_from(argv.iter().chain(flags)).expect("flags");
            let got = Settings::from_cli(&cli).map(|s| match s.api_security {
                ApiSecurity::Plaintext => "plaintext",
                ApiSecurity::Tls {
                    tokens: TokenCheck::Refuse,
                    ..
                } => "refuse",
                ApiSecurity::Tls {
                    tokens: TokenCheck::Jwks { .. },
                    ..
                } => "jwks",
                ApiSecurity::Tls {
                    tokens: TokenCheck::Review,
                    ..
                } => "review",
            });
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{flags:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{flags:?}: {e}"),
                (g, w) => panic!("{flags:?}: got {g:?}, want {w:?}"),
            }
        }
    }
}
