//! The index on the upstream e2e layout: namespaces x, y, z, pods a, b, c in each.

use super::*;

fn snapshot(extra_policies: &str, b_label: &str) -> Snapshot {
    let mut text = String::new();
    for (i, ns) in ["x", "y", "z"].into_iter().enumerate() {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"
        ));
        for (j, pod) in ["a", "b", "c"].into_iter().enumerate() {
            let label = if pod == "b" { b_label } else { pod };
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {label}}}}}\nspec: {{containers: [{{name: c, ports: [{{name: serve-80-tcp, containerPort: 80}}]}}]}}\nstatus: {{phase: Running, podIP: 10.0.{}.{}}}\n",
                i + 1,
                j + 1
            ));
        }
    }
    text.push_str(extra_policies);
    let s = Snapshot::parse(&[("c.yaml".into(), text)]);
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    s
}

const POLICIES: &str = "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: z}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
";

fn pods(view: &v1::View) -> Vec<String> {
    view.pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

#[test]
fn a_view_holds_its_namespace_policies_and_the_pods_they_select() {
    let s = snapshot(POLICIES, "b");
    let mut index = Index::default();
    assert_eq!(index.update(&s).len(), 9);
    let xa = index.get(&("x".into(), "a".into()));
    assert!(xa.known);
    assert_eq!(xa.version, 1);
    assert_eq!(xa.documents.len(), 1, "only namespace x's policy");
    assert!(xa.documents[0].yaml.contains("from-b"));
    assert_eq!(pods(&xa), ["x/b"], "the pods its selectors select, no more");
    assert_eq!(xa.namespaces.len(), 3);
    let zc = index.get(&("z".into(), "c".into()));
    assert_eq!(pods(&zc), ["y/a", "y/b", "y/c"]);
    let ya = index.get(&("y".into(), "a".into()));
    assert!(ya.documents.is_empty() && ya.pods.is_empty());
    let unknown = index.get(&("x".into(), "nope".into()));
    assert!(!unknown.known);
}

#[test]
fn a_label_change_bumps_only_the_views_it_affects() {
    let mut index = Index::default();
    index.update(&snapshot(POLICIES, "b"));
    // Every b loses pod=b. Changed: the b pods themselves (their labels); x's views (their
    // policy selected x/b); z's views (they list y's pods, y/b's labels among them). Not y/a,
    // y/c: no policy of y, their own labels unchanged.
    let changed = index.update(&snapshot(POLICIES, "other"));
    let mut names: Vec<String> = changed.iter().map(|(n, p)| format!("{n}/{p}")).collect();
    names.sort();
    assert_eq!(names, ["x/a", "x/b", "x/c", "y/b", "z/a", "z/b", "z/c"]);
    let xa = index.get(&("x".into(), "a".into()));
    assert_eq!(xa.version, 2);
    assert!(pods(&xa).is_empty(), "nobody is pod=b in x any more");
    assert_eq!(index.get(&("y".into(), "a".into())).version, 1, "untouched");
    assert!(
        index.update(&snapshot(POLICIES, "other")).is_empty(),
        "same snapshot, no change"
    );
}

#[test]
fn a_pod_that_disappears_becomes_unknown() {
    let mut index = Index::default();
    index.update(&snapshot(POLICIES, "b"));
    let mut s = snapshot(POLICIES, "b");
    s.cluster
        .pods
        .retain(|p| !(p.namespace == "x" && p.name == "a"));
    let changed = index.update(&s);
    assert!(changed.contains(&("x".into(), "a".into())));
    let xa = index.get(&("x".into(), "a".into()));
    assert!(!xa.known);
    assert_eq!(xa.version, 2);
}

#[test]
fn views_encode_stably_so_a_relabel_changes_only_the_views_that_see_it() {
    // Protobuf maps encode in map order: with hash maps every view "changed" on every snapshot.
    let make = |relabel: Option<usize>| {
        let mut out = String::new();
        for n in 0..3usize {
            out.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{team: t{n}}}}}\n"));
            for i in 0..4usize {
                let k = n * 4 + i;
                let app = if relabel == Some(k) {
                    "moved".to_string()
                } else {
                    format!("app-{}", i % 10)
                };
                out.push_str(&format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns-{n}, labels: {{app: {app}, tier: t{}}}}}\nspec: {{containers: []}}\nstatus: {{phase: Running, podIP: 10.0.{n}.{i}}}\n", i % 3));
            }
            out.push_str(&format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np, namespace: ns-{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: app-0}}}}\n  ingress:\n    - from: [{{podSelector: {{matchLabels: {{app: app-1}}}}}}]\n"));
        }
        Snapshot::parse(&[("c.yaml".into(), out)])
    };
    let mut index = Index::default();
    index.update(&make(None));
    let changed = index.update(&make(Some(1)));
    assert_eq!(changed.len(), 4, "{changed:?}");
}

