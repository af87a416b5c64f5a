use serde_json::{Value, json};

use super::*;
use portcullis_config::snapshot::Snapshot;

const DEFAULT_CONFIGMAP: &str = "portcullis-policy";

/// An AdmissionReview v1 as the API server sends it, of `object` (`null` for a DELETE).
fn review(operation: &str, gvk: (&str, &str, &str), object: Value) -> Vec<u8> {
    review_by(operation, gvk, object, "alice", false)
}

/// [`review`] by `user`, maybe a dry run.
fn review_by(
    operation: &str,
    gvk: (&str, &str, &str),
    object: Value,
    user: &str,
    dry_run: bool,
) -> Vec<u8> {
    let (group, version, kind) = gvk;
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (object, old) = match operation {
        "DELETE" => (Value::Null, object),
        _ => (object, Value::Null),
    };
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-42",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": name,
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": dry_run,
        }
    }))
    .expect("json")
}

const NP: (&str, &str, &str) = ("networking.k8s.io", "v1", "NetworkPolicy");
const AP: (&str, &str, &str) = ("portcullis.dev", "v1alpha1", "AccessPolicy");
const CM: (&str, &str, &str) = ("", "v1", "ConfigMap");

fn network_policy(ingress: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "d1f0",
            "resourceVersion": "7",
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Update"}],
        },
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": ingress},
    })
}

fn access_policy(spec: Value) -> Value {
    json!({
        "apiVersion": "portcullis.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "orders", "namespace": "shop", "generation": 1},
        "spec": spec,
        "status": {"observedGeneration": 1},
    })
}

fn configmap(name: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "data": data,
    })
}

const GOOD_YAML: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: web}\nspec:\n  inbound:\n    default: deny\n    rules:\n      - {name: api, action: allow, ports: [8080]}\n";
const BAD_YAML: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: web}\nspec: {bogus: 1}\n";

/// What a case expects: allowed (with these warnings' fragments), or denied with a message
/// holding every fragment.
enum Want {
    Allowed(&'static [&'static str]),
    Denied(&'static [&'static str]),
    Forbidden(&'static [&'static str]),
    Ignored,
}

