//! Judges policy documents against guardrails: each broken rule is a [`Violation`] at the
//! place in the document that breaks it. Both kinds are first seen alike ([`Shape`]: which
//! directions a policy constrains, its allow rules and their peers), then each guardrail rule
//! reads the shape. Documents are taken as they compiled (run after `compile`): values that do
//! not parse are skipped here because compiling has refused them already.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::reach::{cidr_reaches_internet, host_reaches_internet};
use super::{Guardrail, Mode, PrefixLimits};
use crate::model::{self, Action, Document, MtlsMode, Spanned};
use crate::selector::selector_matches;
use crate::source::{PolicyError, SourceDoc};

/// One broken guardrail rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The guardrail.
    pub guardrail: Arc<str>,
    /// The rule (`forbidAllowAll`).
    pub rule: &'static str,
    /// Whether it refuses or warns.
    pub mode: Mode,
    /// Where, and what: `guardrail NAME: RULE: why`.
    pub error: PolicyError,
}

/// The namespace the documents are written to, as the cluster knows it.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Its name.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Whether a default-deny baseline other than these documents is in place there.
    pub baseline_elsewhere: bool,
}

/// Every violation of `guardrails` (those that judge `scope`'s namespace) by `docs`, which
/// are written together (one object, or one policy ConfigMap).
pub fn check<'g>(
    guardrails: impl IntoIterator<Item = &'g Guardrail>,
    docs: &[SourceDoc],
    scope: &Scope<'_>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let shapes: Vec<Shape<'_>> = docs.iter().map(Shape::of).collect();
    for g in guardrails {
        if !g.applies_to(scope.namespace, scope.labels) {
            continue;
        }
        let mut v = Judge { g, out: &mut out };
        for shape in &shapes {
            v.document(shape, scope);
        }
        if g.rules.require_default_deny && !scope.baseline_elsewhere {
            v.baseline(&shapes, scope.namespace);
        }
    }
    out
}

/// The violations of deleting `doc`, the namespace's last default-deny baseline unless
/// `scope.baseline_elsewhere`, under the guardrails that require one.
pub fn check_delete<'g>(
    guardrails: impl IntoIterator<Item = &'g Guardrail>,
    doc: &SourceDoc,
    scope: &Scope<'_>,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let shape = Shape::of(doc);
    if scope.baseline_elsewhere || !shape.is_baseline() {
        return out;
    }
    for g in guardrails {
        if g.rules.require_default_deny && g.applies_to(scope.namespace, scope.labels) {
            let why = format!(
                "{} {:?} is the last default-deny baseline of namespace {}: apply another before deleting it",
                shape.kind, shape.name, scope.namespace
            );
            Judge { g, out: &mut out }.flag(&shape, "requireDefaultDeny", shape.at, why);
        }
    }
    out
}

/// Whether a document is a default-deny baseline: it selects every pod of its namespace,
/// isolates them for ingress, and has no rule that lets every peer in on every port.
pub fn is_baseline(sd: &SourceDoc) -> bool {
    Shape::of(sd).is_baseline()
}

/// Which policies are default-deny baselines of their namespace (`metadata.namespace`, else
/// `default`), by kind and name.
#[derive(Debug, Default, Clone)]
pub struct Baselines(BTreeMap<String, std::collections::BTreeSet<(String, String)>>);

impl Baselines {
    /// The baselines among `docs`.
    pub fn of(docs: &[SourceDoc]) -> Self {
        let mut out = Self::default();
        for sd in docs.iter().filter(|sd| is_baseline(sd)) {
            let (ns, kind, name) = identify(sd);
            out.0
                .entry(ns.to_string())
                .or_default()
                .insert((kind.to_string(), name.to_string()));
        }
        out
    }

