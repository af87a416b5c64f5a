//! The probe matrix: the upstream NetworkPolicy e2e cases (`config/tests/netpol-e2e.yaml`) on
//! the suite's layout — namespaces x, y, z × pods a, b, c, each pod its own network namespace
//! with its app on TCP 80 and 81, the real `portcullis-init` and the real sidecar (UID 1337)
//! following the real controller — probed pod to pod with real connections after each case's
//! policies reach every sidecar, against `netpol_oracle`'s matrix. (A pod's connections to
//! itself are left out: the sidecar judges them as inbound only, while the suite allows
//! loopback.)

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use portcullis_testbed::netpol_oracle;
use portcullis_testbed::podnet::PodNet;
use serde::Deserialize;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    policies: String,
    #[serde(default)]
    relabel: BTreeMap<String, String>,
}

fn label(case: &Case, ns: &str, pod: &str) -> String {
    case.relabel
        .get(&format!("{ns}/{pod}"))
        .cloned()
        .unwrap_or_else(|| pod.to_string())
}

/// The cluster for case number `n` (its number is a namespace label, so that every view
/// changes and every sidecar's view version counts the cases).
fn snapshot(case: &Case, n: usize) -> String {
    let mut out = String::new();
    for (i, ns) in NAMESPACES.into_iter().enumerate() {
        out.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}, case: \"{n}\"}}}}\n"));
        for (j, pod) in PODS.into_iter().enumerate() {
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: \"{}\"}}}}\nspec: {{containers: [{{name: app, image: app, ports: [{{name: serve-80-tcp, containerPort: 80}}, {{name: serve-81-tcp, containerPort: 81}}, {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]}}\nstatus: {{phase: Running, podIP: 10.0.{}.{}}}\n",
                label(case, ns, pod),
                i + 1,
                j + 1
            ));
        }
    }
    out.push_str(&policies(case));
    out
}

fn policies(case: &Case) -> String {
    case.policies
        .split("---\n")
        .map(|d| format!("---\napiVersion: networking.k8s.io/v1\n{d}"))
        .collect()
}

fn oracle_cluster(case: &Case) -> netpol_oracle::Cluster {
    let mut c = netpol_oracle::Cluster::default();
    for (i, ns) in NAMESPACES.into_iter().enumerate() {
        c.namespaces
            .insert(ns.into(), [("ns".to_string(), ns.to_string())].into());
        for (j, pod) in PODS.into_iter().enumerate() {
            c.pods.push(netpol_oracle::Pod {
                namespace: ns.into(),
                labels: [("pod".to_string(), label(case, ns, pod))].into(),
                ip: format!("10.0.{}.{}", i + 1, j + 1).parse().expect("ip"),
                named_ports: [
                    ("serve-80-tcp".to_string(), (80, "TCP".to_string())),
                    ("serve-81-tcp".to_string(), (81, "TCP".to_string())),
                    ("serve-81-udp".to_string(), (81, "UDP".to_string())),
                ]
                .into(),
            });
        }
    }
    c
}

#[test]
fn upstream_netpol_cases_hold_pod_to_pod_through_real_sidecars() -> Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/netpol-e2e.yaml"
    );
    let cases: Vec<Case> = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    anyhow::ensure!(cases.len() >= 30, "{} cases", cases.len());
    let bed = PodNet::start(&NAMESPACES, &PODS, &snapshot(&cases[0], 0))?;
    let mut failures = Vec::new();
    let mut probes = 0;
    for (n, case) in cases.iter().enumerate() {
        if n > 0 {
            bed.write_snapshot(&snapshot(case, n))?;
        }
        bed.wait_for_views(n as u64 + 1)
            .with_context(|| case.name.clone())?;
        let json = netpol_oracle::documents(&policies(case))?;
        let oracle = oracle_cluster(case);
        for from in 0..bed.pods.len() {
            let targets: Vec<(usize, u16)> = (0..bed.pods.len())
                .filter(|&to| to != from)
                .flat_map(|to| PORTS.map(|p| (to, p)))
                .collect();
            let addrs: Vec<String> = targets
                .iter()
                .map(|(to, p)| format!("{}:{p}", bed.pods[*to].ip))
                .collect();
            let got = bed.probe(from, &addrs)?;
            probes += got.len();
            for ((to, port), ok) in targets.iter().zip(got) {
                let want = netpol_oracle::allowed(&json, &oracle, from, *to, *port);
                if ok != want {
                    let (f, t) = (&bed.pods[from], &bed.pods[*to]);
                    failures.push(format!(
                        "{}: {}/{} → {}/{}:{port}: want {}, got {}",
                        case.name,
                        f.namespace,
                        f.name,
                        t.namespace,
                        t.name,
                        if want { "allowed" } else { "denied" },
                        if ok { "allowed" } else { "denied" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {probes} probes disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "{} cases, {probes} probes, all as Kubernetes means them",
        cases.len()
    );
    Ok(())
}