#[test]
fn policy_writes_are_judged_as_sidecars_load_them() {
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "valid NetworkPolicy (an ingress named port is no warning: no workload is known)",
            review(
                "CREATE",
                NP,
                network_policy(json!([{
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}, {"podSelector": {"matchLabels": {"app": "shop"}}}],
                    "ports": [{"port": 8080}, {"port": "http"}],
                }])),
            ),
            Want::Allowed(&[]),
        ),
        (
            "NetworkPolicy with a bad CIDR",
            review(
                "CREATE",
                NP,
                network_policy(json!([{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}])),
            ),
            Want::Denied(&[
                "NetworkPolicy shop/web is not a valid Portcullis policy:\nNetworkPolicy shop/web:",
                "invalid CIDR \"10.0.0.0/33\"",
                "(at spec.ingress[0].from[0].ipBlock.cidr)",
            ]),
        ),
        (
            "NetworkPolicy UPDATE with a bad port name, and every error reported",
            review(
                "UPDATE",
                NP,
                network_policy(json!([
                    {"ports": [{"port": "Not_A_Name"}]},
                    {"ports": [{"port": 0}]},
                ])),
            ),
            Want::Denied(&[
                "port: Invalid value: \"Not_A_Name\"",
                "(at spec.ingress[0].ports[0].port)",
                "port: Invalid value: 0",
                "(at spec.ingress[1].ports[0].port)",
            ]),
        ),
        (
            "valid AccessPolicy custom resource (status is not policy)",
            review(
                "CREATE",
                AP,
                access_policy(json!({"inbound": {"default": "deny", "rules": [
                    {"name": "reads", "action": "allow", "from": [{"namespace": "shop"}], "http": [{"methods": ["GET"], "paths": ["/api/*"]}]},
                ]}})),
            ),
            Want::Allowed(&[]),
        ),
        (
            "AccessPolicy with a warning",
            review(
                "CREATE",
                AP,
                access_policy(json!({"inbound": {"rules": [
                    {"name": "reads", "action": "allow", "http": [{"methods": ["get"]}]},
                ]}})),
            ),
            Want::Allowed(&[
                "AccessPolicy shop/orders:",
                "warning: method \"get\" is matched case-sensitively",
                "(at spec.inbound.rules[0].http[0].methods[0])",
            ]),
        ),
        (
            "AccessPolicy with an unknown action and an unknown field",
            review(
                "CREATE",
                AP,
                access_policy(json!({"inbound": {"rules": [{"name": "r", "action": "maybe"}]}})),
            ),
            Want::Denied(&[
                "AccessPolicy shop/orders:",
                "unknown variant `maybe`",
                "(at spec.inbound.rules[0].action)",
            ]),
        ),
        (
            "AccessPolicy whose rules fail to compile",
            review(
                "CREATE",
                AP,
                access_policy(json!({"outbound": {"rules": [
                    {"name": "r", "action": "allow", "to": [{"cidr": "10.0.0.1/8"}]},
                    {"name": "r", "action": "deny"},
                ]}})),
            ),
            Want::Denied(&[
                "host bits set",
                "(at spec.outbound.rules[0].to[0].cidr)",
                "duplicate rule name",
            ]),
        ),
        (
            "AccessPolicy created with generateName",
            review(
                "CREATE",
                AP,
                json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"generateName": "orders-", "namespace": "shop"}, "spec": {"inbound": {"default": "allow"}}}),
            ),
            Want::Allowed(&[]),
        ),
        (
            "the default policy ConfigMap, valid",
            review(
                "CREATE",
                CM,
                configmap(
                    DEFAULT_CONFIGMAP,
                    json!({}),
                    json!({"policy.yaml": GOOD_YAML, "README": "not read"}),
                ),
            ),
            Want::Allowed(&[]),
        ),
        (
            "the default policy ConfigMap, invalid: each error at its key's line",
            review(
                "UPDATE",
                CM,
                configmap(
                    DEFAULT_CONFIGMAP,
                    json!({}),
                    json!({"a.yaml": GOOD_YAML, "b.yml": BAD_YAML}),
                ),
            ),
            Want::Denied(&[
                "ConfigMap shop/portcullis-policy is not a valid Portcullis policy:\nb.yml:4:8: unknown field `bogus`",
            ]),
        ),
        (
            "a labelled policy ConfigMap of another name, invalid",
            review(
                "CREATE",
                CM,
                configmap(
                    "orders-policy",
                    json!({POLICY_LABEL: "true"}),
                    json!({"p.yaml": "kind: CiliumNetworkPolicy\n"}),
                ),
            ),
            Want::Denied(&[
                "ConfigMap shop/orders-policy",
                "p.yaml:1:7: unsupported kind \"CiliumNetworkPolicy\"",
            ]),
        ),
        (
            "a policy ConfigMap that documents nothing a sidecar reads",
            review(
                "CREATE",
                CM,
                configmap(
                    DEFAULT_CONFIGMAP,
                    json!({}),
                    json!({"policy.json": "{}", ".hidden.yaml": BAD_YAML}),
                ),
            ),
            Want::Denied(&["ConfigMap shop/portcullis-policy: no *.yaml or *.yml key"]),
        ),
        (
            "a policy ConfigMap with an empty file",
            review(
                "CREATE",
                CM,
                configmap(DEFAULT_CONFIGMAP, json!({}), json!({"policy.yaml": ""})),
            ),
            Want::Denied(&["policy.yaml:1:1: no policy document in this file"]),
        ),
        (
            "another ConfigMap, whatever it holds",
            review(
                "CREATE",
                CM,
                configmap(
                    "app-config",
                    json!({POLICY_LABEL: "false"}),
                    json!({"x.yaml": BAD_YAML}),
                ),
            ),
            Want::Ignored,
        ),
        (
            "DELETE of an invalid NetworkPolicy (no guardrail needs it)",
            review(
                "DELETE",
                NP,
                network_policy(json!([{"from": [{"ipBlock": {"cidr": "nope"}}]}])),
            ),
            Want::Allowed(&[]),
        ),
        (
            "another kind",
            review(
                "CREATE",
                ("apps", "v1", "Deployment"),
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}),
            ),
            Want::Ignored,
        ),
    ];
    for (name, body, want) in cases {
        let answer = validate(&body, DEFAULT_CONFIGMAP, Some(&Facts::default()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_answer(name, &answer, want);
    }
}

/// Checks an answer field by field.
fn check_answer(name: &str, answer: &Answer, want: Want) {
    let (body, response) = (&answer.body, &answer.body["response"]);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(body["kind"], "AdmissionReview", "{name}");
    assert_eq!(response["uid"], "uid-42", "{name}: {body}");
    assert!(response.get("patch").is_none(), "{name}");
    match want {
        Want::Allowed(fragments) => {
            assert_eq!(response["allowed"], true, "{name}: {body}");
            let warnings: Vec<&str> = response["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                warnings.is_empty(),
                fragments.is_empty(),
                "{name}: {warnings:?}"
            );
            for f in fragments {
                assert!(
                    warnings.iter().any(|w| w.contains(f)),
                    "{name}: {f:?} in {warnings:?}"
                );
            }
            assert!(matches!(answer.outcome, Outcome::Allowed { .. }), "{name}");
        }
        Want::Denied(fragments) | Want::Forbidden(fragments) => {
            let (code, reason) = match want {
                Want::Forbidden(_) => (403, "Forbidden"),
                _ => (422, "Invalid"),
            };
            assert_eq!(response["allowed"], false, "{name}: {body}");
            let status = &response["status"];
            assert_eq!(status["code"], code, "{name}: {body}");
            assert_eq!(status["reason"], reason, "{name}");
            assert_eq!(status["status"], "Failure", "{name}");
            let message = status["message"].as_str().expect("message");
            for f in fragments {
                assert!(message.contains(f), "{name}: {f:?} in\n{message}");
            }
            match &answer.outcome {
                Outcome::Denied {
                    message: logged, ..
                } => assert_eq!(logged, message),
                other => panic!("{name}: {other:?}"),
            }
        }
        Want::Ignored => {
            assert_eq!(response["allowed"], true, "{name}: {body}");
            assert!(response.get("warnings").is_none(), "{name}");
            assert_eq!(answer.outcome, Outcome::Ignored, "{name}");
        }
    }
}

#[test]
fn a_body_that_is_no_admission_review_is_an_error() {
    let cases: &[&[u8]] = &[
        b"",
        b"not json",
        b"[]",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
    ];
    for body in cases {
        let e = validate(body, DEFAULT_CONFIGMAP, None).expect_err("not a review");
        assert!(
            e.to_string()
                .starts_with("not an AdmissionReview request: "),
            "{e}"
        );
    }
}

#[test]
fn policy_configmaps_are_known_by_the_default_name_or_the_label() {
    let cases = [
        (json!({"metadata": {"name": "portcullis-policy"}}), true),
        (
            json!({"metadata": {"name": "p", "labels": {POLICY_LABEL: "true"}}}),
            true,
        ),
        (
            json!({"metadata": {"name": "p", "labels": {POLICY_LABEL: "yes"}}}),
            false,
        ),
        (
            json!({"metadata": {"name": "p", "annotations": {POLICY_LABEL: "true"}}}),
            false,
        ),
        (json!({"metadata": {"name": "p"}}), false),
        (json!({}), false),
    ];
    for (object, want) in cases {
        assert_eq!(
            is_policy_configmap(&object, DEFAULT_CONFIGMAP),
            want,
            "{object}"
        );
    }
}

/// A cluster with namespace `shop` (labelled `team: a`), `open` (labelled `egress: internet`),
/// and these guardrails and policies.
fn facts(extra: &str) -> Facts {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{team: a}}}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: open, labels: {{egress: internet}}}}\n---\n{extra}"
    );
    let snapshot = Snapshot::parse(&[("cluster.yaml".into(), text)]);
    assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
    Facts::of(&snapshot)
}

