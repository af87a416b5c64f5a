//! Parsers for flag values — durations, port lists, CIDR lists — and the error that names the
//! flag that does not validate.

use std::net::IpAddr;
use std::time::Duration;

use portcullis_config::matchers::PortSet;

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
    #[error("--app-probes")]
    AppProbes(#[source] serde_json::Error),
    /// A bad CIDR list.
    #[error("--mesh-cidrs: invalid CIDR {0:?} (expected e.g. 10.0.0.0/8)")]
    Cidr(String),
    /// Mutual TLS without a certificate.
    #[error("--mesh-cidrs needs --identity-dir (the certificate to present to peer sidecars)")]
    MeshWithoutIdentity,
    /// A controller address that is not a URL.
    #[error("--controller {0:?}: expected https://HOST:PORT")]
    Controller(String),
    /// An https controller without a bundle to verify it.
    #[error(
        "--controller {0:?}: https needs --controller-ca (or --controller-ca-pem) to verify it"
    )]
    ControllerCa(String),
    /// Credentials over plaintext.
    #[error("--controller {0:?}: a token or certificate is never sent over plaintext http")]
    ControllerPlaintext(String),
    /// The controller bundle file.
    #[error("--controller-ca {path}")]
    ControllerCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
pub(crate) fn parse_ports(list: &str) -> Result<PortSet, ConfigError> {
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
pub(crate) fn parse_cidrs(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
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
