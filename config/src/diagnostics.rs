//! Errors and warnings at locations in a policy file, collected while compiling (every error is
//! reported, none stops the others), and the located parsers shared by AccessPolicy and
//! NetworkPolicy compilation.

use std::sync::Arc;

use ipnet::IpNet;

use crate::matchers::{CidrMatch, POLICY_REGEX_BUDGET, REGEX_SIZE_LIMIT, compiled_size};
use crate::model::Spanned;
use crate::source::PolicyError;

/// A problem that does not stop the policy from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub PolicyError);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = &self.0;
        write!(
            f,
            "{}:{}:{}: warning: {}",
            e.file, e.line, e.column, e.message
        )
    }
}

/// Collects errors and warnings at locations in one file.
#[derive(Debug)]
pub struct Diagnostics<'a> {
    file: Arc<str>,
    line_offset: u64,
    errors: &'a mut Vec<PolicyError>,
    warnings: &'a mut Vec<Warning>,
    regex_budget: &'a mut usize,
}

impl<'a> Diagnostics<'a> {
    /// Collects into `errors` and `warnings` for the document of `file` that starts after
    /// `line_offset` lines, charging regexes to `regex_budget` (bytes left for the whole policy).
    pub fn new(
        (file, line_offset): (Arc<str>, u64),
        errors: &'a mut Vec<PolicyError>,
        warnings: &'a mut Vec<Warning>,
        regex_budget: &'a mut usize,
    ) -> Self {
        Self {
            file,
            line_offset,
            errors,
            warnings,
            regex_budget,
        }
    }

    /// Charges `copies` compiled copies of the regex `re` (written at `at`) to the policy's
    /// budget; false (after reporting) when it does not fit.
    pub fn charge_regex<T>(&mut self, at: &Spanned<T>, re: &str, copies: usize) -> bool {
        let cost = compiled_size(re)
            .unwrap_or(REGEX_SIZE_LIMIT)
            .saturating_mul(copies);
        if cost <= *self.regex_budget {
            *self.regex_budget -= cost;
            return true;
        }
        let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
        self.error(
            at,
            format!(
                "the policy's regexes exceed their compiled-size budget of {:.0} MiB: this one needs {:.1} MiB, {:.1} MiB are left (simplify or merge regexes)",
                mib(POLICY_REGEX_BUDGET),
                mib(cost),
                mib(*self.regex_budget)
            ),
        );
        false
    }

    fn make<T>(&self, at: &Spanned<T>, message: String) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: at.referenced.line() + self.line_offset,
            column: at.referenced.column(),
            message,
        }
    }

    /// Records an error at `at`.
    pub fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let e = self.make(at, message.into());
        self.errors.push(e);
    }

    /// How many errors have been recorded so far (to tell whether a step added one).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Records a warning at `at`.
    pub fn warn<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let w = Warning(self.make(at, message.into()));
        self.warnings.push(w);
    }
}

/// Parses a CIDR (a bare address is a single host); host bits set is an error.
pub fn parse_cidr(d: &mut Diagnostics<'_>, s: &Spanned<String>) -> Option<IpNet> {
    let text = s.value.trim();
    let net = text
        .parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    match net {
        Some(n) if n.trunc() != n => {
            d.error(
                s,
                format!(
                    "CIDR {text:?} has host bits set (did you mean {}?)",
                    n.trunc()
                ),
            );
            None
        }
        Some(n) => Some(n),
        None => {
            d.error(
                s,
                format!("invalid CIDR {text:?} (expected e.g. 10.0.0.0/16 or fd00::/8)"),
            );
            None
        }
    }
}

/// `cidr` + `except`, with every exception inside the range.
pub fn cidr_match(
    d: &mut Diagnostics<'_>,
    cidr: &Spanned<String>,
    except: Option<&Vec<Spanned<String>>>,
) -> Option<CidrMatch> {
    let net = parse_cidr(d, cidr);
    let mut excepts = Vec::new();
    for e in except.into_iter().flatten() {
        if let Some(en) = parse_cidr(d, e) {
            match net {
                Some(n) if !n.contains(&en) => {
                    d.error(e, format!("except {en} is not inside cidr {n}"));
                }
                _ => excepts.push(en),
            }
        }
    }
    net.map(|net| CidrMatch {
        net,
        except: excepts,
    })
}
