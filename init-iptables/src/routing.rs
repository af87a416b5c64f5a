//! The `ip` commands that go with the iptables rules (pure planning, no IO).
//!
//! TPROXY needs a policy-routing rule that sends marked packets to a table whose only route
//! delivers everything locally over `lo`. With IPv6 the proxy also needs `::6` on `lo`, the
//! source address of its deliveries to the application (IPv4 uses 127.0.0.6, already on `lo`).

use std::fmt;

use crate::config::{CaptureMode, InitConfig};
use crate::rules::{Family, ROUTE_TABLE, TPROXY_MARK};

/// One `ip` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpCommand {
    /// Arguments after `ip`.
    pub args: Vec<String>,
    /// Whether a failure aborts the run (false for removals of what may be absent).
    pub must_succeed: bool,
}

impl fmt::Display for IpCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ip {}", self.args.join(" "))
    }
}

/// What the routing configuration holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutingState {
    /// How many `fwmark 0x539 lookup 133` rules exist.
    pub mark_rules: usize,
}

impl RoutingState {
    /// Counts our rules in `ip rule show` output.
    pub fn parse(ip_rule_show: &str) -> Self {
        let needle = format!("fwmark {TPROXY_MARK:#x} lookup {ROUTE_TABLE}");
        Self {
            mark_rules: ip_rule_show.lines().filter(|l| l.contains(&needle)).count(),
        }
    }
}

fn cmd(family: Family, words: &str, must_succeed: bool) -> IpCommand {
    let flag = match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    };
    IpCommand {
        args: std::iter::once(flag.to_string())
            .chain(words.split_whitespace().map(String::from))
            .collect(),
        must_succeed,
    }
}

fn rule_words() -> String {
    format!("fwmark {TPROXY_MARK:#x} lookup {ROUTE_TABLE}")
}

fn remove_mark_rules(family: Family, state: RoutingState) -> Vec<IpCommand> {
    let mut cmds: Vec<IpCommand> = (0..state.mark_rules)
        .map(|_| cmd(family, &format!("rule del {}", rule_words()), false))
        .collect();
    if state.mark_rules > 0 {
        cmds.push(cmd(
            family,
            &format!("route flush table {ROUTE_TABLE}"),
            false,
        ));
    }
    cmds
}

/// Commands that bring routing to what `cfg` needs, given what exists.
pub fn install(cfg: &InitConfig, family: Family, state: RoutingState) -> Vec<IpCommand> {
    let mut cmds = Vec::new();
    if family == Family::V6 {
        cmds.push(cmd(family, "addr replace ::6/128 dev lo", true));
    }
    if cfg.mode != CaptureMode::Tproxy {
        cmds.extend(remove_mark_rules(family, state));
        return cmds;
    }
    if state.mark_rules == 0 {
        cmds.push(cmd(family, &format!("rule add {}", rule_words()), true));
    }
    for _ in 1..state.mark_rules {
        cmds.push(cmd(family, &format!("rule del {}", rule_words()), false));
    }
    let all = match family {
        Family::V4 => "0.0.0.0/0",
        Family::V6 => "::/0",
    };
    cmds.push(cmd(
        family,
        &format!("route replace local {all} dev lo table {ROUTE_TABLE}"),
        true,
    ));
    cmds
}

/// Commands that remove what [`install`] added.
pub fn cleanup(family: Family, state: RoutingState) -> Vec<IpCommand> {
    let mut cmds = remove_mark_rules(family, state);
    if family == Family::V6 {
        cmds.push(cmd(family, "addr del ::6/128 dev lo", false));
    }
    cmds
}
