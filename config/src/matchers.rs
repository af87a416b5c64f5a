//! Compiled match primitives, each built once from validated policy text and matched without
//! allocation: CIDR with exceptions, port sets, identity, host and path patterns, headers.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use regex::{Regex, RegexSet};

/// Compiled regexes are capped so that a policy cannot make matching or compiling expensive.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A CIDR minus its exceptions.
#[derive(Debug, Clone)]
pub struct CidrMatch {
    /// The range.
    pub net: IpNet,
    /// Sub-ranges that do not match.
    pub except: Vec<IpNet>,
}

impl CidrMatch {
    /// Whether `ip` is in the range and in none of the exceptions.
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.net.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses are matched as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Sorted, merged inclusive port ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

impl PortSet {
    /// Builds the set from ranges in any order.
    pub fn new(mut ranges: Vec<(u16, u16)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Self { ranges: merged }
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|&(a, _)| a <= port);
        i > 0 && self.ranges[i - 1].1 >= port
    }

    /// The merged ranges, ascending.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    /// Whether the set is empty (matches nothing).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// An identity pattern: exact SPIFFE ID, prefix at a `/`, or any authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    /// `*`.
    Any,
    /// An exact ID.
    Exact(String),
    /// `spiffe://td/ns/x/*`: the part before `*`, ending in `/`.
    Prefix(String),
}

impl IdentityPattern {
    /// Parses a pattern; `None` if it is neither `*` nor a `spiffe://` ID.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "*" {
            return Some(Self::Any);
        }
        let rest = s.strip_prefix("spiffe://")?;
        let (td, _) = rest.split_once('/').unwrap_or((rest, ""));
        if td.is_empty() || s.contains("//") && !s.starts_with("spiffe://") {
            return None;
        }
        match s.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') => Some(Self::Prefix(prefix.to_string())),
            Some(_) => None,
            None if s.contains('*') => None,
            None => Some(Self::Exact(s.to_string())),
        }
    }

    /// Whether the pattern names its trust domain (`*` does not).
    pub fn names_trust_domain(&self) -> bool {
        !matches!(self, Self::Any)
    }

    /// Whether an authenticated identity matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(e) => e == id,
            Self::Prefix(p) => id.starts_with(p.as_str()),
        }
    }
}

/// The trust domain of `spiffe://<td>/…`.
pub fn spiffe_trust_domain(id: &str) -> Option<&str> {
    let td = id.strip_prefix("spiffe://")?.split('/').next()?;
    (!td.is_empty()).then_some(td)
}

/// The `ns` segment of `spiffe://<td>/ns/<ns>/sa/<sa>`.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let mut parts = rest.split('/').skip(1);
    match (parts.next(), parts.next()) {
        (Some("ns"), Some(ns)) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// A host pattern: exact, or `*.suffix` (one or more labels before the suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exact, lower-case.
    Exact(String),
    /// `.suffix`, lower-case, with the leading dot.
    Suffix(String),
}

impl HostPattern {
    /// Parses a pattern; `None` for anything that is not a host name, IP or `*.name`.
    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.trim_end_matches('.').to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if let Some(suffix) = lower.strip_prefix("*.") {
            return valid(suffix).then(|| Self::Suffix(format!(".{suffix}")));
        }
        let ipv6 = lower.starts_with('[') && lower.ends_with(']');
        (valid(&lower) || ipv6).then_some(Self::Exact(lower))
    }

    /// Whether a port-less host (or SNI) matches, ignoring ASCII case.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
        match self {
            Self::Exact(e) => host.eq_ignore_ascii_case(e.as_bytes()),
            Self::Suffix(s) => {
                host.len() > s.len()
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        }
    }
}

/// The `paths` of one `http` entry.
#[derive(Debug, Clone, Default)]
pub struct PathSet {
    /// `*`: any path.
    pub any: bool,
    /// Exact paths.
    pub exact: HashSet<String>,
    /// Prefix bases (`/a/*` → `/a`), matched at a segment boundary.
    pub prefixes: Vec<String>,
    /// `~REGEX` patterns, anchored, in one set.
    pub regex: Option<RegexSet>,
}

