//! The decision engine: pure functions from a compiled policy and what is known about a
//! connection (and then each request on it) to a verdict, the deciding policy and rule, and a
//! reason; optionally with a step-by-step trace for `explain`.
//!
//! Phase 1 (connection opens: peer, port, identity, SNI): a matching connection-level `deny`
//! closes it; if a rule that needs HTTP could still match and deny, or only HTTP rules could
//! allow, the connection must be read as HTTP ([`ConnDecision::NeedHttp`]). Phase 2 judges every
//! request with all rules. If a connection that needed HTTP is not HTTP, HTTP `deny` rules count
//! as matching and HTTP `allow` rules never allow (fail closed).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use crate::compiled::{CompiledPolicy, DirectionRules};
use crate::index::RuleId;
use crate::matchers::{spiffe_namespace, spiffe_trust_domain};
use crate::model::Action;
use crate::rule::{CompiledRule, HttpRule, PeerMatch};

/// Which side of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Arriving.
    Inbound,
    /// Leaving.
    Outbound,
}

/// The outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
}

impl Verdict {
    /// `allow` / `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl From<Action> for Verdict {
    fn from(a: Action) -> Self {
        match a {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
        }
    }
}

/// What is known when a connection opens.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// Which side.
    pub direction: Direction,
    /// Inbound: the source IP; outbound: the original destination IP.
    pub peer: IpAddr,
    /// The original destination port.
    pub port: u16,
    /// The peer's authenticated identity (mTLS), if any.
    pub identity: Option<&'a str>,
    /// The TLS SNI, if the connection opened with a ClientHello.
    pub sni: Option<&'a str>,
    /// This workload's own SPIFFE trust domain, when it has an identity: `identity: "*"` and
    /// `namespace` matches then only match peers of it (a rule naming a `spiffe://` ID or
    /// prefix names its trust domain itself).
    pub trust_domain: Option<&'a str>,
}

/// Validated JWT claims of a request.
#[derive(Debug, Clone, Default)]
pub struct JwtClaims {
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `aud`.
    pub audiences: Vec<String>,
    /// Other claims: a string value, or the string members of a list.
    pub claims: Vec<(String, Vec<String>)>,
}

/// Header access for the engine: names are looked up lower-case; repeated headers are joined
/// with `,`.
pub trait Headers {
    /// The (joined) value of a header.
    fn get(&self, lower_name: &str) -> Option<Cow<'_, str>>;
}

impl Headers for Vec<(String, String)> {
    fn get(&self, lower_name: &str) -> Option<Cow<'_, str>> {
        let mut values = self
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(lower_name))
            .map(|(_, v)| v.as_str());
        let first = values.next()?;
        match values.next() {
            None => Some(Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(Cow::Owned(joined))
            }
        }
    }
}

/// One request, normalized.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// Method as sent.
    pub method: &'a str,
    /// Normalized path (no query).
    pub path: &'a str,
    /// Normalized host (lower-case, no port), if sent.
    pub host: Option<&'a str>,
    /// Headers.
    pub headers: &'a dyn Headers,
    /// Validated JWT claims; `None` when absent or invalid.
    pub jwt: Option<&'a JwtClaims>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The deciding policy; `None` for a default.
    pub policy: Option<Arc<str>>,
    /// The deciding rule, or `default`.
    pub rule: Arc<str>,
    /// Why, in words.
    pub reason: Cow<'static, str>,
}

/// The connection-level outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnDecision {
    /// Decided for the whole connection.
    Final(Decision),
    /// Read the connection as HTTP and judge each request.
    NeedHttp,
}

/// A step-by-step account of a decision.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// One line per step.
    pub steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown,
}

fn peer_matches(p: &PeerMatch, c: &Connection<'_>, host: Option<&str>) -> Tri {
    if p.never {
        return Tri::No;
    }
    if p.cidr.as_ref().is_some_and(|m| !m.matches(c.peer)) {
        return Tri::No;
    }
    // Peers of another trust domain match only rules that name it.
    let ours = |i: &str| {
        c.trust_domain
            .is_none_or(|td| spiffe_trust_domain(i) == Some(td))
    };
    if let Some(id) = &p.identity
        && !c
            .identity
            .is_some_and(|i| id.matches(i) && (id.names_trust_domain() || ours(i)))
    {
        return Tri::No;
    }
    if let Some(ns) = &p.namespace
        && !c
            .identity
            .is_some_and(|i| spiffe_namespace(i) == Some(ns.as_str()) && ours(i))
    {
        return Tri::No;
    }
    if let Some(reqs) = &p.namespace_names
        && !c.identity.is_some_and(|i| {
            ours(i) && spiffe_namespace(i).is_some_and(|ns| reqs.iter().all(|r| r.matches(ns)))
        })
    {
        return Tri::No;
    }
    match (&p.host, c.sni.or(host)) {
        (Some(h), Some(name)) if !h.matches(name) => Tri::No,
        (Some(_), None) => Tri::Unknown,
        _ => Tri::Yes,
    }
}

