//! The capture rules a configuration asks for, per address family: a pure function, no IO.
//!
//! Contract: every chain we own starts with [`CHAIN_PREFIX`]; built-in chains only get one jump
//! each into our chains (`-p tcp -j PORTCULLIS_…`), so that cleanup can find and remove exactly
//! what was installed. Both tables (nat, mangle) are always described, empty when unused, so that
//! switching modes removes the chains the old mode needed.

use std::fmt;

use crate::config::{CaptureMode, InboundPorts, InitConfig};

/// Prefix of every chain this tool owns.
pub const CHAIN_PREFIX: &str = "PORTCULLIS_";
/// Packet mark used by TPROXY and by the proxy's source-preserving upstream sockets (1337).
pub const TPROXY_MARK: u32 = 0x539;
/// Policy-routing table that delivers marked packets locally.
pub const ROUTE_TABLE: u32 = 133;

/// An address family, programmed by its own iptables binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    /// Both families, v4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Destinations that are never captured.
    pub fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    /// Source address the proxy binds when it delivers inbound traffic to the application;
    /// traffic from it is never re-captured.
    pub fn delivery_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    /// The wildcard address.
    pub fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0",
            Family::V6 => "::",
        }
    }

    /// The iptables binary name stem for this family.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

/// A netfilter table we program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// REDIRECT for outbound (and inbound in redirect mode).
    Nat,
    /// TPROXY and connection marks (tproxy mode).
    Mangle,
}

impl Table {
    /// Both tables, in the order they are applied.
    pub const ALL: [Table; 2] = [Table::Nat, Table::Mangle];

    /// The name iptables uses.
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Mangle => "mangle",
        }
    }
}

/// One rule: `-A <chain> <spec>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: String,
    /// Everything after the chain name, in the form `iptables-save` prints it.
    pub spec: String,
}

impl Rule {
    fn new(chain: &str, spec: impl Into<String>) -> Self {
        Self {
            chain: chain.to_string(),
            spec: spec.into(),
        }
    }
}

/// What one table should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRules {
    /// The table.
    pub table: Table,
    /// Our chains, in declaration order.
    pub chains: Vec<String>,
    /// Rules in our chains, in order.
    pub rules: Vec<Rule>,
    /// Jumps from built-in chains into ours.
    pub jumps: Vec<Rule>,
}

const NAT_INBOUND: &str = "PORTCULLIS_INBOUND";
const NAT_IN_REDIRECT: &str = "PORTCULLIS_IN_REDIRECT";
const NAT_OUTPUT: &str = "PORTCULLIS_OUTPUT";
const NAT_REDIRECT: &str = "PORTCULLIS_REDIRECT";
const MANGLE_INBOUND: &str = "PORTCULLIS_INBOUND";
const MANGLE_TPROXY: &str = "PORTCULLIS_TPROXY";
const MANGLE_CONNMARK: &str = "PORTCULLIS_CONNMARK";

fn mark() -> String {
    format!("{TPROXY_MARK:#x}/0xffffffff")
}

/// Rules that select the captured inbound ports and send them to `target`.
fn inbound_selection(cfg: &InitConfig, chain: &str, target: &str) -> Vec<Rule> {
    let mut rules: Vec<Rule> = cfg
        .exclude_inbound_ports
        .iter()
        .map(|p| Rule::new(chain, format!("-p tcp -m tcp --dport {p} -j RETURN")))
        .collect();
    match &cfg.inbound_ports {
        InboundPorts::All => rules.push(Rule::new(chain, format!("-p tcp -j {target}"))),
        InboundPorts::Only(ports) => rules.extend(
            ports
                .iter()
                .map(|p| Rule::new(chain, format!("-p tcp -m tcp --dport {p} -j {target}"))),
        ),
    }
    rules
}

