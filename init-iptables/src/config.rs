//! Command-line flags of `portcullis-init` and their validation into an [`InitConfig`].
//!
//! Every flag has an environment twin `PORTCULLIS_INIT_<FLAG>`. Validation happens once, before
//! anything touches the kernel; the admin port is always added to the inbound exclusions.

use std::fmt;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

/// The proxy's UID and GID, excluded from capture.
pub const DEFAULT_PROXY_ID: u32 = 1337;
/// Where captured inbound traffic is sent.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// Where captured outbound traffic is sent.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// The proxy's admin port: never captured inbound, whatever the flags say.
pub const ADMIN_PORT: u16 = 15020;

/// How inbound traffic reaches the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CaptureMode {
    /// nat PREROUTING REDIRECT; the application sees the proxy as the client.
    Redirect,
    /// mangle PREROUTING TPROXY plus policy routing; the client's source address is kept.
    Tproxy,
}

/// Whether to program ip6tables too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6Mode {
    /// When the kernel has IPv6 and ip6tables is installed.
    Auto,
    /// Always; failing to do so is an error.
    On,
    /// Never.
    Off,
}

/// Which iptables flavour to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The flavour that already holds rules, else nft, else legacy.
    Auto,
    /// `iptables-nft-*`.
    Nft,
    /// `iptables-legacy-*`.
    Legacy,
}

/// The flags, as clap parses them.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "portcullis-init",
    version,
    about = "Install (or remove) the iptables rules that capture a pod's TCP traffic for the Portcullis proxy"
)]
pub struct InitArgs {
    /// Inbound capture: nat REDIRECT, or mangle TPROXY + policy routing (client source IP kept).
    #[arg(long, value_enum, default_value_t = CaptureMode::Redirect, env = "PORTCULLIS_INIT_MODE")]
    pub mode: CaptureMode,
    /// The proxy's UID; its traffic is never captured.
    #[arg(long, default_value_t = DEFAULT_PROXY_ID, env = "PORTCULLIS_INIT_PROXY_UID")]
    pub proxy_uid: u32,
    /// The proxy's GID; its traffic is never captured.
    #[arg(long, default_value_t = DEFAULT_PROXY_ID, env = "PORTCULLIS_INIT_PROXY_GID")]
    pub proxy_gid: u32,
    /// The proxy's inbound listener.
    #[arg(long, default_value_t = DEFAULT_INBOUND_PORT, env = "PORTCULLIS_INIT_INBOUND_PORT")]
    pub inbound_port: u16,
    /// The proxy's outbound listener.
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_PORT, env = "PORTCULLIS_INIT_OUTBOUND_PORT")]
    pub outbound_port: u16,
    /// Ports whose inbound traffic is captured: `*` or a comma list of ports and `a-b` ranges.
    #[arg(long, default_value = "*", env = "PORTCULLIS_INIT_INBOUND_PORTS")]
    pub inbound_ports: String,
    /// Inbound ports never captured (the admin port 15020 is always excluded).
    #[arg(
        long,
        default_value = "15020",
        env = "PORTCULLIS_INIT_EXCLUDE_INBOUND_PORTS"
    )]
    pub exclude_inbound_ports: String,
    /// Outbound destination ports never captured.
    #[arg(
        long,
        default_value = "",
        env = "PORTCULLIS_INIT_EXCLUDE_OUTBOUND_PORTS"
    )]
    pub exclude_outbound_ports: String,
    /// Outbound destination CIDRs never captured (IPv4 and IPv6 mixed).
    #[arg(
        long,
        default_value = "",
        env = "PORTCULLIS_INIT_EXCLUDE_OUTBOUND_CIDRS"
    )]
    pub exclude_outbound_cidrs: String,
    /// Also program ip6tables.
    #[arg(long, value_enum, default_value_t = Ipv6Mode::Auto, env = "PORTCULLIS_INIT_IPV6")]
    pub ipv6: Ipv6Mode,
    /// Which iptables flavour to use.
    #[arg(long, value_enum, default_value_t = Backend::Auto, env = "PORTCULLIS_INIT_BACKEND")]
    pub backend: Backend,
    /// Print the exact iptables-restore input per family and change nothing.
    #[arg(long, env = "PORTCULLIS_INIT_DRY_RUN")]
    pub dry_run: bool,
    /// Remove everything this tool installed, and nothing else.
    #[arg(long, env = "PORTCULLIS_INIT_CLEANUP")]
    pub cleanup: bool,
}

/// A TCP port or an inclusive range of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port, `>= first`.
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    /// iptables `--dport` syntax: `80` or `1000:2000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::Port(s.to_string());
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(bad)
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (parse(a)?, parse(b)?);
                if first > last {
                    return Err(bad());
                }
                Ok(Self { first, last })
            }
            None => parse(s).map(Self::single),
        }
    }
}