/// `s` with pod `ns/name` relabelled `pod=<label>`.
fn relabelled(mut s: Snapshot, ns: &str, name: &str, label: &str) -> Snapshot {
    for p in &mut s.cluster.pods {
        if p.namespace == ns && p.name == name {
            p.labels.insert("pod".into(), label.into());
        }
    }
    s
}

#[test]
fn a_relabel_recomputes_only_the_namespaces_that_can_see_the_pod() {
    let mut index = Index::default();
    index.update(&snapshot(POLICIES, "b"));
    assert_eq!(index.recomputed(), 3, "first: every namespace");
    // y/c: z selects every pod of y; x selects only pod=b of x.
    let s = relabelled(snapshot(POLICIES, "b"), "y", "c", "d");
    let changed = index.update(&s);
    assert_eq!(index.recomputed(), 1, "only z");
    assert!(
        changed.contains(&("z".into(), "a".into())) && changed.contains(&("y".into(), "c".into()))
    );
    // x/c from pod=c to pod=e: selected neither before nor after.
    let s = relabelled(s, "x", "c", "e");
    let changed = index.update(&s);
    assert_eq!(
        (index.recomputed(), changed),
        (0, vec![("x".into(), "c".into())])
    );
    // x/c becomes pod=b: x's policy now selects it.
    let s = relabelled(s, "x", "c", "b");
    index.update(&s);
    assert_eq!(index.recomputed(), 1);
    assert_eq!(pods(&index.get(&("x".into(), "a".into()))), ["x/b", "x/c"]);
    // A namespace relabel recomputes everything (namespace selectors may see it).
    let mut s = s;
    s.cluster
        .namespaces
        .insert("y".into(), [("ns".to_string(), "q".to_string())].into());
    index.update(&s);
    assert_eq!(index.recomputed(), 3);
    assert!(
        pods(&index.get(&("z".into(), "a".into()))).is_empty(),
        "y is no longer ns=y"
    );
}

/// The views of every pod, without versions: what a from-scratch index would hold.
fn contents(index: &Index, s: &Snapshot) -> Vec<v1::View> {
    s.cluster
        .pods
        .iter()
        .map(|p| {
            let mut v = v1::View::clone(&index.get(&(p.namespace.clone(), p.name.clone())));
            v.version = 0;
            v
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// However the labels of pods and namespaces move, the incremental index holds exactly the
    /// views a fresh index computes from the same snapshot.
    #[test]
    fn incremental_updates_hold_what_a_fresh_index_computes(
        steps in proptest::collection::vec(
            (0..3usize, 0..3usize, proptest::sample::select(vec!["a", "b", "c"]), proptest::bool::ANY),
            1..8,
        )
    ) {
        let egress = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: out, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [z]}]}, podSelector: {matchLabels: {pod: a}}}], ports: [{port: serve-80-tcp}]}]\n";
        let base = snapshot(&format!("{POLICIES}{egress}"), "b");
        let mut index = Index::default();
        index.update(&base);
        let mut s = base;
        for (n, p, label, relabel_namespace) in steps {
            let ns = ["x", "y", "z"][n];
            if relabel_namespace {
                s.cluster.namespaces.insert(ns.into(), [("ns".to_string(), label.to_string())].into());
            } else {
                s = relabelled(s, ns, ["a", "b", "c"][p], label);
            }
            index.update(&s);
            let mut fresh = Index::default();
            fresh.update(&s);
            proptest::prop_assert_eq!(contents(&index, &s), contents(&fresh, &s));
        }
    }
}