fn peers_match(rule: &CompiledRule, c: &Connection<'_>, host: Option<&str>) -> Tri {
    let Some(peers) = &rule.peers else {
        return Tri::Yes;
    };
    let mut unknown = false;
    for p in peers {
        match peer_matches(p, c, host) {
            Tri::Yes => return Tri::Yes,
            Tri::Unknown => unknown = true,
            Tri::No => {}
        }
    }
    if unknown { Tri::Unknown } else { Tri::No }
}

fn http_matches(h: &HttpRule, r: &Request<'_>) -> bool {
    if h.methods
        .as_ref()
        .is_some_and(|m| !m.iter().any(|x| x == r.method))
    {
        return false;
    }
    if h.paths.as_ref().is_some_and(|p| !p.matches(r.path)) {
        return false;
    }
    if let Some(hosts) = &h.hosts
        && !r
            .host
            .is_some_and(|host| hosts.iter().any(|p| p.matches(host)))
    {
        return false;
    }
    for (name, pattern) in &h.headers {
        if !r.headers.get(name).is_some_and(|v| pattern.matches(&v)) {
            return false;
        }
    }
    if let Some(j) = &h.jwt {
        let Some(claims) = r.jwt else { return false };
        if j.issuer
            .as_ref()
            .is_some_and(|i| claims.issuer.as_ref() != Some(i))
            || j.subject
                .as_ref()
                .is_some_and(|s| claims.subject.as_ref() != Some(s))
            || (!j.audiences.is_empty()
                && !j.audiences.iter().any(|a| claims.audiences.contains(a)))
        {
            return false;
        }
        for (name, want) in &j.claims {
            let found = claims
                .claims
                .iter()
                .any(|(n, vals)| n == name && vals.contains(want));
            if !found {
                return false;
            }
        }
    }
    true
}

fn direction_rules(p: &CompiledPolicy, d: Direction) -> &DirectionRules {
    match d {
        Direction::Inbound => &p.inbound,
        Direction::Outbound => &p.outbound,
    }
}

fn by_rule(r: &CompiledRule, reason: &'static str) -> Decision {
    Decision {
        verdict: r.action.into(),
        policy: Some(r.policy.clone()),
        rule: r.name.clone(),
        reason: Cow::Borrowed(reason),
    }
}

fn by_default(rules: &DirectionRules) -> Decision {
    Decision {
        verdict: rules.default.into(),
        policy: None,
        rule: Arc::from("default"),
        reason: Cow::Borrowed(if !rules.mentioned {
            "no policy mentions this direction: not isolated"
        } else if rules.default == Action::Allow {
            "no rule matched: default allow"
        } else {
            "no rule matched: default deny"
        }),
    }
}

/// `mtls: strict`: an inbound connection without a verified peer identity is denied by the
/// policy that asked for it, whatever the rules say.
fn strict_refusal(
    rules: &DirectionRules,
    c: &Connection<'_>,
    trace: &mut Option<&mut Trace>,
) -> Option<Decision> {
    let policy = rules.mtls_strict.as_ref()?;
    if c.direction != Direction::Inbound || c.identity.is_some() {
        return None;
    }
    note(trace, || {
        format!("policy {policy} says mtls: strict and the peer presented no workload certificate")
    });
    Some(Decision {
        verdict: Verdict::Deny,
        policy: Some(policy.clone()),
        rule: Arc::from("mtls"),
        reason: Cow::Borrowed("mtls: strict, and the peer presented no workload certificate"),
    })
}

fn note(trace: &mut Option<&mut Trace>, step: impl FnOnce() -> String) {
    if let Some(t) = trace.as_deref_mut() {
        t.steps.push(step());
    }
}

/// Connection-level state gathered in phase 1.
struct Phase1<'p> {
    l4_deny: Option<&'p CompiledRule>,
    pending_deny: Option<&'p CompiledRule>,
    l4_allow: Option<&'p CompiledRule>,
    pending_allow: bool,
}

fn ports_ok(r: &CompiledRule, c: &Connection<'_>) -> bool {
    r.ports.as_ref().is_none_or(|p| p.contains(c.port))
}

/// Whether a rule could still match this connection once the request is known.
fn could_match(r: &CompiledRule, c: &Connection<'_>) -> bool {
    ports_ok(r, c) && peers_match(r, c, None) != Tri::No
}

