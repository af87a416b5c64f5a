//! NetworkPolicy peers and label selectors: what the API server refuses, and what a sidecar can
//! see of the rest. `ipBlock` → CIDR; inbound, a `namespaceSelector` on
//! `kubernetes.io/metadata.name` only (any operator) → requirements on the peer identity's
//! namespace; `namespaceSelector: {}` → any authenticated peer; `podSelector: {}` alone → the
//! policy's own namespace. Selectors on other labels — and every selector peer of an egress rule,
//! whose destination is known only by its address — cannot be seen by a sidecar: they never
//! match, with a warning.

use std::collections::BTreeMap;

use super::apivalidation::{label_value, qualified_name};
use crate::diagnostics::{Diagnostics, cidr_match};
use crate::matchers::IdentityPattern;
use crate::model::{self, LabelSelector, Spanned};
use crate::rule::{NameRequirement, PeerMatch};

pub(super) const NS_LABEL: &str = "kubernetes.io/metadata.name";

/// Reports what the API server refuses in a selector; returns false when it refuses something.
pub(super) fn validate_selector(d: &mut Diagnostics<'_>, sel: &Spanned<LabelSelector>) -> bool {
    let before = d.error_count();
    let label = |d: &mut Diagnostics<'_>, key: &str, value: Option<&str>| {
        for m in qualified_name(key) {
            d.error(sel, format!("invalid label key {key:?}: {m}"));
        }
        for m in value.map(label_value).unwrap_or_default() {
            d.error(
                sel,
                format!(
                    "invalid label value {:?} for {key:?}: {m}",
                    value.unwrap_or_default()
                ),
            );
        }
    };
    for (k, v) in sel.value.match_labels.iter().flatten() {
        label(d, k, Some(v));
    }
    for e in sel.value.match_expressions.iter().flatten() {
        label(d, &e.value.key, None);
        let values = e.value.values.as_deref().unwrap_or_default();
        for v in values {
            for m in label_value(v) {
                d.error(e, format!("invalid value {v:?}: {m}"));
            }
        }
        match e.value.operator.value.as_str() {
            "In" | "NotIn" if values.is_empty() => d.error(
                &e.value.operator,
                "values: must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => d.error(
                &e.value.operator,
                "values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => d.error(
                &e.value.operator,
                format!("{other:?}: not a valid selector operator (expected In, NotIn, Exists, DoesNotExist)"),
            ),
        }
    }
    d.error_count() == before
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

/// The selector as requirements on a namespace's name, if it only speaks of
/// `kubernetes.io/metadata.name` (the one namespace label a sidecar can know).
fn name_requirements(sel: &LabelSelector) -> Option<Vec<NameRequirement>> {
    let labels = sel.match_labels.clone().unwrap_or_default();
    let exprs = sel.match_expressions.as_deref().unwrap_or_default();
    if labels.keys().any(|k| k != NS_LABEL) || exprs.iter().any(|e| e.value.key != NS_LABEL) {
        return None;
    }
    let mut out: Vec<NameRequirement> = labels
        .into_values()
        .map(|n| NameRequirement::In(vec![n]))
        .collect();
    for e in exprs {
        let values = e.value.values.clone().unwrap_or_default();
        out.push(match e.value.operator.value.as_str() {
            "In" => NameRequirement::In(values),
            "NotIn" => NameRequirement::NotIn(values),
            "Exists" => NameRequirement::Exists,
            _ => NameRequirement::DoesNotExist,
        });
    }
    Some(out)
}

fn never(d: &mut Diagnostics<'_>, at: &Spanned<model::NetPeer>, why: &str) -> PeerMatch {
    d.warn(
        at,
        format!("{why}: a sidecar cannot see it, so this peer never matches"),
    );
    PeerMatch {
        never: true,
        ..PeerMatch::default()
    }
}

/// Whether `except` is inside `cidr` and smaller (the API server's "strict subset").
fn strict_subsets(d: &mut Diagnostics<'_>, block: &model::IpBlock) -> bool {
    let Ok(net) = block.cidr.value.trim().parse::<ipnet::IpNet>() else {
        return true; // cidr_match reports it
    };
    let mut ok = true;
    for e in block.except.iter().flatten() {
        if let Ok(en) = e.value.trim().parse::<ipnet::IpNet>()
            && net.contains(&en)
            && en.prefix_len() <= net.prefix_len()
        {
            d.error(e, format!("except {en}: must be a strict subset of `cidr`"));
            ok = false;
        }
    }
    ok
}

fn one_peer(
    d: &mut Diagnostics<'_>,
    p: &Spanned<model::NetPeer>,
    own_namespace: Option<&str>,
    inbound: bool,
    out: &mut Vec<PeerMatch>,
) {
    let peer = &p.value;
    if let Some(block) = &peer.ip_block {
        if peer.namespace_selector.is_some() || peer.pod_selector.is_some() {
            d.error(p, "may not specify both ipBlock and another peer");
        } else if strict_subsets(d, &block.value)
            && let Some(c) = cidr_match(d, &block.value.cidr, block.value.except.as_ref())
        {
            out.push(PeerMatch {
                cidr: Some(c),
                ..PeerMatch::default()
            });
        }
        return;
    }
    let selectors = [&peer.namespace_selector, &peer.pod_selector];
    if selectors.iter().all(|s| s.is_none()) {
        d.error(
            p,
            "must specify a peer (ipBlock, namespaceSelector or podSelector)",
        );
        return;
    }
    let mut valid = true;
    for sel in selectors.into_iter().flatten() {
        valid &= validate_selector(d, sel);
    }
    if !valid {
        return;
    }
    if !inbound {
        // An outbound connection is judged before it opens, on its destination address: the
        // destination's namespace and labels are not known to a sidecar.
        out.push(never(
            d,
            p,
            "an egress peer selected by namespace or pod labels",
        ));
        return;
    }
    let pods_any = peer
        .pod_selector
        .as_ref()
        .is_none_or(|s| is_empty(&s.value));
    out.push(match (&peer.namespace_selector, pods_any) {
        (_, false) => never(d, p, "podSelector with labels"),
        (Some(ns), true) if is_empty(&ns.value) => PeerMatch {
            identity: Some(IdentityPattern::Any),
            ..PeerMatch::default()
        },
        (Some(ns), true) => match name_requirements(&ns.value) {
            Some(reqs) => PeerMatch {
                namespace_names: Some(reqs),
                ..PeerMatch::default()
            },
            None => never(
                d,
                p,
                "namespaceSelector on labels other than kubernetes.io/metadata.name",
            ),
        },
        (None, true) => match own_namespace {
            Some(ns) => PeerMatch {
                namespace: Some(ns.to_string()),
                ..PeerMatch::default()
            },
            None => never(
                d,
                p,
                "podSelector: {} in a policy without metadata.namespace (and no --pod-namespace)",
            ),
        },
    });
}

/// Compiles a rule's peers (`from` or `to`); `own_namespace` is the policy's.
pub(super) fn peers(
    d: &mut Diagnostics<'_>,
    list: &[Spanned<model::NetPeer>],
    own_namespace: Option<&str>,
    inbound: bool,
) -> Vec<PeerMatch> {
    let mut out = Vec::new();
    for p in list {
        one_peer(d, p, own_namespace, inbound, &mut out);
    }
    out
}
