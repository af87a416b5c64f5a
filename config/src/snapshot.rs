//! A cluster snapshot, as `kubectl get -A -o yaml` writes it (`List` objects or multi-document
//! files): the Namespaces and Pods become the [`Cluster`], the NetworkPolicies and AccessPolicies
//! become policy documents, PolicyGuardrails [`Guardrail`]s, Services and EndpointSlices their
//! model ([`services`]). Other kinds are read and ignored.
//! Pure: text in, model out. Policies written as top-level documents keep their own
//! `file:line:col`; a policy inside a `List` is re-read from its own JSON, and its errors name
//! it as `FILE#items[N]`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;

use crate::cluster::{Cluster, EndpointSlice, Pod, Service};
use crate::compiled::CompileContext;
use crate::guardrail::{self, Guardrail};
use crate::load::{LoadError, Source, parse_document, split_documents};
use crate::source::{PolicyError, SourceDoc};
use crate::workload::NamedPort;

/// What a snapshot holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Namespaces and pods.
    pub cluster: Cluster,
    /// The policy documents, in file order.
    pub policies: Vec<SourceDoc>,
    /// Each policy's text (YAML, or JSON for an item of a `List`), beside [`Snapshot::policies`],
    /// for those who pass policies on (the controller).
    pub texts: Vec<String>,
    /// The `PolicyGuardrail`s, in file order.
    pub guardrails: Vec<Arc<Guardrail>>,
    /// What could not be read (every one, located).
    pub errors: Vec<PolicyError>,
}

fn text<'v>(v: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.clone(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Pod object as a peer, or `None` when Kubernetes would not treat it as one: finished,
/// on the host network, or without an address yet.
pub fn pod(v: &Value) -> Option<Pod> {
    let phase = text(v, &["status", "phase"]).unwrap_or("Pending");
    let host_network = v.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true);
    if matches!(phase, "Succeeded" | "Failed") || host_network {
        return None;
    }
    let mut ips: Vec<IpAddr> = v
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("ip")?.as_str()?.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(text(v, &["status", "podIP"]).and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    let mut named_ports = BTreeMap::new();
    for c in v
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(name), Some(port)) = (
                p.get("name").and_then(Value::as_str),
                p.get("containerPort").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            if let Ok(port) = u16::try_from(port) {
                named_ports.entry(name.to_string()).or_insert(NamedPort {
                    port,
                    protocol: protocol.to_string(),
                });
            }
        }
    }
    Some(Pod {
        namespace: text(v, &["metadata", "namespace"])
            .unwrap_or("default")
            .to_string(),
        name: text(v, &["metadata", "name"])?.to_string(),
        labels: labels(v),
        ips,
        service_account: text(v, &["spec", "serviceAccountName"])
            .unwrap_or("default")
            .to_string(),
        named_ports,
        meshed: meshed(v),
    })
    .filter(|p| !p.ips.is_empty())
}

/// Whether a pod's sidecar takes mutual TLS: injected, and enrolled (`portcullis.dev/mtls:
/// enabled`, which the injector writes).
fn meshed(v: &Value) -> bool {
    let annotation = |key: &str| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
    };
    annotation(crate::cluster::INJECTED_ANNOTATION).is_some()
        && annotation(crate::cluster::MTLS_ANNOTATION) == Some("enabled")
}

/// What a document that is a Namespace, a Pod or of a kind snapshots ignore contributes: kept
/// between reads by its text.
#[derive(Debug, Clone)]
enum Cached {
    Namespace(String, BTreeMap<String, String>),
    Pod(Option<Pod>),
    Service(Option<Service>),
    Slice(Option<EndpointSlice>),
    Ignored,
}

/// The Namespace and Pod documents of the last read of a source, by their text: a re-read
/// parses only the documents that changed (a relabel re-parses one). Policies, `List`s and
/// documents with errors are always parsed again (their errors and spans name their place).
#[derive(Debug, Default)]
pub struct DocumentCache {
    documents: HashMap<Box<str>, Cached>,
}

impl DocumentCache {
    /// How many documents it holds.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }
}

impl Snapshot {
    /// Reads every file (name, contents) of a snapshot.
    pub fn parse(files: &[(String, String)]) -> Self {
        Self::parse_cached(files, &mut DocumentCache::default())
    }

    /// Reads every file of a snapshot, taking unchanged Namespace and Pod documents from
    /// `cache`, which then holds those of this read only.
    pub fn parse_cached(files: &[(String, String)], cache: &mut DocumentCache) -> Self {
        let mut s = Snapshot::default();
        let mut next = DocumentCache::default();
        for (name, contents) in files {
            let file: Arc<str> = name.as_str().into();
            for (offset, chunk) in split_documents(contents) {
                let cached = cache.documents.remove(chunk);
                if let Some(c) = cached.or_else(|| s.document(&file, offset, chunk)) {
                    s.contribute(&c);
                    next.documents.insert(chunk.into(), c);
                }
            }
        }
        *cache = next;
        s
    }

