//! What the policy needs to know about the workload itself: its labels, as the Kubernetes
//! Downward API writes them (`key="value"` per line, values with Go-style escapes), and its
//! named container ports (`name=port` pairs, `name=port/UDP` for another protocol than TCP).

use std::collections::BTreeMap;

/// A malformed labels or ports description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct WorkloadError {
    /// 1-based line (or list position).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a Downward API labels file.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, WorkloadError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: &str| WorkloadError {
            line: i + 1,
            message: message.to_string(),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| err("expected key=\"value\""))?;
        let quoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| err("value must be double-quoted"))?;
        let mut v = String::with_capacity(quoted.len());
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => v.push('\n'),
                    Some('t') => v.push('\t'),
                    Some(other) => v.push(other),
                    None => return Err(err("dangling escape")),
                }
            } else {
                v.push(c);
            }
        }
        out.insert(key.trim().to_string(), v);
    }
    Ok(out)
}

/// A named container port: its number and protocol (`TCP`, `UDP` or `SCTP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`, as Kubernetes spells them.
    pub protocol: String,
}

impl NamedPort {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        Self {
            port,
            protocol: "TCP".into(),
        }
    }
}

/// Parses `name=port[/PROTOCOL],…` (the protocol defaults to TCP, as in a container port).
pub fn parse_named_ports(text: &str) -> Result<BTreeMap<String, NamedPort>, WorkloadError> {
    let mut out = BTreeMap::new();
    for (i, item) in text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let parsed = item.split_once('=').and_then(|(n, rest)| {
            let (port, protocol) = rest.trim().split_once('/').unwrap_or((rest.trim(), "TCP"));
            let protocol =
                matches!(protocol, "TCP" | "UDP" | "SCTP").then(|| protocol.to_string())?;
            let port = port.trim().parse::<u16>().ok().filter(|p| *p > 0)?;
            Some((n.trim().to_string(), NamedPort { port, protocol }))
        });
        match parsed {
            Some((name, port)) if !name.is_empty() => {
                out.insert(name, port);
            }
            _ => {
                return Err(WorkloadError {
                    line: i + 1,
                    message: format!("expected name=port or name=port/UDP|SCTP, got {item:?}"),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_api_labels() {
        let got = parse_labels("app=\"web\"\npod-template-hash=\"5d\\\"x\"\n\n").expect("valid");
        assert_eq!(got.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            got.get("pod-template-hash").map(String::as_str),
            Some("5d\"x")
        );
        assert!(parse_labels("app=web").is_err());
        assert!(parse_labels("noequals").is_err());
    }

    #[test]
    fn named_ports() {
        let got = parse_named_ports("http=8080, metrics=9090/TCP,dns=53/UDP").expect("valid");
        assert_eq!(got.get("http"), Some(&NamedPort::tcp(8080)));
        assert_eq!(got.get("metrics"), Some(&NamedPort::tcp(9090)));
        assert_eq!(
            got.get("dns").map(|p| (p.port, p.protocol.as_str())),
            Some((53, "UDP"))
        );
        for bad in ["http=0", "http", "dns=53/udp", "dns=53/QUIC", "=80"] {
            assert!(parse_named_ports(bad).is_err(), "{bad}");
        }
    }
}
