//! Guardrails: what a platform team requires of every policy its namespace owners write
//! (`PolicyGuardrail`, a cluster-scoped `portcullis.dev/v1alpha1` object; `docs/policy.md`,
//! "Guardrails"). This module owns the document shape and its validation — a guardrail that
//! does not read whole is an error at its `file:line:col`, never a guardrail half on — and the
//! [`Guardrail`] it becomes. [`check`] judges policy documents against guardrails; [`reach`]
//! says which addresses are the internet. Pure: text in, model out.

pub mod check;
pub mod reach;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::cluster::NAMESPACE_NAME_LABEL;
use crate::diagnostics::{Diagnostics, Warning};
use crate::load::{clean_message, options as yaml_options};
use crate::model::{LabelSelector, Metadata, Spanned};
use crate::netpol::peers::validate_selector;
use crate::selector::selector_matches;
use crate::source::PolicyError;

/// The kind, as written.
pub const KIND: &str = "PolicyGuardrail";
/// The API version, as written.
pub const API_VERSION: &str = "portcullis.dev/v1alpha1";

/// Whether a guardrail refuses what breaks it, or only warns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A policy that breaks it is refused at admission (the default).
    #[default]
    Enforce,
    /// A policy that breaks it is admitted with a warning naming the violation: for rolling a
    /// guardrail out before enforcing it.
    Audit,
}

/// `PolicyGuardrail` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: Spanned<Metadata>,
    spec: Spanned<SpecDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDoc {
    mode: Option<Spanned<Mode>>,
    namespace_selector: Option<Spanned<LabelSelector>>,
    rules: Spanned<RulesDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RulesDoc {
    require_ingress: Option<bool>,
    forbid_allow_all: Option<bool>,
    require_default_deny: Option<bool>,
    min_prefix_length: Option<Spanned<PrefixDoc>>,
    internet_egress: Option<Spanned<InternetDoc>>,
    require_mtls_strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixDoc {
    ipv4: Option<Spanned<i64>>,
    ipv6: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InternetDoc {
    namespace_selector: Spanned<LabelSelector>,
}

/// The narrowest CIDRs a guardrail allows peers to be written with: no range wider than
/// `/ipv4` (IPv4) or `/ipv6` (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefixLimits {
    /// The shortest IPv4 prefix length allowed.
    pub ipv4: Option<u8>,
    /// The shortest IPv6 prefix length allowed.
    pub ipv6: Option<u8>,
}

/// What a guardrail requires; each rule is off unless written.
#[derive(Debug, Default)]
pub struct Rules {
    /// Every policy says who may connect in: a NetworkPolicy's `policyTypes` has `Ingress`, an
    /// AccessPolicy has `inbound`.
    pub require_ingress: bool,
    /// No `default: allow`, no allow rule without peers, no peer that is everyone
    /// (`0.0.0.0/0`, `::/0`, every namespace).
    pub forbid_allow_all: bool,
    /// The namespace keeps a default-deny baseline: a policy that isolates every pod for
    /// ingress and lets no peer in on every port.
    pub require_default_deny: bool,
    /// No CIDR wider than these.
    pub min_prefix_length: Option<PrefixLimits>,
    /// Only the namespaces this selects may allow egress to the internet.
    pub internet_egress: Option<LabelSelector>,
    /// Every AccessPolicy sets `mtls: strict`.
    pub require_mtls_strict: bool,
}

/// One guardrail, validated.
#[derive(Debug)]
pub struct Guardrail {
    /// Its name.
    pub name: Arc<str>,
    /// Enforce or audit.
    pub mode: Mode,
    /// The namespaces whose policies it judges; `None`: every namespace.
    pub namespace_selector: Option<LabelSelector>,
    /// What it requires.
    pub rules: Rules,
}

impl Guardrail {
    /// Whether it judges the policies of namespace `name` labelled `labels` (the namespace's
    /// own `kubernetes.io/metadata.name` label is implied, as the API server sets it).
    pub fn applies_to(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let Some(sel) = &self.namespace_selector else {
            return true;
        };
        if labels.contains_key(NAMESPACE_NAME_LABEL) {
            return selector_matches(sel, labels);
        }
        let mut labels = labels.clone();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        selector_matches(sel, &labels)
    }
}

/// Reads one `PolicyGuardrail` document of `file` (after `offset` lines): the guardrail, or
/// every error, located.
pub fn parse(file: &Arc<str>, offset: u64, text: &str) -> Result<Guardrail, Vec<PolicyError>> {
    let doc: Document = serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        vec![PolicyError {
            file: file.clone(),
            line: line + offset,
            column,
            message: clean_message(&e.to_string()),
        }]
    })?;
    let (mut errors, mut warnings, mut budget) = (Vec::new(), Vec::<Warning>::new(), 0);
    let mut d = Diagnostics::new(
        (file.clone(), offset),
        &mut errors,
        &mut warnings,
        &mut budget,
    );
    let guardrail = validate(&mut d, doc);
    match guardrail {
        Some(g) if errors.is_empty() => Ok(g),
        _ => Err(errors),
    }
}

