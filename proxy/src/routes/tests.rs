//! Routes on a small cluster: a dual-stack Service with named ports, a Service with no ready
//! endpoint, and meshed pods.

use super::*;
use portcullis_config::cluster::{Endpoint, EndpointSlice, Service};

fn port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol: protocol.into(),
    }
}

fn slice(service: &str, ports: Vec<ServicePort>, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        namespace: "shop".into(),
        service: service.into(),
        ports,
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                ips: vec![ip.parse().expect("ip")],
                pod: Some(format!("shop/{ip}")),
            })
            .collect(),
    }
}

fn cluster() -> Cluster {
    Cluster {
        services: vec![
            Service {
                namespace: "shop".into(),
                name: "api".into(),
                cluster_ips: vec![
                    "10.96.0.1".parse().expect("ip"),
                    "fd00:96::1".parse().expect("ip"),
                ],
                ports: vec![
                    port("http", 80, "TCP"),
                    port("admin", 81, "TCP"),
                    port("dns", 53, "UDP"),
                ],
            },
            Service {
                namespace: "shop".into(),
                name: "empty".into(),
                cluster_ips: vec!["10.96.0.2".parse().expect("ip")],
                ports: vec![port("", 80, "TCP")],
            },
        ],
        endpoint_slices: vec![
            slice(
                "api",
                vec![
                    port("http", 8080, "TCP"),
                    port("admin", 9090, "TCP"),
                    port("dns", 5353, "UDP"),
                ],
                &["10.0.1.1", "10.0.1.2", "10.0.1.3"],
            ),
            slice("api", vec![port("http", 8080, "TCP")], &["fd00::11"]),
        ],
        ..Cluster::default()
    }
}

fn endpoint(routes: &Routes, dst: &str) -> Option<String> {
    match routes.route(dst.parse().expect("addr")) {
        Route::Direct => None,
        Route::Service { service, endpoint } => Some(format!(
            "{service} {}",
            endpoint.map_or("none".into(), |e| e.to_string())
        )),
    }
}

#[test]
fn a_cluster_ip_leads_to_its_ready_endpoints_in_turn_on_the_named_target_port() {
    let routes = Routes::new(&cluster(), &[]);
    let picks: Vec<Option<String>> = (0..4).map(|_| endpoint(&routes, "10.96.0.1:80")).collect();
    assert_eq!(
        picks,
        [
            Some("shop/api 10.0.1.1:8080".into()),
            Some("shop/api 10.0.1.2:8080".into()),
            Some("shop/api 10.0.1.3:8080".into()),
            Some("shop/api 10.0.1.1:8080".into()),
        ]
    );
    for (dst, expected) in [
        ("10.96.0.1:81", Some("shop/api 10.0.1.1:9090")),
        ("[fd00:96::1]:80", Some("shop/api [fd00::11]:8080")),
        ("[fd00:96::1]:81", Some("shop/api none")),
        ("[::ffff:10.96.0.1]:81", Some("shop/api 10.0.1.2:9090")),
        ("10.96.0.1:53", None),
        ("10.96.0.1:443", None),
        ("10.96.0.2:80", Some("shop/empty none")),
        ("10.0.1.1:8080", None),
    ] {
        assert_eq!(endpoint(&routes, dst).as_deref(), expected, "{dst}");
    }
}

#[test]
fn a_meshed_pod_is_known_by_each_of_its_addresses() {
    let peer = MeshPeer {
        ips: vec![
            "10.0.1.1".parse().expect("ip"),
            "fd00::11".parse().expect("ip"),
        ],
        namespace: "shop".into(),
        service_account: "api".into(),
    };
    let routes = Routes::new(&Cluster::default(), std::slice::from_ref(&peer));
    for ip in ["10.0.1.1", "fd00::11", "::ffff:10.0.1.1"] {
        let found = routes
            .mesh_peer(ip.parse().expect("ip"))
            .map(|p| p.identity("td"));
        assert_eq!(found.as_deref(), Some("spiffe://td/ns/shop/sa/api"), "{ip}");
    }
    assert!(routes.mesh_peer("10.0.1.2".parse().expect("ip")).is_none());
}
