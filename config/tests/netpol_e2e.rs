//! The upstream NetworkPolicy e2e cases (`netpol-e2e.yaml`) on the suite's 3×3 layout, pod to
//! pod on TCP 80 and 81, with the cluster known (as the controller gives it): the engine — each
//! pod's policies compiled as its sidecar compiles them, egress judged at the client, ingress at
//! the server — must agree on every pair with `portcullis_testbed::netpol_oracle`, written from
//! the Kubernetes semantics alone (it shares no code with the engine).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_config::cluster::{Cluster, Pod};
use portcullis_config::workload::parse_named_ports;
use portcullis_config::{CompileContext, ConnDecision, Connection, Direction, compile, load};
use portcullis_testbed::netpol_oracle;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    policies: String,
    /// `ns/pod: new pod label`.
    #[serde(default)]
    relabel: BTreeMap<String, String>,
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];

fn cluster(relabel: &BTreeMap<String, String>) -> Cluster {
    let mut c = Cluster::default();
    for (i, ns) in NAMESPACES.into_iter().enumerate() {
        c.namespaces
            .insert(ns.into(), [("ns".to_string(), ns.to_string())].into());
        for (j, pod) in PODS.into_iter().enumerate() {
            let label = relabel
                .get(&format!("{ns}/{pod}"))
                .map_or(pod, String::as_str);
            c.pods.push(Pod {
                namespace: ns.into(),
                name: pod.into(),
                labels: [("pod".to_string(), label.to_string())].into(),
                ips: vec![format!("10.0.{}.{}", i + 1, j + 1).parse().expect("ip")],
                service_account: "default".into(),
                named_ports: parse_named_ports(
                    "serve-80-tcp=80,serve-81-tcp=81,serve-81-udp=81/UDP",
                )
                .expect("ports"),
                meshed: false,
            });
        }
    }
    c
}

/// The same cluster, as the oracle sees it.
fn as_oracle(c: &Cluster) -> netpol_oracle::Cluster {
    netpol_oracle::Cluster {
        namespaces: c.namespaces.clone(),
        pods: c
            .pods
            .iter()
            .map(|p| netpol_oracle::Pod {
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                ip: p.ips[0],
                named_ports: p
                    .named_ports
                    .iter()
                    .map(|(n, np)| (n.clone(), (np.port, np.protocol.clone())))
                    .collect(),
            })
            .collect(),
    }
}

// ---- the engine, as each pod's sidecar runs it ----

fn engine(
    docs: &[portcullis_config::source::SourceDoc],
    c: &Arc<Cluster>,
    pod: &Pod,
) -> portcullis_config::CompiledPolicy {
    let ctx = CompileContext {
        workload_labels: Some(pod.labels.clone()),
        named_ports: pod.named_ports.clone(),
        workload_namespace: Some(pod.namespace.clone()),
        cluster: Some(c.clone()),
    };
    match compile::compile(docs, &ctx) {
        Ok((p, _)) => p,
        Err(e) => panic!("{e:?}"),
    }
}

fn allows(
    p: &portcullis_config::CompiledPolicy,
    direction: Direction,
    peer: IpAddr,
    port: u16,
) -> bool {
    let conn = Connection {
        direction,
        peer,
        port,
        identity: None,
        sni: None,
        trust_domain: None,
    };
    match p.decide_connection(&conn, None) {
        ConnDecision::Final(d) => d.verdict.as_str() == "allow",
        ConnDecision::NeedHttp => panic!("NetworkPolicy never needs HTTP"),
    }
}

fn matrix(cell: impl Fn(usize, usize) -> bool, n: usize) -> String {
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| if cell(i, j) { '.' } else { 'X' })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn upstream_e2e_cases_agree_with_the_kubernetes_semantics_pod_to_pod() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netpol-e2e.yaml");
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(path).expect("cases"))
        .expect("parse cases");
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut isolating = 0;
    for case in &cases {
        let yaml: String = case
            .policies
            .split("---\n")
            .map(|d| format!("apiVersion: networking.k8s.io/v1\n{d}"))
            .collect::<Vec<_>>()
            .join("---\n");
        let docs =
            load::parse_str("case.yaml", &yaml).unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        let json = netpol_oracle::documents(&yaml).expect("json");
        let c = Arc::new(cluster(&case.relabel));
        let compiled: Vec<_> = c.pods.iter().map(|p| engine(&docs, &c, p)).collect();
        let oracle = as_oracle(&c);
        for port in PORTS {
            let n = c.pods.len();
            let got = matrix(
                |i, j| {
                    let (from, to) = (&c.pods[i], &c.pods[j]);
                    allows(&compiled[i], Direction::Outbound, to.ips[0], port)
                        && allows(&compiled[j], Direction::Inbound, from.ips[0], port)
                },
                n,
            );
            let want = matrix(|i, j| netpol_oracle::allowed(&json, &oracle, i, j, port), n);
            if want.contains('X') {
                isolating += 1;
            }
            if got != want {
                failures.push(format!(
                    "{} (port {port}):\nwant (rows from x/a…z/c, columns to)\n{want}\ngot\n{got}",
                    case.name
                ));
            }
        }
    }
    assert!(
        isolating >= 30,
        "the cases must isolate something: {isolating}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} matrices differ:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n\n")
    );
    println!(
        "{} cases × {} ports × 81 pairs agree",
        cases.len(),
        PORTS.len()
    );
}
