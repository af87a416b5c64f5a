//! The index, a pure core: a cluster [`Snapshot`] in, one [`View`] per workload out.
//!
//! A workload's view holds the policy documents of its namespace (never another's), its own
//! labels, named ports and service account, every namespace with its labels, every Service
//! with its ready endpoints (one copy shared by all views), and the pods that some selector of
//! those documents selects (Kubernetes semantics, by
//! [`portcullis_config::cluster::Cluster::select`]). Views are versioned by content: a new
//! snapshot bumps the version only of the views whose content changed.
//!
//! Incremental: a namespace's shared part (its documents, every namespace, the pods its
//! selectors select) is recomputed only when its documents changed, when namespace labels
//! changed, or when a pod that changed (as it was or as it is now) is one its selectors select;
//! otherwise the last one is kept, so a relabel costs the namespaces that can see the pod.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use portcullis_api::v1;
use portcullis_config::cluster::{Cluster, Pod, ServicePort};
use portcullis_config::load::{named_texts_hash, short_hex};
use portcullis_config::model::{self, Spanned};
use portcullis_config::selector::selector_matches;
use portcullis_config::snapshot::Snapshot;
use portcullis_config::workload::NamedPort;
use prost::Message as _;
use sha2::{Digest, Sha256};

/// A workload: (namespace, pod name).
pub type Key = (String, String);

/// Where a policy without `metadata.namespace` lives, as `kubectl apply` puts it.
const DEFAULT_NAMESPACE: &str = "default";

/// One version of a workload's view, kept as its namespace's shared part (one copy for every
/// pod of the namespace) and its own part. Subscribers hold this, not the whole view: a view is
/// made whole only to be sent (a thousand sidecars of one namespace share one copy of its part).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    key: Key,
    /// Increases with each change.
    pub version: u64,
    /// Content hash of the whole view.
    pub hash: String,
    shared: Arc<Shared>,
    services: Arc<Services>,
    /// `None` while the pod is unknown.
    workload: Option<v1::Workload>,
}

impl Versioned {
    /// The whole view, with its version and hash (the unknown view while the pod is unknown).
    pub fn view(&self) -> v1::View {
        let mut v = match &self.workload {
            Some(w) => {
                let mut v = view_with(&self.shared, Some(w));
                v.services.clone_from(&self.services.wire);
                v.mesh.clone_from(&self.services.mesh);
                v.trust_bundle.clone_from(&self.services.trust_bundle);
                v
            }
            None => unknown(&self.key),
        };
        v.version = self.version;
        v.hash.clone_from(&self.hash);
        v
    }

    /// Whether the pod is known.
    pub fn known(&self) -> bool {
        self.workload.is_some()
    }
}

/// What one namespace's shared part was computed from, and the part.
#[derive(Debug)]
struct Space {
    /// A hash of the namespace's documents.
    documents: String,
    shared: Arc<Shared>,
}

/// Every workload's current view, and what they were computed from.
#[derive(Debug, Default)]
pub struct Index {
    views: HashMap<Key, Versioned>,
    spaces: HashMap<String, Space>,
    pods: HashMap<Key, Pod>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    services: Arc<Services>,
    /// How many shared parts the last update recomputed.
    recomputed: usize,
}

fn named_ports(ports: &BTreeMap<String, NamedPort>) -> Vec<v1::NamedPort> {
    ports
        .iter()
        .map(|(name, p)| v1::NamedPort {
            name: name.clone(),
            port: u32::from(p.port),
            protocol: p.protocol.clone(),
        })
        .collect()
}

fn wire_pod(p: &Pod) -> v1::Pod {
    v1::Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        labels: p.labels.clone().into_iter().collect(),
        ips: p.ips.iter().map(ToString::to_string).collect(),
        service_account: p.service_account.clone(),
        named_ports: named_ports(&p.named_ports),
    }
}

/// The namespace a policy document belongs to.
fn namespace_of(doc: &model::Document) -> &str {
    doc.metadata
        .value
        .namespace
        .as_deref()
        .unwrap_or(DEFAULT_NAMESPACE)
}

fn rules(
    l: &Option<Spanned<Vec<Spanned<model::NetRule>>>>,
) -> impl Iterator<Item = &model::NetRule> {
    l.iter().flat_map(|l| l.value.iter()).map(|r| &r.value)
}

