//! An oracle for Kubernetes NetworkPolicy reachability, written from the Kubernetes
//! semantics alone over the policies' plain JSON (it shares no code with the engine): who may
//! connect to whom on which TCP port. The engine's tests and the testbed's probe matrix
//! compare against it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

/// A pod, as the oracle sees it.
#[derive(Debug, Clone)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Address.
    pub ip: IpAddr,
    /// Named ports: name → (port, protocol).
    pub named_ports: BTreeMap<String, (u16, String)>,
}

/// The cluster: namespace labels (without the automatic name label) and pods.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Namespace → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods.
    pub pods: Vec<Pod>,
}

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
        let except = block["except"].as_array().cloned().unwrap_or_default();
        return in_cidr(other.ip, block["cidr"].as_str().unwrap_or_default())
            && !except
                .iter()
                .any(|e| in_cidr(other.ip, e.as_str().unwrap_or_default()));
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
                .is_some_and(|(n, proto)| proto == "TCP" && *n == port),
            _ => false,
        }
    })
}

/// Whether the policies let `peer` reach `pod` (ingress) or let `pod` reach `peer` (egress)
/// on TCP `port`.
fn direction(
    policies: &[Value],
    c: &Cluster,
    pod: &Pod,
    peer: &Pod,
    port: u16,
    ingress: bool,
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
        let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
        p["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let peers = rule[peers_field].as_array().filter(|l| !l.is_empty());
                peers.is_none_or(|l| l.iter().any(|x| peer_ok(x, ns, peer, c)))
                    && port_ok(rule["ports"].as_array(), port, server)
            })
    })
}

/// Whether pod `from` may open a TCP connection to pod `to` on `port`: the egress policies of
/// `from` and the ingress policies of `to` must both allow it.
pub fn allowed(policies: &[Value], c: &Cluster, from: usize, to: usize, port: u16) -> bool {
    let (f, t) = (&c.pods[from], &c.pods[to]);
    direction(policies, c, f, t, port, false) && direction(policies, c, t, f, port, true)
}

/// Policy documents (YAML, `---`-separated) as JSON, reading scalars as the API server does
/// (YAML 1.2 booleans: `{ns: y}` is the string "y").
pub fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let options = || {
        let mut o = serde_saphyr::Options::default();
        o.strict_booleans = true;
        o
    };
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| Ok(serde_saphyr::from_str_with_options(d, options())?))
        .collect()
}
