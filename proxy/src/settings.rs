//! The proxy's validated configuration, built once from the flags ([`cli`]) before any port is
//! bound; [`parse`] holds the value parsers.

pub mod cli;
pub(crate) mod parse;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use portcullis_config::matchers::PortSet;

use self::cli::{Mode, RunArgs};
pub use self::parse::ConfigError;
pub use self::parse::parse_duration;
use self::parse::{parse_cidrs, parse_ports};
use crate::admin::probes::{self, AppProbe};
use crate::mesh::enroll::Enrollment;
use crate::net::connector::{DELIVERY_SOURCE_V4, DELIVERY_SOURCE_V6};
pub use crate::observe::access_log::AccessLogTarget;
use crate::policy::Workload;
use crate::policy::controller::{ControllerTarget, ControllerTls};
use crate::vocab::CaptureMode;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Addresses the capture listeners bind (one listener per address and direction).
    pub listen_ips: Vec<IpAddr>,
    /// Inbound capture listener port (0 = any, for tests).
    pub inbound_port: u16,
    /// Outbound capture listener port (0 = any, for tests).
    pub outbound_port: u16,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// How inbound traffic is captured.
    pub capture: CaptureMode,
    /// Time given to open connections after a drain starts.
    pub drain_timeout: Duration,
    /// Time given to a connection to the original destination to open.
    pub connect_timeout: Duration,
    /// Access log destination.
    pub access_log: AccessLogTarget,
    /// Audit mode: denials are logged, not enforced.
    pub audit: bool,
    /// Where reloads read the policy from (none in tests: never reloads).
    pub policy_source: Option<(PathBuf, Workload)>,
    /// The controller whose views this sidecar follows, if any.
    pub controller: Option<ControllerTarget>,
    /// Where the workload certificate comes from when the controller issues it.
    pub enrollment: Option<Enrollment>,
    /// How often the policy source (and the JWKS) is re-read.
    pub policy_poll: Duration,
    /// JWKS file for bearer tokens.
    pub jwks: Option<PathBuf>,
    /// Identity material directory.
    pub identity_dir: Option<PathBuf>,
    /// Destinations whose outbound connections are mutual TLS.
    pub mesh_cidrs: Vec<ipnet::IpNet>,
    /// Kubelet probes to run on `/app-health/…`.
    pub(crate) app_probes: HashMap<String, AppProbe>,
    /// The pod IP, for application probes.
    pub pod_ip: Option<IpAddr>,
    /// Ports never sniffed for a protocol (server-first protocols).
    pub opaque_ports: PortSet,
    /// How long to wait for a client's first bytes when requests matter.
    pub detect_timeout: Duration,
    /// Replaces the kernel's original destination for every connection. Only for in-process
    /// tests, which have no iptables; never set from the command line.
    pub original_dst_override: Option<SocketAddr>,
    /// Where inbound deliveries come from in redirect mode; `None` lets the kernel choose (tests).
    pub delivery_source: Option<(Ipv4Addr, Ipv6Addr)>,
}

/// `--controller`, `--pod-name` and `--pod-namespace` as a target.
fn controller(args: &RunArgs) -> Result<Option<ControllerTarget>, ConfigError> {
    let Some(url) = &args.controller else {
        return Ok(None);
    };
    let tls = if url.starts_with("https://") {
        let ca_pem = match (&args.controller_ca, &args.controller_ca_pem) {
            (Some(path), _) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::ControllerCaFile {
                    path: path.clone(),
                    source,
                })?
            }
            (None, Some(pem)) => pem.clone(),
            (None, None) => return Err(ConfigError::ControllerCa(url.clone())),
        };
        Some(ControllerTls {
            ca_pem,
            token: args.controller_token.clone(),
            identity_dir: args.identity_dir.clone(),
        })
    } else if url.starts_with("http://") {
        if args.controller_token.is_some() {
            return Err(ConfigError::ControllerPlaintext(url.clone()));
        }
        None
    } else {
        return Err(ConfigError::Controller(url.clone()));
    };
    Ok(Some(ControllerTarget {
        url: url.clone(),
        namespace: args.workload.pod_namespace.clone().unwrap_or_default(),
        pod: args.pod_name.clone().unwrap_or_default(),
        tls,
    }))
}

/// `--identity-from-controller`: over TLS only.
fn enrollment(args: &RunArgs) -> Result<Option<Enrollment>, ConfigError> {
    if !args.identity_from_controller {
        return Ok(None);
    }
    let (Some(target), Some(dir)) = (controller(args)?, &args.identity_dir) else {
        return Ok(None);
    };
    if target.tls.is_none() {
        return Err(ConfigError::ControllerPlaintext(target.url));
    }
    Ok(Some(Enrollment {
        target,
        dir: dir.clone(),
        trust_domain: args.trust_domain.clone(),
    }))
}