    /// Whether `namespace` has a baseline other than the policy `kind`/`name` (`None`: any).
    pub fn elsewhere(&self, namespace: &str, policy: Option<(&str, &str)>) -> bool {
        self.0.get(namespace).is_some_and(|b| {
            b.iter()
                .any(|(k, n)| Some((k.as_str(), n.as_str())) != policy)
        })
    }
}

/// A document's namespace, kind and name.
fn identify(sd: &SourceDoc) -> (&str, &str, &str) {
    let meta = &sd.doc.metadata.value;
    (
        meta.namespace.as_deref().unwrap_or("default"),
        sd.doc.kind.value.as_str(),
        meta.name.as_ref().map_or("", |n| n.value.as_str()),
    )
}

/// What the guardrails of a whole snapshot say of each policy already in it, as if each were
/// written now: `check --cluster`, for the policies stored before a guardrail came.
pub fn stored(
    guardrails: &[&Guardrail],
    docs: &[SourceDoc],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<Violation> {
    let none = BTreeMap::new();
    let baselines = Baselines::of(docs);
    let mut out = Vec::new();
    for sd in docs {
        let (namespace, kind, name) = identify(sd);
        let scope = Scope {
            namespace,
            labels: namespaces.get(namespace).unwrap_or(&none),
            baseline_elsewhere: baselines.elsewhere(namespace, Some((kind, name))),
        };
        out.extend(check(
            guardrails.iter().copied(),
            std::slice::from_ref(sd),
            &scope,
        ));
    }
    out
}

/// A line and column in the document's file.
type Loc = (u64, u64);

/// A peer as the guardrails read it.
#[derive(Debug)]
struct PeerView<'d> {
    at: Loc,
    cidr: Option<&'d Spanned<String>>,
    cidr_at: Loc,
    except: &'d [Spanned<String>],
    host: Option<&'d Spanned<String>>,
    /// Names pods or identities (so is inside the cluster).
    in_cluster: bool,
    /// `namespaceSelector: {}` without a pod selector: every pod of every namespace.
    every_pod: bool,
}

/// An allow rule as the guardrails read it.
#[derive(Debug)]
struct RuleView<'d> {
    at: Loc,
    label: String,
    ingress: bool,
    /// `None`: every peer.
    peers: Option<Vec<PeerView<'d>>>,
    any_port: bool,
}

/// What a document allows, for either kind.
#[derive(Debug)]
struct Shape<'d> {
    file: &'d Arc<str>,
    kind: &'d str,
    name: &'d str,
    /// The document's start (its metadata).
    at: Loc,
    /// Where it constrains ingress (`None`: it does not).
    ingress: Option<Loc>,
    /// Where `policyTypes` or `spec` says it does not.
    no_ingress_at: Loc,
    /// `default: allow`, per direction.
    ingress_default_allow: bool,
    defaults_allow: Vec<(Loc, bool)>,
    every_pod: bool,
    egress: bool,
    rules: Vec<RuleView<'d>>,
    /// AccessPolicy: its `mtls`, and where to point.
    mtls: Option<(Loc, bool)>,
}

fn loc<T>(sd: &SourceDoc, s: &Spanned<T>) -> Loc {
    (s.referenced.line() + sd.line_offset, s.referenced.column())
}

impl<'d> Shape<'d> {
    fn is_baseline(&self) -> bool {
        self.every_pod
            && self.ingress.is_some()
            && !self.ingress_default_allow
            && !self
                .rules
                .iter()
                .any(|r| r.ingress && r.peers.is_none() && r.any_port)
    }

    fn of(sd: &'d SourceDoc) -> Self {
        let doc: &Document = &sd.doc;
        let mut shape = Shape {
            file: &sd.file,
            kind: doc.kind.value.as_str(),
            name: doc
                .metadata
                .value
                .name
                .as_ref()
                .map_or("", |n| n.value.as_str()),
            at: loc(sd, &doc.metadata),
            ingress: None,
            no_ingress_at: loc(sd, &doc.spec),
            ingress_default_allow: false,
            defaults_allow: Vec::new(),
            every_pod: false,
            egress: false,
            rules: Vec::new(),
            mtls: None,
        };
        if shape.kind == "NetworkPolicy" {
            shape.network_policy(sd, &doc.spec.value);
        } else {
            shape.access_policy(sd, &doc.spec);
        }
        shape
    }

