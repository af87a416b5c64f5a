//! Candidate indexes over one direction's rules, so that a decision looks only at rules that
//! could match instead of every rule.
//!
//! Three independent filters, each giving a sorted list of rule numbers that *may* match:
//! ports (a hash of single ports, a short list of ranges, the any-port rules), peers (a
//! longest-prefix trie of CIDRs whose covering entries are collected, plus the rules whose peers
//! are not all CIDRs), and — for requests — paths (exact hash, prefix hash probed at each segment
//! boundary, one `RegexSet` over every regex, plus the rules that accept any path). Their
//! intersection is then checked in full, in rule order, so the verdict is exactly the one a full
//! scan gives (the conformance suite runs both).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use prefix_trie::joint::JointPrefixMap;
use regex::RegexSet;

use crate::compile::CompiledRule;
use crate::matchers::{REGEX_SIZE_LIMIT, canonical};

/// Rule numbers within a direction.
pub type RuleId = u32;

/// The indexes of one direction.
#[derive(Debug, Clone, Default)]
pub struct DirectionIndex {
    by_port: HashMap<u16, Vec<RuleId>>,
    port_ranges: Vec<(u16, u16, RuleId)>,
    any_port: Vec<RuleId>,
    by_cidr: JointPrefixMap<IpNet, Vec<RuleId>>,
    any_peer: Vec<RuleId>,
    by_exact_path: HashMap<String, Vec<RuleId>>,
    by_prefix: HashMap<String, Vec<RuleId>>,
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

impl DirectionIndex {
    /// Builds the indexes for `rules` (ids are positions in the slice).
    pub fn build(rules: &[CompiledRule]) -> Self {
        let mut ix = Self::default();
        let mut regex_patterns = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let id = i as RuleId;
            match &rule.ports {
                None => ix.any_port.push(id),
                Some(set) => {
                    for &(a, b) in set.ranges() {
                        if a == b {
                            ix.by_port.entry(a).or_default().push(id);
                        } else {
                            ix.port_ranges.push((a, b, id));
                        }
                    }
                }
            }
            match &rule.peers {
                Some(peers) if peers.iter().all(|p| p.cidr.is_some() || p.never) => {
                    for p in peers.iter().filter_map(|p| p.cidr.as_ref()) {
                        match ix.by_cidr.get_mut(&p.net) {
                            Some(v) => {
                                if v.last() != Some(&id) {
                                    v.push(id);
                                }
                            }
                            None => {
                                ix.by_cidr.insert(p.net, vec![id]);
                            }
                        }
                    }
                }
                _ => ix.any_peer.push(id),
            }
            match &rule.http {
                None => ix.any_path.push(id),
                Some(entries) => {
                    for e in entries {
                        let Some(paths) = e.paths.as_ref().filter(|p| !p.any) else {
                            ix.any_path.push(id);
                            continue;
                        };
                        for p in &paths.exact {
                            push(&mut ix.by_exact_path, p, id);
                        }
                        for p in &paths.prefixes {
                            push(&mut ix.by_prefix, p, id);
                        }
                        for re in paths.regex.iter().flat_map(|r| r.patterns()) {
                            regex_patterns.push(re.clone());
                            ix.regex_rules.push(id);
                        }
                    }
                }
            }
        }
        ix.any_path.dedup();
        if !regex_patterns.is_empty() {
            // The patterns are already anchored and each compiled once on its own.
            ix.regex = regex::RegexSetBuilder::new(&regex_patterns)
                .size_limit(REGEX_SIZE_LIMIT.saturating_mul(8))
                .build()
                .ok();
            if ix.regex.is_none() {
                // Too large together: fall back to treating those rules as "any path" candidates,
                // which is always correct (candidates are checked in full).
                ix.any_path.append(&mut ix.regex_rules);
                ix.any_path.sort_unstable();
                ix.any_path.dedup();
            }
        }
        ix
    }

    /// Rules whose ports may contain `port`, sorted.
    pub fn port_candidates(&self, port: u16) -> Vec<RuleId> {
        let mut v: Vec<RuleId> = self.any_port.clone();
        if let Some(ids) = self.by_port.get(&port) {
            v.extend_from_slice(ids);
        }
        v.extend(
            self.port_ranges
                .iter()
                .filter(|&&(a, b, _)| a <= port && port <= b)
                .map(|&(_, _, id)| id),
        );
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Rules whose peers may match `ip`, sorted.
    pub fn peer_candidates(&self, ip: IpAddr) -> Vec<RuleId> {
        let mut v: Vec<RuleId> = self.any_peer.clone();
        for (_, ids) in self.by_cidr.cover(&IpNet::from(canonical(ip))) {
            v.extend_from_slice(ids);
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Rules with an `http` entry whose paths may match `path` (or with no path constraint),
    /// sorted.
    pub fn path_candidates(&self, path: &str) -> Vec<RuleId> {
        let mut v: Vec<RuleId> = self.any_path.clone();
        if let Some(ids) = self.by_exact_path.get(path) {
            v.extend_from_slice(ids);
        }
        if !self.by_prefix.is_empty() {
            for (i, b) in path.bytes().enumerate() {
                if b == b'/'
                    && let Some(ids) = self.by_prefix.get(&path[..i])
                {
                    v.extend_from_slice(ids);
                }
            }
            if !path.ends_with('/')
                && let Some(ids) = self.by_prefix.get(path)
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