    /// Adds what a cached document contributes.
    fn contribute(&mut self, c: &Cached) {
        match c {
            Cached::Namespace(name, labels) => {
                self.cluster.namespaces.insert(name.clone(), labels.clone());
            }
            Cached::Pod(pod) => self.cluster.pods.extend(pod.clone()),
            Cached::Service(svc) => self.cluster.services.extend(svc.clone()),
            Cached::Slice(slice) => self.cluster.endpoint_slices.extend(slice.clone()),
            Cached::Ignored => {}
        }
    }

    /// Reads one document: a policy, a `List` or an error goes into the snapshot; a Namespace,
    /// Pod or ignored kind is returned for the caller to add and keep.
    fn document(&mut self, file: &Arc<str>, offset: u64, chunk: &str) -> Option<Cached> {
        // Kubernetes label values are strings: `y` and `on` stay strings (YAML 1.2 booleans).
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = true;
        let value: Value = match serde_saphyr::from_str_with_options(chunk, options) {
            Ok(v) => v,
            Err(e) => {
                let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                self.errors.push(PolicyError {
                    file: file.clone(),
                    line: line + offset,
                    column,
                    message: e.to_string().lines().next().unwrap_or_default().to_string(),
                });
                return None;
            }
        };
        match value.get("kind").and_then(Value::as_str) {
            Some("List") => {
                let items = value.get("items").and_then(Value::as_array);
                for (i, item) in items.into_iter().flatten().enumerate() {
                    self.object(item, || (format!("{file}#items[{i}]").into(), None));
                }
                None
            }
            Some("NetworkPolicy" | "AccessPolicy" | guardrail::KIND) => {
                self.object(&value, || (file.clone(), Some((offset, chunk))));
                None
            }
            Some("Namespace") => Some(
                text(&value, &["metadata", "name"]).map_or(Cached::Ignored, |name| {
                    Cached::Namespace(name.to_string(), labels(&value))
                }),
            ),
            Some("Pod") => Some(Cached::Pod(pod(&value))),
            Some("Service") => Some(Cached::Service(services::service(&value))),
            Some("EndpointSlice") => Some(Cached::Slice(services::endpoint_slice(&value))),
            _ => Some(Cached::Ignored),
        }
    }

    /// One object; `source` says where a policy's text is (its own chunk, or none: re-read).
    fn object<'t>(
        &mut self,
        v: &Value,
        source: impl FnOnce() -> (Arc<str>, Option<(u64, &'t str)>),
    ) {
        match v.get("kind").and_then(Value::as_str) {
            Some("Namespace") => {
                if let Some(name) = text(v, &["metadata", "name"]) {
                    self.cluster.namespaces.insert(name.to_string(), labels(v));
                }
            }
            Some("Pod") => self.cluster.pods.extend(pod(v)),
            Some("Service") => self.cluster.services.extend(services::service(v)),
            Some("EndpointSlice") => self
                .cluster
                .endpoint_slices
                .extend(services::endpoint_slice(v)),
            Some(kind @ ("NetworkPolicy" | "AccessPolicy" | guardrail::KIND)) => {
                let (file, chunk) = source();
                let json;
                let (offset, text) = match chunk {
                    Some(c) => c,
                    None => {
                        json = serde_json::to_string_pretty(&without_status(v)).unwrap_or_default();
                        (0, json.as_str())
                    }
                };
                if kind == guardrail::KIND {
                    return self.guardrail(&file, offset, text);
                }
                match parse_document(&file, offset, text) {
                    Ok(Some(doc)) => {
                        self.policies.push(doc);
                        self.texts.push(text.to_string());
                    }
                    Ok(None) => {}
                    Err(e) => self.errors.push(e),
                }
            }
            _ => {}
        }
    }
}

impl Snapshot {
    /// One `PolicyGuardrail` document, or its errors.
    fn guardrail(&mut self, file: &Arc<str>, offset: u64, text: &str) {
        match guardrail::parse(file, offset, text) {
            Ok(g) => self.guardrails.push(Arc::new(g)),
            Err(e) => self.errors.extend(e),
        }
    }

    /// A whole source (every file read) as a snapshot; `Err` lists every located error.
    pub fn from_source(source: &Source) -> Result<Self, LoadError> {
        let s = Self::parse(&source.files);
        if s.errors.is_empty() {
            Ok(s)
        } else {
            Err(LoadError::Invalid(s.errors))
        }
    }

    /// Adds one Kubernetes object (as the API server serves it: JSON with `kind`) from
    /// `origin` (e.g. `NetworkPolicy shop/web`): Namespaces and Pods to the cluster, policies to
    /// the documents (re-read from their JSON; their errors name `origin`), other kinds ignored.
    pub fn add_object(&mut self, origin: &str, v: &Value) {
        self.object(v, || (origin.into(), None));
    }

    /// What compiling the policy for `pod` needs to know: its labels, named ports, namespace,
    /// and the cluster for its selectors.
    pub fn context_for(&self, pod: &Pod) -> CompileContext {
        CompileContext {
            workload_labels: Some(pod.labels.clone()),
            named_ports: pod.named_ports.clone(),
            workload_namespace: Some(pod.namespace.clone()),
            cluster: Some(Arc::new(self.cluster.clone())),
        }
    }
}

/// The object without `status` (which policy documents do not have).
fn without_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

pub mod services;

#[cfg(test)]
mod tests;
