use std::collections::BTreeMap;
use std::sync::Arc;

use super::check::{Scope, Violation, check, check_delete, is_baseline};
use super::{Guardrail, Mode, parse};
use crate::load::parse_str;

fn guardrail(rules: &str) -> Guardrail {
    let text = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {{name: g}}\nspec:\n  rules: {rules}\n"
    );
    parse(&Arc::from("g.yaml"), 0, &text).unwrap_or_else(|e| panic!("{rules}: {e:?}"))
}

fn judge(g: &Guardrail, policy: &str, labels: &[(&str, &str)], elsewhere: bool) -> Vec<Violation> {
    let docs = parse_str("p.yaml", policy).unwrap_or_else(|e| panic!("{policy}: {e:?}"));
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let scope = Scope {
        namespace: "shop",
        labels: &labels,
        baseline_elsewhere: elsewhere,
    };
    check([g], &docs, &scope)
}

const NP: &str =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n";
const AP: &str =
    "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: ap}\nspec:\n";

/// (case, rules, policy spec lines, namespace labels, baseline elsewhere, violations as
/// `rule@line:col` with a fragment of the message).
type Case = (
    &'static str,
    &'static str,
    String,
    &'static [(&'static str, &'static str)],
    bool,
    &'static [(&'static str, &'static str)],
);

