//! The command line of `portcullis-proxy`: subcommands and flags, each flag with its
//! `PORTCULLIS_<FLAG>` environment twin. Parsing only; validation lives in [`crate::settings`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::policy::Workload;
use crate::vocab::CaptureMode;

/// `portcullis-proxy`.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-proxy",
    version,
    about = "Portcullis: a transparent L7 sidecar access proxy"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Run(RunArgs),
    /// Validate policy sources: a summary per document, errors as file:line:col: message.
    Check(CheckArgs),
    /// Show how the policy decides one connection or request, step by step.
    Explain(ExplainArgs),
    /// Create a throwaway CA and per-workload SPIFFE certificates for local trials.
    DevCerts(DevCertsArgs),
}

/// Flags of `dev-certs`.
#[derive(Debug, Clone, Args)]
pub struct DevCertsArgs {
    /// Output directory (ca.crt, ca.key, and one `<ns>-<sa>/` per workload).
    #[arg(long)]
    pub out: PathBuf,
    /// SPIFFE trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// How long the certificates are valid (`24h`, `30d`).
    #[arg(long, default_value = "24h")]
    pub validity: String,
    /// Workloads as `namespace/serviceaccount`.
    #[arg(required_unless_present_any = ["server", "token_for"])]
    pub workloads: Vec<String>,
    /// Also a serving certificate (`out/server/`) for these DNS names or IPs, e.g. the
    /// controller's API.
    #[arg(long)]
    pub server: Vec<String>,
    /// Also a service-account issuer (`out/sa/jwks.json`) and a projected-style token
    /// (`out/sa/tokens/<ns>/<pod>`) per `namespace/pod=serviceaccount`.
    #[arg(long)]
    pub token_for: Vec<crate::commands::dev_tokens::TokenFor>,
    /// The issuer (`iss`) of those tokens.
    #[arg(long, default_value = "https://kubernetes.default.svc.cluster.local")]
    pub token_issuer: String,
    /// The audience (`aud`) of those tokens (what the controller accepts is `portcullis`).
    #[arg(long, default_value = crate::commands::dev_tokens::AUDIENCE)]
    pub token_audience: String,
}

/// What the policy needs to know about this workload (NetworkPolicy selection, named ports).
#[derive(Debug, Clone, Default, Args)]
pub struct WorkloadArgs {
    /// The workload's labels, as the Downward API writes them (`key="value"` lines).
    #[arg(long, env = "PORTCULLIS_WORKLOAD_LABELS")]
    pub workload_labels: Option<PathBuf>,
    /// The workload's named container ports: `name=port,…` (`name=port/UDP` for UDP or SCTP).
    #[arg(long, default_value = "", env = "PORTCULLIS_NAMED_PORTS")]
    pub named_ports: String,
    /// The workload's namespace (Downward API `metadata.namespace`): NetworkPolicies of other
    /// namespaces never apply, and policies without `metadata.namespace` are in this one.
    #[arg(long, env = "PORTCULLIS_POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl WorkloadArgs {
    /// The workload facts the policy reads.
    pub fn workload(&self) -> Workload {
        Workload {
            labels_file: self.workload_labels.clone(),
            named_ports: self.named_ports.clone(),
            namespace: self.pod_namespace.clone(),
        }
    }
}

