//! NetworkPolicy import as the API server and the upstream e2e suite mean it: defaulting of
//! `policyTypes`, namespace scope, named ports with protocols, namespace-name selectors, and the
//! API server's refusals.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::compiled::CompileContext;
use crate::decide::{ConnDecision, Connection, Direction};
use crate::workload::parse_named_ports;
use crate::{compile, load};

fn ctx(ns: Option<&str>, labels: &[(&str, &str)], named: &str) -> CompileContext {
    CompileContext {
        workload_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        named_ports: parse_named_ports(named).expect("named ports"),
        workload_namespace: ns.map(str::to_string),
        cluster: None,
    }
}

fn netpol(meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {meta}\nspec:\n{spec}"
    )
}

fn compiled(yaml: &str, c: &CompileContext) -> crate::CompiledPolicy {
    let docs = load::parse_str("np.yaml", yaml).expect("parse");
    match compile::compile(&docs, c) {
        Ok((p, _)) => p,
        Err(e) => panic!(
            "{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    let docs = load::parse_str("np.yaml", yaml).expect("parse");
    match compile::compile(&docs, &ctx(Some("x"), &[], "")) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn warnings(yaml: &str, c: &CompileContext) -> Vec<String> {
    let docs = load::parse_str("np.yaml", yaml).expect("parse");
    let (_, w) = compile::compile(&docs, c).expect("compile");
    w.iter().map(ToString::to_string).collect()
}

fn verdict(
    p: &crate::CompiledPolicy,
    dir: Direction,
    peer: &str,
    port: u16,
    id: Option<&str>,
) -> String {
    let conn = Connection {
        direction: dir,
        peer: peer.parse::<IpAddr>().expect("ip"),
        port,
        identity: id,
        sni: None,
        trust_domain: None,
    };
    match p.decide_connection(&conn, None) {
        ConnDecision::Final(d) => d.verdict.as_str().to_string(),
        ConnDecision::NeedHttp => "need-http".into(),
    }
}

const IN: Direction = Direction::Inbound;
const OUT: Direction = Direction::Outbound;

#[test]
fn empty_policy_types_default_like_an_absent_field() {
    let c = ctx(Some("x"), &[], "");
    for types in ["", "  policyTypes: []\n"] {
        let spec = format!(
            "  podSelector: {{}}\n{types}  egress: [{{to: [{{ipBlock: {{cidr: 10.0.0.0/8}}}}]}}]\n"
        );
        let p = compiled(&netpol("{name: a}", &spec), &c);
        assert!(p.inbound.mentioned, "{types:?}: Ingress is isolated");
        assert!(p.outbound.mentioned, "{types:?}: egress rules add Egress");
        assert_eq!(verdict(&p, IN, "10.1.1.1", 80, None), "deny");
        assert_eq!(verdict(&p, OUT, "10.1.1.1", 80, None), "allow");
        assert_eq!(verdict(&p, OUT, "11.1.1.1", 80, None), "deny");
    }
}

#[test]
fn empty_egress_without_policy_types_does_not_isolate_egress() {
    let p = compiled(
        &netpol("{name: a}", "  podSelector: {}\n  egress: []\n"),
        &ctx(None, &[], ""),
    );
    assert!(p.inbound.mentioned);
    assert!(!p.outbound.mentioned);
    assert_eq!(verdict(&p, OUT, "203.0.113.1", 443, None), "allow");
}

#[test]
fn a_policy_of_another_namespace_never_applies() {
    let yaml = netpol(
        "{name: deny-all, namespace: other}",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
    );
    let p = compiled(&yaml, &ctx(Some("mine"), &[], ""));
    assert!(!p.inbound.mentioned && !p.outbound.mentioned);
    assert!(!p.documents[0].applies);
    assert_eq!(verdict(&p, IN, "10.0.0.1", 80, None), "allow");
    let own = compiled(&yaml, &ctx(Some("other"), &[], ""));
    assert!(own.documents[0].applies);
    assert_eq!(verdict(&own, IN, "10.0.0.1", 80, None), "deny");
}

#[test]
fn pod_selector_peer_without_metadata_namespace_is_the_workloads_namespace() {
    let yaml = netpol(
        "{name: same-ns}",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]\n",
    );
    let p = compiled(&yaml, &ctx(Some("shop"), &[], ""));
    assert_eq!(
        verdict(
            &p,
            IN,
            "10.0.0.1",
            80,
            Some("spiffe://cluster.local/ns/shop/sa/a")
        ),
        "allow"
    );
    assert_eq!(
        verdict(
            &p,
            IN,
            "10.0.0.1",
            80,
            Some("spiffe://cluster.local/ns/web/sa/a")
        ),
        "deny"
    );
}

#[test]
fn named_ports_carry_their_protocol() {
    let yaml = netpol(
        "{name: named}",
        "  podSelector: {}\n  ingress:\n    - ports: [{port: serve-80-udp}, {port: web}]\n    - ports: [{port: dns, protocol: UDP}]\n",
    );
    let c = ctx(None, &[], "serve-80-udp=80/UDP,web=8080,dns=53/UDP");
    let p = compiled(&yaml, &c);
    assert_eq!(
        verdict(&p, IN, "10.0.0.1", 80, None),
        "deny",
        "a UDP port name admits no TCP"
    );
    assert_eq!(verdict(&p, IN, "10.0.0.1", 8080, None), "allow");
    assert_eq!(
        verdict(&p, IN, "10.0.0.1", 53, None),
        "deny",
        "UDP entries allow no TCP"
    );
    let w = warnings(&yaml, &c);
    assert!(
        w.iter()
            .any(|w| w.contains("\"serve-80-udp\" is a UDP port of this workload, not TCP")),
        "{w:?}"
    );
}

#[test]
fn egress_named_ports_never_match_the_workloads_own_ports() {
    let yaml = netpol(
        "{name: named-egress}",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - to: [{ipBlock: {cidr: 0.0.0.0/0}}]\n      ports: [{port: web}, {port: 5432}]\n",
    );
    let c = ctx(None, &[], "web=8080");
    let p = compiled(&yaml, &c);
    assert_eq!(verdict(&p, OUT, "10.0.0.1", 8080, None), "deny");
    assert_eq!(verdict(&p, OUT, "10.0.0.1", 5432, None), "allow");
    let w = warnings(&yaml, &c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("np.yaml:9:22: warning: named port \"web\" in an egress rule"),
        "{w:?}"
    );
}

#[test]
fn namespace_name_selectors_with_every_operator_use_the_peers_namespace() {
    let expr = |op: &str, vals: &str| {
        netpol(
            "{name: ns}",
            &format!(
                "  podSelector: {{}}\n  ingress:\n    - from: [{{namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: {op}{vals}}}]}}}}]\n"
            ),
        )
    };
    let c = ctx(Some("x"), &[], "");
    let id = |ns: &str| format!("spiffe://cluster.local/ns/{ns}/sa/s");
    let table: &[(&str, &str, &str, Option<&str>, &str)] = &[
        (
            "NotIn",
            ", values: [blocked]",
            "10.0.0.1",
            Some("web"),
            "allow",
        ),
        (
            "NotIn",
            ", values: [blocked]",
            "10.0.0.1",
            Some("blocked"),
            "deny",
        ),
        ("NotIn", ", values: [blocked]", "10.0.0.1", None, "deny"),
        ("Exists", "", "10.0.0.1", Some("any"), "allow"),
        ("Exists", "", "10.0.0.1", None, "deny"),
        ("DoesNotExist", "", "10.0.0.1", Some("any"), "deny"),
        ("In", ", values: [a, b]", "10.0.0.1", Some("b"), "allow"),
        ("In", ", values: [a, b]", "10.0.0.1", Some("c"), "deny"),
    ];
    for (op, vals, peer, ns, want) in table {
        let p = compiled(&expr(op, vals), &c);
        let identity = ns.map(id);
        assert_eq!(
            verdict(&p, IN, peer, 80, identity.as_deref()),
            *want,
            "{op}{vals} from {ns:?}"
        );
        assert!(
            warnings(&expr(op, vals), &c).is_empty(),
            "{op}: no 'cannot see' warning"
        );
    }
}

#[test]
fn documents_the_api_server_refuses_are_refused_with_its_reason() {
    let spec = |body: &str| netpol("{name: bad}", &format!("  podSelector: {{}}\n{body}"));
    let table: &[(&str, &str)] = &[
        ("  ingress: [{from: [{}]}]\n", "must specify a peer"),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]\n",
            "must be a strict subset of `cidr`",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n",
            "may not specify both ipBlock and another peer",
        ),
        (
            "  policyTypes: [Ingress, Egress, Ingress]\n",
            "may not specify more than two policyTypes",
        ),
        (
            "  policyTypes: [ingress]\n",
            "Unsupported value: \"ingress\"",
        ),
        (
            "  ingress: [{ports: [{port: http_alt}]}]\n",
            "must contain only alpha-numeric characters",
        ),
        (
            "  ingress: [{ports: [{port: \"80\"}]}]\n",
            "must contain at least one letter (a-z)",
        ),
        (
            "  ingress: [{ports: [{port: web, endPort: 90}]}]\n",
            "may not be specified when `port` is non-numeric",
        ),
        (
            "  ingress: [{ports: [{port: 90, endPort: 80}]}]\n",
            "must be greater than or equal to `port`",
        ),
        (
            "  ingress: [{ports: [{port: 0}]}]\n",
            "must be between 1 and 65535, inclusive",
        ),
        (
            "  ingress: [{ports: [{endPort: 80}]}]\n",
            "may not be specified when `port` is not specified",
        ),
        (
            "  ingress: [{ports: [{port: 80, protocol: tcp}]}]\n",
            "protocol: Unsupported value: \"tcp\"",
        ),
        (
            "  ingress: [{from: [{podSelector: {matchLabels: {\"-app\": web}}}]}]\n",
            "invalid label key \"-app\"",
        ),
        (
            "  ingress: [{from: [{podSelector: {matchLabels: {app: \"web/1\"}}}]}]\n",
            "invalid label value \"web/1\"",
        ),
        (
            "  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: In, values: [\"-x\"]}]}}]}]\n",
            "invalid value \"-x\"",
        ),
        (
            "  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: In}]}}]}]\n",
            "must be specified when `operator` is 'In' or 'NotIn'",
        ),
        (
            "  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: a, operator: Has}]}}]}]\n",
            "not a valid selector operator",
        ),
    ];
    for (body, want) in table {
        let errs = errors(&spec(body));
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{body}: want {want:?}, got {errs:#?}"
        );
    }
    let on_pod_selector = errors(&netpol(
        "{name: bad}",
        "  podSelector: {matchLabels: {app: \"a b\"}}\n",
    ));
    assert_eq!(on_pod_selector.len(), 1, "{on_pod_selector:?}");
    assert!(
        on_pod_selector[0].starts_with("np.yaml:5:16: invalid label value \"a b\""),
        "{on_pod_selector:?}"
    );
}

