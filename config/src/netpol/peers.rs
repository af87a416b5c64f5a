//! NetworkPolicy peers and label selectors: what the API server refuses, and what a sidecar can
//! see of the rest. `ipBlock` → CIDR; inbound, a `namespaceSelector` on
//! `kubernetes.io/metadata.name` only (any operator) → requirements on the peer identity's
//! namespace; `namespaceSelector: {}` → any authenticated peer; `podSelector: {}` alone → the
//! policy's own namespace. Selectors on other labels — and every selector peer of an egress rule,
//! whose destination is known only by its address — cannot be seen by a sidecar: they never
//! match, with a warning. With the [`Cluster`] (from the control plane or a snapshot), every
//! selector peer resolves instead to the addresses of the pods it selects.

use super::apivalidation::{label_value, qualified_name};
use crate::cluster::{Cluster, Pod};
use crate::diagnostics::{Diagnostics, cidr_match};
use crate::matchers::{CidrMatch, IdentityPattern};
use crate::model::{self, LabelSelector, Spanned};
use crate::rule::{NameRequirement, PeerMatch};

pub(super) const NS_LABEL: &str = "kubernetes.io/metadata.name";

/// Reports what the API server refuses in a selector; returns false when it refuses something.
pub(crate) fn validate_selector(d: &mut Diagnostics<'_>, sel: &Spanned<LabelSelector>) -> bool {
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

fn never<T>(d: &mut Diagnostics<'_>, at: &Spanned<T>, why: &str) -> PeerMatch {
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

/// What a peer entry became.
#[derive(Debug)]
pub(crate) enum Resolved<'c> {
    /// A peer the engine matches itself (a CIDR, an identity's namespace, or never).
    Match(PeerMatch),
    /// The pods the cluster says the selectors select (resolved by the control plane).
    Pods(Vec<&'c Pod>),
}

/// Where a rule's peers are resolved: the policy's namespace, the direction, and the cluster
/// when it is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'c> {
    pub(crate) own_namespace: Option<&'c str>,
    pub(crate) inbound: bool,
    pub(crate) cluster: Option<&'c Cluster>,
}

/// A host route for each address of each pod.
pub(crate) fn pod_matches(pods: &[&Pod]) -> impl Iterator<Item = PeerMatch> {
    pods.iter().flat_map(|p| p.ips.iter()).map(|ip| PeerMatch {
        cidr: Some(CidrMatch {
            net: ipnet::IpNet::from(*ip),
            except: Vec::new(),
        }),
        ..PeerMatch::default()
    })
}

/// The two selectors of a peer.
type Selectors<'s> = (
    Option<&'s Spanned<LabelSelector>>,
    Option<&'s Spanned<LabelSelector>>,
);

/// A valid selector peer, without the cluster: what a sidecar alone can tell of it.
fn unresolved<T>(
    d: &mut Diagnostics<'_>,
    p: &Spanned<T>,
    (ns_sel, pod_sel): Selectors<'_>,
    scope: Scope<'_>,
) -> PeerMatch {
    if !scope.inbound {
        // An outbound connection is judged before it opens, on its destination address: the
        // destination's namespace and labels are not known to a sidecar.
        return never(d, p, "an egress peer selected by namespace or pod labels");
    }
    let pods_any = pod_sel.is_none_or(|s| s.value.is_empty());
    match (ns_sel, pods_any) {
        (_, false) => never(d, p, "podSelector with labels"),
        (Some(ns), true) if ns.value.is_empty() => PeerMatch {
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
        (None, true) => match scope.own_namespace {
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
    }
}

/// A peer given by `namespaceSelector` and/or `podSelector` (at least one), with Kubernetes'
/// meaning: validated, then resolved to pods with the cluster, or to what a sidecar alone can
/// see without it. `None` after reporting an invalid selector.
pub(crate) fn selector_peer<'c, T>(
    d: &mut Diagnostics<'_>,
    p: &Spanned<T>,
    selectors: Selectors<'_>,
    scope: Scope<'c>,
) -> Option<Resolved<'c>> {
    let mut valid = true;
    for sel in [selectors.0, selectors.1].into_iter().flatten() {
        valid &= validate_selector(d, sel);
    }
    if !valid {
        return None;
    }
    match (scope.cluster, scope.own_namespace) {
        (Some(cluster), Some(ns)) => Some(Resolved::Pods(cluster.select(
            ns,
            selectors.0.map(|s| &s.value),
            selectors.1.map(|s| &s.value),
        ))),
        _ => Some(Resolved::Match(unresolved(d, p, selectors, scope))),
    }
}

fn one_peer<'c>(
    d: &mut Diagnostics<'_>,
    p: &Spanned<model::NetPeer>,
    scope: Scope<'c>,
) -> Option<Resolved<'c>> {
    let peer = &p.value;
    if let Some(block) = &peer.ip_block {
        if peer.namespace_selector.is_some() || peer.pod_selector.is_some() {
            d.error(p, "may not specify both ipBlock and another peer");
            return None;
        }
        if !strict_subsets(d, &block.value) {
            return None;
        }
        let c = cidr_match(d, &block.value.cidr, block.value.except.as_ref())?;
        return Some(Resolved::Match(PeerMatch {
            cidr: Some(c),
            ..PeerMatch::default()
        }));
    }
    if peer.namespace_selector.is_none() && peer.pod_selector.is_none() {
        d.error(
            p,
            "must specify a peer (ipBlock, namespaceSelector or podSelector)",
        );
        return None;
    }
    let selectors = (peer.namespace_selector.as_ref(), peer.pod_selector.as_ref());
    selector_peer(d, p, selectors, scope)
}

/// Compiles a rule's peers (`from` or `to`).
pub(super) fn peers<'c>(
    d: &mut Diagnostics<'_>,
    list: &[Spanned<model::NetPeer>],
    scope: Scope<'c>,
) -> Vec<Resolved<'c>> {
    list.iter().filter_map(|p| one_peer(d, p, scope)).collect()
}