impl PathSet {
    /// Whether a normalized path matches.
    pub fn matches(&self, path: &str) -> bool {
        self.any
            || self.exact.contains(path)
            || self.prefixes.iter().any(|p| prefix_matches(p, path))
            || self.regex.as_ref().is_some_and(|r| r.is_match(path))
    }
}

/// Segment-aware prefix: base `/a` matches `/a`, `/a/`, `/a/b`, not `/ab`; base `` (from `/*`)
/// matches every rooted path.
pub fn prefix_matches(base: &str, path: &str) -> bool {
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A header value pattern.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    /// `*`: present.
    Present,
    /// Exact value.
    Exact(String),
    /// `~REGEX`, anchored.
    Regex(Regex),
}

impl HeaderValue {
    /// Whether the (joined) value matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Present => true,
            Self::Exact(e) => e == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

/// What all the regexes of one policy may cost together once compiled (see [`compiled_size`]):
/// each may take up to [`REGEX_SIZE_LIMIT`], and a policy file may hold thousands of them.
pub const POLICY_REGEX_BUDGET: usize = 32 << 20;

/// An estimate of what `re` costs compiled: its Thompson NFA's heap size (what
/// [`REGEX_SIZE_LIMIT`] bounds), twice (the matcher keeps a forward and a reverse automaton).
/// `None` if it does not compile within the per-regex limit.
pub fn compiled_size(re: &str) -> Option<usize> {
    use regex_automata::nfa::thompson::{Config, NFA};
    let nfa = NFA::compiler()
        .configure(Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build(&format!("^(?:{re})$"))
        .ok()?;
    Some(nfa.memory_usage().saturating_mul(2))
}

/// Compiles `~REGEX` text (without the `~`) anchored on the whole input.
pub fn anchored(re: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Compiles several anchored patterns into one set.
pub fn anchored_set(res: &[String]) -> Result<RegexSet, regex::Error> {
    regex::RegexSetBuilder::new(res.iter().map(|r| format!("^(?:{r})$")))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let s = PortSet::new(vec![(9000, 9100), (80, 80), (81, 85), (8080, 8080)]);
        for (p, want) in [
            (79, false),
            (80, true),
            (83, true),
            (86, false),
            (8080, true),
            (9050, true),
            (9101, false),
        ] {
            assert_eq!(s.contains(p), want, "{p}");
        }
        assert!(!PortSet::new(vec![]).contains(1));
    }

    #[test]
    fn identities() {
        let p = IdentityPattern::parse("spiffe://td/ns/shop/*").expect("valid");
        assert!(p.matches("spiffe://td/ns/shop/sa/a"));
        assert!(!p.matches("spiffe://td/ns/shopping/sa/a"));
        assert_eq!(IdentityPattern::parse("spiffe://td/ns/a*"), None);
        assert_eq!(IdentityPattern::parse("http://x"), None);
        assert_eq!(IdentityPattern::parse("spiffe:///x"), None);
        assert_eq!(spiffe_namespace("spiffe://td/ns/shop/sa/a"), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://td/x/shop"), None);
        assert_eq!(spiffe_trust_domain("spiffe://td/ns/shop/sa/a"), Some("td"));
        assert_eq!(spiffe_trust_domain("spiffe:///ns/a"), None);
        assert_eq!(spiffe_trust_domain("http://td/x"), None);
    }

    #[test]
    fn hosts() {
        let p = HostPattern::parse("*.Example.com").expect("valid");
        assert!(p.matches("a.example.com") && p.matches("a.b.example.com"));
        assert!(!p.matches("example.com") && !p.matches("aexample.com"));
        assert_eq!(HostPattern::parse("a b"), None);
        assert_eq!(HostPattern::parse("*"), None);
    }

    #[test]
    fn prefixes() {
        assert!(
            prefix_matches("/a", "/a")
                && prefix_matches("/a", "/a/")
                && prefix_matches("/a", "/a/b/c")
        );
        assert!(!prefix_matches("/a", "/ab"));
        assert!(prefix_matches("", "/anything"));
    }

    #[test]
    fn mapped_v4_matches_v4_cidrs() {
        let c = CidrMatch {
            net: "10.0.0.0/8".parse().expect("net"),
            except: vec![],
        };
        assert!(c.matches("::ffff:10.1.2.3".parse().expect("ip")));
    }
}