/// Which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// Every port but the excluded ones.
    All,
    /// Only these.
    Only(Vec<PortRange>),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    /// Inbound capture mode.
    pub mode: CaptureMode,
    /// Proxy UID.
    pub proxy_uid: u32,
    /// Proxy GID.
    pub proxy_gid: u32,
    /// Inbound listener port.
    pub inbound_port: u16,
    /// Outbound listener port.
    pub outbound_port: u16,
    /// Captured inbound ports.
    pub inbound_ports: InboundPorts,
    /// Never captured inbound; always holds [`ADMIN_PORT`].
    pub exclude_inbound_ports: Vec<PortRange>,
    /// Never captured outbound.
    pub exclude_outbound_ports: Vec<PortRange>,
    /// Never captured outbound.
    pub exclude_outbound_cidrs: Vec<IpNet>,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            mode: CaptureMode::Redirect,
            proxy_uid: DEFAULT_PROXY_ID,
            proxy_gid: DEFAULT_PROXY_ID,
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            inbound_ports: InboundPorts::All,
            exclude_inbound_ports: vec![PortRange::single(ADMIN_PORT)],
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
        }
    }
}

/// A flag that does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a port number (1-65535) or `a-b` range.
    #[error("invalid port or port range {0:?} (expected 1-65535 or a-b)")]
    Port(String),
    /// Not an IPv4/IPv6 CIDR.
    #[error("invalid CIDR {0:?} (expected e.g. 10.0.0.0/8 or fd00::/8)")]
    Cidr(String),
    /// The two listener ports collide.
    #[error("--inbound-port and --outbound-port must differ (both {0})")]
    SamePorts(u16),
}

/// Parses `22,8000-8100` (the `--exclude-*-ports` syntax; the injector validates pod
/// annotations with it too, so a pod is refused at admission rather than failing to start).
pub fn port_list(s: &str) -> Result<Vec<PortRange>, ConfigError> {
    let mut v = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<PortRange>, _>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

/// Parses `10.0.0.0/8,fd00::/8` (a bare address is a single host); also used by the injector.
pub fn cidr_list(s: &str) -> Result<Vec<IpNet>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| ConfigError::Cidr(c.to_string()))
        })
        .collect()
}

impl InitConfig {
    /// Validates the flags.
    pub fn from_args(args: &InitArgs) -> Result<Self, ConfigError> {
        if args.inbound_port == args.outbound_port {
            return Err(ConfigError::SamePorts(args.inbound_port));
        }
        let inbound_ports = match args.inbound_ports.trim() {
            "*" => InboundPorts::All,
            list => InboundPorts::Only(port_list(list)?),
        };
        let mut exclude_inbound_ports = port_list(&args.exclude_inbound_ports)?;
        if !exclude_inbound_ports.iter().any(|r| r.contains(ADMIN_PORT)) {
            exclude_inbound_ports.insert(0, PortRange::single(ADMIN_PORT));
            exclude_inbound_ports.sort();
        }
        let exclude_outbound_cidrs = cidr_list(&args.exclude_outbound_cidrs)?;
        Ok(Self {
            mode: args.mode,
            proxy_uid: args.proxy_uid,
            proxy_gid: args.proxy_gid,
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            inbound_ports,
            exclude_inbound_ports,
            exclude_outbound_ports: port_list(&args.exclude_outbound_ports)?,
            exclude_outbound_cidrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> InitArgs {
        let mut v = vec!["portcullis-init"];
        v.extend_from_slice(extra);
        InitArgs::try_parse_from(v).expect("flags parse")
    }

    #[test]
    fn defaults_match_the_contract() {
        let cfg = InitConfig::from_args(&args(&[])).expect("valid");
        assert_eq!(cfg, InitConfig::default());
    }

    #[test]
    fn admin_port_is_always_excluded() {
        let cfg = InitConfig::from_args(&args(&["--exclude-inbound-ports", "22,9000-9100"]))
            .expect("valid");
        assert_eq!(
            cfg.exclude_inbound_ports,
            vec![
                PortRange::single(22),
                PortRange {
                    first: 9000,
                    last: 9100
                },
                PortRange::single(ADMIN_PORT)
            ]
        );
    }

    #[test]
    fn rejects_bad_values() {
        for (flag, value, err) in [
            ("--inbound-ports", "80,x", ConfigError::Port("x".into())),
            (
                "--exclude-outbound-ports",
                "0",
                ConfigError::Port("0".into()),
            ),
            (
                "--exclude-outbound-ports",
                "9-3",
                ConfigError::Port("9-3".into()),
            ),
            (
                "--exclude-inbound-ports",
                "70000",
                ConfigError::Port("70000".into()),
            ),
            (
                "--exclude-outbound-cidrs",
                "10.0.0.0/33",
                ConfigError::Cidr("10.0.0.0/33".into()),
            ),
            (
                "--exclude-outbound-cidrs",
                "nope",
                ConfigError::Cidr("nope".into()),
            ),
        ] {
            assert_eq!(
                InitConfig::from_args(&args(&[flag, value])),
                Err(err),
                "{flag} {value}"
            );
        }
        assert_eq!(
            InitConfig::from_args(&args(&["--inbound-port", "15001"])),
            Err(ConfigError::SamePorts(15001))
        );
    }

    #[test]
    fn cidrs_are_truncated_and_bare_ips_accepted() {
        let cfg = InitConfig::from_args(&args(&[
            "--exclude-outbound-cidrs",
            "10.1.2.3/8, fd00::1, 192.168.0.1",
        ]))
        .expect("valid");
        let got: Vec<String> = cfg
            .exclude_outbound_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.0/8", "fd00::1/128", "192.168.0.1/32"]);
    }
}