fn cases() -> Vec<Case> {
    let np = |spec: &str| format!("{NP}{spec}");
    let ap = |spec: &str| format!("{AP}{spec}");
    vec![
        (
            "requireIngress: a NetworkPolicy that constrains ingress",
            "{requireIngress: true}",
            np("  podSelector: {}\n  policyTypes: [Ingress, Egress]\n"),
            &[],
            true,
            &[],
        ),
        (
            "requireIngress: an egress-only NetworkPolicy",
            "{requireIngress: true}",
            np("  podSelector: {}\n  policyTypes: [Egress]\n"),
            &[],
            true,
            &[("requireIngress@6:17", "its policyTypes leave out Ingress")],
        ),
        (
            "requireIngress: an AccessPolicy without inbound",
            "{requireIngress: true}",
            ap("  outbound: {default: deny}\n"),
            &[],
            true,
            &[("requireIngress@5:3", "it has no `inbound`")],
        ),
        (
            "forbidAllowAll: peers named",
            "{forbidAllowAll: true}",
            np(
                "  podSelector: {}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: web}}}, {ipBlock: {cidr: 10.0.0.0/8}}]\n",
            ),
            &[],
            true,
            &[],
        ),
        (
            "forbidAllowAll: a NetworkPolicy rule without from, and every namespace",
            "{forbidAllowAll: true}",
            np(
                "  podSelector: {}\n  ingress:\n    - ports: [{port: 80}]\n    - from: [{namespaceSelector: {}}]\n",
            ),
            &[],
            true,
            &[
                ("forbidAllowAll@7:7", "ingress rule 1 allows every peer"),
                ("forbidAllowAll@8:14", "every pod of every namespace"),
            ],
        ),
        (
            "forbidAllowAll: default allow, a rule without peers, 0.0.0.0/0 egress",
            "{forbidAllowAll: true}",
            ap(
                "  inbound:\n    default: allow\n    rules:\n      - {name: any, action: allow, ports: [80]}\n      - {name: no, action: deny}\n  outbound:\n    rules:\n      - {name: net, action: allow, to: [{cidr: 0.0.0.0/0}]}\n",
            ),
            &[],
            true,
            &[
                (
                    "forbidAllowAll@6:14",
                    "`default: allow` lets every inbound peer",
                ),
                ("forbidAllowAll@8:9", "rule \"any\" allows every peer"),
                ("forbidAllowAll@12:41", "peer 0.0.0.0/0 is every address"),
            ],
        ),
        (
            "requireDefaultDeny: this policy is the baseline",
            "{requireDefaultDeny: true}",
            np("  podSelector: {}\n  policyTypes: [Ingress]\n"),
            &[],
            false,
            &[],
        ),
        (
            "requireDefaultDeny: a baseline is in place already",
            "{requireDefaultDeny: true}",
            np("  podSelector: {matchLabels: {app: web}}\n  ingress: [{}]\n"),
            &[],
            true,
            &[],
        ),
        (
            "requireDefaultDeny: none in place, and this one selects some pods only",
            "{requireDefaultDeny: true}",
            np("  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n"),
            &[],
            false,
            &[(
                "requireDefaultDeny@3:11",
                "namespace shop has no default-deny baseline",
            )],
        ),
        (
            "requireDefaultDeny: a policy of every pod that lets everyone in is no baseline",
            "{requireDefaultDeny: true}",
            ap("  inbound:\n    rules: [{name: all, action: allow}]\n"),
            &[],
            false,
            &[("requireDefaultDeny@3:11", "no default-deny baseline")],
        ),
        (
            "minPrefixLength: narrow enough",
            "{minPrefixLength: {ipv4: 16, ipv6: 48}}",
            ap(
                "  inbound:\n    rules: [{name: a, action: allow, from: [{cidr: 10.1.0.0/16}, {cidr: 'fd00:1::/48'}]}]\n",
            ),
            &[],
            true,
            &[],
        ),
        (
            "minPrefixLength: too wide, per family",
            "{minPrefixLength: {ipv4: 16, ipv6: 48}}",
            np(
                "  podSelector: {}\n  egress:\n    - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {ipBlock: {cidr: 'fd00::/8'}}]\n",
            ),
            &[],
            true,
            &[
                ("minPrefixLength@7:29", "CIDR 10.0.0.0/8 is wider than /16"),
                ("minPrefixLength@7:83", "CIDR fd00::/8 is wider than /48"),
            ],
        ),
        (
            "internetEgress: a namespace that may",
            "{internetEgress: {namespaceSelector: {matchLabels: {egress: internet}}}}",
            ap(
                "  outbound:\n    rules: [{name: web, action: allow, to: [{host: api.example.com}]}]\n",
            ),
            &[("egress", "internet")],
            true,
            &[],
        ),
        (
            "internetEgress: in-cluster peers only",
            "{internetEgress: {namespaceSelector: {matchLabels: {egress: internet}}}}",
            np(
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - to: [{namespaceSelector: {matchLabels: {team: a}}}, {ipBlock: {cidr: 10.0.0.0/8}}]\n",
            ),
            &[],
            true,
            &[],
        ),
        (
            "internetEgress: a namespace that may not",
            "{internetEgress: {namespaceSelector: {matchLabels: {egress: internet}}}}",
            ap(
                "  outbound:\n    default: allow\n    rules:\n      - {name: web, action: allow, to: [{host: api.example.com}, {host: orders.shop.svc}]}\n      - {name: any, action: allow, ports: [443]}\n      - {name: net, action: allow, to: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}]}\n",
            ),
            &[("egress", "no")],
            true,
            &[
                (
                    "internetEgress@6:14",
                    "outbound `default: allow` reaches the internet",
                ),
                (
                    "internetEgress@8:41",
                    "rule \"web\" peer reaches the internet, which namespace shop may not allow",
                ),
                ("internetEgress@9:9", "rule \"any\" (no `to`)"),
                ("internetEgress@10:41", "rule \"net\" peer"),
            ],
        ),
        (
            "requireMtlsStrict: strict",
            "{requireMtlsStrict: true}",
            ap("  mtls: strict\n  inbound: {default: deny}\n"),
            &[],
            true,
            &[],
        ),
        (
            "requireMtlsStrict: permissive, and not said",
            "{requireMtlsStrict: true}",
            ap("  mtls: permissive\n"),
            &[],
            true,
            &[("requireMtlsStrict@5:9", "does not set `mtls: strict`")],
        ),
        (
            "requireMtlsStrict: a NetworkPolicy cannot say it, and is not judged",
            "{requireMtlsStrict: true}",
            np("  podSelector: {}\n"),
            &[],
            true,
            &[],
        ),
    ]
}

#[test]
fn every_rule_admits_what_keeps_it_and_names_what_breaks_it() {
    for (name, rules, policy, labels, elsewhere, want) in cases() {
        let g = guardrail(rules);
        let got = judge(&g, &policy, labels, elsewhere);
        let got_keys: Vec<String> = got
            .iter()
            .map(|v| format!("{}@{}:{}", v.rule, v.error.line, v.error.column))
            .collect();
        let want_keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
        assert_eq!(got_keys, want_keys, "{name}\n{policy}\n{got:#?}");
        for (v, (_, fragment)) in got.iter().zip(want) {
            let msg = v.error.to_string();
            assert!(msg.contains(fragment), "{name}: {fragment:?} in {msg}");
            assert!(msg.starts_with("p.yaml:"), "{msg}");
            assert!(msg.contains(&format!("guardrail g: {}: ", v.rule)), "{msg}");
            assert_eq!(v.mode, Mode::Enforce);
        }
    }
}