    fn network_policy(&mut self, sd: &'d SourceDoc, spec: &'d model::Spec) {
        let types = spec.policy_types.as_deref();
        let has = |t: &str| types.is_some_and(|ts| ts.iter().any(|x| x.value == t));
        let ingress = types.is_none() || has("Ingress");
        self.egress = has("Egress") || (types.is_none() && spec.egress.is_some());
        if let Some(first) = types.and_then(|t| t.first()) {
            self.no_ingress_at = loc(sd, first);
        }
        self.every_pod = spec
            .pod_selector
            .as_ref()
            .is_none_or(|s| s.value.is_empty());
        if ingress {
            self.ingress = Some(
                spec.ingress
                    .as_ref()
                    .map_or(self.no_ingress_at, |i| loc(sd, i)),
            );
            self.net_rules(sd, spec.ingress.as_ref(), true);
        }
        if self.egress {
            self.net_rules(sd, spec.egress.as_ref(), false);
        }
    }

    fn net_rules(
        &mut self,
        sd: &'d SourceDoc,
        rules: Option<&'d Spanned<Vec<Spanned<model::NetRule>>>>,
        ingress: bool,
    ) {
        let direction = if ingress { "ingress" } else { "egress" };
        for (i, r) in rules.into_iter().flat_map(|r| r.value.iter()).enumerate() {
            let peers = if ingress { &r.value.from } else { &r.value.to };
            let peers = peers
                .as_ref()
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(|p| net_peer(sd, p)).collect());
            self.rules.push(RuleView {
                at: loc(sd, r),
                label: format!("{direction} rule {}", i + 1),
                ingress,
                peers,
                any_port: r.value.ports.as_ref().is_none_or(Vec::is_empty),
            });
        }
    }

    fn access_policy(&mut self, sd: &'d SourceDoc, spec: &'d Spanned<model::Spec>) {
        let s = &spec.value;
        self.every_pod = true;
        self.mtls = Some(match &s.mtls {
            Some(m) => (loc(sd, m), m.value == MtlsMode::Strict),
            None => (loc(sd, spec), false),
        });
        for (dir, ingress) in [(&s.inbound, true), (&s.outbound, false)] {
            let Some(dir) = dir else { continue };
            let allow = dir
                .value
                .default
                .as_ref()
                .filter(|a| a.value == Action::Allow);
            if let Some(a) = allow {
                self.defaults_allow.push((loc(sd, a), ingress));
            }
            if ingress {
                self.ingress = Some(loc(sd, dir));
                self.ingress_default_allow = allow.is_some();
            } else {
                self.egress = true;
            }
            self.access_rules(sd, &dir.value.rules, ingress);
        }
    }

    fn access_rules(
        &mut self,
        sd: &'d SourceDoc,
        rules: &'d [Spanned<model::Rule>],
        ingress: bool,
    ) {
        for r in rules
            .iter()
            .filter(|r| r.value.action.value == Action::Allow)
        {
            let peers = if ingress { &r.value.from } else { &r.value.to };
            self.rules.push(RuleView {
                at: loc(sd, r),
                label: format!("rule {:?}", r.value.name.value),
                ingress,
                peers: peers
                    .as_ref()
                    .map(|p| p.value.iter().map(|p| access_peer(sd, p)).collect()),
                any_port: r.value.ports.as_ref().is_none_or(|p| p.value.is_empty()),
            });
        }
    }
}

