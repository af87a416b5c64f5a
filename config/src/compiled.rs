//! The immutable, compiled policy — every rule of every document per direction, with its
//! defaults and candidate indexes — and the workload facts compilation reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::index::DirectionIndex;
use crate::model::Action;
use crate::rule::CompiledRule;
use crate::workload::NamedPort;

/// Facts about the workload that NetworkPolicy import needs.
#[derive(Debug, Clone, Default)]
pub struct CompileContext {
    /// The workload's own labels (Downward API); `None` when unknown.
    pub workload_labels: Option<BTreeMap<String, String>>,
    /// The workload's named container ports.
    pub named_ports: BTreeMap<String, NamedPort>,
    /// The workload's own namespace (Downward API); `None` when unknown.
    pub workload_namespace: Option<String>,
    /// The cluster, when the control plane (or a snapshot) tells it: selectors then resolve to
    /// the pods they select. `None`: a sidecar on its own, which cannot see other pods.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

/// The rules of one direction.
#[derive(Debug, Clone)]
pub struct DirectionRules {
    /// Whether any document mentions this direction (isolating it).
    pub mentioned: bool,
    /// What happens when no rule matches.
    pub default: Action,
    /// Every rule of every document.
    pub rules: Vec<CompiledRule>,
    /// Candidate indexes over `rules`, rebuilt by [`DirectionRules::reindex`].
    pub index: DirectionIndex,
    /// Inbound only: the first policy that says `mtls: strict`, when one does. Connections
    /// without a verified peer identity are then denied before any rule is read.
    pub mtls_strict: Option<Arc<str>>,
}

impl Default for DirectionRules {
    fn default() -> Self {
        Self {
            mentioned: false,
            default: Action::Allow,
            rules: Vec::new(),
            index: DirectionIndex::default(),
            mtls_strict: None,
        }
    }
}

impl DirectionRules {
    /// Rebuilds the indexes after `rules` changed.
    pub fn reindex(&mut self) {
        self.index = DirectionIndex::build(&self.rules);
    }

    /// Records a document mentioning this direction with `default` (absent = deny).
    pub fn mention(&mut self, default: Option<Action>) {
        let d = default.unwrap_or(Action::Deny);
        let denied = d == Action::Deny || (self.mentioned && self.default == Action::Deny);
        self.default = if denied { Action::Deny } else { Action::Allow };
        self.mentioned = true;
    }
}

/// What a document contributed, for `check` and `/policy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSummary {
    /// File.
    pub file: Arc<str>,
    /// `AccessPolicy` or `NetworkPolicy`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// Inbound rules contributed.
    pub inbound_rules: usize,
    /// Outbound rules contributed.
    pub outbound_rules: usize,
    /// For NetworkPolicy: whether it selects this workload.
    pub applies: bool,
}

/// The immutable, compiled policy.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    /// Inbound rules.
    pub inbound: DirectionRules,
    /// Outbound rules.
    pub outbound: DirectionRules,
    /// One entry per document.
    pub documents: Vec<DocSummary>,
}