/// Checks a parsed document; `None` (after reporting) when it is not a guardrail.
fn validate(d: &mut Diagnostics<'_>, doc: Document) -> Option<Guardrail> {
    if doc.api_version.value != API_VERSION {
        d.error(
            &doc.api_version,
            format!(
                "unsupported apiVersion {:?} for {KIND} (expected {API_VERSION})",
                doc.api_version.value
            ),
        );
    }
    if doc.kind.value != KIND {
        d.error(&doc.kind, format!("expected kind {KIND}"));
    }
    let name = match &doc.metadata.value.name {
        Some(n) if !n.value.trim().is_empty() => n.value.clone(),
        _ => {
            d.error(&doc.metadata, "metadata.name is required");
            String::new()
        }
    };
    let spec = doc.spec.value;
    if let Some(sel) = &spec.namespace_selector {
        validate_selector(d, sel);
    }
    let rules = rules(d, spec.rules);
    Some(Guardrail {
        name: name.into(),
        mode: spec.mode.map(|m| m.value).unwrap_or_default(),
        namespace_selector: spec.namespace_selector.map(|s| s.value),
        rules: rules?,
    })
}

/// The rules, each checked; at least one must be on.
fn rules(d: &mut Diagnostics<'_>, doc: Spanned<RulesDoc>) -> Option<Rules> {
    let r = &doc.value;
    let flags = [
        r.require_ingress,
        r.forbid_allow_all,
        r.require_default_deny,
        r.require_mtls_strict,
    ];
    if !flags.contains(&Some(true)) && r.min_prefix_length.is_none() && r.internet_egress.is_none()
    {
        d.error(
            &doc,
            "no rule is on (expected one of requireIngress, forbidAllowAll, requireDefaultDeny, minPrefixLength, internetEgress, requireMtlsStrict)",
        );
        return None;
    }
    let r = doc.value;
    let min_prefix_length = r.min_prefix_length.map(|p| PrefixLimits {
        ipv4: prefix(d, p.value.ipv4.as_ref(), 32),
        ipv6: prefix(d, p.value.ipv6.as_ref(), 128),
    });
    if let Some(i) = &r.internet_egress {
        validate_selector(d, &i.value.namespace_selector);
    }
    Some(Rules {
        require_ingress: r.require_ingress.unwrap_or(false),
        forbid_allow_all: r.forbid_allow_all.unwrap_or(false),
        require_default_deny: r.require_default_deny.unwrap_or(false),
        min_prefix_length,
        internet_egress: r.internet_egress.map(|i| i.value.namespace_selector.value),
        require_mtls_strict: r.require_mtls_strict.unwrap_or(false),
    })
}

/// A prefix length of at most `max`.
fn prefix(d: &mut Diagnostics<'_>, v: Option<&Spanned<i64>>, max: u8) -> Option<u8> {
    let v = v?;
    match u8::try_from(v.value) {
        Ok(n) if n <= max => Some(n),
        _ => {
            d.error(v, format!("prefix length {} is not in 0..={max}", v.value));
            None
        }
    }
}