/// Whether a rule matches this request (ports, peers with the request's host, http).
fn request_matches(rule: &CompiledRule, c: &Connection<'_>, r: &Request<'_>) -> bool {
    ports_ok(rule, c)
        && peers_match(rule, c, r.host) == Tri::Yes
        && rule
            .http
            .as_ref()
            .is_none_or(|http| http.iter().any(|h| http_matches(h, r)))
}

/// Phase 1 through the indexes (same result as the traced full scan).
fn phase1_indexed<'p>(rules: &'p DirectionRules, c: &Connection<'_>) -> Phase1<'p> {
    let ix = &rules.index;
    let rule = |id: RuleId| &rules.rules[id as usize];
    // Lowest-numbered connection-level deny and allow, over both groups: a request rule without
    // `http` whose host peer is settled by the SNI is decided at open too.
    let (mut l4_deny, mut l4_allow): (Option<RuleId>, Option<RuleId>) = (None, None);
    for id in ix.connection.candidates(c.port, c.peer) {
        let r = rule(id);
        if !ports_ok(r, c) || peers_match(r, c, None) != Tri::Yes {
            continue;
        }
        match r.action {
            Action::Deny => {
                l4_deny = Some(id);
                break;
            }
            Action::Allow => {
                l4_allow.get_or_insert(id);
            }
        }
    }
    let settled = |r: &CompiledRule| {
        r.http.is_none() && ports_ok(r, c) && peers_match(r, c, None) == Tri::Yes
    };
    let mut pending_deny = None;
    for id in ix.request_deny.candidates(c.port, c.peer) {
        let r = rule(id);
        if c.sni.is_some() && settled(r) {
            l4_deny = Some(l4_deny.map_or(id, |d| d.min(id)));
            break;
        }
        if pending_deny.is_none() && could_match(r, c) {
            pending_deny = Some(r);
        }
    }
    let pending_allow = if c.sni.is_some() {
        let mut any = false;
        for id in ix.request_allow.candidates(c.port, c.peer) {
            let r = rule(id);
            if settled(r) {
                l4_allow = Some(l4_allow.map_or(id, |a| a.min(id)));
            } else if could_match(r, c) {
                any = true;
            }
        }
        any
    } else {
        ix.request_allow.any(c.port, |id| could_match(rule(id), c))
    };
    Phase1 {
        l4_deny: l4_deny.map(rule),
        pending_deny,
        l4_allow: l4_allow.map(rule),
        pending_allow,
    }
}

/// A request through the indexes (same result as the traced full scan): the lowest-numbered
/// matching deny, else the lowest-numbered matching allow, else the default.
fn request_indexed(rules: &DirectionRules, c: &Connection<'_>, r: &Request<'_>) -> Decision {
    let ix = &rules.index;
    let mut deny: Option<RuleId> = None;
    let mut allow: Option<RuleId> = None;
    let groups = [
        ix.connection.candidates(c.port, c.peer),
        ix.paths.candidates(r.path),
    ];
    for ids in &groups {
        for &id in ids {
            if deny.is_some_and(|d| id > d) {
                break;
            }
            let rule = &rules.rules[id as usize];
            if rule.action == Action::Allow && allow.is_some_and(|a| id > a) {
                continue;
            }
            if !request_matches(rule, c, r) {
                continue;
            }
            match rule.action {
                Action::Deny => deny = Some(deny.map_or(id, |d| d.min(id))),
                Action::Allow => allow = Some(allow.map_or(id, |a| a.min(id))),
            }
        }
    }
    match (deny, allow) {
        (Some(d), _) => by_rule(&rules.rules[d as usize], "deny rule matched the request"),
        (None, Some(a)) => by_rule(&rules.rules[a as usize], "allow rule matched the request"),
        (None, None) => by_default(rules),
    }
}

fn phase1<'p>(
    rules: &'p DirectionRules,
    c: &Connection<'_>,
    trace: &mut Option<&mut Trace>,
) -> Phase1<'p> {
    let mut s = Phase1 {
        l4_deny: None,
        pending_deny: None,
        l4_allow: None,
        pending_allow: false,
    };
    if trace.is_none() {
        return phase1_indexed(rules, c);
    }
    for r in &rules.rules {
        let label = || format!("{}/{} ({:?})", r.policy, r.name, r.action);
        if r.ports.as_ref().is_some_and(|p| !p.contains(c.port)) {
            note(trace, || format!("{}: port {} not listed", label(), c.port));
            continue;
        }
        let peer = peers_match(r, c, None);
        if peer == Tri::No {
            note(trace, || format!("{}: peer does not match", label()));
            continue;
        }
        let needs_http = r.http.is_some() || peer == Tri::Unknown;
        note(trace, || {
            format!(
                "{}: {}",
                label(),
                if needs_http {
                    "could match, depends on the HTTP request"
                } else {
                    "matches the connection"
                }
            )
        });
        match (r.action, needs_http) {
            (Action::Deny, false) => {
                s.l4_deny = Some(r);
                return s;
            }
            (Action::Deny, true) => {
                s.pending_deny.get_or_insert(r);
            }
            (Action::Allow, false) => {
                s.l4_allow.get_or_insert(r);
            }
            (Action::Allow, true) => s.pending_allow = true,
        }
    }
    s
}