/// Flags of `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Policy files or directories.
    #[arg(required_unless_present = "cluster")]
    pub paths: Vec<PathBuf>,
    /// A cluster snapshot (`kubectl get -A -o yaml` output, a file or directory): its policies
    /// are checked, and for every pod it says which policies select it and what they isolate.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Workload facts.
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// Flags of `explain`.
#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// Policy file or directory (with --cluster: added to the snapshot's policies).
    #[arg(long, required_unless_present = "cluster")]
    pub policy: Option<PathBuf>,
    /// A cluster snapshot (`kubectl get -A -o yaml` output, a file or directory): its policies
    /// are judged for the pod whose address is --dst (inbound) or --src (outbound), with every
    /// selector resolved against its pods; a pod at the other address is the peer.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// `inbound` or `outbound`.
    #[arg(long, value_parser = ["inbound", "outbound"])]
    pub direction: String,
    /// The connecting side: `IP` or `IP:PORT`.
    #[arg(long)]
    pub src: String,
    /// The original destination: `IP:PORT`.
    #[arg(long)]
    pub dst: String,
    /// The peer's authenticated identity (SPIFFE ID).
    #[arg(long)]
    pub identity: Option<String>,
    /// This workload's own trust domain (from its identity): `identity: "*"` and `namespace`
    /// rules match only peers of it.
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// The TLS SNI.
    #[arg(long)]
    pub sni: Option<String>,
    /// HTTP method (judges a request when given with or without --path).
    #[arg(long)]
    pub method: Option<String>,
    /// HTTP request target (path and query).
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP Host.
    #[arg(long)]
    pub host: Option<String>,
    /// A request header `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// A bearer token (validated against --jwks).
    #[arg(long)]
    pub jwt: Option<String>,
    /// JWKS file to validate --jwt with.
    #[arg(long)]
    pub jwks: Option<PathBuf>,
    /// Workload facts.
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// `--capture redirect|tproxy`: the flag values of the data path's capture mode.
impl ValueEnum for CaptureMode {
    fn value_variants<'a>() -> &'a [Self] {
        &[CaptureMode::Redirect, CaptureMode::Tproxy]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(match self {
            CaptureMode::Redirect => clap::builder::PossibleValue::new("redirect")
                .help("nat REDIRECT: the original destination comes from SO_ORIGINAL_DST"),
            CaptureMode::Tproxy => clap::builder::PossibleValue::new("tproxy")
                .help("TPROXY: the application sees the client's own address"),
        })
    }
}

/// Whether denials are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Denied traffic is refused.
    Enforce,
    /// Denials are logged and counted as `audit_deny`; the traffic passes.
    Audit,
}