const ENFORCE: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: strict}\nspec:\n  namespaceSelector: {matchLabels: {team: a}}\n  rules: {forbidAllowAll: true, requireDefaultDeny: true}\n";
const AUDIT: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: rollout}\nspec:\n  mode: audit\n  rules: {minPrefixLength: {ipv4: 16}}\n";
const BASELINE: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n";

fn guardrail_object(rules: Value) -> Value {
    json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "PolicyGuardrail", "metadata": {"name": "g"}, "spec": {"rules": rules}})
}

#[test]
fn policy_writes_are_held_to_the_guardrails_of_their_namespace() {
    let with_baseline = facts(&format!("{ENFORCE}---\n{AUDIT}---\n{BASELINE}"));
    let without = facts(&format!("{ENFORCE}---\n{AUDIT}"));
    let mut baseline = network_policy(json!([]));
    baseline["metadata"]["name"] = "deny".into();
    baseline["spec"] = json!({"podSelector": {}, "policyTypes": ["Ingress"]});
    let allow_all = access_policy(json!({"inbound": {"default": "allow"}}));
    let wide = access_policy(
        json!({"inbound": {"rules": [{"name": "lan", "action": "allow", "from": [{"cidr": "10.0.0.0/8"}]}]}}),
    );
    let cases: Vec<(&str, &Facts, Vec<u8>, Want)> = vec![
        (
            "default allow, refused by the enforced guardrail at its field",
            &with_baseline,
            review("CREATE", AP, allow_all.clone()),
            Want::Forbidden(&[
                "AccessPolicy shop/orders breaks the cluster's policy guardrails:\nAccessPolicy shop/orders:",
                "guardrail strict: forbidAllowAll: `default: allow` lets every inbound peer through (at spec.inbound.default)",
            ]),
        ),
        (
            "a dry run is judged like the write",
            &with_baseline,
            review_by("UPDATE", AP, allow_all.clone(), "alice", true),
            Want::Forbidden(&["guardrail strict: forbidAllowAll"]),
        ),
        (
            "an audit-only guardrail warns",
            &with_baseline,
            review("CREATE", AP, wide.clone()),
            Want::Allowed(&[
                "guardrail rollout (audit): minPrefixLength: CIDR 10.0.0.0/8 is wider than /16 (at spec.inbound.rules[0].from[0].cidr)",
            ]),
        ),
        (
            "no baseline in the namespace yet: only a baseline is admitted",
            &without,
            review(
                "CREATE",
                NP,
                network_policy(json!([{"from": [{"podSelector": {}}]}])),
            ),
            Want::Forbidden(&[
                "guardrail strict: requireDefaultDeny: namespace shop has no default-deny baseline",
            ]),
        ),
        (
            "the baseline itself",
            &without,
            review("CREATE", NP, baseline.clone()),
            Want::Allowed(&[]),
        ),
        (
            "deleting the last baseline",
            &with_baseline,
            review("DELETE", NP, baseline.clone()),
            Want::Forbidden(&[
                "NetworkPolicy \"deny\" is the last default-deny baseline of namespace shop",
            ]),
        ),
        (
            "Kubernetes emptying a terminating namespace deletes it still",
            &with_baseline,
            review_by("DELETE", NP, baseline.clone(), ALWAYS_DELETE[0], false),
            Want::Ignored,
        ),
        (
            "deleting another policy",
            &with_baseline,
            review("DELETE", AP, wide.clone()),
            Want::Allowed(&[]),
        ),
        (
            "a policy ConfigMap is its own baseline, and its findings are located in its files",
            &with_baseline,
            review(
                "CREATE",
                CM,
                configmap(
                    DEFAULT_CONFIGMAP,
                    json!({}),
                    json!({"p.yaml": "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec:\n  inbound:\n    rules: [{name: all, action: allow}]\n"}),
                ),
            ),
            Want::Forbidden(&[
                "p.yaml:6:13: guardrail strict: forbidAllowAll: rule \"all\" allows every peer",
                "p.yaml:3:11: guardrail strict: requireDefaultDeny",
            ]),
        ),
        (
            "a guardrail that reads",
            &with_baseline,
            review(
                "CREATE",
                ("portcullis.dev", "v1alpha1", "PolicyGuardrail"),
                guardrail_object(json!({"requireIngress": true})),
            ),
            Want::Allowed(&[]),
        ),
        (
            "a guardrail that does not",
            &with_baseline,
            review(
                "UPDATE",
                ("portcullis.dev", "v1alpha1", "PolicyGuardrail"),
                guardrail_object(json!({"minPrefixLength": {"ipv4": 40}})),
            ),
            Want::Denied(&[
                "PolicyGuardrail g is not a valid Portcullis policy:",
                "prefix length 40 is not in 0..=32 (at spec.rules.minPrefixLength.ipv4)",
            ]),
        ),
    ];
    for (name, facts, body, want) in cases {
        let answer = validate(&body, DEFAULT_CONFIGMAP, Some(facts))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        check_answer(name, &answer, want);
    }
}

