//! Kubernetes NetworkPolicy import, with Kubernetes' meaning for what a sidecar can know.
//!
//! A policy applies to this workload when it is in the workload's namespace (its
//! `metadata.namespace`, or the workload's when absent) and its `podSelector` selects the
//! workload's (Downward API) labels. `policyTypes`, absent or empty, defaults as the API server
//! defaults it: Ingress, plus Egress when `egress` has rules; each type isolates its direction,
//! and each rule becomes an `allow` rule (several policies = union). Documents the API server
//! would refuse are refused with its reason ([`apivalidation`]); [`peers`] and [`ports`] say
//! what a sidecar can see of the rest.

pub mod apivalidation;
pub(crate) mod peers;
mod ports;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::selector::selector_matches;

use crate::cluster::Pod;
use crate::compiled::{CompileContext, CompiledPolicy};
use crate::diagnostics::Diagnostics;
use crate::matchers::PortSet;
use crate::model::{self, Action, Spanned};
use crate::rule::CompiledRule;
use peers::{Resolved, Scope, pod_matches};

/// The directions a policy isolates, defaulted as the API server defaults `policyTypes`.
fn policy_types(d: &mut Diagnostics<'_>, s: &model::Spec) -> (bool, bool) {
    let has_egress = s.egress.as_ref().is_some_and(|e| !e.value.is_empty());
    let types = s.policy_types.as_deref().unwrap_or_default();
    if types.is_empty() {
        return (true, has_egress);
    }
    if types.len() > 2 {
        d.error(
            &types[2],
            "policyTypes: may not specify more than two policyTypes",
        );
        return (false, false);
    }
    let (mut ingress, mut egress) = (false, false);
    for t in types {
        match t.value.as_str() {
            "Ingress" => ingress = true,
            "Egress" => egress = true,
            other => d.error(
                t,
                format!("policyTypes: Unsupported value: {other:?}: supported values: \"Ingress\", \"Egress\""),
            ),
        }
    }
    (ingress, egress)
}

/// Whether the policy is in the workload's namespace and selects its labels.
fn applies(
    d: &mut Diagnostics<'_>,
    spec: &Spanned<model::Spec>,
    namespace: Option<&str>,
    ctx: &CompileContext,
) -> bool {
    let Some(selector) = &spec.value.pod_selector else {
        d.error(
            spec,
            "spec.podSelector is required (use {} to select every pod)",
        );
        return false;
    };
    let valid = peers::validate_selector(d, selector);
    let labels = ctx.workload_labels.clone().unwrap_or_default();
    let same_namespace = match (namespace, ctx.workload_namespace.as_deref()) {
        (Some(policy), Some(own)) => policy == own,
        _ => true,
    };
    valid && same_namespace && selector_matches(&selector.value, &labels)
}

/// One direction's rules of the policy, compiled.
fn rules(
    d: &mut Diagnostics<'_>,
    policy: &Arc<str>,
    namespace: Option<&str>,
    list: Option<&Spanned<Vec<Spanned<model::NetRule>>>>,
    inbound: bool,
    ctx: &CompileContext,
) -> Vec<CompiledRule> {
    let (prefix, field, wrong_field) = if inbound {
        ("ingress", "from", "to")
    } else {
        ("egress", "to", "from")
    };
    let scope = Scope {
        own_namespace: namespace,
        inbound,
        cluster: ctx.cluster.as_deref(),
    };
    let mut compiled = Vec::new();
    for (i, r) in list.iter().flat_map(|l| l.value.iter()).enumerate() {
        let (peers_field, wrong) = if inbound {
            (&r.value.from, &r.value.to)
        } else {
            (&r.value.to, &r.value.from)
        };
        if wrong.is_some() {
            d.error(
                r,
                format!("{prefix} rules name peers with `{field}`, not `{wrong_field}`"),
            );
        }
        // An absent or empty peer list means every peer (Kubernetes), unlike AccessPolicy.
        let resolved = peers_field
            .as_ref()
            .filter(|l| !l.is_empty())
            .map(|l| peers::peers(d, l, scope));
        let ports = r
            .value
            .ports
            .as_ref()
            .map(|l| ports::ports(d, l, inbound, ctx))
            .unwrap_or_default();
        let name: Arc<str> = format!("{prefix}[{i}]").into();
        let rule = |peers, ports| CompiledRule {
            policy: policy.clone(),
            name: name.clone(),
            action: Action::Allow,
            peers,
            ports,
            http: None,
        };
        let peers = resolved.as_ref().map(|r| {
            r.iter()
                .flat_map(|p| match p {
                    Resolved::Match(m) => vec![m.clone()],
                    Resolved::Pods(pods) => pod_matches(pods).collect(),
                })
                .collect()
        });
        compiled.push(rule(peers, ports.numbers));
        // Egress named ports: each destination pod says which port its name is.
        for port_name in &ports.egress_names {
            for (port, pods) in named_destinations(ctx, resolved.as_deref(), port_name) {
                compiled.push(rule(
                    Some(pod_matches(&pods).collect()),
                    Some(PortSet::new(vec![(port, port)])),
                ));
            }
        }
    }
    compiled
}