impl CompiledPolicy {
    /// Whether any rule of `direction` requires a JWT (so an invalid token is worth a 401).
    pub fn uses_jwt(&self, direction: Direction) -> bool {
        direction_rules(self, direction)
            .rules
            .iter()
            .flat_map(|r| r.http.iter().flatten())
            .any(|h| h.jwt.is_some())
    }

    /// Phase 1: judges a connection with what is known when it opens.
    pub fn decide_connection(
        &self,
        c: &Connection<'_>,
        mut trace: Option<&mut Trace>,
    ) -> ConnDecision {
        let rules = direction_rules(self, c.direction);
        if let Some(d) = strict_refusal(rules, c, &mut trace) {
            return ConnDecision::Final(d);
        }
        let s = phase1(rules, c, &mut trace);
        if let Some(r) = s.l4_deny {
            return ConnDecision::Final(by_rule(r, "connection-level deny rule matched"));
        }
        if s.pending_deny.is_some() {
            note(&mut trace, || {
                "a deny rule depends on the request: read the connection as HTTP".into()
            });
            return ConnDecision::NeedHttp;
        }
        if let Some(r) = s.l4_allow {
            return ConnDecision::Final(by_rule(r, "connection-level allow rule matched"));
        }
        if s.pending_allow {
            note(&mut trace, || {
                "only rules that depend on the request can allow: read the connection as HTTP"
                    .into()
            });
            return ConnDecision::NeedHttp;
        }
        ConnDecision::Final(by_default(rules))
    }

    /// The connection needed HTTP but is not HTTP (or is TLS we do not terminate): HTTP deny
    /// rules count as matching, HTTP allow rules never allow.
    pub fn decide_opaque(&self, c: &Connection<'_>, mut trace: Option<&mut Trace>) -> Decision {
        let rules = direction_rules(self, c.direction);
        if let Some(d) = strict_refusal(rules, c, &mut trace) {
            return d;
        }
        let s = phase1(rules, c, &mut trace);
        if let Some(r) = s.l4_deny {
            return by_rule(r, "connection-level deny rule matched");
        }
        if let Some(r) = s.pending_deny {
            return by_rule(
                r,
                "not HTTP: a deny rule that needs HTTP counts as matching (fail closed)",
            );
        }
        if let Some(r) = s.l4_allow {
            return by_rule(r, "connection-level allow rule matched");
        }
        let mut d = by_default(rules);
        if s.pending_allow {
            d.reason =
                Cow::Borrowed("not HTTP: rules that need HTTP never allow it; default applies");
        }
        d
    }

    /// Phase 2: judges one request on a connection (deny wins, then allow, then the default).
    pub fn decide_request(
        &self,
        c: &Connection<'_>,
        r: &Request<'_>,
        mut trace: Option<&mut Trace>,
    ) -> Decision {
        let rules = direction_rules(self, c.direction);
        if let Some(d) = strict_refusal(rules, c, &mut trace) {
            return d;
        }
        if trace.is_none() {
            return request_indexed(rules, c, r);
        }
        let mut allow: Option<&CompiledRule> = None;
        for rule in &rules.rules {
            let label = || format!("{}/{} ({:?})", rule.policy, rule.name, rule.action);
            if rule.ports.as_ref().is_some_and(|p| !p.contains(c.port)) {
                note(&mut trace, || {
                    format!("{}: port {} not listed", label(), c.port)
                });
                continue;
            }
            if peers_match(rule, c, r.host) != Tri::Yes {
                note(&mut trace, || format!("{}: peer does not match", label()));
                continue;
            }
            if let Some(http) = &rule.http
                && !http.iter().any(|h| http_matches(h, r))
            {
                note(&mut trace, || {
                    format!("{}: no http entry matches {} {}", label(), r.method, r.path)
                });
                continue;
            }
            note(&mut trace, || format!("{}: matches", label()));
            match rule.action {
                Action::Deny => return by_rule(rule, "deny rule matched the request"),
                Action::Allow => {
                    allow.get_or_insert(rule);
                }
            }
        }
        match allow {
            Some(rule) => by_rule(rule, "allow rule matched the request"),
            None => by_default(rules),
        }
    }
}
