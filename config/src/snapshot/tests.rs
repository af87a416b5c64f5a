//! Snapshots as kubectl writes them: `List` objects and multi-document files.

use super::*;

const LIST: &str = r#"apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata: {name: y, labels: {ns: y, kubernetes.io/metadata.name: y}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: y, labels: {pod: b}, uid: "1234"}
    spec:
      serviceAccountName: api
      containers:
        - name: app
          image: app
          ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
    status: {phase: Running, podIP: 10.0.2.2, podIPs: [{ip: 10.0.2.2}, {ip: "fd00::2:2"}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: done, namespace: y}
    spec: {containers: []}
    status: {phase: Succeeded, podIP: 10.0.2.9}
  - apiVersion: v1
    kind: Pod
    metadata: {name: node-agent, namespace: y}
    spec: {hostNetwork: true, containers: []}
    status: {phase: Running, podIP: 192.168.0.1}
  - apiVersion: v1
    kind: Pod
    metadata: {name: new, namespace: y}
    spec: {containers: []}
    status: {phase: Pending}
  - apiVersion: v1
    kind: Service
    metadata: {name: api, namespace: y}
    spec: {ports: [{port: 80}]}
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: allow-b, namespace: y, uid: "5", resourceVersion: "7"}
    spec:
      podSelector: {}
      ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
"#;

#[test]
fn a_list_gives_namespaces_peer_pods_and_policies() {
    let s = Snapshot::parse(&[("cluster.yaml".into(), LIST.into())]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(
        s.cluster
            .namespace_labels("y")
            .get("ns")
            .map(String::as_str),
        Some("y")
    );
    assert_eq!(
        s.cluster.pods.len(),
        1,
        "finished, host-network and address-less pods are no peers"
    );
    let b = &s.cluster.pods[0];
    assert_eq!((b.namespace.as_str(), b.name.as_str()), ("y", "b"));
    assert_eq!(b.ips.len(), 2);
    assert_eq!(
        b.identity("cluster.local"),
        "spiffe://cluster.local/ns/y/sa/api"
    );
    assert_eq!(b.named_ports.get("http"), Some(&NamedPort::tcp(8080)));
    assert_eq!(
        b.named_ports.get("dns").map(|p| p.protocol.as_str()),
        Some("UDP")
    );
    assert_eq!(s.policies.len(), 1);
    assert_eq!(&*s.policies[0].file, "cluster.yaml#items[6]");
    assert!(
        s.texts[0].contains("\"allow-b\""),
        "a List item is passed on as its JSON"
    );
}

#[test]
fn multi_document_policies_keep_their_locations_and_errors_are_all_reported() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}, bogus: 1}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: ok, namespace: x}\nspec: {podSelector: {}}\n---\nkind: [broken\n";
    let s = Snapshot::parse(&[("c.yaml".into(), text.into())]);
    let errors: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("c.yaml:8:25: unknown field `bogus`"),
        "{errors:#?}"
    );
    assert!(errors[1].starts_with("c.yaml:15:"), "{errors:#?}");
    assert_eq!(s.policies.len(), 1);
    assert_eq!(s.policies[0].line_offset, 8);
    assert!(s.cluster.namespaces.contains_key("x"));
}

#[test]
fn a_cached_reread_parses_what_changed_and_reads_like_a_fresh_one() {
    let doc = |label: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x, labels: {{team: t}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, labels: {{pod: {label}}}}}\nspec: {{containers: []}}\nstatus: {{phase: Running, podIP: 10.0.0.1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: x}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: x}}\nspec: {{podSelector: {{}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: {label}}}}}}}]}}]}}\n"
        )
    };
    let mut cache = DocumentCache::default();
    let first = Snapshot::parse_cached(&[("c.yaml".into(), doc("a"))], &mut cache);
    assert_eq!(
        cache.len(),
        3,
        "namespace, pod and service kept; the policy is not"
    );
    let files = [("c.yaml".into(), doc("b"))];
    let cached = Snapshot::parse_cached(&files, &mut cache);
    let fresh = Snapshot::parse(&files);
    assert_eq!(cached.cluster, fresh.cluster);
    assert_eq!(cached.texts, fresh.texts);
    assert_ne!(cached.cluster, first.cluster, "the relabel is seen");
    assert_eq!(cache.len(), 3, "the old pod document is gone");
    // A broken document is an error on every read, cached or not.
    let broken = [("c.yaml".into(), format!("{}---\nkind: [\n", doc("b")))];
    for _ in 0..2 {
        let s = Snapshot::parse_cached(&broken, &mut cache);
        assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
        assert_eq!(s.errors[0].line, 20, "{:?}", s.errors);
    }
}

