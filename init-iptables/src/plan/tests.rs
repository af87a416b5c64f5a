//! Golden files for a table of configurations, and properties checked against a small model of
//! `iptables-restore --noflush`: idempotence, convergence between configurations, exact cleanup.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::config::{CaptureMode, InboundPorts, InitConfig, PortRange};
use crate::routing::{self, RoutingState};
use crate::rules::{self, CHAIN_PREFIX};

fn golden_cases() -> Vec<(&'static str, InitConfig)> {
    let base = InitConfig::default();
    vec![
        ("redirect-default", base.clone()),
        (
            "tproxy-default",
            InitConfig {
                mode: CaptureMode::Tproxy,
                ..base.clone()
            },
        ),
        (
            "redirect-excludes",
            InitConfig {
                exclude_inbound_ports: vec![
                    PortRange::single(22),
                    PortRange {
                        first: 9000,
                        last: 9100,
                    },
                    PortRange::single(15020),
                ],
                exclude_outbound_ports: vec![PortRange::single(25), PortRange::single(3306)],
                exclude_outbound_cidrs: vec![
                    "169.254.169.254/32".parse().expect("cidr"),
                    "fd00:ec2::254/128".parse().expect("cidr"),
                ],
                ..base.clone()
            },
        ),
        (
            "tproxy-some-ports-custom-ids",
            InitConfig {
                mode: CaptureMode::Tproxy,
                proxy_uid: 2000,
                proxy_gid: 2001,
                inbound_port: 16006,
                outbound_port: 16001,
                inbound_ports: InboundPorts::Only(vec![
                    PortRange::single(8080),
                    PortRange {
                        first: 9000,
                        last: 9001,
                    },
                ]),
                ..base
            },
        ),
    ]
}

fn render_clean(cfg: &InitConfig) -> String {
    Family::ALL
        .iter()
        .map(|&f| {
            let tables = plan(&rules::desired(cfg, f), &SavedState::empty());
            render(
                f,
                &tables,
                &routing::install(cfg, f, RoutingState::default()),
            )
        })
        .collect()
}