/// The destination pods of a rule that name a TCP port `name`, by that port's number.
fn named_destinations<'c>(
    ctx: &'c CompileContext,
    resolved: Option<&[Resolved<'c>]>,
    name: &str,
) -> BTreeMap<u16, Vec<&'c Pod>> {
    let all: Vec<&Pod> = match (resolved, ctx.cluster.as_deref()) {
        (Some(list), _) => list
            .iter()
            .flat_map(|r| match r {
                Resolved::Pods(pods) => pods.clone(),
                Resolved::Match(_) => Vec::new(),
            })
            .collect(),
        // No `to`: every pod is a destination.
        (None, Some(cluster)) => cluster.pods.iter().collect(),
        (None, None) => Vec::new(),
    };
    let mut by_port: BTreeMap<u16, Vec<&Pod>> = BTreeMap::new();
    for pod in all {
        if let Some(p) = pod.named_ports.get(name).filter(|p| p.protocol == "TCP") {
            by_port.entry(p.port).or_default().push(pod);
        }
    }
    by_port
}

/// Imports one NetworkPolicy (`namespace` is its `metadata.namespace`); returns (inbound rules,
/// outbound rules, whether it applies to this workload).
pub fn import(
    d: &mut Diagnostics<'_>,
    policy: &Arc<str>,
    namespace: Option<&str>,
    spec: &Spanned<model::Spec>,
    ctx: &CompileContext,
    out: &mut CompiledPolicy,
) -> (usize, usize, bool) {
    let s = &spec.value;
    // Each at its own value, so that the error names the field it is about.
    let unknown = |field: &str| {
        format!(
            "unknown field `{field}` in a NetworkPolicy spec (expected podSelector, policyTypes, ingress, egress)"
        )
    };
    if let Some(v) = &s.inbound {
        d.error(v, unknown("inbound"));
    }
    if let Some(v) = &s.outbound {
        d.error(v, unknown("outbound"));
    }
    if let Some(v) = &s.mtls {
        d.error(v, unknown("mtls"));
    }
    let namespace = namespace.or(ctx.workload_namespace.as_deref());
    let applies = applies(d, spec, namespace, ctx);
    let (ingress, egress) = policy_types(d, s);
    let mut counts = (0, 0);
    for (enabled, list, inbound) in [(ingress, &s.ingress, true), (egress, &s.egress, false)] {
        let compiled = rules(d, policy, namespace, list.as_ref(), inbound, ctx);
        if !(enabled && applies) {
            continue;
        }
        let (target, count) = if inbound {
            (&mut out.inbound, &mut counts.0)
        } else {
            (&mut out.outbound, &mut counts.1)
        };
        target.mention(None);
        *count = compiled.len();
        target.rules.extend(compiled);
    }
    (counts.0, counts.1, applies)
}
