//! Services and EndpointSlices as the API server serves them (JSON values), into the
//! [`Service`] and [`EndpointSlice`] of the cluster model. An endpoint counts when it is ready
//! (`conditions.ready` absent or true, as the API defines it); a slice without the
//! `kubernetes.io/service-name` label belongs to no Service and is dropped.

use std::net::IpAddr;

use serde_json::Value;

use crate::cluster::{Endpoint, EndpointSlice, Service, ServicePort};

/// The label that ties a slice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn text<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer)?.as_str()
}

fn items<'v>(v: &'v Value, pointer: &str) -> impl Iterator<Item = &'v Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn ports(v: &Value, pointer: &str) -> Vec<ServicePort> {
    items(v, pointer)
        .filter_map(|p| {
            Some(ServicePort {
                name: p.get("name").and_then(Value::as_str).unwrap_or("").into(),
                port: u16::try_from(p.get("port")?.as_u64()?).ok()?,
                protocol: p
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .into(),
            })
        })
        .collect()
}

/// A Service object.
pub fn service(v: &Value) -> Option<Service> {
    let mut cluster_ips: Vec<IpAddr> = items(v, "/spec/clusterIPs")
        .filter_map(|ip| ip.as_str()?.parse().ok())
        .collect();
    if cluster_ips.is_empty() {
        // `None` (headless) does not parse: no address.
        cluster_ips.extend(text(v, "/spec/clusterIP").and_then(|ip| ip.parse::<IpAddr>().ok()));
    }
    Some(Service {
        namespace: text(v, "/metadata/namespace").unwrap_or("default").into(),
        name: text(v, "/metadata/name")?.into(),
        cluster_ips,
        ports: ports(v, "/spec/ports"),
    })
}

/// An EndpointSlice object (`discovery.k8s.io/v1`) with its ready endpoints.
pub fn endpoint_slice(v: &Value) -> Option<EndpointSlice> {
    let service = v
        .pointer("/metadata/labels")?
        .get(SERVICE_NAME_LABEL)?
        .as_str()?;
    let namespace = text(v, "/metadata/namespace").unwrap_or("default");
    let endpoints = items(v, "/endpoints")
        .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
        .map(|e| Endpoint {
            ips: items(e, "/addresses")
                .filter_map(|ip| ip.as_str()?.parse().ok())
                .collect(),
            pod: (text(e, "/targetRef/kind") == Some("Pod"))
                .then(|| {
                    let ns = text(e, "/targetRef/namespace").unwrap_or(namespace);
                    Some(format!("{ns}/{}", text(e, "/targetRef/name")?))
                })
                .flatten(),
        })
        .filter(|e| !e.ips.is_empty())
        .collect();
    Some(EndpointSlice {
        namespace: namespace.into(),
        service: service.into(),
        ports: ports(v, "/ports"),
        endpoints,
    })
}