#[test]
fn before_the_first_snapshot_policy_writes_wait_and_others_do_not() {
    let np = review("CREATE", NP, network_policy(json!([])));
    assert!(matches!(
        validate(&np, DEFAULT_CONFIGMAP, None),
        Err(ReviewError::NotReady)
    ));
    let other = review(
        "CREATE",
        ("apps", "v1", "Deployment"),
        json!({"metadata": {"name": "web"}}),
    );
    let answer = validate(&other, DEFAULT_CONFIGMAP, None).expect("answered");
    assert_eq!(answer.outcome, Outcome::Ignored);
    let g = review(
        "CREATE",
        ("portcullis.dev", "v1alpha1", "PolicyGuardrail"),
        guardrail_object(json!({"forbidAllowAll": true})),
    );
    assert!(matches!(
        validate(&g, DEFAULT_CONFIGMAP, None)
            .expect("answered")
            .outcome,
        Outcome::Allowed { .. }
    ));
}

#[test]
fn the_readme_shows_what_admission_answers() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README");
    let orders = json!({
        "apiVersion": "portcullis.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"inbound": {"rules": [{"name": "lan", "action": "allow", "from": [{"cidr": "10.0.0.0/33"}]}]}},
    });
    let answer = validate(
        &review("CREATE", AP, orders),
        DEFAULT_CONFIGMAP,
        Some(&Facts::default()),
    )
    .expect("answered");
    let message = answer.body["response"]["status"]["message"]
        .as_str()
        .expect("refused");
    for line in message.lines() {
        assert!(readme.contains(line), "README lacks {line:?}");
    }
}
