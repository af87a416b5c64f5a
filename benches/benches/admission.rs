//! Criterion benchmarks of policy admission: one `/validate` review of an AccessPolicy of 10 to
//! 1 000 rules (read, compiled, fields mapped), without guardrails and held to a guardrail with
//! every rule on — what a guardrail costs, side by side in one run.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use portcullis_config::snapshot::Snapshot;
use portcullis_controller::admission::Facts;
use portcullis_controller::webhooks::validate::validate;
use serde_json::{Value, json};

/// A review of an AccessPolicy with `n` allow rules, each from a /24 on a port with a path.
fn review(n: usize) -> Vec<u8> {
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            json!({"name": format!("r{i}"), "action": "allow",
                   "from": [{"cidr": format!("10.{}.{}.0/24", i / 256, i % 256)}],
                   "ports": [8000 + (i % 1000)],
                   "http": [{"methods": ["GET"], "paths": [format!("/api/v1/items/{i}/*")]}]})
        })
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "operation": "CREATE", "name": "big", "namespace": "shop",
            "kind": {"group": "portcullis.dev", "version": "v1alpha1", "kind": "AccessPolicy"},
            "resource": {"group": "portcullis.dev", "version": "v1alpha1", "resource": "accesspolicies"},
            "userInfo": {"username": "bench"},
            "object": {"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy",
                       "metadata": {"name": "big", "namespace": "shop"},
                       "spec": {"mtls": "strict", "inbound": {"default": "deny", "rules": rules}}},
        }
    }))
    .expect("json")
}

/// A cluster of namespace shop, with or without a guardrail that has every rule on.
fn facts(guarded: bool) -> Facts {
    let mut text =
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n".to_string();
    if guarded {
        text.push_str("---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: all}\nspec:\n  rules:\n    requireIngress: true\n    forbidAllowAll: true\n    requireDefaultDeny: true\n    minPrefixLength: {ipv4: 16, ipv6: 48}\n    internetEgress: {namespaceSelector: {matchLabels: {egress: internet}}}\n    requireMtlsStrict: true\n");
    }
    let snapshot = Snapshot::parse(&[("cluster.yaml".into(), text)]);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
    Facts::of(&snapshot)
}

fn reviews(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.sample_size(20);
    let (open, guarded) = (facts(false), facts(true));
    for n in [10, 100, 1_000] {
        let body = review(n);
        for (name, facts) in [("no-guardrails", &open), ("guardrails", &guarded)] {
            let answer = validate(&body, "portcullis-policy", Some(facts)).expect("answered");
            assert_eq!(answer.body["response"]["allowed"], true, "{}", answer.body);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(validate(&body, "portcullis-policy", Some(facts))))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, reviews);
criterion_main!(benches);
