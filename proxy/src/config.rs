//! The proxy's validated configuration, built once from the flags before any port is bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use portcullis_config::matchers::PortSet;

use crate::cli::{CaptureMode, Mode, RunArgs, WorkloadArgs};

/// Source address of inbound deliveries to the application in redirect mode (IPv4). The capture
/// rules never re-capture traffic from it.
pub const DELIVERY_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Source address of inbound deliveries to the application in redirect mode (IPv6; added to
/// `lo` by `portcullis-init`).
pub const DELIVERY_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// Packet mark of source-preserving (TPROXY) deliveries; matches `portcullis-init`.
pub const TPROXY_MARK: u32 = 0x539;

/// How long a client may take to send a request head (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a served HTTP connection may stay without a byte moving before it is shut down
/// gracefully (HTTP/2 GOAWAY; HTTP/1 idle keep-alive is also cut by the header read timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long HTTP/1 connections keep serving (answering with `Connection: close`) after a drain
/// starts, before idle ones are closed.
pub const HTTP1_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Nowhere (benchmarks, tests).
    Off,
}

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
    pub policy_source: Option<(PathBuf, WorkloadArgs)>,
    /// How often the policy source (and the JWKS) is re-read.
    pub policy_poll: Duration,
    /// JWKS file for bearer tokens.
    pub jwks: Option<PathBuf>,
    /// Identity material directory.
    pub identity_dir: Option<PathBuf>,
    /// Destinations whose outbound connections are mutual TLS.
    pub mesh_cidrs: Vec<ipnet::IpNet>,
    /// Kubelet probes to run on `/app-health/…`.
    pub app_probes: std::collections::HashMap<String, crate::app_probes::AppProbe>,
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

/// A flag that does not validate.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A duration that does not parse.
    #[error("--{flag}: invalid duration {value:?} (expected e.g. 30, 30s, 500ms)")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// A bad port list.
    #[error("--opaque-ports: invalid port or range {0:?}")]
    Port(String),
    /// Unreadable application probes.
    #[error("--app-probes: {0}")]
    AppProbes(String),
    /// A bad CIDR list.
    #[error("--mesh-cidrs: invalid CIDR {0:?} (expected e.g. 10.0.0.0/8)")]
    Cidr(String),
    /// Mutual TLS without a certificate.
    #[error("--mesh-cidrs needs --identity-dir (the certificate to present to peer sidecars)")]
    MeshWithoutIdentity,
    /// Both listeners on one port.
    #[error("--inbound-port and --outbound-port must differ (both {0})")]
    SamePorts(u16),
}

/// Parses `30` (seconds), `30s`, `500ms`, `1m`.
pub fn parse_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    v.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(v))
        .map_err(|_| ConfigError::Duration {
            flag,
            value: value.to_string(),
        })
}

/// Parses `25,3306,5000-5100`.
pub fn parse_ports(list: &str) -> Result<PortSet, ConfigError> {
    let mut ranges = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let num = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
        let range = match item.split_once('-') {
            Some((a, b)) => num(a).zip(num(b)).filter(|(a, b)| a <= b),
            None => num(item).map(|p| (p, p)),
        };
        ranges.push(range.ok_or_else(|| ConfigError::Port(item.to_string()))?);
    }
    Ok(PortSet::new(ranges))
}

/// Parses `10.0.0.0/8, fd00::/8` (a bare address is a single host).
pub fn parse_cidrs(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| ConfigError::Cidr(item.to_string()))
        })
        .collect()
}

impl ProxyConfig {
    /// Validates the flags of `run`.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        if args.inbound_port == args.outbound_port {
            return Err(ConfigError::SamePorts(args.inbound_port));
        }
        let mesh_cidrs = parse_cidrs(&args.mesh_cidrs)?;
        let app_probes = crate::app_probes::parse(&args.app_probes)
            .map_err(|e| ConfigError::AppProbes(e.to_string()))?;
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
            policy_source: Some((args.policy.clone(), args.workload.clone())),
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
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        for (input, want) in [
            ("30", Duration::from_secs(30)),
            ("30s", Duration::from_secs(30)),
            ("500ms", Duration::from_millis(500)),
            ("1m", Duration::from_secs(60)),
        ] {
            assert_eq!(parse_duration("x", input).expect(input), want);
        }
        assert!(parse_duration("x", "soon").is_err());
        assert!(parse_duration("x", "-1").is_err());
    }

    #[test]
    fn mesh_cidrs_parse_and_refuse_garbage() {
        let nets = parse_cidrs(" 10.0.0.0/8, fd00::/8,10.77.1.1 ,10.1.2.3/16").expect("valid");
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "fd00::/8", "10.77.1.1/32", "10.1.0.0/16"]
        );
        assert!(parse_cidrs("").expect("empty").is_empty());
        for bad in ["10.0.0.0/33", "mesh", "10.0.0/8"] {
            assert!(
                matches!(parse_cidrs(bad), Err(ConfigError::Cidr(s)) if s == bad),
                "{bad}"
            );
        }
    }
}