fn net_peer<'d>(sd: &SourceDoc, p: &'d Spanned<model::NetPeer>) -> PeerView<'d> {
    let v = &p.value;
    let every_pod = v
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.value.is_empty())
        && v.pod_selector.as_ref().is_none_or(|s| s.value.is_empty());
    PeerView {
        at: loc(sd, p),
        cidr: v.ip_block.as_ref().map(|b| &b.value.cidr),
        cidr_at: v
            .ip_block
            .as_ref()
            .map_or((0, 0), |b| loc(sd, &b.value.cidr)),
        except: v
            .ip_block
            .as_ref()
            .and_then(|b| b.value.except.as_deref())
            .unwrap_or_default(),
        host: None,
        in_cluster: v.namespace_selector.is_some() || v.pod_selector.is_some(),
        every_pod,
    }
}

fn access_peer<'d>(sd: &SourceDoc, p: &'d Spanned<model::Peer>) -> PeerView<'d> {
    let v = &p.value;
    let every_pod = v
        .namespace_selector
        .as_ref()
        .is_some_and(|s| s.value.is_empty())
        && v.pod_selector.as_ref().is_none_or(|s| s.value.is_empty())
        && v.identity.is_none()
        && v.namespace.is_none();
    PeerView {
        at: loc(sd, p),
        cidr: v.cidr.as_ref(),
        cidr_at: v.cidr.as_ref().map_or((0, 0), |c| loc(sd, c)),
        except: v.except.as_deref().unwrap_or_default(),
        host: v.host.as_ref(),
        in_cluster: v.namespace_selector.is_some()
            || v.pod_selector.is_some()
            || v.identity.is_some()
            || v.namespace.is_some(),
        every_pod,
    }
}

/// A CIDR as written (a bare address is one host); `None` for what compiling refused.
fn net(s: &Spanned<String>) -> Option<IpNet> {
    let t = s.value.trim();
    t.parse()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

impl PeerView<'_> {
    /// Whether this peer is everyone: every address, or every pod.
    fn everyone(&self) -> Option<String> {
        if self.every_pod {
            return Some("`namespaceSelector: {}` is every pod of every namespace".into());
        }
        let cidr = self.cidr.and_then(net)?;
        (cidr.prefix_len() == 0
            && self.except.is_empty()
            && !self.in_cluster
            && self.host.is_none())
        .then(|| format!("peer {cidr} is every address"))
    }

    fn reaches_internet(&self) -> bool {
        if self.in_cluster {
            return false;
        }
        let cidr = self.cidr.and_then(net).is_none_or(|n| {
            let except: Vec<IpNet> = self.except.iter().filter_map(net).collect();
            cidr_reaches_internet(&n, &except)
        });
        let host = self.host.is_none_or(|h| host_reaches_internet(&h.value));
        cidr && host
    }
}

/// Records the violations of one guardrail.
struct Judge<'a> {
    g: &'a Guardrail,
    out: &'a mut Vec<Violation>,
}