#[test]
fn egress_selector_peers_never_match_and_say_so() {
    let yaml = netpol(
        "{name: eg, namespace: x}",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: db}}}, {podSelector: {}}]\n",
    );
    let c = ctx(Some("x"), &[], "");
    let p = compiled(&yaml, &c);
    let db = Some("spiffe://cluster.local/ns/db/sa/pg");
    assert_eq!(verdict(&p, OUT, "10.0.0.9", 5432, db), "deny");
    let w = warnings(&yaml, &c);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .all(|w| w.contains("an egress peer selected by namespace or pod labels")),
        "{w:?}"
    );
}

/// The upstream e2e suite's layout: namespaces x, y, z (labelled `ns: <name>`), pods a, b, c in
/// each (labelled `pod: <name>`), pod x/a at 10.0.1.1, y/b at 10.0.2.2, … with a named port
/// `serve-81-tcp` on 81.
fn e2e_cluster() -> crate::cluster::Cluster {
    use crate::cluster::{Cluster, Pod};
    let mut c = Cluster::default();
    for (i, ns) in ["x", "y", "z"].into_iter().enumerate() {
        c.namespaces
            .insert(ns.into(), [("ns".to_string(), ns.to_string())].into());
        for (j, pod) in ["a", "b", "c"].into_iter().enumerate() {
            c.pods.push(Pod {
                namespace: ns.into(),
                name: pod.into(),
                labels: [("pod".to_string(), pod.to_string())].into(),
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

fn in_cluster(ns: &str, pod: &str) -> CompileContext {
    let mut c = ctx(Some(ns), &[("pod", pod)], "serve-80-tcp=80,serve-81-tcp=81");
    c.cluster = Some(std::sync::Arc::new(e2e_cluster()));
    c
}

/// Which of the nine pods may reach `port` on the workload (inbound), as a 3×3 string.
fn reach_in(p: &crate::CompiledPolicy, port: u16) -> String {
    let mut out = String::new();
    for i in 1..=3 {
        for j in 1..=3 {
            let v = verdict(p, IN, &format!("10.0.{i}.{j}"), port, None);
            out.push(if v == "allow" { '.' } else { 'X' });
        }
        out.push(' ');
    }
    out.trim_end().to_string()
}

#[test]
fn selectors_resolve_to_the_pods_they_select_as_the_e2e_suite_expects() {
    let ingress = |from: &str| {
        netpol(
            "{name: t, namespace: x}",
            &format!(
                "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress: [{{from: [{from}]}}]\n"
            ),
        )
    };
    // Rows: namespaces x, y, z; columns: pods a, b, c. `.` = allowed to reach x/a.
    let table: &[(&str, &str)] = &[
        ("{podSelector: {matchLabels: {pod: b}}}", "X.X XXX XXX"),
        ("{namespaceSelector: {matchLabels: {ns: y}}}", "XXX ... XXX"),
        (
            "{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: c}}}",
            "XXX XX. XXX",
        ),
        (
            "{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}",
            "XXX ... ...",
        ),
        (
            "{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}}",
            ".X. XXX XXX",
        ),
        (
            "{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}",
            "X.X X.X X.X",
        ),
        ("{podSelector: {}}", "... XXX XXX"),
        ("{namespaceSelector: {}}", "... ... ..."),
        (
            "{namespaceSelector: {matchLabels: {ns: nowhere}}}",
            "XXX XXX XXX",
        ),
    ];
    let workload = in_cluster("x", "a");
    for (from, want) in table {
        let yaml = ingress(from);
        let p = compiled(&yaml, &workload);
        assert_eq!(reach_in(&p, 80), *want, "from: [{from}]");
        assert!(
            warnings(&yaml, &workload).is_empty(),
            "{from}: resolved, nothing unseen"
        );
    }
    // A policy of namespace x selecting pod a does not apply to y/a.
    let p = compiled(
        &ingress("{podSelector: {matchLabels: {pod: b}}}"),
        &in_cluster("y", "a"),
    );
    assert_eq!(reach_in(&p, 80), "... ... ...");
}

#[test]
fn egress_to_selected_pods_and_their_named_ports() {
    let yaml = netpol(
        "{name: e, namespace: x}",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n    - to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]\n      ports: [{port: serve-81-tcp}]\n    - to: [{podSelector: {matchLabels: {pod: c}}}]\n      ports: [{port: 80}]\n",
    );
    let p = compiled(&yaml, &in_cluster("x", "a"));
    let out = |ip: &str, port: u16| verdict(&p, OUT, ip, port, None);
    assert_eq!(out("10.0.2.2", 81), "allow", "y/b's serve-81-tcp");
    assert_eq!(out("10.0.2.2", 80), "deny", "only the named port");
    assert_eq!(out("10.0.2.3", 81), "deny", "y/c is not selected");
    assert_eq!(out("10.0.1.3", 80), "allow", "x/c on 80");
    assert_eq!(out("10.0.1.3", 81), "deny");
    assert_eq!(out("203.0.113.1", 80), "deny", "not a pod");
    assert!(warnings(&yaml, &in_cluster("x", "a")).is_empty());
}

#[test]
fn access_policy_selector_peers_mean_what_they_mean_in_a_network_policy() {
    let yaml = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: ap, namespace: x}\nspec:\n  inbound:\n    default: deny\n    rules:\n      - name: from-b-pods\n        action: allow\n        from: [{podSelector: {matchLabels: {pod: b}}}, {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: c}}}]\n        http: [{methods: [GET]}]\n";
    let p = compiled(yaml, &in_cluster("x", "a"));
    let none: Vec<(String, String)> = Vec::new();
    let req = |peer: &str| {
        let conn = Connection {
            direction: IN,
            peer: peer.parse().expect("ip"),
            port: 80,
            identity: None,
            sni: None,
            trust_domain: None,
        };
        let r = crate::Request {
            method: "GET",
            path: "/",
            host: None,
            headers: &none,
            jwt: None,
        };
        p.decide_request(&conn, &r, None)
            .verdict
            .as_str()
            .to_string()
    };
    assert_eq!(req("10.0.1.2"), "allow", "x/b");
    assert_eq!(req("10.0.2.2"), "deny", "y/b: another namespace");
    assert_eq!(req("10.0.3.3"), "allow", "z/c");
    assert_eq!(req("10.0.3.2"), "deny", "z/b");
    // Without the cluster, as a lone sidecar: a labelled podSelector cannot be seen.
    let alone = warnings(yaml, &ctx(Some("x"), &[], ""));
    assert_eq!(alone.len(), 2, "{alone:?}");
    // Selectors stand alone in a peer.
    let mixed = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: ap}\nspec:\n  inbound:\n    rules:\n      - {name: r, action: allow, from: [{podSelector: {}, cidr: 10.0.0.0/8}]}\n";
    assert!(
        errors(mixed)
            .iter()
            .any(|e| e.contains("stand alone in a peer")),
        "{:?}",
        errors(mixed)
    );
}