/// Every peer of every NetworkPolicy rule of `doc`.
fn peers(doc: &model::Document) -> impl Iterator<Item = &model::NetPeer> {
    let spec = &doc.spec.value;
    rules(&spec.ingress)
        .chain(rules(&spec.egress))
        .flat_map(|r| r.from.iter().chain(r.to.iter()).flatten())
        .map(|p| &p.value)
}

/// Whether an egress rule of `doc` names a port without naming peers: then every pod with
/// that port name is a possible destination.
fn egress_named_port_to_anyone(doc: &model::Document) -> bool {
    doc.spec
        .value
        .egress
        .iter()
        .flat_map(|l| l.value.iter())
        .any(|r| {
            r.value.to.as_ref().is_none_or(Vec::is_empty)
                && r.value.ports.iter().flatten().any(|p| {
                    matches!(
                        p.value.port.as_ref().map(|v| &v.value),
                        Some(model::PortValue::Text(_))
                    )
                })
        })
}

type Selectors<'d> = (
    Option<&'d model::LabelSelector>,
    Option<&'d model::LabelSelector>,
);

fn pair<'d>(
    ns: &'d Option<Spanned<model::LabelSelector>>,
    pod: &'d Option<Spanned<model::LabelSelector>>,
) -> Selectors<'d> {
    (
        ns.as_ref().map(|s| &s.value),
        pod.as_ref().map(|s| &s.value),
    )
}

/// The (namespaceSelector, podSelector) pair of every selector peer of `doc`: NetworkPolicy
/// `from`/`to` peers (not ipBlocks) and AccessPolicy `from`/`to` peers that carry selectors.
fn selectors(doc: &model::Document) -> Vec<Selectors<'_>> {
    let mut out: Vec<Selectors<'_>> = peers(doc)
        .filter(|p| p.ip_block.is_none())
        .map(|p| pair(&p.namespace_selector, &p.pod_selector))
        .collect();
    let spec = &doc.spec.value;
    for dir in [&spec.inbound, &spec.outbound].into_iter().flatten() {
        for rule in &dir.value.rules {
            let r = &rule.value;
            for peer in r
                .from
                .iter()
                .chain(r.to.iter())
                .flat_map(|l| l.value.iter())
            {
                out.push(pair(
                    &peer.value.namespace_selector,
                    &peer.value.pod_selector,
                ));
            }
        }
    }
    out.retain(|(n, p)| n.is_some() || p.is_some());
    out
}

/// The positions of each namespace's pods in the cluster.
type ByNamespace<'c> = BTreeMap<&'c str, Vec<usize>>;

fn pods_by_namespace(cluster: &Cluster) -> ByNamespace<'_> {
    let mut out: ByNamespace<'_> = BTreeMap::new();
    for (i, p) in cluster.pods.iter().enumerate() {
        out.entry(p.namespace.as_str()).or_default().push(i);
    }
    out
}

/// The positions of the pods one peer of a policy in `ns` selects (as
/// [`Cluster::select`] judges; namespaces judged once each, only `ns` looked at without a
/// namespace selector).
fn select_positions(
    cluster: &Cluster,
    by_ns: &ByNamespace<'_>,
    ns: &str,
    (ns_sel, pod_sel): Selectors<'_>,
    out: &mut BTreeSet<usize>,
) {
    let namespaces: Vec<&Vec<usize>> = match ns_sel {
        None => by_ns.get(ns).into_iter().collect(),
        Some(sel) => by_ns
            .iter()
            .filter(|(name, _)| selector_matches(sel, &cluster.namespace_labels(name)))
            .map(|(_, positions)| positions)
            .collect(),
    };
    for &i in namespaces.into_iter().flatten() {
        if pod_sel.is_none_or(|sel| selector_matches(sel, &cluster.pods[i].labels)) {
            out.insert(i);
        }
    }
}

/// The pods some selector of `docs` (all of namespace `ns`) selects, by position in the cluster.
fn selected_pods(
    cluster: &Cluster,
    by_ns: &ByNamespace<'_>,
    ns: &str,
    docs: &[&model::Document],
) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    for doc in docs {
        if egress_named_port_to_anyone(doc) {
            return (0..cluster.pods.len()).collect();
        }
        for pair in selectors(doc) {
            select_positions(cluster, by_ns, ns, pair, &mut out);
        }
    }
    out
}