impl Judge<'_> {
    fn flag(&mut self, shape: &Shape<'_>, rule: &'static str, at: Loc, why: String) {
        self.out.push(Violation {
            guardrail: self.g.name.clone(),
            rule,
            mode: self.g.mode,
            error: PolicyError {
                file: shape.file.clone(),
                line: at.0,
                column: at.1,
                message: match self.g.mode {
                    Mode::Enforce => format!("guardrail {}: {rule}: {why}", self.g.name),
                    Mode::Audit => format!("guardrail {} (audit): {rule}: {why}", self.g.name),
                },
            },
        });
    }

    fn document(&mut self, shape: &Shape<'_>, scope: &Scope<'_>) {
        let rules = &self.g.rules;
        if rules.require_ingress && shape.ingress.is_none() {
            self.require_ingress(shape);
        }
        if rules.forbid_allow_all {
            self.forbid_allow_all(shape);
        }
        if let Some(limits) = rules.min_prefix_length {
            self.min_prefix_length(shape, limits);
        }
        if let Some(sel) = &rules.internet_egress
            && !selector_matches(sel, scope.labels)
        {
            self.internet_egress(shape, scope.namespace);
        }
        if rules.require_mtls_strict
            && let Some((at, false)) = shape.mtls
        {
            let why = format!("AccessPolicy {:?} does not set `mtls: strict`", shape.name);
            self.flag(shape, "requireMtlsStrict", at, why);
        }
    }

    fn require_ingress(&mut self, shape: &Shape<'_>) {
        let what = match shape.kind {
            "NetworkPolicy" => "its policyTypes leave out Ingress",
            _ => "it has no `inbound`",
        };
        let why = format!(
            "{} {:?} does not restrict ingress: {what} (every policy must say who may connect in)",
            shape.kind, shape.name
        );
        self.flag(shape, "requireIngress", shape.no_ingress_at, why);
    }

    fn forbid_allow_all(&mut self, shape: &Shape<'_>) {
        for &(at, ingress) in &shape.defaults_allow {
            let dir = if ingress { "inbound" } else { "outbound" };
            let why = format!("`default: allow` lets every {dir} peer through");
            self.flag(shape, "forbidAllowAll", at, why);
        }
        for r in &shape.rules {
            let Some(peers) = &r.peers else {
                let side = if r.ingress { "from" } else { "to" };
                let why = format!("{} allows every peer (it names no `{side}`)", r.label);
                self.flag(shape, "forbidAllowAll", r.at, why);
                continue;
            };
            for p in peers {
                if let Some(why) = p.everyone() {
                    let why = format!("{} allows everyone: {why}", r.label);
                    self.flag(shape, "forbidAllowAll", p.at, why);
                }
            }
        }
    }

    fn min_prefix_length(&mut self, shape: &Shape<'_>, limits: PrefixLimits) {
        let cidrs = shape.rules.iter().flat_map(|r| r.peers.iter().flatten());
        for p in cidrs {
            let Some(n) = p.cidr.and_then(net) else {
                continue;
            };
            let limit = match n {
                IpNet::V4(_) => limits.ipv4,
                IpNet::V6(_) => limits.ipv6,
            };
            if let Some(limit) = limit.filter(|l| n.prefix_len() < *l) {
                let why = format!("CIDR {n} is wider than /{limit}");
                self.flag(shape, "minPrefixLength", p.cidr_at, why);
            }
        }
    }

    fn internet_egress(&mut self, shape: &Shape<'_>, namespace: &str) {
        if !shape.egress {
            return;
        }
        let why = |what: String| {
            format!(
                "{what} reaches the internet, which namespace {namespace} may not allow (internetEgress)"
            )
        };
        for &(at, ingress) in &shape.defaults_allow {
            if !ingress {
                self.flag(
                    shape,
                    "internetEgress",
                    at,
                    why("outbound `default: allow`".into()),
                );
            }
        }
        for r in shape.rules.iter().filter(|r| !r.ingress) {
            match &r.peers {
                None => self.flag(
                    shape,
                    "internetEgress",
                    r.at,
                    why(format!("{} (no `to`)", r.label)),
                ),
                Some(peers) => {
                    for p in peers.iter().filter(|p| p.reaches_internet()) {
                        self.flag(
                            shape,
                            "internetEgress",
                            p.at,
                            why(format!("{} peer", r.label)),
                        );
                    }
                }
            }
        }
    }

    fn baseline(&mut self, shapes: &[Shape<'_>], namespace: &str) {
        let Some(first) = shapes.first() else { return };
        if shapes.iter().any(Shape::is_baseline) {
            return;
        }
        let why = format!(
            "namespace {namespace} has no default-deny baseline and this policy is not one: apply one first (a NetworkPolicy with `podSelector: {{}}` and `policyTypes: [Ingress]`, or an AccessPolicy with `inbound: {{default: deny}}`)"
        );
        self.flag(first, "requireDefaultDeny", first.at, why);
    }
}
