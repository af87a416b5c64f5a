//! Where an outbound connection really goes, from the controller's view. Pure; rebuilt with
//! every view.
//!
//! - A Service's ClusterIP and port lead to one of its ready endpoints, picked in turn (round
//!   robin per Service port), on the endpoint port of the same name: the sidecar judges and
//!   connects to that endpoint, so what was judged is what is reached. A Service without a ready
//!   endpoint of the dialled address family leads nowhere (503 for HTTP, refused for TCP).
//! - A meshed pod's address (`portcullis.dev/mtls: enabled`) is reached over mutual TLS, and
//!   its sidecar must prove that pod's identity: an address cannot be borrowed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use portcullis_config::cluster::{Cluster, ServicePort};
use portcullis_config::matchers::canonical;

/// A pod whose sidecar takes mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPeer {
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
}

impl MeshPeer {
    /// The identity its sidecar must present, in `trust_domain`.
    pub fn identity(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// The ready endpoints of one Service port.
#[derive(Debug)]
struct Backend {
    /// `namespace/name`.
    service: Arc<str>,
    endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

/// Where outbound connections go.
#[derive(Debug, Default)]
pub struct Routes {
    services: HashMap<SocketAddr, Backend>,
    mesh: HashMap<IpAddr, Arc<MeshPeer>>,
}

/// Where one connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Where it was dialled.
    Direct,
    /// A Service: this endpoint, or none ready.
    Service {
        /// `namespace/name`.
        service: Arc<str>,
        /// The endpoint picked.
        endpoint: Option<SocketAddr>,
    },
}

/// The endpoint port that serves `port` of a Service: the one of the same name and protocol.
fn target_port(port: &ServicePort, endpoint_ports: &[ServicePort]) -> Option<u16> {
    endpoint_ports
        .iter()
        .find(|p| p.name == port.name && p.protocol.eq_ignore_ascii_case(&port.protocol))
        .map(|p| p.port)
}

fn backends(cluster: &Cluster) -> HashMap<SocketAddr, Backend> {
    let mut out = HashMap::new();
    for svc in &cluster.services {
        let service: Arc<str> = format!("{}/{}", svc.namespace, svc.name).into();
        for port in svc.ports.iter().filter(|p| p.protocol == "TCP") {
            for &cluster_ip in &svc.cluster_ips {
                let endpoints = cluster
                    .endpoints(svc)
                    .filter_map(|(e, ports)| Some((e, target_port(port, ports)?)))
                    .flat_map(|(e, target)| e.ips.iter().map(move |ip| (canonical(*ip), target)))
                    .filter(|(ip, _)| ip.is_ipv4() == canonical(cluster_ip).is_ipv4())
                    .map(|(ip, target)| SocketAddr::new(ip, target))
                    .collect();
                out.insert(
                    SocketAddr::new(canonical(cluster_ip), port.port),
                    Backend {
                        service: service.clone(),
                        endpoints,
                        next: AtomicUsize::new(0),
                    },
                );
            }
        }
    }
    out
}

impl Routes {
    /// The routes of a view's cluster and meshed pods.
    pub fn new(cluster: &Cluster, mesh: &[MeshPeer]) -> Self {
        let mut by_ip = HashMap::new();
        for peer in mesh {
            let peer = Arc::new(peer.clone());
            for ip in &peer.ips {
                by_ip.insert(canonical(*ip), peer.clone());
            }
        }
        Self {
            services: backends(cluster),
            mesh: by_ip,
        }
    }

    /// Where a connection dialled to `dst` goes (each call to a Service takes the next
    /// endpoint).
    pub fn route(&self, dst: SocketAddr) -> Route {
        let key = SocketAddr::new(canonical(dst.ip()), dst.port());
        let Some(b) = self.services.get(&key) else {
            return Route::Direct;
        };
        let endpoint = (!b.endpoints.is_empty()).then(|| {
            let i = b.next.fetch_add(1, Ordering::Relaxed) % b.endpoints.len();
            b.endpoints[i]
        });
        Route::Service {
            service: b.service.clone(),
            endpoint,
        }
    }

    /// Whether `dst` is a Service's address and port (connections never go there directly).
    pub fn is_service(&self, dst: SocketAddr) -> bool {
        self.services
            .contains_key(&SocketAddr::new(canonical(dst.ip()), dst.port()))
    }

    /// The meshed pod at `ip`, if any.
    pub fn mesh_peer(&self, ip: IpAddr) -> Option<&MeshPeer> {
        self.mesh.get(&canonical(ip)).map(|p| &**p)
    }
}

#[cfg(test)]
mod tests;