fn nat(cfg: &InitConfig, family: Family) -> TableRules {
    let lo = family.loopback();
    let (uid, gid) = (cfg.proxy_uid, cfg.proxy_gid);
    let mut chains = vec![NAT_INBOUND, NAT_IN_REDIRECT, NAT_OUTPUT, NAT_REDIRECT];
    let mut rules = vec![Rule::new(
        NAT_IN_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", cfg.inbound_port),
    )];
    rules.extend(inbound_selection(cfg, NAT_INBOUND, NAT_IN_REDIRECT));

    // Outbound. Order matters: the proxy's own delivery connections first, then the proxy's
    // connections to this pod's own addresses (judged by the inbound side), then everything else
    // the proxy sends, then what the operator excluded, then capture.
    let out = |spec: String| Rule::new(NAT_OUTPUT, spec);
    rules.push(out(format!(
        "-s {} -o lo -j RETURN",
        family.delivery_source()
    )));
    if cfg.mode == CaptureMode::Tproxy {
        rules.push(out(format!("-m mark --mark {} -j RETURN", mark())));
    }
    for owner in [format!("--uid-owner {uid}"), format!("--gid-owner {gid}")] {
        rules.push(out(format!(
            "! -d {lo} -o lo -m owner {owner} -j {NAT_INBOUND}"
        )));
        rules.push(out(format!("-m owner {owner} -j RETURN")));
    }
    rules.push(out(format!("-d {lo} -j RETURN")));
    for p in &cfg.exclude_outbound_ports {
        rules.push(out(format!("-p tcp -m tcp --dport {p} -j RETURN")));
    }
    for cidr in &cfg.exclude_outbound_cidrs {
        if (family == Family::V4) == cidr.addr().is_ipv4() {
            rules.push(out(format!("-d {cidr} -j RETURN")));
        }
    }
    rules.push(out(format!("-j {NAT_REDIRECT}")));
    rules.push(Rule::new(
        NAT_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", cfg.outbound_port),
    ));

    let mut jumps = vec![Rule::new("OUTPUT", format!("-p tcp -j {NAT_OUTPUT}"))];
    if cfg.mode == CaptureMode::Redirect {
        jumps.insert(
            0,
            Rule::new("PREROUTING", format!("-p tcp -j {NAT_INBOUND}")),
        );
    }
    chains.sort_unstable();
    TableRules {
        table: Table::Nat,
        chains: chains.into_iter().map(String::from).collect(),
        rules,
        jumps,
    }
}

fn mangle(cfg: &InitConfig, family: Family) -> TableRules {
    if cfg.mode != CaptureMode::Tproxy {
        return TableRules {
            table: Table::Mangle,
            chains: Vec::new(),
            rules: Vec::new(),
            jumps: Vec::new(),
        };
    }
    let mark = mark();
    let inb = |spec: &str| Rule::new(MANGLE_INBOUND, spec);
    let mut rules = vec![
        // Looped-back packets (the proxy delivering to the app) are never diverted.
        inb("-i lo -j RETURN"),
        // Without this TPROXY would also take packets of the proxy's own established upstream
        // connections.
        inb("-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"),
    ];
    rules.extend(inbound_selection(cfg, MANGLE_INBOUND, MANGLE_TPROXY));
    rules.push(Rule::new(
        MANGLE_TPROXY,
        format!(
            "! -d {} -p tcp -j TPROXY --on-port {} --on-ip {} --tproxy-mark {mark}",
            family.loopback(),
            cfg.inbound_port,
            family.any()
        ),
    ));
    // The proxy's source-preserving connections to the app carry the mark; the app's replies get
    // it back from the connection so that policy routing returns them over lo to the proxy.
    rules.push(Rule::new(
        MANGLE_CONNMARK,
        format!(
            "-m mark --mark {mark} -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"
        ),
    ));
    rules.push(Rule::new(
        MANGLE_CONNMARK,
        format!(
            "-m connmark --mark {mark} -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"
        ),
    ));
    TableRules {
        table: Table::Mangle,
        chains: [MANGLE_CONNMARK, MANGLE_INBOUND, MANGLE_TPROXY]
            .map(String::from)
            .to_vec(),
        rules,
        jumps: vec![
            Rule::new("PREROUTING", format!("-p tcp -j {MANGLE_INBOUND}")),
            Rule::new("OUTPUT", format!("-p tcp -j {MANGLE_CONNMARK}")),
        ],
    }
}

/// What the tables of `family` should hold under `cfg`: nat first, then mangle.
pub fn desired(cfg: &InitConfig, family: Family) -> Vec<TableRules> {
    vec![nat(cfg, family), mangle(cfg, family)]
}

/// What the tables should hold after `--cleanup`: nothing of ours.
pub fn nothing() -> Vec<TableRules> {
    Table::ALL
        .iter()
        .map(|&table| TableRules {
            table,
            chains: Vec::new(),
            rules: Vec::new(),
            jumps: Vec::new(),
        })
        .collect()
}
