//! Kubernetes NetworkPolicy import, with Kubernetes' meaning for what a sidecar can know.
//!
//! A policy whose `podSelector` does not select this workload (its Downward API labels) is
//! ignored. `policyTypes` defaults to Ingress, plus Egress when `egress` is present; each listed
//! type isolates its direction, and each rule becomes an `allow` rule (several policies = union).
//! Peers: `ipBlock` → CIDR; `namespaceSelector` on `kubernetes.io/metadata.name` → the peer
//! identity's namespace; `namespaceSelector: {}` → any authenticated peer; `podSelector: {}` →
//! the policy's own namespace. Other selectors cannot be seen by a sidecar: they never match and
//! produce a warning. Only TCP ports apply to the proxy; named ports resolve against the
//! workload's own container ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::compiled::{CompileContext, CompiledPolicy};
use crate::diagnostics::{Diagnostics, cidr_match};
use crate::matchers::{IdentityPattern, PortSet};
use crate::model::{self, Action, LabelSelector, PortValue, Spanned};
use crate::rule::{CompiledRule, PeerMatch};

const NS_LABEL: &str = "kubernetes.io/metadata.name";

/// Validates a selector's expressions; returns false (after reporting) when invalid.
fn validate_selector(d: &mut Diagnostics<'_>, sel: &LabelSelector) -> bool {
    let mut ok = true;
    for e in sel.match_expressions.iter().flatten() {
        let values = e.value.values.as_deref().unwrap_or_default();
        match e.value.operator.value.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                d.error(&e.value.operator, "In and NotIn need at least one value");
                ok = false;
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                d.error(&e.value.operator, "Exists and DoesNotExist take no values");
                ok = false;
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                d.error(
                    &e.value.operator,
                    format!(
                        "invalid operator {other:?} (expected In, NotIn, Exists, DoesNotExist)"
                    ),
                );
                ok = false;
            }
        }
    }
    ok
}

/// Kubernetes label selector semantics over a label map.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    exact
        && sel.match_expressions.iter().flatten().all(|e| {
            let e = &e.value;
            let values = e.values.as_deref().unwrap_or_default();
            let have = labels.get(&e.key);
            match e.operator.value.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Namespaces named by a selector on `kubernetes.io/metadata.name` only, if that is all it says.
fn named_namespaces(sel: &LabelSelector) -> Option<Vec<String>> {
    let labels = sel.match_labels.clone().unwrap_or_default();
    let exprs = sel.match_expressions.as_deref().unwrap_or_default();
    if labels.keys().any(|k| k != NS_LABEL) || exprs.iter().any(|e| e.value.key != NS_LABEL) {
        return None;
    }
    let mut names: Option<Vec<String>> = labels.get(NS_LABEL).map(|n| vec![n.clone()]);
    for e in exprs {
        if e.value.operator.value != "In" {
            return None;
        }
        let vals = e.value.values.clone().unwrap_or_default();
        names = Some(match names {
            None => vals,
            Some(prev) => prev.into_iter().filter(|n| vals.contains(n)).collect(),
        });
    }
    names
}

fn peers(
    d: &mut Diagnostics<'_>,
    list: &[Spanned<model::NetPeer>],
    own_namespace: Option<&str>,
) -> Option<Vec<PeerMatch>> {
    let mut out = Vec::new();
    for p in list {
        let peer = &p.value;
        let never = |d: &mut Diagnostics<'_>, why: &str| {
            d.warn(
                p,
                format!("{why}: a sidecar cannot see it, so this peer never matches"),
            );
            PeerMatch {
                never: true,
                ..PeerMatch::default()
            }
        };
        if let Some(block) = &peer.ip_block {
            if peer.namespace_selector.is_some() || peer.pod_selector.is_some() {
                d.error(
                    p,
                    "ipBlock cannot be combined with namespaceSelector or podSelector",
                );
                continue;
            }
            if let Some(c) = cidr_match(d, &block.value.cidr, block.value.except.as_ref()) {
                out.push(PeerMatch {
                    cidr: Some(c),
                    ..PeerMatch::default()
                });
            }
            continue;
        }
        for sel in [&peer.namespace_selector, &peer.pod_selector]
            .into_iter()
            .flatten()
        {
            validate_selector(d, &sel.value);
        }
        let pods_any = peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| is_empty(&s.value));
        match (&peer.namespace_selector, pods_any) {
            (_, false) => out.push(never(d, "podSelector with labels")),
            (Some(ns), true) if is_empty(&ns.value) => out.push(PeerMatch {
                identity: Some(IdentityPattern::Any),
                ..PeerMatch::default()
            }),
            (Some(ns), true) => match named_namespaces(&ns.value) {
                Some(names) => out.extend(names.into_iter().map(|n| PeerMatch {
                    namespace: Some(n),
                    ..PeerMatch::default()
                })),
                None => out.push(never(
                    d,
                    "namespaceSelector on labels other than kubernetes.io/metadata.name",
                )),
            },
            (None, true) => match own_namespace {
                Some(ns) => out.push(PeerMatch {
                    namespace: Some(ns.to_string()),
                    ..PeerMatch::default()
                }),
                None => out.push(never(
                    d,
                    "podSelector: {} in a policy without metadata.namespace",
                )),
            },
        }
    }
    Some(out)
}