#[test]
fn a_guardrail_judges_only_the_namespaces_it_selects_and_may_only_audit() {
    let text = "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: teams}\nspec:\n  mode: audit\n  namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [dev]}]}\n  rules: {forbidAllowAll: true}\n";
    let g = parse(&Arc::from("g.yaml"), 0, text).expect("guardrail");
    assert_eq!(g.mode, Mode::Audit);
    let policy = format!("{AP}  inbound: {{default: allow}}\n");
    let docs = parse_str("p.yaml", &policy).expect("policy");
    let labels = BTreeMap::new();
    let at = |namespace| Scope {
        namespace,
        labels: &labels,
        baseline_elsewhere: true,
    };
    assert!(check([&g], &docs, &at("dev")).is_empty());
    let v = check([&g], &docs, &at("shop"));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].mode, Mode::Audit);
    let msg = v[0].error.to_string();
    assert!(
        msg.contains("guardrail teams (audit): forbidAllowAll: "),
        "{msg}"
    );
}

#[test]
fn the_last_baseline_cannot_be_deleted() {
    let g = guardrail("{requireDefaultDeny: true}");
    let other = guardrail("{forbidAllowAll: true}");
    let labels = BTreeMap::new();
    let scope = |elsewhere| Scope {
        namespace: "shop",
        labels: &labels,
        baseline_elsewhere: elsewhere,
    };
    let baseline = parse_str("p.yaml", &format!("{NP}  podSelector: {{}}\n")).expect("np");
    let some = parse_str(
        "p.yaml",
        &format!("{NP}  podSelector: {{matchLabels: {{a: b}}}}\n"),
    )
    .expect("np");
    let v = check_delete([&g, &other], &baseline[0], &scope(false));
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].error.to_string().contains(
        "p.yaml:3:11: guardrail g: requireDefaultDeny: NetworkPolicy \"np\" is the last default-deny baseline of namespace shop"
    ), "{v:?}");
    assert!(check_delete([&g], &baseline[0], &scope(true)).is_empty());
    assert!(check_delete([&g], &some[0], &scope(false)).is_empty());
}

#[test]
fn baselines_are_told_apart() {
    let cases = [
        (
            format!("{NP}  podSelector: {{}}\n  policyTypes: [Ingress]\n"),
            true,
        ),
        (
            format!("{NP}  podSelector: {{}}\n  ingress: [{{from: [{{podSelector: {{}}}}]}}]\n"),
            true,
        ),
        (
            format!("{NP}  podSelector: {{}}\n  ingress: [{{}}]\n"),
            false,
        ),
        (
            format!("{NP}  podSelector: {{}}\n  policyTypes: [Egress]\n"),
            false,
        ),
        (
            format!("{NP}  podSelector: {{matchLabels: {{a: b}}}}\n"),
            false,
        ),
        (format!("{AP}  inbound: {{}}\n"), true),
        (format!("{AP}  inbound: {{default: allow}}\n"), false),
        (format!("{AP}  outbound: {{}}\n"), false),
    ];
    for (policy, want) in cases {
        let docs = parse_str("p.yaml", &policy).expect("policy");
        assert_eq!(is_baseline(&docs[0]), want, "{policy}");
    }
}

#[test]
fn a_guardrail_that_does_not_read_is_refused_where_it_is_wrong() {
    let head =
        "apiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: g}\nspec:\n";
    let cases = [
        ("  rules: {}\n", "5:10: no rule is on"),
        (
            "  rules: {forbidAllowAll: true, bogus: 1}\n",
            "5:33: unknown field `bogus`",
        ),
        (
            "  mode: warn\n  rules: {forbidAllowAll: true}\n",
            "5:9: unknown variant `warn`",
        ),
        (
            "  rules: {minPrefixLength: {ipv4: 33}}\n",
            "5:35: prefix length 33 is not in 0..=32",
        ),
        (
            "  namespaceSelector: {matchExpressions: [{key: a, operator: Maybe}]}\n  rules: {forbidAllowAll: true}\n",
            "not a valid selector operator",
        ),
    ];
    for (spec, want) in cases {
        let text = format!("{head}{spec}");
        let errors = parse(&Arc::from("g.yaml"), 0, &text).expect_err(spec);
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            all.iter().any(|e| e.contains(want)),
            "{spec}: {want:?} in {all:?}"
        );
    }
    let wrong = "apiVersion: portcullis.dev/v1\nkind: PolicyGuardrail\nmetadata: {}\nspec: {rules: {forbidAllowAll: true}}\n";
    let errors = parse(&Arc::from("g.yaml"), 0, wrong).expect_err("wrong");
    let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        all[0].contains("g.yaml:1:13: unsupported apiVersion"),
        "{all:?}"
    );
    assert!(
        all[1].contains("g.yaml:3:11: metadata.name is required"),
        "{all:?}"
    );
}
