//! Candidate indexes over one direction's rules, so that a decision touches only rules that
//! could match instead of every rule.
//!
//! Rules are split in two groups. *Connection rules* (no `http`, no `host` peer) are found by
//! port and peer: a hash of single ports, a short list of ranges, a longest-prefix trie of peer
//! CIDRs whose covering entries are collected, and the lists of rules without such constraints;
//! the two candidate lists are intersected. *Request rules* (with `http`, or a `host` peer that
//! needs the request's Host) are, at connection open, only asked "could one deny / could one
//! allow" — answered by early-exit scans over their own port/peer lists — and per request are
//! found by path: an exact hash, a prefix hash probed at each segment boundary, one `RegexSet`,
//! and the rules without a path constraint. Candidates are always checked in full, in rule
//! order, so the verdict equals a full scan (`explain` uses the full scan; a property test
//! compares both).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use prefix_trie::joint::JointPrefixMap;
use regex::RegexSet;

use crate::matchers::{REGEX_SIZE_LIMIT, canonical};
use crate::model::Action;
use crate::rule::CompiledRule;

/// Rule numbers within a direction.
pub type RuleId = u32;

/// Port and peer lists over a subset of rules.
#[derive(Debug, Clone, Default)]
pub struct L4Index {
    by_port: HashMap<u16, Vec<RuleId>>,
    port_ranges: Vec<(u16, u16, RuleId)>,
    any_port: Vec<RuleId>,
    by_cidr: JointPrefixMap<IpNet, Vec<RuleId>>,
    any_peer: Vec<RuleId>,
}

impl L4Index {
    fn add(&mut self, id: RuleId, rule: &CompiledRule) {
        match &rule.ports {
            None => self.any_port.push(id),
            Some(set) => {
                for &(a, b) in set.ranges() {
                    if a == b {
                        self.by_port.entry(a).or_default().push(id);
                    } else {
                        self.port_ranges.push((a, b, id));
                    }
                }
            }
        }
        match &rule.peers {
            Some(peers) if peers.iter().all(|p| p.cidr.is_some() || p.never) => {
                for p in peers.iter().filter_map(|p| p.cidr.as_ref()) {
                    match self.by_cidr.get_mut(&p.net) {
                        Some(v) if v.last() == Some(&id) => {}
                        Some(v) => v.push(id),
                        None => {
                            self.by_cidr.insert(p.net, vec![id]);
                        }
                    }
                }
            }
            _ => self.any_peer.push(id),
        }
    }

    /// Rules whose ports and peers may match, sorted.
    pub fn candidates(&self, port: u16, ip: IpAddr) -> Vec<RuleId> {
        let mut ports: Vec<RuleId> = Vec::with_capacity(self.any_port.len() + 4);
        ports.extend_from_slice(&self.any_port);
        if let Some(ids) = self.by_port.get(&port) {
            ports.extend_from_slice(ids);
        }
        ports.extend(
            self.port_ranges
                .iter()
                .filter(|&&(a, b, _)| a <= port && port <= b)
                .map(|&(_, _, id)| id),
        );
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() {
            return ports;
        }
        let mut peers: Vec<RuleId> = Vec::with_capacity(self.any_peer.len() + 4);
        peers.extend_from_slice(&self.any_peer);
        for (_, ids) in self.by_cidr.cover(&IpNet::from(canonical(ip))) {
            peers.extend_from_slice(ids);
        }
        peers.sort_unstable();
        peers.dedup();
        intersect(&ports, &peers)
    }

    /// Whether some rule whose port lists admit `port` passes `check` (early exit; no order).
    pub fn any(&self, port: u16, mut check: impl FnMut(RuleId) -> bool) -> bool {
        self.by_port
            .get(&port)
            .is_some_and(|ids| ids.iter().any(|&id| check(id)))
            || self
                .port_ranges
                .iter()
                .any(|&(a, b, id)| a <= port && port <= b && check(id))
            || self.any_port.iter().any(|&id| check(id))
    }
}