#[test]
fn golden_rules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, cfg) in golden_cases() {
        let path = dir.join(format!("{name}.rules"));
        let got = render_clean(&cfg);
        if update {
            std::fs::write(&path, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
        assert_eq!(
            got, want,
            "golden {name} differs (UPDATE_GOLDEN=1 to accept)"
        );
    }
}

/// A model of the kernel tables: table → chain → rules. Built-in chains always exist.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model(BTreeMap<String, BTreeMap<String, Vec<String>>>);

const BUILTIN: [&str; 2] = ["PREROUTING", "OUTPUT"];

impl Model {
    fn new() -> Self {
        let mut m = BTreeMap::new();
        for t in ["nat", "mangle"] {
            let chains = BUILTIN
                .iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect();
            m.insert(t.to_string(), chains);
        }
        Model(m)
    }

    /// Somebody else's rules, which must survive everything we do.
    fn with_foreign() -> Self {
        let mut m = Self::new();
        let nat = m.0.get_mut("nat").expect("nat");
        nat.insert("DOCKER".into(), vec!["-d 10.0.0.1/32 -j RETURN".into()]);
        nat.get_mut("PREROUTING")
            .expect("chain")
            .push("-j DOCKER".into());
        m
    }

    /// Applies a restore script transactionally, as `iptables-restore --noflush` does.
    fn restore(&mut self, script: &str) -> Result<(), String> {
        let mut next = self.0.clone();
        let mut table = String::new();
        for line in script.lines() {
            let (op, rest) = line.split_once(' ').unwrap_or((line, ""));
            let chains = next.get_mut(&table);
            match (op, chains) {
                (l, _) if l.starts_with('*') => table = l[1..].to_string(),
                ("COMMIT", _) => {}
                (l, Some(chains)) if l.starts_with(':') => {
                    let name = l[1..].to_string();
                    if !BUILTIN.contains(&name.as_str()) {
                        chains.insert(name, Vec::new());
                    }
                }
                ("-A", Some(chains)) => {
                    let (c, spec) = rest.split_once(' ').ok_or(line)?;
                    let target = spec.split_whitespace().skip_while(|w| *w != "-j").nth(1);
                    if let Some(t) = target.filter(|t| t.starts_with(CHAIN_PREFIX)) {
                        chains
                            .get(t)
                            .ok_or(format!("jump to missing chain: {line}"))?;
                    }
                    chains
                        .get_mut(c)
                        .ok_or(format!("no chain: {line}"))?
                        .push(spec.into());
                }
                ("-D", Some(chains)) => {
                    let (c, spec) = rest.split_once(' ').ok_or(line)?;
                    let rules = chains.get_mut(c).ok_or(format!("no chain: {line}"))?;
                    let i = rules
                        .iter()
                        .position(|r| r == spec)
                        .ok_or(format!("no rule: {line}"))?;
                    rules.remove(i);
                }
                ("-F", Some(chains)) => chains.get_mut(rest).ok_or(line)?.clear(),
                ("-X", Some(chains)) => {
                    let referenced = chains
                        .values()
                        .flatten()
                        .any(|r| r.split_whitespace().any(|w| w == rest));
                    if referenced || !chains.get(rest).ok_or(line)?.is_empty() {
                        return Err(format!("chain in use: {line}"));
                    }
                    chains.remove(rest);
                }
                _ => return Err(format!("unexpected line: {line}")),
            }
        }
        self.0 = next;
        Ok(())
    }

    fn save(&self) -> String {
        let mut s = String::new();
        for (table, chains) in &self.0 {
            s.push_str(&format!("*{table}\n"));
            for name in chains.keys() {
                s.push_str(&format!(":{name} - [0:0]\n"));
            }
            for (name, rules) in chains {
                for r in rules {
                    s.push_str(&format!("-A {name} {r}\n"));
                }
            }
            s.push_str("COMMIT\n");
        }
        s
    }

    fn install(&mut self, cfg: &InitConfig, family: Family) {
        self.apply(&rules::desired(cfg, family));
    }

    fn apply(&mut self, want: &[rules::TableRules]) {
        for t in plan(want, &SavedState::parse(&self.save())) {
            self.restore(&t.script)
                .unwrap_or_else(|e| panic!("{e}\nscript:\n{}", t.script));
        }
    }
}

#[test]
fn second_run_changes_nothing_and_adds_no_jump() {
    for (name, cfg) in golden_cases() {
        let mut m = Model::with_foreign();
        m.install(&cfg, Family::V4);
        let once = m.clone();
        let again = plan(
            &rules::desired(&cfg, Family::V4),
            &SavedState::parse(&m.save()),
        );
        assert!(
            again
                .iter()
                .all(|t| !t.script.contains("-A PREROUTING") && !t.script.contains("-A OUTPUT")),
            "{name}: a re-run must not add jumps again"
        );
        m.install(&cfg, Family::V4);
        assert_eq!(m, once, "{name}");
    }
}

#[test]
fn duplicated_jumps_are_reduced_to_one() {
    let cfg = InitConfig::default();
    let mut m = Model::new();
    m.install(&cfg, Family::V4);
    let clean = m.clone();
    m.0.get_mut("nat")
        .expect("nat")
        .get_mut("OUTPUT")
        .expect("chain")
        .push("-p tcp -j PORTCULLIS_OUTPUT".into());
    m.install(&cfg, Family::V4);
    assert_eq!(m, clean);
}

fn port_range() -> impl Strategy<Value = PortRange> {
    (1u16..65000, 0u16..10).prop_map(|(first, len)| PortRange {
        first,
        last: first + len,
    })
}

fn config() -> impl Strategy<Value = InitConfig> {
    (
        prop::bool::ANY,
        1u32..5000,
        1u32..5000,
        prop::option::of(prop::collection::vec(port_range(), 1..4)),
        prop::collection::vec(port_range(), 0..4),
        prop::collection::vec(port_range(), 0..4),
        prop::collection::vec((any::<[u8; 4]>(), 8u8..=32), 0..3),
    )
        .prop_map(|(tproxy, uid, gid, only, ex_in, ex_out, cidrs)| {
            let mut exclude_inbound_ports = ex_in;
            exclude_inbound_ports.push(PortRange::single(15020));
            InitConfig {
                mode: if tproxy {
                    CaptureMode::Tproxy
                } else {
                    CaptureMode::Redirect
                },
                proxy_uid: uid,
                proxy_gid: gid,
                inbound_ports: only.map_or(InboundPorts::All, InboundPorts::Only),
                exclude_inbound_ports,
                exclude_outbound_ports: ex_out,
                exclude_outbound_cidrs: cidrs
                    .into_iter()
                    .map(|(ip, len)| {
                        ipnet::Ipv4Net::new(ip.into(), len)
                            .expect("valid prefix")
                            .trunc()
                            .into()
                    })
                    .collect(),
                ..InitConfig::default()
            }
        })
}

proptest! {
    #[test]
    fn install_is_idempotent_convergent_and_cleanup_is_exact(
        a in config(), b in config(), v6 in any::<bool>()
    ) {
        let family = if v6 { Family::V6 } else { Family::V4 };
        let start = Model::with_foreign();

        let mut fresh_b = start.clone();
        fresh_b.install(&b, family);

        let mut m = start.clone();
        m.install(&a, family);
        m.install(&a, family);
        let mut once_a = start.clone();
        once_a.install(&a, family);
        prop_assert_eq!(&m, &once_a);

        m.install(&b, family);
        prop_assert_eq!(&m, &fresh_b, "switching a → b must equal installing b");

        m.apply(&rules::nothing());
        prop_assert_eq!(&m, &start, "cleanup must restore exactly the starting state");
        prop_assert!(m.save().lines().all(|l| !l.contains(CHAIN_PREFIX)));
    }

    #[test]
    fn every_chain_is_ours(cfg in config(), v6 in any::<bool>()) {
        let family = if v6 { Family::V6 } else { Family::V4 };
        for t in rules::desired(&cfg, family) {
            prop_assert!(t.chains.iter().all(|c| c.starts_with(CHAIN_PREFIX)));
            prop_assert!(t.rules.iter().all(|r| r.chain.starts_with(CHAIN_PREFIX)));
            prop_assert!(t.jumps.iter().all(|j| !j.chain.starts_with(CHAIN_PREFIX)));
        }
    }
}