/// What every pod of one namespace shares in its view: the namespace's documents, every
/// namespace, and the pods their selectors select.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shared {
    documents: Vec<v1::Document>,
    namespaces: Vec<v1::Namespace>,
    pods: Vec<v1::Pod>,
    /// A content hash of the above.
    hash: String,
}

/// The positions of each namespace's policy documents.
fn documents_by_namespace(snapshot: &Snapshot) -> HashMap<&str, Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in snapshot.policies.iter().enumerate() {
        out.entry(namespace_of(&p.doc)).or_default().push(i);
    }
    out
}

/// A hash of the documents at `mine` (their origins and texts).
fn documents_hash(snapshot: &Snapshot, mine: &[usize]) -> String {
    named_texts_hash(
        mine.iter()
            .map(|&i| (&*snapshot.policies[i].file, snapshot.texts[i].as_str())),
    )
}

/// Whether a change of one of `touched` can change what the documents at `mine` (of namespace
/// `ns`) select.
fn sees_any(snapshot: &Snapshot, ns: &str, mine: &[usize], touched: &[Pod]) -> bool {
    let cluster = &snapshot.cluster;
    !touched.is_empty()
        && mine.iter().any(|&i| {
            let doc = &snapshot.policies[i].doc;
            egress_named_port_to_anyone(doc)
                || selectors(doc)
                    .into_iter()
                    .any(|(n, p)| touched.iter().any(|pod| cluster.selects(ns, n, p, pod)))
        })
}

/// The shared part of the views of namespace `ns`.
pub fn shared(snapshot: &Snapshot, ns: &str) -> Shared {
    let mine = documents_by_namespace(snapshot)
        .remove(ns)
        .unwrap_or_default();
    shared_of(snapshot, &pods_by_namespace(&snapshot.cluster), ns, &mine)
}

/// The shared part of the views of namespace `ns`, whose documents are at `mine`.
fn shared_of(snapshot: &Snapshot, by_ns: &ByNamespace<'_>, ns: &str, mine: &[usize]) -> Shared {
    let docs: Vec<&model::Document> = mine.iter().map(|&i| &snapshot.policies[i].doc).collect();
    let cluster = &snapshot.cluster;
    let mut shared = Shared {
        documents: mine
            .iter()
            .map(|&i| v1::Document {
                origin: snapshot.policies[i].file.to_string(),
                yaml: snapshot.texts[i].clone(),
            })
            .collect(),
        namespaces: cluster
            .namespaces
            .iter()
            .map(|(name, labels)| v1::Namespace {
                name: name.clone(),
                labels: labels.clone().into_iter().collect(),
            })
            .collect(),
        pods: selected_pods(cluster, by_ns, ns, &docs)
            .into_iter()
            .map(|i| wire_pod(&cluster.pods[i]))
            .collect(),
        hash: String::new(),
    };
    shared.hash = hash(&view_with(&shared, None));
    shared
}

/// The workload part of `pod`'s view.
fn workload(pod: &Pod) -> v1::Workload {
    v1::Workload {
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        labels: pod.labels.clone().into_iter().collect(),
        named_ports: named_ports(&pod.named_ports),
        service_account: pod.service_account.clone(),
    }
}

/// A whole view from its namespace's [`Shared`] part and its workload (none: unknown).
fn view_with(shared: &Shared, workload: Option<&v1::Workload>) -> v1::View {
    v1::View {
        version: 0,
        hash: String::new(),
        known: workload.is_some(),
        workload: workload.cloned(),
        documents: shared.documents.clone(),
        namespaces: shared.namespaces.clone(),
        pods: shared.pods.clone(),
        services: Vec::new(),
        mesh: Vec::new(),
        trust_bundle: String::new(),
    }
}

/// Every Service with its ready endpoints, and every meshed pod, as views carry them (one copy
/// for every view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Services {
    wire: Vec<v1::Service>,
    mesh: Vec<v1::MeshGroup>,
    trust_bundle: String,
    /// A content hash of them.
    hash: String,
}

fn wire_ports(ports: &[ServicePort]) -> Vec<v1::ServicePort> {
    ports
        .iter()
        .map(|p| v1::ServicePort {
            name: p.name.clone(),
            port: u32::from(p.port),
            protocol: p.protocol.clone(),
        })
        .collect()
}