const SERVICES: &str = r#"apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
    spec:
      clusterIP: 10.96.0.10
      clusterIPs: [10.96.0.10, "fd00:96::10"]
      ports: [{name: http, port: 80, targetPort: 8080}, {name: dns, port: 53, protocol: UDP}]
  - apiVersion: v1
    kind: Service
    metadata: {name: db, namespace: shop}
    spec: {clusterIP: None, ports: [{port: 5432}]}
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
    addressType: IPv4
    ports: [{name: http, port: 8080, protocol: TCP}]
    endpoints:
      - {addresses: [10.0.1.1], conditions: {ready: true}, targetRef: {kind: Pod, name: web-1, namespace: shop}}
      - {addresses: [10.0.1.2], targetRef: {kind: Pod, name: web-2}}
      - {addresses: [10.0.1.3], conditions: {ready: false, terminating: true}, targetRef: {kind: Pod, name: web-3}}
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: {name: orphan, namespace: shop}
    addressType: IPv4
    endpoints: [{addresses: [10.0.9.9]}]
"#;

#[test]
fn services_and_their_ready_endpoints_are_read() {
    let s = Snapshot::parse(&[("svc.yaml".into(), SERVICES.into())]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let c = &s.cluster;
    assert_eq!(c.services.len(), 2);
    let web = &c.services[0];
    let ips: Vec<String> = web.cluster_ips.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.96.0.10", "fd00:96::10"]);
    let ports: Vec<(&str, u16, &str)> = web
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(ports, [("http", 80, "TCP"), ("dns", 53, "UDP")]);
    assert!(
        c.services[1].cluster_ips.is_empty(),
        "headless: no cluster address"
    );
    let endpoints: Vec<(String, Option<&str>, u16)> = c
        .endpoints(web)
        .map(|(e, ports)| (e.ips[0].to_string(), e.pod.as_deref(), ports[0].port))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("10.0.1.1".to_string(), Some("shop/web-1"), 8080),
            ("10.0.1.2".to_string(), Some("shop/web-2"), 8080),
        ],
        "the unready, terminating endpoint is none; the unlabelled slice belongs to nobody"
    );
    assert_eq!(c.endpoint_slices.len(), 1);
    // The same through the cache, document by document.
    let mut cache = DocumentCache::default();
    let multi = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n";
    let a = Snapshot::parse_cached(&[("m.yaml".into(), multi.into())], &mut cache);
    let b = Snapshot::parse_cached(&[("m.yaml".into(), multi.into())], &mut cache);
    assert_eq!((a.cluster.services.len(), &a.cluster), (1, &b.cluster));
}

#[test]
fn a_pod_is_meshed_only_when_injected_and_enrolled() {
    let cases = [
        (
            "{portcullis.dev/injected: v1, portcullis.dev/mtls: enabled}",
            true,
        ),
        (
            "{portcullis.dev/injected: v1, portcullis.dev/mtls: disabled}",
            false,
        ),
        ("{portcullis.dev/injected: v1}", false),
        ("{portcullis.dev/mtls: enabled}", false),
        ("{}", false),
    ];
    for (annotations, want) in cases {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: y, annotations: {annotations}}}\nspec: {{containers: []}}\nstatus: {{phase: Running, podIP: 10.0.2.2}}\n"
        );
        let s = Snapshot::parse(&[("c.yaml".into(), text)]);
        assert_eq!(s.cluster.pods[0].meshed, want, "{annotations}");
    }
}

#[test]
fn guardrails_are_read_from_documents_and_lists_and_a_bad_one_is_located() {
    let doc = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: base}\nspec: {mode: audit, rules: {requireIngress: true}}\n";
    let list = r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "portcullis.dev/v1alpha1", "kind": "PolicyGuardrail", "metadata": {"name": "listed", "resourceVersion": "3"}, "spec": {"rules": {"forbidAllowAll": true}}, "status": {"any": 1}}]}"#;
    let s = Snapshot::parse(&[
        ("a.yaml".into(), doc.into()),
        ("b.json".into(), list.into()),
    ]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let names: Vec<&str> = s.guardrails.iter().map(|g| &*g.name).collect();
    assert_eq!(names, ["base", "listed"]);
    assert_eq!(s.guardrails[0].mode, crate::guardrail::Mode::Audit);
    assert!(s.policies.is_empty(), "a guardrail is no policy");
    let bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: bad}\nspec: {rules: {requireIngres: true}}\n";
    let s = Snapshot::parse(&[("c.yaml".into(), bad.into())]);
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(
        s.errors[0]
            .to_string()
            .starts_with("c.yaml:8:16: unknown field `requireIngres`"),
        "{}",
        s.errors[0]
    );
    assert!(s.guardrails.is_empty());
}
