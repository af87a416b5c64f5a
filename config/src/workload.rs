//! What the policy needs to know about the workload itself: its labels, as the Kubernetes
//! Downward API writes them (`key="value"` per line, values with Go-style escapes), and its
//! named container ports (`name=port` pairs).

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

/// Parses `name=port,name=port`.
pub fn parse_named_ports(text: &str) -> Result<BTreeMap<String, u16>, WorkloadError> {
    let mut out = BTreeMap::new();
    for (i, item) in text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let parsed = item
            .split_once('=')
            .and_then(|(n, p)| Some((n.trim().to_string(), p.trim().parse::<u16>().ok()?)));
        match parsed {
            Some((name, port)) if !name.is_empty() && port > 0 => {
                out.insert(name, port);
            }
            _ => {
                return Err(WorkloadError {
                    line: i + 1,
                    message: format!("expected name=port, got {item:?}"),
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
        let got = parse_named_ports("http=8080, metrics=9090").expect("valid");
        assert_eq!(got.get("http"), Some(&8080));
        assert!(parse_named_ports("http=0").is_err());
        assert!(parse_named_ports("http").is_err());
    }
}
