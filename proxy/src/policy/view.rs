//! A view from the controller as compile inputs: the workload facts (labels, named ports,
//! namespace), the cluster its selectors resolve against (and its Services with their ready
//! endpoints), and its policy documents. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_api::v1;
use portcullis_config::CompileContext;
use portcullis_config::cluster::{Cluster, Endpoint, EndpointSlice, Pod, Service, ServicePort};
use portcullis_config::workload::NamedPort;

use crate::routes::MeshPeer;

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
    /// The pods whose sidecars take mutual TLS.
    pub mesh: Vec<MeshPeer>,
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
        meshed: false,
    })
}

fn address(owner: &str, ip: &str) -> Result<IpAddr, ViewError> {
    ip.parse()
        .map_err(|_| ViewError::Address(owner.to_string(), ip.to_string()))
}

fn service_ports(list: &[v1::ServicePort]) -> Result<Vec<ServicePort>, ViewError> {
    list.iter()
        .map(|p| {
            Ok(ServicePort {
                name: p.name.clone(),
                port: u16::try_from(p.port)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ViewError::Port(p.name.clone(), p.port))?,
                protocol: p.protocol.clone(),
            })
        })
        .collect()
}

/// A Service, and its endpoints as one slice each (each carries its own ports).
fn service(s: &v1::Service) -> Result<(Service, Vec<EndpointSlice>), ViewError> {
    let owner = format!("service {}/{}", s.namespace, s.name);
    let cluster_ips = s
        .cluster_ips
        .iter()
        .map(|ip| address(&owner, ip))
        .collect::<Result<_, _>>()?;
    let slices = s
        .endpoints
        .iter()
        .map(|e| {
            Ok(EndpointSlice {
                namespace: s.namespace.clone(),
                service: s.name.clone(),
                ports: service_ports(&e.ports)?,
                endpoints: vec![Endpoint {
                    ips: e
                        .ips
                        .iter()
                        .map(|ip| address(&owner, ip))
                        .collect::<Result<_, _>>()?,
                    pod: (!e.pod.is_empty()).then(|| e.pod.clone()),
                }],
            })
        })
        .collect::<Result<_, ViewError>>()?;
    let svc = Service {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        cluster_ips,
        ports: service_ports(&s.ports)?,
    };
    Ok((svc, slices))
}

fn mesh_group(g: &v1::MeshGroup) -> Result<MeshPeer, ViewError> {
    let v6 = g
        .ipv6
        .iter()
        .map(|b| {
            let octets: [u8; 16] = b.as_slice().try_into().map_err(|_| {
                ViewError::Address(format!("meshed pods in {}", g.namespace), format!("{b:?}"))
            })?;
            Ok(IpAddr::from(octets))
        })
        .collect::<Result<Vec<_>, ViewError>>()?;
    Ok(MeshPeer {
        ips: g
            .ipv4
            .iter()
            .map(|v4| IpAddr::from(std::net::Ipv4Addr::from(*v4)))
            .chain(v6)
            .collect(),
        namespace: g.namespace.clone(),
        service_account: g.service_account.clone(),
    })
}

/// Reads a view.
pub fn inputs(view: &v1::View) -> Result<ViewInputs, ViewError> {
    let workload = view
        .workload
        .as_ref()
        .filter(|_| view.known)
        .ok_or(ViewError::Unknown)?;
    let mut cluster = Cluster {
        namespaces: view
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), n.labels.clone().into_iter().collect()))
            .collect(),
        pods: view.pods.iter().map(pod).collect::<Result<_, _>>()?,
        ..Cluster::default()
    };
    for s in &view.services {
        let (svc, slices) = service(s)?;
        cluster.services.push(svc);
        cluster.endpoint_slices.extend(slices);
    }
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
        mesh: view.mesh.iter().map(mesh_group).collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ip: &str) -> v1::View {
        let port = |n: &str, p: u32| v1::ServicePort {
            name: n.into(),
            port: p,
            protocol: "TCP".into(),
        };
        v1::View {
            known: true,
            workload: Some(v1::Workload {
                namespace: "shop".into(),
                pod: "web".into(),
                ..v1::Workload::default()
            }),
            services: vec![v1::Service {
                namespace: "shop".into(),
                name: "api".into(),
                cluster_ips: vec!["10.96.0.1".into()],
                ports: vec![port("http", 80)],
                endpoints: vec![v1::Endpoint {
                    ips: vec![ip.into()],
                    ports: vec![port("http", 8080)],
                    pod: "shop/api-1".into(),
                }],
            }],
            ..v1::View::default()
        }
    }

    #[test]
    fn services_and_endpoints_reach_the_cluster_model() {
        let read = inputs(&view("10.0.1.1")).expect("inputs");
        let cluster = read.ctx.cluster.expect("cluster");
        let api = &cluster.services[0];
        assert_eq!((api.name.as_str(), api.ports[0].port), ("api", 80));
        let endpoints: Vec<(String, Option<String>, u16)> = cluster
            .endpoints(api)
            .map(|(e, ports)| (e.ips[0].to_string(), e.pod.clone(), ports[0].port))
            .collect();
        assert_eq!(
            endpoints,
            [("10.0.1.1".into(), Some("shop/api-1".into()), 8080)]
        );
        let err = inputs(&view("10.0.1")).expect_err("bad address");
        assert!(err.to_string().contains("service shop/api"), "{err}");
    }

    #[test]
    fn meshed_groups_become_peers_by_address_and_a_bad_address_is_refused() {
        let mut v = view("10.0.1.1");
        v.mesh = vec![v1::MeshGroup {
            namespace: "shop".into(),
            service_account: "api".into(),
            ipv4: vec![u32::from(std::net::Ipv4Addr::new(10, 0, 1, 1))],
            ipv6: vec![
                "fd00::11"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("ip")
                    .octets()
                    .to_vec(),
            ],
        }];
        let read = inputs(&v).expect("inputs");
        let ips: Vec<String> = read.mesh[0].ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.1.1", "fd00::11"]);
        assert_eq!(read.mesh[0].identity("td"), "spiffe://td/ns/shop/sa/api");
        v.mesh[0].ipv6 = vec![vec![1, 2, 3]];
        let err = inputs(&v).expect_err("a 3-byte address");
        assert!(err.to_string().contains("meshed pods in shop"), "{err}");
    }
}
