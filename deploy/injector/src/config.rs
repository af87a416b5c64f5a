//! Flags of `portcullis-injector`, validated once into [`InjectConfig`] (what goes into pods)
//! and the server settings. The injection flags are [`InjectArgs`], which `portcullis-controller`
//! flattens into its own flags too (it serves `/mutate` with this crate).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// `portcullis-injector` flags (each also read from `PORTCULLIS_<FLAG>`, as CONTRACT.md says).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "portcullis-injector",
    version,
    about = "Portcullis sidecar injector (Kubernetes mutating admission webhook)"
)]
pub struct Args {
    /// HTTPS listen address.
    #[arg(long, default_value = "0.0.0.0:8443", env = "PORTCULLIS_LISTEN")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(long, env = "PORTCULLIS_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Serving private key (PEM); re-read when it changes.
    #[arg(long, env = "PORTCULLIS_TLS_KEY")]
    pub tls_key: PathBuf,
    /// How often the certificate files are checked for changes (seconds).
    #[arg(long, default_value_t = 5, env = "PORTCULLIS_CERT_POLL")]
    pub cert_poll: u64,
    /// The mesh's SPIFFE trust domain (the controller's), for enrolling sidecars. (The
    /// controller, serving injection itself, passes its own.)
    #[arg(long, default_value = "cluster.local", env = "PORTCULLIS_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// What goes into pods.
    #[command(flatten)]
    pub inject: InjectArgs,
}

/// The injection flags: what goes into pods (each also read from `PORTCULLIS_<FLAG>`).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectArgs {
    /// Image of the sidecar.
    #[arg(
        long,
        default_value = "portcullis/proxy:dev",
        env = "PORTCULLIS_PROXY_IMAGE"
    )]
    pub proxy_image: String,
    /// Image of the init container.
    #[arg(
        long,
        default_value = "portcullis/init:dev",
        env = "PORTCULLIS_INIT_IMAGE"
    )]
    pub init_image: String,
    /// Inject the proxy as a regular container, for clusters older than 1.29 (no native
    /// sidecars). Init containers of the pod then run before any proxy exists.
    #[arg(long, env = "PORTCULLIS_LEGACY_SIDECAR")]
    pub legacy_sidecar: bool,
    /// Default for `portcullis.dev/mode`.
    #[arg(long, default_value = "enforce", value_parser = ["enforce", "audit"], env = "PORTCULLIS_MODE")]
    pub mode: String,
    /// Default for `portcullis.dev/capture`.
    #[arg(long, default_value = "redirect", value_parser = ["redirect", "tproxy"], env = "PORTCULLIS_CAPTURE")]
    pub capture: String,
    /// Default for `portcullis.dev/policy` (ConfigMap name in the pod's namespace).
    #[arg(long, default_value = "portcullis-policy", env = "PORTCULLIS_POLICY")]
    pub policy: String,
    /// Default for `portcullis.dev/exclude-inbound-ports`.
    #[arg(long, default_value = "", env = "PORTCULLIS_EXCLUDE_INBOUND_PORTS")]
    pub exclude_inbound_ports: String,
    /// Default for `portcullis.dev/exclude-outbound-ports`.
    #[arg(long, default_value = "", env = "PORTCULLIS_EXCLUDE_OUTBOUND_PORTS")]
    pub exclude_outbound_ports: String,
    /// Default for `portcullis.dev/exclude-outbound-cidrs`.
    #[arg(long, default_value = "", env = "PORTCULLIS_EXCLUDE_OUTBOUND_CIDRS")]
    pub exclude_outbound_cidrs: String,
    /// Default for `portcullis.dev/opaque-ports`.
    #[arg(long, default_value = "", env = "PORTCULLIS_OPAQUE_PORTS")]
    pub opaque_ports: String,
    /// The controller's sidecar API (`https://portcullis-controller.portcullis-system.svc:15012`):
    /// injected sidecars follow it (`--controller`, with the pod's name and namespace from the
    /// Downward API, authenticating with a projected service-account token of audience
    /// `portcullis`), besides the policy ConfigMap. Empty: they enforce the ConfigMap alone.
    #[arg(long, default_value = "", env = "PORTCULLIS_CONTROLLER")]
    pub controller: String,
    /// The bundle that verifies the controller's serving certificate (PEM); injected inline
    /// into every sidecar. Needed for an `https://` --controller.
    #[arg(long, env = "PORTCULLIS_CONTROLLER_CA")]
    pub controller_ca: Option<PathBuf>,
    /// Injected sidecars get their workload certificate from the controller's mesh CA
    /// (`--identity-from-controller`, an in-memory identity volume): only where the controller
    /// is a CA, since a sidecar waits for its first certificate. Needs an `https://` --controller.
    #[arg(long, env = "PORTCULLIS_IDENTITY_FROM_CONTROLLER")]
    pub identity_from_controller: bool,
    /// Namespaces never injected.
    #[arg(
        long,
        default_value = "kube-system,kube-public,kube-node-lease,portcullis-system",
        value_delimiter = ',',
        env = "PORTCULLIS_SYSTEM_NAMESPACES"
    )]
    pub system_namespaces: Vec<String>,
    /// Proxy CPU request.
    #[arg(long, default_value = "50m", env = "PORTCULLIS_PROXY_CPU_REQUEST")]
    pub proxy_cpu_request: String,
    /// Proxy memory request.
    #[arg(long, default_value = "32Mi", env = "PORTCULLIS_PROXY_MEMORY_REQUEST")]
    pub proxy_memory_request: String,
    /// Proxy CPU limit (empty: none).
    #[arg(long, default_value = "", env = "PORTCULLIS_PROXY_CPU_LIMIT")]
    pub proxy_cpu_limit: String,
    /// Proxy memory limit (empty: none).
    #[arg(long, default_value = "256Mi", env = "PORTCULLIS_PROXY_MEMORY_LIMIT")]
    pub proxy_memory_limit: String,
}

