//! A view from the controller as compile inputs: the workload facts (labels, named ports,
//! namespace), the cluster its selectors resolve against, and its policy documents. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_api::v1;
use portcullis_config::CompileContext;
use portcullis_config::cluster::{Cluster, Pod};
use portcullis_config::workload::NamedPort;

/// What a view gives the compiler.
#[derive(Debug, Clone)]
pub struct ViewInputs {
    /// The controller's version of the view.
    pub version: u64,
    /// Its content hash.
    pub hash: String,
    /// Workload facts and the cluster.
    pub ctx: CompileContext,
    /// (origin, YAML) of each policy document.
    pub documents: Vec<(String, String)>,
}

/// A view that cannot be used (kept out; the last good one stays).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The controller does not know the pod (yet).
    #[error("the controller does not know this pod")]
    Unknown,
    /// An address that does not parse.
    #[error("pod {0}: invalid address {1:?}")]
    Address(String, String),
    /// A port number out of range.
    #[error("named port {0:?}: {1} is not a port")]
    Port(String, u32),
}

fn named_ports(list: &[v1::NamedPort]) -> Result<BTreeMap<String, NamedPort>, ViewError> {
    list.iter()
        .map(|p| {
            let port = u16::try_from(p.port)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ViewError::Port(p.name.clone(), p.port))?;
            Ok((
                p.name.clone(),
                NamedPort {
                    port,
                    protocol: p.protocol.clone(),
                },
            ))
        })
        .collect()
}

fn pod(p: &v1::Pod) -> Result<Pod, ViewError> {
    let ips = p
        .ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|_| ViewError::Address(format!("{}/{}", p.namespace, p.name), ip.clone()))
        })
        .collect::<Result<_, _>>()?;
    Ok(Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        labels: p.labels.clone().into_iter().collect(),
        ips,
        service_account: p.service_account.clone(),
        named_ports: named_ports(&p.named_ports)?,
    })
}

/// Reads a view.
pub fn inputs(view: &v1::View) -> Result<ViewInputs, ViewError> {
    let workload = view
        .workload
        .as_ref()
        .filter(|_| view.known)
        .ok_or(ViewError::Unknown)?;
    let cluster = Cluster {
        namespaces: view
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), n.labels.clone().into_iter().collect()))
            .collect(),
        pods: view.pods.iter().map(pod).collect::<Result<_, _>>()?,
    };
    Ok(ViewInputs {
        version: view.version,
        hash: view.hash.clone(),
        ctx: CompileContext {
            workload_labels: Some(workload.labels.clone().into_iter().collect()),
            named_ports: named_ports(&workload.named_ports)?,
            workload_namespace: Some(workload.namespace.clone()),
            cluster: Some(Arc::new(cluster)),
        },
        documents: view
            .documents
            .iter()
            .map(|d| (d.origin.clone(), d.yaml.clone()))
            .collect(),
    })
}