impl Services {
    fn new(wire: Vec<v1::Service>, mesh: Vec<v1::MeshGroup>, trust_bundle: String) -> Self {
        let encoded = v1::View {
            services: wire.clone(),
            mesh: mesh.clone(),
            trust_bundle: trust_bundle.clone(),
            ..v1::View::default()
        }
        .encode_to_vec();
        let hash = short_hex(&Sha256::digest(encoded));
        Services {
            wire,
            mesh,
            trust_bundle,
            hash,
        }
    }
}

/// The meshed pods of `cluster`, by identity.
fn mesh_groups(cluster: &Cluster) -> Vec<v1::MeshGroup> {
    let mut groups: BTreeMap<(&str, &str), v1::MeshGroup> = BTreeMap::new();
    for p in cluster.pods.iter().filter(|p| p.meshed) {
        let g = groups
            .entry((&p.namespace, &p.service_account))
            .or_insert_with(|| v1::MeshGroup {
                namespace: p.namespace.clone(),
                service_account: p.service_account.clone(),
                ..v1::MeshGroup::default()
            });
        for ip in &p.ips {
            match ip {
                std::net::IpAddr::V4(v4) => g.ipv4.push(u32::from(*v4)),
                std::net::IpAddr::V6(v6) => g.ipv6.push(v6.octets().to_vec()),
            }
        }
    }
    groups.into_values().collect()
}

