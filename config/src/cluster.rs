//! What the control plane knows of the cluster, as far as a policy needs it: namespaces with
//! their labels, and pods with their labels, addresses, service account and named ports. With
//! it, NetworkPolicy (and AccessPolicy) selectors resolve to concrete peers — Kubernetes
//! semantics: a `podSelector` alone selects pods of the policy's namespace, a
//! `namespaceSelector` alone every pod of the namespaces it selects, both together the pods of
//! those namespaces that match. Pure data and functions; no IO.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::LabelSelector;
use crate::selector::selector_matches;
use crate::workload::NamedPort;

/// The label every namespace carries with its own name (Kubernetes sets it).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// One pod, as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses (`status.podIPs`); a pod without one is no peer yet.
    pub ips: Vec<IpAddr>,
    /// Its service account (its SPIFFE identity's `sa`).
    pub service_account: String,
    /// Its named container ports.
    pub named_ports: BTreeMap<String, NamedPort>,
}

impl Pod {
    /// The pod's workload identity in `trust_domain`.
    pub fn identity(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// The cluster: namespaces and the pods that can be peers (running or pending, with an
/// address, not on the host network).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cluster {
    /// Namespace name → its labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Every pod that can be a peer.
    pub pods: Vec<Pod>,
}

impl Cluster {
    /// A namespace's labels, with `kubernetes.io/metadata.name` as Kubernetes sets it (also for
    /// a namespace the snapshot does not list: its name is all that is known of it).
    pub fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(name).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        labels
    }

    /// The pods a NetworkPolicy peer selects, for a policy in `policy_namespace`. At least one
    /// selector is given (a peer with neither is refused before this).
    pub fn select<'a>(
        &'a self,
        policy_namespace: &str,
        namespaces: Option<&LabelSelector>,
        pods: Option<&LabelSelector>,
    ) -> Vec<&'a Pod> {
        // Each namespace is judged once, not once per pod.
        let mut verdicts: std::collections::HashMap<&'a str, bool> =
            std::collections::HashMap::new();
        let mut out = Vec::new();
        for p in &self.pods {
            let ns = p.namespace.as_str();
            let ns_ok = match namespaces {
                None => ns == policy_namespace,
                Some(sel) => *verdicts
                    .entry(ns)
                    .or_insert_with(|| selector_matches(sel, &self.namespace_labels(ns))),
            };
            if ns_ok && pods.is_none_or(|sel| selector_matches(sel, &p.labels)) {
                out.push(p);
            }
        }
        out
    }

    /// Whether a NetworkPolicy peer of a policy in `policy_namespace` selects `pod` (the same
    /// judgement as [`Cluster::select`], for one pod).
    pub fn selects(
        &self,
        policy_namespace: &str,
        namespaces: Option<&LabelSelector>,
        pods: Option<&LabelSelector>,
        pod: &Pod,
    ) -> bool {
        let ns_ok = match namespaces {
            None => pod.namespace == policy_namespace,
            Some(sel) => selector_matches(sel, &self.namespace_labels(&pod.namespace)),
        };
        ns_ok && pods.is_none_or(|sel| selector_matches(sel, &pod.labels))
    }

    /// The pod with this address, if any.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ips.contains(&ip))
    }
}