impl ProxyConfig {
    /// Validates the flags of `run`.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        if args.inbound_port == args.outbound_port {
            return Err(ConfigError::SamePorts(args.inbound_port));
        }
        let mesh_cidrs = parse_cidrs(&args.mesh_cidrs)?;
        let app_probes = probes::parse(&args.app_probes).map_err(ConfigError::AppProbes)?;
        if !mesh_cidrs.is_empty() && args.identity_dir.is_none() {
            return Err(ConfigError::MeshWithoutIdentity);
        }
        let access_log = match args.access_log.as_str() {
            "-" | "" => AccessLogTarget::Stdout,
            "off" => AccessLogTarget::Off,
            path => AccessLogTarget::File(PathBuf::from(path)),
        };
        Ok(Self {
            listen_ips: vec![
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            admin_addr: args.admin_addr,
            capture: args.capture,
            drain_timeout: parse_duration("drain-timeout", &args.drain_timeout)?,
            connect_timeout: parse_duration("connect-timeout", &args.connect_timeout)?,
            access_log,
            audit: args.mode == Mode::Audit,
            policy_source: args.policy.clone().map(|p| (p, args.workload.workload())),
            controller: controller(args)?,
            enrollment: enrollment(args)?,
            policy_poll: parse_duration("policy-poll", &args.policy_poll)?,
            jwks: args.jwks.clone(),
            identity_dir: args.identity_dir.clone(),
            mesh_cidrs,
            app_probes,
            pod_ip: args.pod_ip,
            opaque_ports: parse_ports(&args.opaque_ports)?,
            detect_timeout: parse_duration("detect-timeout", &args.detect_timeout)?,
            original_dst_override: None,
            delivery_source: Some((DELIVERY_SOURCE_V4, DELIVERY_SOURCE_V6)),
        })
    }

    /// A configuration for in-process tests: loopback listeners on ephemeral ports, every
    /// connection sent to `upstream`, no access log.
    pub fn for_tests(upstream: SocketAddr) -> Self {
        Self {
            listen_ips: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            inbound_port: 0,
            outbound_port: 0,
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            capture: CaptureMode::Redirect,
            drain_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            access_log: AccessLogTarget::Off,
            audit: false,
            policy_source: None,
            controller: None,
            enrollment: None,
            policy_poll: Duration::from_secs(2),
            jwks: None,
            identity_dir: None,
            mesh_cidrs: Vec::new(),
            app_probes: Default::default(),
            pod_ip: None,
            opaque_ports: PortSet::default(),
            detect_timeout: Duration::from_secs(1),
            original_dst_override: Some(upstream),
            delivery_source: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::cli::{Cli, Command};
    use super::*;

    /// `run` with `--controller` and `extra`.
    fn controller_settings(extra: &[&str]) -> Result<Option<ControllerTarget>, ConfigError> {
        let mut argv = vec![
            "portcullis-proxy",
            "run",
            "--pod-name",
            "web",
            "--pod-namespace",
            "shop",
        ];
        argv.extend(extra);
        let Command::Run(args) = Cli::try_parse_from(argv).expect("flags").command else {
            panic!("not run");
        };
        ProxyConfig::from_args(&args).map(|c| c.controller)
    }

    #[test]
    fn a_controller_over_https_is_verified_and_credentials_never_go_in_plaintext() {
        let ca = std::env::temp_dir().join(format!("portcullis-ctl-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "PEM").expect("write");
        let ca_path = ca.to_str().expect("utf-8");
        let https = ["--controller", "https://ctl:15012"];
        let target = controller_settings(
            &[
                &https[..],
                &["--controller-ca", ca_path, "--controller-token", "/t"],
            ]
            .concat(),
        )
        .expect("valid")
        .expect("target");
        let tls = target.tls.expect("tls");
        assert_eq!(
            (tls.ca_pem.as_str(), tls.token.as_deref()),
            ("PEM", Some(std::path::Path::new("/t")))
        );
        let inline =
            controller_settings(&[&https[..], &["--controller-ca-pem", "INLINE"]].concat())
                .expect("valid")
                .and_then(|t| t.tls)
                .expect("tls");
        assert_eq!(inline.ca_pem, "INLINE");
        let refused: [(&[&str], &str); 4] = [
            (&https, "needs --controller-ca"),
            (
                &[
                    "--controller",
                    "http://ctl:15012",
                    "--controller-token",
                    "/t",
                ],
                "never sent over plaintext",
            ),
            (&["--controller", "ctl:15012"], "expected https://HOST:PORT"),
            (
                &[&https[..], &["--controller-ca", "/nonexistent/ca.pem"]].concat(),
                "--controller-ca /nonexistent",
            ),
        ];
        for (flags, want) in refused {
            let err = controller_settings(flags).expect_err("refused");
            assert!(err.to_string().contains(want), "{flags:?}: {err}");
        }
        let plain =
            controller_settings(&["--controller", "http://127.0.0.1:15012"]).expect("testbed");
        assert!(plain.expect("target").tls.is_none());
        let _ = std::fs::remove_file(ca);
    }
}