/// The Services of `cluster` (and the trust bundle), for views.
fn services(cluster: &Cluster, trust_bundle: &str) -> Services {
    let wire: Vec<v1::Service> = cluster
        .services
        .iter()
        .map(|svc| v1::Service {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            cluster_ips: svc.cluster_ips.iter().map(ToString::to_string).collect(),
            ports: wire_ports(&svc.ports),
            endpoints: cluster
                .endpoints(svc)
                .map(|(e, ports)| v1::Endpoint {
                    ips: e.ips.iter().map(ToString::to_string).collect(),
                    ports: wire_ports(ports),
                    pod: e.pod.clone().unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    Services::new(wire, mesh_groups(cluster), trust_bundle.to_string())
}

/// The view a sidecar gets while its pod is unknown.
pub fn unknown(key: &Key) -> v1::View {
    v1::View {
        known: false,
        workload: Some(v1::Workload {
            namespace: key.0.clone(),
            pod: key.1.clone(),
            ..v1::Workload::default()
        }),
        ..v1::View::default()
    }
}

/// A content hash of a view (its version and hash fields left out).
pub fn hash(view: &v1::View) -> String {
    let mut v = view.clone();
    v.version = 0;
    v.hash.clear();
    short_hex(&Sha256::digest(v.encode_to_vec()))
}

impl Index {
    /// The pods that changed since the last snapshot, as they were and as they are.
    fn touched(&self, snapshot: &Snapshot) -> Vec<Pod> {
        let mut out = Vec::new();
        let mut present = BTreeSet::new();
        for pod in &snapshot.cluster.pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            match self.pods.get(&key) {
                Some(old) if old == pod => {}
                Some(old) => out.extend([old.clone(), pod.clone()]),
                None => out.push(pod.clone()),
            }
            present.insert(key);
        }
        out.extend(
            self.pods
                .iter()
                .filter(|(k, _)| !present.contains(*k))
                .map(|(_, p)| p.clone()),
        );
        out
    }

    /// Each namespace's shared part: kept when nothing it depends on changed, else recomputed.
    fn spaces(&mut self, snapshot: &Snapshot) -> HashMap<String, Arc<Shared>> {
        let touched = self.touched(snapshot);
        let namespaces_changed = self.namespaces != snapshot.cluster.namespaces;
        let by_namespace = documents_by_namespace(snapshot);
        let pods_by_ns = pods_by_namespace(&snapshot.cluster);
        let mut spaces = HashMap::new();
        self.recomputed = 0;
        for pod in &snapshot.cluster.pods {
            let ns = pod.namespace.as_str();
            if spaces.contains_key(ns) {
                continue;
            }
            let mine = by_namespace.get(ns).map_or(&[][..], Vec::as_slice);
            let documents = documents_hash(snapshot, mine);
            let space = match self.spaces.remove(ns) {
                Some(old)
                    if old.documents == documents
                        && !namespaces_changed
                        && !sees_any(snapshot, ns, mine, &touched) =>
                {
                    old
                }
                _ => {
                    self.recomputed += 1;
                    let shared = Arc::new(shared_of(snapshot, &pods_by_ns, ns, mine));
                    Space { documents, shared }
                }
            };
            spaces.insert(ns.to_string(), space);
        }
        self.spaces = spaces;
        self.namespaces.clone_from(&snapshot.cluster.namespaces);
        self.pods = snapshot
            .cluster
            .pods
            .iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p.clone()))
            .collect();
        self.spaces
            .iter()
            .map(|(ns, s)| (ns.clone(), s.shared.clone()))
            .collect()
    }

    /// How many namespaces' shared parts the last update recomputed (the rest were kept).
    pub fn recomputed(&self) -> usize {
        self.recomputed
    }

    /// Applies a new snapshot; returns the workloads whose view changed (new ones included,
    /// and pods that disappeared, which become unknown).
    pub fn update(&mut self, snapshot: &Snapshot) -> Vec<Key> {
        let mut changed = Vec::new();
        let mut seen = BTreeSet::new();
        let spaces = self.spaces(snapshot);
        let services = services(&snapshot.cluster, &self.services.trust_bundle);
        if services != *self.services {
            self.services = Arc::new(services);
        }
        for pod in &snapshot.cluster.pods {
            let key = (pod.namespace.clone(), pod.name.clone());
            seen.insert(key.clone());
            let shared = spaces
                .get(pod.namespace.as_str())
                .cloned()
                .unwrap_or_default();
            if self.set(key.clone(), shared, Some(workload(pod))) {
                changed.push(key);
            }
        }
        let gone: Vec<Key> = self
            .views
            .iter()
            .filter(|(k, v)| !seen.contains(*k) && v.workload.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if self.set(key.clone(), Arc::default(), None) {
                changed.push(key);
            }
        }
        changed
    }

    /// Every known view now carries `bundle` as its trust bundle; returns the views that
    /// changed.
    pub fn set_trust_bundle(&mut self, bundle: &str) -> Vec<Key> {
        if self.services.trust_bundle == bundle {
            return Vec::new();
        }
        let s = &self.services;
        self.services = Arc::new(Services::new(
            s.wire.clone(),
            s.mesh.clone(),
            bundle.to_string(),
        ));
        let known: Vec<(Key, Arc<Shared>, Option<v1::Workload>)> = self
            .views
            .values()
            .filter(|v| v.workload.is_some())
            .map(|v| (v.key.clone(), v.shared.clone(), v.workload.clone()))
            .collect();
        known
            .into_iter()
            .filter_map(|(key, shared, w)| self.set(key.clone(), shared, w).then_some(key))
            .collect()
    }

    /// Stores the view for `key` if its content differs; true when it did.
    fn set(&mut self, key: Key, shared: Arc<Shared>, workload: Option<v1::Workload>) -> bool {
        let own = workload
            .as_ref()
            .map(|w| w.encode_to_vec())
            .unwrap_or_default();
        let services = if workload.is_some() {
            self.services.clone()
        } else {
            Arc::default()
        };
        let hash = short_hex(
            &Sha256::new()
                .chain_update(shared.hash.as_bytes())
                .chain_update(services.hash.as_bytes())
                .chain_update(&own)
                .finalize(),
        );
        let version = match self.views.get(&key) {
            Some(old) if old.hash == hash => return false,
            Some(old) => old.version + 1,
            None => 1,
        };
        self.views.insert(
            key.clone(),
            Versioned {
                key,
                version,
                hash,
                shared,
                services,
                workload,
            },
        );
        true
    }

    /// The current view of `key`, not yet made whole (an unknown view, version 0, when the
    /// pod was never known).
    pub fn versioned(&self, key: &Key) -> Arc<Versioned> {
        Arc::new(self.views.get(key).cloned().unwrap_or_else(|| Versioned {
            key: key.clone(),
            version: 0,
            hash: String::new(),
            shared: Arc::default(),
            services: Arc::default(),
            workload: None,
        }))
    }

    /// The current view of `key`, whole.
    pub fn get(&self, key: &Key) -> Arc<v1::View> {
        Arc::new(self.versioned(key).view())
    }

    /// How many workloads have a view.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no workload has a view.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

#[cfg(test)]
mod tests;