/// Request rules by path.
#[derive(Debug, Clone, Default)]
pub struct PathIndex {
    exact: HashMap<String, Vec<RuleId>>,
    prefix: HashMap<String, Vec<RuleId>>,
    regex: Option<RegexSet>,
    regex_rules: Vec<RuleId>,
    any_path: Vec<RuleId>,
}

fn push(map: &mut HashMap<String, Vec<RuleId>>, key: &str, id: RuleId) {
    let v = map.entry(key.to_string()).or_default();
    if v.last() != Some(&id) {
        v.push(id);
    }
}

impl PathIndex {
    fn add(&mut self, id: RuleId, rule: &CompiledRule, patterns: &mut Vec<String>) {
        let Some(entries) = &rule.http else {
            self.any_path.push(id);
            return;
        };
        for e in entries {
            let Some(paths) = e.paths.as_ref().filter(|p| !p.any) else {
                self.any_path.push(id);
                continue;
            };
            for p in &paths.exact {
                push(&mut self.exact, p, id);
            }
            for p in &paths.prefixes {
                push(&mut self.prefix, p, id);
            }
            for re in paths.regex.iter().flat_map(|r| r.patterns()) {
                patterns.push(re.clone());
                self.regex_rules.push(id);
            }
        }
    }

    fn finish(&mut self, patterns: &[String]) {
        self.any_path.dedup();
        if patterns.is_empty() {
            return;
        }
        // The patterns are already anchored, and each compiled on its own during validation.
        self.regex = regex::RegexSetBuilder::new(patterns)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(16))
            .build()
            .ok();
        if self.regex.is_none() {
            // Too large together: those rules become candidates for every path, which is always
            // correct (candidates are checked in full), only slower.
            self.any_path.append(&mut self.regex_rules);
            self.any_path.sort_unstable();
            self.any_path.dedup();
        }
    }

    /// Rules that may match `path`, sorted.
    pub fn candidates(&self, path: &str) -> Vec<RuleId> {
        let mut v: Vec<RuleId> = self.any_path.clone();
        if let Some(ids) = self.exact.get(path) {
            v.extend_from_slice(ids);
        }
        if !self.prefix.is_empty() {
            for (i, b) in path.bytes().enumerate() {
                if b == b'/'
                    && let Some(ids) = self.prefix.get(&path[..i])
                {
                    v.extend_from_slice(ids);
                }
            }
            if !path.ends_with('/')
                && let Some(ids) = self.prefix.get(path)
            {
                v.extend_from_slice(ids);
            }
        }
        if let Some(set) = &self.regex {
            v.extend(set.matches(path).iter().map(|i| self.regex_rules[i]));
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The indexes of one direction.
#[derive(Debug, Clone, Default)]
pub struct DirectionIndex {
    /// Connection rules.
    pub connection: L4Index,
    /// Request rules that allow.
    pub request_allow: L4Index,
    /// Request rules that deny.
    pub request_deny: L4Index,
    /// Request rules by path.
    pub paths: PathIndex,
}

/// Whether a rule can only be decided with the request (it has `http`, or a `host` peer).
pub fn is_request_rule(rule: &CompiledRule) -> bool {
    rule.http.is_some()
        || rule
            .peers
            .as_ref()
            .is_some_and(|ps| ps.iter().any(|p| p.host.is_some()))
}

impl DirectionIndex {
    /// Builds the indexes for `rules` (ids are positions in the slice).
    pub fn build(rules: &[CompiledRule]) -> Self {
        let mut ix = Self::default();
        let mut patterns = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let id = i as RuleId;
            if !is_request_rule(rule) {
                ix.connection.add(id, rule);
                continue;
            }
            match rule.action {
                Action::Allow => ix.request_allow.add(id, rule),
                Action::Deny => ix.request_deny.add(id, rule),
            }
            ix.paths.add(id, rule, &mut patterns);
        }
        ix.paths.finish(&patterns);
        ix
    }
}

/// The intersection of sorted lists.
pub fn intersect(a: &[RuleId], b: &[RuleId]) -> Vec<RuleId> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
