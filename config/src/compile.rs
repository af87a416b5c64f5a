//! Validation and compilation of parsed documents into an immutable [`CompiledPolicy`].
//!
//! Every document is checked completely and every error is collected with its location; one
//! error anywhere means no policy at all (nothing is half-loaded). Defaults are merged as
//! POLICY.md says: an unmentioned direction passes everything, a mentioned one without `default`
//! is isolated, and `deny` wins when documents disagree.

use std::collections::HashSet;
use std::sync::Arc;

pub use crate::compiled::{CompileContext, CompiledPolicy, DirectionRules, DocSummary};
use crate::diagnostics::Diagnostics;
pub use crate::diagnostics::{Warning, cidr_match, parse_cidr};
use crate::matchers::{
    HeaderValue, HostPattern, IdentityPattern, POLICY_REGEX_BUDGET, PathSet, PortSet, anchored,
    anchored_set,
};
use crate::model::{self, PortValue, Spanned};
use crate::netpol;
use crate::netpol::peers::{Resolved, Scope, pod_matches};
use crate::normalize;
pub use crate::rule::{CompiledRule, HttpRule, JwtRule, PeerMatch};
use crate::source::{PolicyError, SourceDoc};

fn port_range(d: &mut Diagnostics<'_>, p: &Spanned<PortValue>) -> Option<(u16, u16)> {
    let num = |n: i64| u16::try_from(n).ok().filter(|n| *n > 0);
    let parsed = match &p.value {
        PortValue::Number(n) => num(*n).map(|n| (n, n)),
        PortValue::Text(t) => match t.split_once('-') {
            Some((a, b)) => match (
                a.trim().parse().ok().and_then(num),
                b.trim().parse().ok().and_then(num),
            ) {
                (Some(a), Some(b)) if a <= b => Some((a, b)),
                _ => None,
            },
            None => t.trim().parse().ok().and_then(num).map(|n| (n, n)),
        },
    };
    if parsed.is_none() {
        d.error(
            p,
            "invalid port (expected 1-65535 or a \"first-last\" range)",
        );
    }
    parsed
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A peer given by selectors: alone in its entry (the other fields are ANDed conditions on
/// one connection; selectors stand for a set of pods), resolved as in a NetworkPolicy.
fn selector_peer(
    d: &mut Diagnostics<'_>,
    p: &Spanned<model::Peer>,
    scope: Scope<'_>,
) -> Option<Vec<PeerMatch>> {
    let peer = &p.value;
    let others = peer.cidr.is_some()
        || peer.except.is_some()
        || peer.identity.is_some()
        || peer.namespace.is_some()
        || peer.host.is_some();
    if others {
        d.error(p, "podSelector and namespaceSelector stand alone in a peer (list cidr, identity, namespace or host as another peer)");
        return None;
    }
    let selectors = (peer.namespace_selector.as_ref(), peer.pod_selector.as_ref());
    Some(
        match netpol::peers::selector_peer(d, p, selectors, scope)? {
            Resolved::Match(m) => vec![m],
            Resolved::Pods(pods) => pod_matches(&pods).collect(),
        },
    )
}

fn compile_peer(
    d: &mut Diagnostics<'_>,
    p: &Spanned<model::Peer>,
    scope: Scope<'_>,
) -> Option<Vec<PeerMatch>> {
    let peer = &p.value;
    if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
        return selector_peer(d, p, scope);
    }
    let inbound = scope.inbound;
    let mut out = PeerMatch::default();
    let mut ok = true;
    match (&peer.cidr, &peer.except) {
        (Some(c), e) => {
            out.cidr = cidr_match(d, c, e.as_ref());
            ok &= out.cidr.is_some();
        }
        (None, Some(e)) if !e.is_empty() => {
            d.error(&e[0], "except needs a cidr to lie inside");
            ok = false;
        }
        (None, _) => {}
    }
    if let Some(id) = &peer.identity {
        out.identity = IdentityPattern::parse(&id.value);
        if out.identity.is_none() {
            d.error(id, format!("invalid identity {:?} (expected spiffe://<trust-domain>/…, a prefix ending in /*, or *)", id.value));
            ok = false;
        }
    }
    if let Some(ns) = &peer.namespace {
        if is_dns_label(&ns.value) {
            out.namespace = Some(ns.value.clone());
        } else {
            d.error(
                ns,
                format!("invalid namespace {:?} (expected a DNS label)", ns.value),
            );
            ok = false;
        }
    }
    if let Some(h) = &peer.host {
        if inbound {
            d.error(h, "host is only for outbound peers (`to`)");
            ok = false;
        } else {
            out.host = HostPattern::parse(&h.value);
            if out.host.is_none() {
                d.error(
                    h,
                    format!("invalid host {:?} (expected a name or *.suffix)", h.value),
                );
                ok = false;
            }
        }
    }
    ok.then_some(vec![out])
}

fn compile_paths(d: &mut Diagnostics<'_>, paths: &[Spanned<String>]) -> Option<PathSet> {
    let mut set = PathSet::default();
    let mut regexes = Vec::new();
    let mut ok = true;
    for p in paths {
        let text = p.value.as_str();
        if !text.starts_with('~') && text.contains('?') {
            d.error(
                p,
                format!(
                    "path {text:?} holds a `?`: paths never include the query, so it never matches"
                ),
            );
            ok = false;
            continue;
        }
        if text == "*" {
            set.any = true;
        } else if let Some(re) = text.strip_prefix('~') {
            match anchored(re) {
                // Kept twice: in the entry's set and in the direction's path index.
                Ok(_) if !d.charge_regex(p, re, 2) => ok = false,
                Ok(_) => regexes.push(re.to_string()),
                Err(e) => {
                    d.error(
                        p,
                        format!(
                            "invalid regex {re:?}: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    );
                    ok = false;
                }
            }
        } else if let Some(base) = text.strip_suffix("/*") {
            match normalize::normalize_path(if base.is_empty() { "/" } else { base }) {
                Ok(n) if n == base || (base.is_empty() && n == "/") => {
                    set.prefixes.push(base.to_string())
                }
                _ => {
                    d.error(p, format!("path prefix {text:?} is not in normalized form"));
                    ok = false;
                }
            }
        } else if text.contains('*') {
            d.error(p, format!("invalid path {text:?}: `*` only as the whole pattern or a final `/*`; use ~REGEX otherwise"));
            ok = false;
        } else {
            match normalize::normalize_path(text) {
                Ok(n) if n == text => {
                    set.exact.insert(n);
                }
                Ok(n) => {
                    d.error(p, format!("path {text:?} is not in normalized form (requests are matched as {n:?})"));
                    ok = false;
                }
                Err(e) => {
                    d.error(p, format!("invalid path {text:?}: {e}"));
                    ok = false;
                }
            }
        }
    }
    if let (false, Some(first)) = (
        regexes.is_empty(),
        paths.iter().find(|p| p.value.starts_with('~')),
    ) {
        // Each regex compiled alone; together they must too, or the entry would never match —
        // a deny rule that silently stops denying.
        match anchored_set(&regexes) {
            Ok(re) => set.regex = Some(re),
            Err(e) => {
                d.error(
                    first,
                    format!(
                        "the {} regexes of this entry do not compile together: {}",
                        regexes.len(),
                        e.to_string().lines().last().unwrap_or("")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(set)
}

fn compile_http(d: &mut Diagnostics<'_>, h: &Spanned<model::HttpMatch>) -> Option<HttpRule> {
    let m = &h.value;
    let mut out = HttpRule::default();
    let mut ok = true;
    for (field, empty) in [
        ("methods", m.methods.as_ref().is_some_and(Vec::is_empty)),
        ("paths", m.paths.as_ref().is_some_and(Vec::is_empty)),
        ("hosts", m.hosts.as_ref().is_some_and(Vec::is_empty)),
    ] {
        if empty {
            d.error(h, format!("`{field}: []` matches no request, so this entry never applies (omit `{field}` for any)"));
            ok = false;
        }
    }
    if let Some(methods) = &m.methods
        && !methods.iter().any(|x| x.value == "*")
    {
        for x in methods {
            if is_token(&x.value) && x.value.bytes().any(|b| b.is_ascii_lowercase()) {
                d.warn(
                    x,
                    format!(
                        "method {:?} is matched case-sensitively: requests that say {:?} do not match",
                        x.value,
                        x.value.to_ascii_uppercase()
                    ),
                );
            }
            if !is_token(&x.value) {
                d.error(
                    x,
                    format!(
                        "invalid method {:?} (expected an HTTP token such as GET)",
                        x.value
                    ),
                );
                ok = false;
            }
        }
        out.methods = Some(methods.iter().map(|x| x.value.clone()).collect());
    }
    if let Some(paths) = &m.paths {
        out.paths = compile_paths(d, paths);
        ok &= out.paths.is_some();
    }
    if let Some(hosts) = &m.hosts {
        let mut list = Vec::new();
        for x in hosts {
            match HostPattern::parse(&x.value) {
                Some(p) => list.push(p),
                None => {
                    d.error(
                        x,
                        format!("invalid host {:?} (expected a name or *.suffix)", x.value),
                    );
                    ok = false;
                }
            }
        }
        out.hosts = Some(list);
    }
    if let Some(headers) = &m.headers {
        for (name, value) in &headers.value {
            if !is_token(name) {
                d.error(headers, format!("invalid header name {name:?}"));
                ok = false;
                continue;
            }
            let v = match value.value.as_str() {
                "*" => HeaderValue::Present,
                s => match s.strip_prefix('~') {
                    Some(re) => match anchored(re) {
                        Ok(_) if !d.charge_regex(value, re, 1) => {
                            ok = false;
                            continue;
                        }
                        Ok(r) => HeaderValue::Regex(r),
                        Err(_) => {
                            d.error(value, format!("invalid regex {re:?}"));
                            ok = false;
                            continue;
                        }
                    },
                    None => HeaderValue::Exact(s.to_string()),
                },
            };
            out.headers.push((name.to_ascii_lowercase(), v));
        }
    }
    if let Some(j) = &m.jwt {
        let j = &j.value;
        out.jwt = Some(JwtRule {
            issuer: j.issuer.clone(),
            subject: j.subject.clone(),
            audiences: j.audiences.clone().unwrap_or_default(),
            claims: j.claims.clone().unwrap_or_default().into_iter().collect(),
        });
    }
    ok.then_some(out)
}

fn compile_rule(
    d: &mut Diagnostics<'_>,
    policy: &Arc<str>,
    r: &Spanned<model::Rule>,
    scope: Scope<'_>,
) -> Option<CompiledRule> {
    let inbound = scope.inbound;
    let rule = &r.value;
    let mut ok = true;
    let name = rule.name.value.trim();
    if name.is_empty() || name.contains(char::is_whitespace) || name == "default" {
        d.error(
            &rule.name,
            format!(
                "invalid rule name {:?} (non-empty, no spaces, not \"default\")",
                rule.name.value
            ),
        );
        ok = false;
    }
    let (peers_field, wrong) = if inbound {
        (&rule.from, &rule.to)
    } else {
        (&rule.to, &rule.from)
    };
    if let Some(w) = wrong {
        d.error(
            w,
            if inbound {
                "inbound rules name peers with `from`, not `to`"
            } else {
                "outbound rules name peers with `to`, not `from`"
            },
        );
        ok = false;
    }
    if let Some(list) = peers_field.as_ref().filter(|l| l.value.is_empty()) {
        let (field, any) = if inbound {
            ("from", "from any peer")
        } else {
            ("to", "to any peer")
        };
        d.error(
            list,
            format!("`{field}: []` matches no peer, so this rule never applies (omit `{field}` for a rule {any})"),
        );
        ok = false;
    }
    if let Some(list) = rule.ports.as_ref().filter(|l| l.value.is_empty()) {
        d.error(
            list,
            "`ports: []` matches no port, so this rule never applies (omit `ports` for any port)",
        );
        ok = false;
    }
    let peers = peers_field.as_ref().map(|list| {
        list.value
            .iter()
            .filter_map(|p| {
                let c = compile_peer(d, p, scope);
                ok &= c.is_some();
                c
            })
            .flatten()
            .collect::<Vec<_>>()
    });
    let ports = rule.ports.as_ref().map(|list| {
        PortSet::new(
            list.value
                .iter()
                .filter_map(|p| {
                    let c = port_range(d, p);
                    ok &= c.is_some();
                    c
                })
                .collect(),
        )
    });
    let http = match &rule.http {
        Some(list) if list.value.is_empty() => {
            d.error(
                list,
                "http must not be empty (omit it for a connection-level rule)",
            );
            ok = false;
            None
        }
        Some(list) => Some(
            list.value
                .iter()
                .filter_map(|h| {
                    let c = compile_http(d, h);
                    ok &= c.is_some();
                    c
                })
                .collect(),
        ),
        None => None,
    };
    ok.then(|| CompiledRule {
        policy: policy.clone(),
        name: name.into(),
        action: rule.action.value,
        peers,
        ports,
        http,
    })
}

fn access_policy(
    d: &mut Diagnostics<'_>,
    (policy, namespace): (&Arc<str>, Option<&str>),
    spec: &Spanned<model::Spec>,
    ctx: &CompileContext,
    out: &mut CompiledPolicy,
) -> (usize, usize) {
    let s = &spec.value;
    for (field, present) in [
        ("podSelector", s.pod_selector.is_some()),
        ("policyTypes", s.policy_types.is_some()),
        ("ingress", s.ingress.is_some()),
        ("egress", s.egress.is_some()),
    ] {
        if present {
            d.error(
                spec,
                format!(
                    "unknown field `{field}` in an AccessPolicy spec (expected inbound, outbound, mtls)"
                ),
            );
        }
    }
    if s.mtls.as_ref().map(|m| m.value) == Some(model::MtlsMode::Strict) {
        out.inbound
            .mtls_strict
            .get_or_insert_with(|| policy.clone());
    }
    let mut names = HashSet::new();
    let mut counts = (0, 0);
    for (dir, inbound) in [(&s.inbound, true), (&s.outbound, false)] {
        let Some(dir) = dir else { continue };
        let target = if inbound {
            &mut out.inbound
        } else {
            &mut out.outbound
        };
        target.mention(dir.value.default.as_ref().map(|x| x.value));
        for r in &dir.value.rules {
            if !names.insert(r.value.name.value.clone()) {
                d.error(
                    &r.value.name,
                    format!(
                        "duplicate rule name {:?} in policy {policy}",
                        r.value.name.value
                    ),
                );
                continue;
            }
            let scope = Scope {
                own_namespace: namespace.or(ctx.workload_namespace.as_deref()),
                inbound,
                cluster: ctx.cluster.as_deref(),
            };
            if let Some(c) = compile_rule(d, policy, r, scope) {
                target.rules.push(c);
                if inbound {
                    counts.0 += 1
                } else {
                    counts.1 += 1
                }
            }
        }
    }
    (counts.0, counts.1)
}

/// Compiles parsed documents. All errors of all documents are returned together.
pub fn compile(
    docs: &[SourceDoc],
    ctx: &CompileContext,
) -> Result<(CompiledPolicy, Vec<Warning>), Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut out = CompiledPolicy::default();
    let mut policy_names = HashSet::new();
    let mut regex_budget = POLICY_REGEX_BUDGET;
    for sd in docs {
        let mut d = Diagnostics::new(
            (sd.file.clone(), sd.line_offset),
            &mut errors,
            &mut warnings,
            &mut regex_budget,
        );
        let doc = &sd.doc;
        let kind = doc.kind.value.as_str();
        let api = doc.api_version.value.as_str();
        let name = match &doc.metadata.value.name {
            Some(n) if !n.value.trim().is_empty() => n.value.clone(),
            _ => {
                d.error(&doc.metadata, "metadata.name is required");
                continue;
            }
        };
        let policy: Arc<str> = name.as_str().into();
        if !policy_names.insert((kind.to_string(), name.clone())) {
            d.error(&doc.metadata, format!("duplicate {kind} named {name:?}"));
            continue;
        }
        let (inbound_rules, outbound_rules, applies) = match (api, kind) {
            ("portcullis.dev/v1alpha1", "AccessPolicy") => {
                let namespace = doc.metadata.value.namespace.as_deref();
                let (i, o) = access_policy(&mut d, (&policy, namespace), &doc.spec, ctx, &mut out);
                (i, o, true)
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => netpol::import(
                &mut d,
                &policy,
                doc.metadata.value.namespace.as_deref(),
                &doc.spec,
                ctx,
                &mut out,
            ),
            (_, "AccessPolicy") | (_, "NetworkPolicy") => {
                d.error(&doc.api_version, format!("unsupported apiVersion {api:?} for {kind} (expected portcullis.dev/v1alpha1 or networking.k8s.io/v1)"));
                continue;
            }
            _ => {
                d.error(
                    &doc.kind,
                    format!("unsupported kind {kind:?} (expected AccessPolicy or NetworkPolicy)"),
                );
                continue;
            }
        };
        out.documents.push(DocSummary {
            file: sd.file.clone(),
            kind: kind.to_string(),
            name,
            inbound_rules,
            outbound_rules,
            applies,
        });
    }
    if errors.is_empty() {
        out.inbound.reindex();
        out.outbound.reindex();
        Ok((out, warnings))
    } else {
        Err(errors)
    }
}