/// Diagnostics log format (the access log is always JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Text,
}

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Policy file or directory (a mounted ConfigMap); with --controller, its documents are
    /// enforced together with the controller's.
    #[arg(
        long,
        env = "PORTCULLIS_POLICY",
        required_unless_present = "controller"
    )]
    pub policy: Option<PathBuf>,
    /// The controller's sidecar API (`https://HOST:15012`): this pod's view — its namespace's
    /// policies, with selectors resolved — is watched and enforced (needs --pod-name and
    /// --pod-namespace). Until the first view arrives nothing is admitted and /ready says 503.
    /// `http://` only for a controller run with --api-plaintext (local testbeds).
    #[arg(long, env = "PORTCULLIS_CONTROLLER", requires_all = ["pod_name", "pod_namespace"])]
    pub controller: Option<String>,
    /// The trust bundle (PEM file) that verifies the controller's serving certificate.
    #[arg(
        long,
        env = "PORTCULLIS_CONTROLLER_CA",
        conflicts_with = "controller_ca_pem"
    )]
    pub controller_ca: Option<PathBuf>,
    /// The same bundle inline, as the injector passes it.
    #[arg(long, env = "PORTCULLIS_CONTROLLER_CA_PEM", hide_env_values = true)]
    pub controller_ca_pem: Option<String>,
    /// The projected service-account token (audience `portcullis`) this sidecar authenticates
    /// with, re-read on every connect as kubelet rotates it. With --identity-dir, the workload
    /// certificate is presented as well.
    #[arg(long, env = "PORTCULLIS_CONTROLLER_TOKEN")]
    pub controller_token: Option<PathBuf>,
    /// This pod's name (Downward API `metadata.name`), for --controller.
    #[arg(long, env = "PORTCULLIS_POD_NAME")]
    pub pod_name: Option<String>,
    /// Workload facts.
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Inbound capture listener port.
    #[arg(long, default_value_t = 15006, env = "PORTCULLIS_INBOUND_PORT")]
    pub inbound_port: u16,
    /// Outbound capture listener port.
    #[arg(long, default_value_t = 15001, env = "PORTCULLIS_OUTBOUND_PORT")]
    pub outbound_port: u16,
    /// Admin server (health, metrics) address.
    #[arg(long, default_value = "0.0.0.0:15020", env = "PORTCULLIS_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// `enforce`, or `audit` (would-be denials are logged as audit_deny and let through).
    #[arg(long, value_enum, default_value_t = Mode::Enforce, env = "PORTCULLIS_MODE")]
    pub mode: Mode,
    /// Directory with the workload's `tls.crt`, `tls.key` and `ca.crt` (re-read on rotation).
    #[arg(long, env = "PORTCULLIS_IDENTITY_DIR")]
    pub identity_dir: Option<PathBuf>,
    /// Get the workload certificate from the controller's mesh CA — a fresh key, a request for
    /// the identity the --controller-token names, renewed at half-life — and keep it in
    /// --identity-dir (give it an in-memory volume of the sidecar's own).
    #[arg(
        long,
        env = "PORTCULLIS_IDENTITY_FROM_CONTROLLER",
        requires_all = ["controller", "controller_token", "identity_dir"]
    )]
    pub identity_from_controller: bool,
    /// The mesh's SPIFFE trust domain, for --identity-from-controller.
    #[arg(long, default_value = "cluster.local", env = "PORTCULLIS_TRUST_DOMAIN")]
    pub trust_domain: String,
    /// Runtime worker threads (0: one per CPU the process may run on).
    #[arg(long, default_value_t = 0, env = "PORTCULLIS_WORKER_THREADS")]
    pub worker_threads: usize,
    /// Application probes to run for the kubelet on `/app-health/…` (JSON, written by the
    /// injector): `{"/app-health/app/readyz": {"httpGet": {"path": "/h", "port": 8080}}}`.
    #[arg(long, default_value = "", env = "PORTCULLIS_APP_PROBES")]
    pub app_probes: String,
    /// The pod IP, where application probes are sent (loopback when unset).
    #[arg(long, env = "PORTCULLIS_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// Where peer sidecars live: outbound connections to these CIDRs are wrapped in mutual
    /// TLS with the workload certificate (needs --identity-dir). `10.0.0.0/8,fd00::/8`.
    #[arg(long, default_value = "", env = "PORTCULLIS_MESH_CIDRS")]
    pub mesh_cidrs: String,
    /// JWKS file whose keys validate `Authorization: Bearer` tokens for `jwt` matches (re-read
    /// when it changes).
    #[arg(long, env = "PORTCULLIS_JWKS")]
    pub jwks: Option<PathBuf>,
    /// How often the policy source is re-read in case a change was not seen.
    #[arg(long, default_value = "2s", env = "PORTCULLIS_POLICY_POLL")]
    pub policy_poll: String,
    /// How inbound traffic is captured (must match portcullis-init --mode).
    #[arg(long, value_enum, default_value_t = CaptureMode::Redirect, env = "PORTCULLIS_CAPTURE")]
    pub capture: CaptureMode,
    /// How long open connections may take to finish after SIGTERM (`30`, `30s`, `500ms`).
    #[arg(long, default_value = "30s", env = "PORTCULLIS_DRAIN_TIMEOUT")]
    pub drain_timeout: String,
    /// How long a connection to the original destination may take to open.
    #[arg(long, default_value = "5s", env = "PORTCULLIS_CONNECT_TIMEOUT")]
    pub connect_timeout: String,
    /// Ports whose traffic is never sniffed for a protocol (server-first protocols such as
    /// MySQL or SMTP): `25,3306,5000-5100`.
    #[arg(long, default_value = "", env = "PORTCULLIS_OPAQUE_PORTS")]
    pub opaque_ports: String,
    /// How long to wait for a client's first bytes when HTTP rules apply to a connection.
    #[arg(long, default_value = "1s", env = "PORTCULLIS_DETECT_TIMEOUT")]
    pub detect_timeout: String,
    /// Where access log lines go: a file path, or `-` for stdout.
    #[arg(
        long,
        default_value = "-",
        env = "PORTCULLIS_ACCESS_LOG",
        overrides_with = "access_log"
    )]
    pub access_log: String,
    /// Diagnostics log format (stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PORTCULLIS_LOG_FORMAT")]
    pub log_format: LogFormat,
}