fn ports(
    d: &mut Diagnostics<'_>,
    list: &[Spanned<model::NetPort>],
    ctx: &CompileContext,
) -> Option<PortSet> {
    if list.is_empty() {
        return None;
    }
    let mut ranges = Vec::new();
    for p in list {
        let port = &p.value;
        let proto = port.protocol.as_ref().map_or("TCP", |s| s.value.as_str());
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            if let Some(s) = &port.protocol {
                d.error(
                    s,
                    format!("invalid protocol {proto:?} (expected TCP, UDP or SCTP)"),
                );
            }
            continue;
        }
        let first = match &port.port {
            None => {
                if port.end_port.is_some() {
                    d.error(p, "endPort needs a numeric port");
                }
                Some(1)
            }
            Some(v) => match &v.value {
                PortValue::Number(n) if (1..=65535).contains(n) => Some(*n as u16),
                PortValue::Text(name) if name.parse::<u16>().is_err() && !name.is_empty() => {
                    if port.end_port.is_some() {
                        d.error(p, "endPort needs a numeric port");
                    }
                    match ctx.named_ports.get(name) {
                        Some(n) => Some(*n),
                        None => {
                            d.warn(v, format!("named port {name:?} is not a container port of this workload; it matches nothing"));
                            None
                        }
                    }
                }
                _ => {
                    d.error(v, "invalid port (expected 1-65535 or a port name)");
                    None
                }
            },
        };
        let last = match (&port.port, &port.end_port) {
            (None, _) => Some(65535),
            (Some(_), None) => first,
            (Some(_), Some(e)) => match (first, u16::try_from(e.value).ok()) {
                (Some(f), Some(l)) if l >= f => Some(l),
                _ => {
                    d.error(e, "endPort must be a port number not below port");
                    None
                }
            },
        };
        if proto != "TCP" {
            continue; // the proxy carries TCP only; UDP/SCTP entries allow no TCP traffic
        }
        if let (Some(f), Some(l)) = (first, last) {
            ranges.push((f, l));
        }
    }
    Some(PortSet::new(ranges))
}

/// Imports one NetworkPolicy (its `namespace` gives `podSelector: {}` peers their meaning);
/// returns (inbound rules, outbound rules, whether it applies to this workload).
pub fn import(
    d: &mut Diagnostics<'_>,
    policy: &Arc<str>,
    namespace: Option<&str>,
    spec: &Spanned<model::Spec>,
    ctx: &CompileContext,
    out: &mut CompiledPolicy,
) -> (usize, usize, bool) {
    let s = &spec.value;
    for (field, present) in [
        ("inbound", s.inbound.is_some()),
        ("outbound", s.outbound.is_some()),
    ] {
        if present {
            d.error(spec, format!("unknown field `{field}` in a NetworkPolicy spec (expected podSelector, policyTypes, ingress, egress)"));
        }
    }
    let Some(selector) = &s.pod_selector else {
        d.error(
            spec,
            "spec.podSelector is required (use {} to select every pod)",
        );
        return (0, 0, false);
    };
    validate_selector(d, &selector.value);
    let labels = ctx.workload_labels.clone().unwrap_or_default();
    let applies = selector_matches(&selector.value, &labels);

    let (mut ingress, mut egress) = (false, false);
    match &s.policy_types {
        None => {
            ingress = true;
            egress = s.egress.is_some();
        }
        Some(types) => {
            for t in types {
                match t.value.as_str() {
                    "Ingress" => ingress = true,
                    "Egress" => egress = true,
                    other => d.error(
                        t,
                        format!("invalid policyType {other:?} (expected Ingress or Egress)"),
                    ),
                }
            }
        }
    }
    let mut counts = (0, 0);
    for (enabled, rules, inbound, prefix) in [
        (ingress, &s.ingress, true, "ingress"),
        (egress, &s.egress, false, "egress"),
    ] {
        let mut compiled = Vec::new();
        for (i, r) in rules.iter().flat_map(|l| l.value.iter()).enumerate() {
            let (peers_field, wrong) = if inbound {
                (&r.value.from, &r.value.to)
            } else {
                (&r.value.to, &r.value.from)
            };
            if wrong.is_some() {
                d.error(
                    r,
                    format!(
                        "{prefix} rules name peers with `{}`",
                        if inbound { "from" } else { "to" }
                    ),
                );
            }
            let peers = match peers_field {
                Some(list) if !list.is_empty() => peers(d, list, namespace),
                _ => None,
            };
            let ports = r.value.ports.as_ref().and_then(|l| ports(d, l, ctx));
            compiled.push(CompiledRule {
                policy: policy.clone(),
                name: format!("{prefix}[{i}]").into(),
                action: Action::Allow,
                peers,
                ports,
                http: None,
            });
        }
        if !(enabled && applies) {
            continue;
        }
        let target = if inbound {
            &mut out.inbound
        } else {
            &mut out.outbound
        };
        target.mention(None);
        if inbound {
            counts.0 = compiled.len()
        } else {
            counts.1 = compiled.len()
        }
        target.rules.extend(compiled);
    }
    (counts.0, counts.1, applies)
}
