//! The upstream NetworkPolicy e2e cases (`netpol-e2e.yaml`) on the suite's 3×3 layout, pod to
//! pod on TCP 80 and 81, with the cluster known (as the controller gives it): the engine — each
//! pod's policies compiled as its sidecar compiles them, egress judged at the client, ingress at
//! the server — must agree on every pair with an oracle written here from the Kubernetes
//! semantics alone (it shares no code with the engine).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use portcullis_config::cluster::{Cluster, Pod};
use portcullis_config::workload::parse_named_ports;
use portcullis_config::{CompileContext, ConnDecision, Connection, Direction, compile, load};
use serde::Deserialize;
use serde_json::Value;

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
            });
        }
    }
    c
}

// ---- the oracle: Kubernetes NetworkPolicy semantics over plain JSON, nothing shared ----

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    let exact = labels_of(&sel["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs = sel["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    exact
        && exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).map(String::as_str);
            match e["operator"].as_str() {
                Some("In") => have.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => have.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                _ => false,
            }
        })
}

fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (IpAddr::V4(ip), Ok(IpAddr::V4(net)), Ok(len)) =
        (ip, net.parse::<IpAddr>(), len.parse::<u32>())
    else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn peer_ok(peer: &Value, policy_ns: &str, other: &Pod, c: &Cluster) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        let ip = other.ips[0];
        let except = block["except"].as_array().cloned().unwrap_or_default();
        return in_cidr(ip, block["cidr"].as_str().unwrap_or_default())
            && !except
                .iter()
                .any(|e| in_cidr(ip, e.as_str().unwrap_or_default()));
    }
    let ns_ok = match peer.get("namespaceSelector") {
        None => other.namespace == policy_ns,
        Some(sel) => {
            let mut l = c
                .namespaces
                .get(&other.namespace)
                .cloned()
                .unwrap_or_default();
            l.insert(
                "kubernetes.io/metadata.name".into(),
                other.namespace.clone(),
            );
            selects(sel, &l)
        }
    };
    ns_ok
        && peer
            .get("podSelector")
            .is_none_or(|sel| selects(sel, &other.labels))
}

/// Whether `ports` admit TCP `port` on `server` (where named ports resolve).
fn port_ok(ports: Option<&Vec<Value>>, port: u16, server: &Pod) -> bool {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        if p["protocol"].as_str().unwrap_or("TCP") != "TCP" {
            return false;
        }
        match &p["port"] {
            Value::Null => true,
            Value::Number(n) => {
                let first = n.as_u64().unwrap_or(0);
                let last = p["endPort"].as_u64().unwrap_or(first);
                (first..=last).contains(&u64::from(port))
            }
            Value::String(name) => server
                .named_ports
                .get(name)
                .is_some_and(|np| np.protocol == "TCP" && np.port == port),
            _ => false,
        }
    })
}

/// Whether the policies let `peer` reach (ingress) or be reached from (egress) `pod` on `port`.
fn oracle_dir(
    policies: &[Value],
    pod: &Pod,
    peer: &Pod,
    port: u16,
    ingress: bool,
    c: &Cluster,
) -> bool {
    let (field, peers_field, kind) = if ingress {
        ("ingress", "from", "Ingress")
    } else {
        ("egress", "to", "Egress")
    };
    let applying: Vec<&Value> = policies
        .iter()
        .filter(|p| p["metadata"]["namespace"].as_str() == Some(pod.namespace.as_str()))
        .filter(|p| selects(&p["spec"]["podSelector"], &pod.labels))
        .filter(|p| {
            let types: Vec<&str> = p["spec"]["policyTypes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if types.is_empty() {
                ingress
                    || p["spec"]["egress"]
                        .as_array()
                        .is_some_and(|e| !e.is_empty())
            } else {
                types.contains(&kind)
            }
        })
        .collect();
    if applying.is_empty() {
        return true;
    }
    let server = if ingress { pod } else { peer };
    applying.iter().any(|p| {
        p["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let peers = rule[peers_field].as_array().filter(|l| !l.is_empty());
                let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
                peers.is_none_or(|l| l.iter().any(|x| peer_ok(x, ns, peer, c)))
                    && port_ok(rule["ports"].as_array(), port, server)
            })
    })
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
        // YAML 1.2 booleans: `{ns: y}` is the string "y", as the API server reads it.
        let strict = || {
            let mut o = serde_saphyr::Options::default();
            o.strict_booleans = true;
            o
        };
        let json: Vec<Value> = yaml
            .split("---\n")
            .map(|d| serde_saphyr::from_str_with_options(d, strict()).expect("json"))
            .collect();
        let c = Arc::new(cluster(&case.relabel));
        let compiled: Vec<_> = c.pods.iter().map(|p| engine(&docs, &c, p)).collect();
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
            let want = matrix(
                |i, j| {
                    let (from, to) = (&c.pods[i], &c.pods[j]);
                    oracle_dir(&json, from, to, port, false, &c)
                        && oracle_dir(&json, to, from, port, true, &c)
                },
                n,
            );
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