/// What the injector puts into pods.
#[derive(Debug, Clone)]
pub struct InjectConfig {
    /// Written as `portcullis.dev/injected`.
    pub version: String,
    /// Sidecar image.
    pub proxy_image: String,
    /// Init image.
    pub init_image: String,
    /// Native sidecar (init container with `restartPolicy: Always`), else a regular container.
    pub native_sidecar: bool,
    /// Default mode.
    pub mode: String,
    /// Default capture.
    pub capture: String,
    /// Default policy ConfigMap.
    pub policy_configmap: String,
    /// Default inbound exclusions.
    pub exclude_inbound_ports: String,
    /// Default outbound port exclusions.
    pub exclude_outbound_ports: String,
    /// Default outbound CIDR exclusions.
    pub exclude_outbound_cidrs: String,
    /// Default opaque ports.
    pub opaque_ports: String,
    /// The controller URL injected sidecars follow (empty: none).
    pub controller: String,
    /// The controller's trust bundle (PEM; empty: none), read from `--controller-ca`.
    pub controller_ca_pem: String,
    /// Sidecars enroll with the controller's mesh CA.
    pub identity_from_controller: bool,
    /// The mesh's trust domain (set by whoever serves injection: the injector's or the
    /// controller's `--trust-domain`).
    pub trust_domain: String,
    /// Never injected.
    pub system_namespaces: Vec<String>,
    /// Proxy resources (empty = unset).
    pub proxy_cpu_request: String,
    /// Proxy resources.
    pub proxy_memory_request: String,
    /// Proxy resources.
    pub proxy_cpu_limit: String,
    /// Proxy resources.
    pub proxy_memory_limit: String,
}

/// Why the injection flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InjectConfigError {
    /// `--controller-ca` cannot be read.
    #[error("--controller-ca {}", .path.display())]
    ControllerCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An `https://` controller without the bundle that verifies it.
    #[error("--controller {0}: https needs --controller-ca")]
    NoControllerCa(String),
    /// Certificates over plaintext.
    #[error("--identity-from-controller needs an https:// --controller")]
    IdentityWithoutTls,
}

impl InjectConfig {
    /// From the flags, without reading `--controller-ca` (`controller_ca_pem` stays empty).
    pub fn from_args(a: &InjectArgs) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            proxy_image: a.proxy_image.clone(),
            init_image: a.init_image.clone(),
            native_sidecar: !a.legacy_sidecar,
            mode: a.mode.clone(),
            capture: a.capture.clone(),
            policy_configmap: a.policy.clone(),
            exclude_inbound_ports: a.exclude_inbound_ports.clone(),
            exclude_outbound_ports: a.exclude_outbound_ports.clone(),
            exclude_outbound_cidrs: a.exclude_outbound_cidrs.clone(),
            opaque_ports: a.opaque_ports.clone(),
            controller: a.controller.clone(),
            controller_ca_pem: String::new(),
            identity_from_controller: a.identity_from_controller,
            trust_domain: "cluster.local".into(),
            system_namespaces: a.system_namespaces.clone(),
            proxy_cpu_request: a.proxy_cpu_request.clone(),
            proxy_memory_request: a.proxy_memory_request.clone(),
            proxy_cpu_limit: a.proxy_cpu_limit.clone(),
            proxy_memory_limit: a.proxy_memory_limit.clone(),
        }
    }

    /// From the flags, with the `--controller-ca` bundle read; an `https://` `--controller`
    /// without one is an error (its sidecars could not verify the controller).
    pub fn load(a: &InjectArgs) -> Result<Self, InjectConfigError> {
        let mut cfg = Self::from_args(a);
        if let Some(path) = &a.controller_ca {
            cfg.controller_ca_pem = std::fs::read_to_string(path).map_err(|source| {
                InjectConfigError::ControllerCa {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        if cfg.controller.starts_with("https://") && cfg.controller_ca_pem.is_empty() {
            return Err(InjectConfigError::NoControllerCa(cfg.controller));
        }
        if cfg.identity_from_controller && !cfg.controller.starts_with("https://") {
            return Err(InjectConfigError::IdentityWithoutTls);
        }
        Ok(cfg)
    }

    /// The defaults, as the flags give them (tests and examples).
    pub fn defaults() -> Self {
        let a = Args::parse_from(["portcullis-injector", "--tls-cert", "c", "--tls-key", "k"]);
        Self::from_args(&a.inject)
    }
}
