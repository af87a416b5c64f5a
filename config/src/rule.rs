//! The compiled rule: what one policy rule matches (peers, ports, HTTP entries, JWT claims) and
//! what it does. Produced by [`crate::compile`], indexed by [`crate::index`], matched by
//! [`crate::decide`].

use std::sync::Arc;

use crate::matchers::{CidrMatch, HeaderValue, HostPattern, IdentityPattern, PathSet, PortSet};
use crate::model::Action;

/// One peer entry, compiled. Every present field must match.
#[derive(Debug, Clone, Default)]
pub struct PeerMatch {
    /// Peer IP.
    pub cidr: Option<CidrMatch>,
    /// Authenticated identity.
    pub identity: Option<IdentityPattern>,
    /// Identity namespace.
    pub namespace: Option<String>,
    /// NetworkPolicy `namespaceSelector` on `kubernetes.io/metadata.name`: requirements on the
    /// peer identity's namespace (all must hold).
    pub namespace_names: Option<Vec<NameRequirement>>,
    /// SNI or HTTP host (outbound).
    pub host: Option<HostPattern>,
    /// A peer a sidecar cannot see (NetworkPolicy pod selectors): never matches.
    pub never: bool,
}

/// One label-selector requirement on a namespace's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRequirement {
    /// The name is one of these.
    In(Vec<String>),
    /// The name is none of these.
    NotIn(Vec<String>),
    /// Every namespace has a name.
    Exists,
    /// No namespace lacks a name.
    DoesNotExist,
}

impl NameRequirement {
    /// Whether a namespace called `name` meets the requirement.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::In(v) => v.iter().any(|n| n == name),
            Self::NotIn(v) => !v.iter().any(|n| n == name),
            Self::Exists => true,
            Self::DoesNotExist => false,
        }
    }
}

/// One `http` entry, compiled.
#[derive(Debug, Clone, Default)]
pub struct HttpRule {
    /// Methods; `None` = any.
    pub methods: Option<Vec<String>>,
    /// Paths; `None` = any.
    pub paths: Option<PathSet>,
    /// Hosts; `None` = any.
    pub hosts: Option<Vec<HostPattern>>,
    /// (lower-case name, pattern).
    pub headers: Vec<(String, HeaderValue)>,
    /// JWT requirements.
    pub jwt: Option<JwtRule>,
}

/// JWT requirements of an `http` entry.
#[derive(Debug, Clone, Default)]
pub struct JwtRule {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `sub`.
    pub subject: Option<String>,
    /// Any of these in `aud`.
    pub audiences: Vec<String>,
    /// Required claims.
    pub claims: Vec<(String, String)>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The policy (document) it came from.
    pub policy: Arc<str>,
    /// Its name.
    pub name: Arc<str>,
    /// Allow or deny.
    pub action: Action,
    /// Peers (OR); `None` = any peer.
    pub peers: Option<Vec<PeerMatch>>,
    /// Ports; `None` = any.
    pub ports: Option<PortSet>,
    /// HTTP entries (OR); `None` = a connection-level rule.
    pub http: Option<Vec<HttpRule>>,
}