#[test]
fn every_view_carries_the_services_and_their_ready_endpoints() {
    let service = |ready: bool| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: api, namespace: y}}\nspec: {{clusterIP: 10.96.0.1, ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: api-1, namespace: y, labels: {{kubernetes.io/service-name: api}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [10.0.2.1], targetRef: {{kind: Pod, name: a}}}}, {{addresses: [10.0.2.2], conditions: {{ready: {ready}}}, targetRef: {{kind: Pod, name: b}}}}]\n"
        )
    };
    let mut index = Index::default();
    index.update(&snapshot(&format!("{POLICIES}{}", service(true)), "b"));
    let xa = index.get(&("x".into(), "a".into()));
    assert_eq!(xa.services.len(), 1);
    let api = &xa.services[0];
    assert_eq!(
        (api.cluster_ips.as_slice(), api.ports[0].port),
        (&["10.96.0.1".to_string()][..], 80)
    );
    let endpoints: Vec<(&str, &str, u32)> = api
        .endpoints
        .iter()
        .map(|e| (e.ips[0].as_str(), e.pod.as_str(), e.ports[0].port))
        .collect();
    assert_eq!(
        endpoints,
        [("10.0.2.1", "y/a", 8080), ("10.0.2.2", "y/b", 8080)]
    );
    // y/b becomes unready: every view changes, none recomputes its selections.
    let changed = index.update(&snapshot(&format!("{POLICIES}{}", service(false)), "b"));
    assert_eq!((changed.len(), index.recomputed()), (9, 0));
    assert_eq!(
        index.get(&("z".into(), "c".into())).services[0]
            .endpoints
            .len(),
        1
    );
    assert!(
        index
            .get(&("x".into(), "nobody".into()))
            .services
            .is_empty()
    );
}

#[test]
fn every_view_lists_the_meshed_pods_and_an_opt_out_leaves_the_list() {
    let annotated = |value: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: d, namespace: y, annotations: {{portcullis.dev/injected: v1, portcullis.dev/mtls: {value}}}}}\nspec: {{serviceAccountName: api, containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIPs: [{{ip: 10.0.2.4}}, {{ip: 'fd00::24'}}]}}\n"
        )
    };
    let mesh = |index: &Index, pod: &str| -> Vec<(Vec<u32>, usize, String, String)> {
        index
            .get(&("x".into(), pod.into()))
            .mesh
            .iter()
            .map(|m| {
                let (ns, sa) = (m.namespace.clone(), m.service_account.clone());
                (m.ipv4.clone(), m.ipv6.len(), ns, sa)
            })
            .collect()
    };
    let mut index = Index::default();
    index.update(&snapshot(
        &format!("{POLICIES}{}", annotated("enabled")),
        "b",
    ));
    let expected = vec![(
        vec![u32::from(std::net::Ipv4Addr::new(10, 0, 2, 4))],
        1,
        "y".to_string(),
        "api".to_string(),
    )];
    assert_eq!(mesh(&index, "a"), expected);
    assert_eq!(
        mesh(&index, "c"),
        expected,
        "every view, not only selectors'"
    );
    let changed = index.update(&snapshot(
        &format!("{POLICIES}{}", annotated("disabled")),
        "b",
    ));
    assert_eq!(changed.len(), 10, "every view changes");
    assert!(mesh(&index, "a").is_empty());
}
