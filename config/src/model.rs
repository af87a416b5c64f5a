//! The YAML shapes of policy documents, as written by operators.
//!
//! One document shape serves both kinds (`AccessPolicy`, `NetworkPolicy`): serde loses source
//! locations inside internally tagged enums, so the kind is dispatched after parsing and a field
//! of the other kind is reported as an error at its own line and column. Every value that is
//! validated later is wrapped in [`Spanned`] so that its error can point at it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
pub use serde_saphyr::Spanned;

/// One YAML document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    /// `portcullis.dev/v1alpha1` or `networking.k8s.io/v1`.
    pub api_version: Spanned<String>,
    /// `AccessPolicy` or `NetworkPolicy`.
    pub kind: Spanned<String>,
    /// Kubernetes object metadata.
    pub metadata: Spanned<Metadata>,
    /// The policy.
    pub spec: Spanned<Spec>,
}

/// The parts of Kubernetes ObjectMeta a policy may carry (exports from `kubectl get -o yaml`
/// carry the server-set ones too; those are accepted and ignored).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // server-set fields are parsed only to be accepted
pub struct Metadata {
    /// The policy's name, used in logs and metrics.
    pub name: Option<Spanned<String>>,
    /// Namespace (informational).
    pub namespace: Option<String>,
    /// Labels (informational).
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations (informational).
    pub annotations: Option<BTreeMap<String, String>>,
    generate_name: Option<IgnoredAny>,
    uid: Option<IgnoredAny>,
    resource_version: Option<IgnoredAny>,
    generation: Option<IgnoredAny>,
    creation_timestamp: Option<IgnoredAny>,
    deletion_timestamp: Option<IgnoredAny>,
    managed_fields: Option<IgnoredAny>,
    owner_references: Option<IgnoredAny>,
    finalizers: Option<IgnoredAny>,
}

/// The union of both kinds' `spec` fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    /// AccessPolicy: traffic arriving at the workload.
    pub inbound: Option<Spanned<DirectionSpec>>,
    /// AccessPolicy: traffic leaving the workload.
    pub outbound: Option<Spanned<DirectionSpec>>,
    /// AccessPolicy: whether peers must present a workload certificate (mutual TLS).
    pub mtls: Option<Spanned<MtlsMode>>,
    /// NetworkPolicy: which pods the policy applies to.
    pub pod_selector: Option<Spanned<LabelSelector>>,
    /// NetworkPolicy: `Ingress`, `Egress`.
    pub policy_types: Option<Vec<Spanned<String>>>,
    /// NetworkPolicy: allowed inbound traffic.
    pub ingress: Option<Spanned<Vec<Spanned<NetRule>>>>,
    /// NetworkPolicy: allowed outbound traffic.
    pub egress: Option<Spanned<Vec<Spanned<NetRule>>>>,
}

/// `allow` or `deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// `strict` or `permissive`: whether inbound connections must come as mutual TLS from a peer
/// sidecar (Istio's PeerAuthentication modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Every inbound connection must be mutual TLS; plaintext is refused.
    Strict,
    /// Plaintext is judged like any other connection (the default).
    Permissive,
}

/// One direction of an AccessPolicy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionSpec {
    /// What happens when no rule matches; absent means `deny` (the direction is isolated).
    pub default: Option<Spanned<Action>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Spanned<Rule>>,
}

/// One AccessPolicy rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique within the policy.
    pub name: Spanned<String>,
    /// What a match does.
    pub action: Spanned<Action>,
    /// Inbound peers; absent = any.
    pub from: Option<Spanned<Vec<Spanned<Peer>>>>,
    /// Outbound peers; absent = any.
    pub to: Option<Spanned<Vec<Spanned<Peer>>>>,
    /// Original destination ports; absent = any.
    pub ports: Option<Spanned<Vec<Spanned<PortValue>>>>,
    /// HTTP matches; absent = the rule is about whole connections.
    pub http: Option<Spanned<Vec<Spanned<HttpMatch>>>>,
}

/// One peer entry: every field present must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Peer IP range.
    pub cidr: Option<Spanned<String>>,
    /// Ranges inside `cidr` that do not match.
    pub except: Option<Vec<Spanned<String>>>,
    /// Authenticated workload identity pattern.
    pub identity: Option<Spanned<String>>,
    /// Namespace of an authenticated SPIFFE identity.
    pub namespace: Option<Spanned<String>>,
    /// Outbound only: TLS SNI or HTTP Host.
    pub host: Option<Spanned<String>>,
    /// Pods of the policy's namespace (or of `namespaceSelector`'s namespaces), as in a
    /// NetworkPolicy peer.
    #[serde(rename = "podSelector")]
    pub pod_selector: Option<Spanned<LabelSelector>>,
    /// Pods of the namespaces whose labels match, as in a NetworkPolicy peer.
    #[serde(rename = "namespaceSelector")]
    pub namespace_selector: Option<Spanned<LabelSelector>>,
}

/// A port number, or a `"first-last"` range, or (NetworkPolicy) a port name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortValue {
    /// A number as written (range-checked later).
    Number(i64),
    /// A string as written.
    Text(String),
}

impl<'de> Deserialize<'de> for PortValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port number or a \"first-last\" range")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortValue, E> {
                Ok(PortValue::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortValue, E> {
                Ok(PortValue::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortValue, E> {
                Ok(PortValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `http` entry: every field present must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Methods; `*` = any.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Path patterns.
    pub paths: Option<Vec<Spanned<String>>>,
    /// Host patterns.
    pub hosts: Option<Vec<Spanned<String>>>,
    /// Header name → value pattern.
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// JWT requirements.
    pub jwt: Option<Spanned<JwtMatch>>,
}

/// JWT requirements.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtMatch {
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// Any of these in `aud`.
    pub audiences: Option<Vec<String>>,
    /// Claim name → value (a string claim equal to it, or a list claim containing it).
    pub claims: Option<BTreeMap<String, String>>,
}

/// A Kubernetes label selector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    /// Exact label values.
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Set-based requirements.
    pub match_expressions: Option<Vec<Spanned<LabelExpression>>>,
}

impl LabelSelector {
    /// Whether it has no requirement (it selects everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && self.match_expressions.as_ref().is_none_or(Vec::is_empty)
    }
}

/// One set-based selector requirement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelExpression {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: Spanned<String>,
    /// Values for `In` / `NotIn`.
    pub values: Option<Vec<String>>,
}

/// A NetworkPolicy ingress or egress rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRule {
    /// Ingress peers.
    pub from: Option<Vec<Spanned<NetPeer>>>,
    /// Egress peers.
    pub to: Option<Vec<Spanned<NetPeer>>>,
    /// Ports.
    pub ports: Option<Vec<Spanned<NetPort>>>,
}

/// A NetworkPolicy peer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetPeer {
    /// IP range.
    pub ip_block: Option<Spanned<IpBlock>>,
    /// Namespaces.
    pub namespace_selector: Option<Spanned<LabelSelector>>,
    /// Pods.
    pub pod_selector: Option<Spanned<LabelSelector>>,
}

/// `ipBlock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    /// Range.
    pub cidr: Spanned<String>,
    /// Exclusions inside it.
    pub except: Option<Vec<Spanned<String>>>,
}

/// A NetworkPolicy port.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetPort {
    /// `TCP` (default), `UDP`, `SCTP`.
    pub protocol: Option<Spanned<String>>,
    /// Number or name.
    pub port: Option<Spanned<PortValue>>,
    /// Range end (with a numeric `port`).
    pub end_port: Option<Spanned<i64>>,
}
