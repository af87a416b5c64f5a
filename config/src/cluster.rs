//! What the control plane knows of the cluster, as far as a policy needs it: namespaces with
//! their labels, and pods with their labels, addresses, service account and named ports. With
//! it, NetworkPolicy (and AccessPolicy) selectors resolve to concrete peers — Kubernetes
//! semantics: a `podSelector` alone selects pods of the policy's namespace, a
//! `namespaceSelector` alone every pod of the namespaces it selects, both together the pods of
//! those namespaces that match. Services and their ready endpoints (from EndpointSlices) are
//! kept too, for what a ClusterIP leads to. Pure data and functions; no IO.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::LabelSelector;
use crate::selector::selector_matches;
use crate::workload::NamedPort;

/// The label every namespace carries with its own name (Kubernetes sets it).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The pod annotation that says whether its sidecar speaks mutual TLS with a certificate from
/// the controller: the injector writes `enabled` on pods it enrols, and leaves `disabled` (the
/// owner's opt-out) alone.
pub const MTLS_ANNOTATION: &str = "portcullis.dev/mtls";
/// The pod annotation the injector writes on every pod it gives a sidecar.
pub const INJECTED_ANNOTATION: &str = "portcullis.dev/injected";

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
    /// Whether its sidecar accepts mutual TLS from peer sidecars (it is injected and
    /// [`MTLS_ANNOTATION`] is `enabled`): peers then originate mTLS to it and expect its
    /// identity.
    pub meshed: bool,
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

/// A port of a Service or of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct ServicePort {
    /// Its name (may be empty when it is the only one).
    pub name: String,
    /// Its number.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: String,
}

/// A Service: its cluster addresses and ports (none for a headless Service).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `spec.clusterIPs` (empty when headless or of type ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePort>,
}

/// The ready endpoints one EndpointSlice gives its Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointSlice {
    /// The namespace of the slice and of its Service.
    pub namespace: String,
    /// The Service (label `kubernetes.io/service-name`).
    pub service: String,
    /// Its ports (as the endpoints serve them).
    pub ports: Vec<ServicePort>,
    /// Its endpoints that are ready (a terminating or unready one is none).
    pub endpoints: Vec<Endpoint>,
}

/// One ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// The pod behind it (`targetRef`), as `namespace/name`.
    pub pod: Option<String>,
}

/// The cluster: namespaces and the pods that can be peers (running or pending, with an
/// address, not on the host network), and Services with their endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cluster {
    /// Namespace name → its labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Every pod that can be a peer.
    pub pods: Vec<Pod>,
    /// Every Service.
    pub services: Vec<Service>,
    /// Every EndpointSlice that belongs to a Service.
    pub endpoint_slices: Vec<EndpointSlice>,
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

    /// The ready endpoints of `service`, with the ports of the slice each comes from.
    pub fn endpoints<'a>(
        &'a self,
        service: &'a Service,
    ) -> impl Iterator<Item = (&'a Endpoint, &'a [ServicePort])> + 'a {
        self.endpoint_slices
            .iter()
            .filter(|s| s.namespace == service.namespace && s.service == service.name)
            .flat_map(|s| s.endpoints.iter().map(|e| (e, s.ports.as_slice())))
    }

    /// The pod with this address, if any.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ips.contains(&ip))
    }
}
