//! The pure diff between what should exist ([`crate::rules`]) and what exists
//! ([`crate::state`]), rendered as `iptables-restore --noflush` input, one script per table.
//!
//! Each script is applied in one restore call, so a table changes atomically or not at all.
//! Declaring our chains flushes them; jumps from built-in chains are added only when missing and
//! removed when no longer wanted; chains no longer wanted are flushed, then deleted. Applying the
//! plan for the same configuration twice leaves the same rules as applying it once.

use std::fmt::Write as _;

use crate::routing::IpCommand;
use crate::rules::{Family, Table, TableRules};
use crate::state::SavedState;

/// The restore input for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// The table.
    pub table: Table,
    /// `iptables-restore --noflush` input, from `*table` to `COMMIT`.
    pub script: String,
}

/// Plans every table whose desired or current content involves us.
pub fn plan(desired: &[TableRules], current: &SavedState) -> Vec<TablePlan> {
    desired
        .iter()
        .filter_map(|want| plan_table(want, current))
        .collect()
}

fn plan_table(want: &TableRules, current: &SavedState) -> Option<TablePlan> {
    let have = current.table(want.table);
    if want.chains.is_empty() && have.chains.is_empty() && have.jumps.is_empty() {
        return None;
    }
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("*{}", want.table.name()));
    for chain in &want.chains {
        line(format!(":{chain} - [0:0]"));
    }
    // Existing jumps: keep the first copy of each wanted one, delete duplicates and unwanted ones.
    let mut kept = Vec::new();
    for jump in &have.jumps {
        if want.jumps.contains(jump) && !kept.contains(&jump) {
            kept.push(jump);
        } else {
            line(format!("-D {} {}", jump.chain, jump.spec));
        }
    }
    let stale: Vec<&String> = have
        .chains
        .iter()
        .filter(|c| !want.chains.contains(c))
        .collect();
    for chain in &stale {
        line(format!("-F {chain}"));
    }
    for chain in &stale {
        line(format!("-X {chain}"));
    }
    for rule in want
        .rules
        .iter()
        .chain(want.jumps.iter().filter(|j| !kept.contains(j)))
    {
        line(format!("-A {} {}", rule.chain, rule.spec));
    }
    line("COMMIT".to_string());
    Some(TablePlan {
        table: want.table,
        script: s,
    })
}

/// Renders a family's plan as `--dry-run` prints it: the restore inputs, then the `ip` commands
/// as comments (restore ignores `#` lines).
pub fn render(family: Family, tables: &[TablePlan], ip: &[IpCommand]) -> String {
    let mut out = format!("# {family}\n");
    if tables.is_empty() && ip.is_empty() {
        out.push_str("# nothing to change\n");
    }
    for t in tables {
        out.push_str(&t.script);
    }
    for cmd in ip {
        let _ = writeln!(out, "# {cmd}");
    }
    out
}

#[cfg(test)]
mod tests;
