//! The words every stage shares — which side a connection is on, how it was captured, what was
//! decided — kept in a leaf that imports nothing of this crate, so that no two stages need each
//! other to talk about a connection.

use std::fmt::Write as _;

use portcullis_config::{Decision, Verdict as PolicyVerdict};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Serialize;

/// Which listener took the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Arriving at the workload.
    Inbound,
    /// Leaving the workload.
    Outbound,
}

impl Direction {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl From<Direction> for portcullis_config::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Inbound => portcullis_config::Direction::Inbound,
            Direction::Outbound => portcullis_config::Direction::Outbound,
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// What became of a connection or request, after audit mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
    /// Would have been refused; let through in audit mode.
    AuditDeny,
}

impl Verdict {
    /// The name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::AuditDeny => "audit_deny",
        }
    }
}

impl EncodeLabelValue for Verdict {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// A policy decision with audit mode applied — the one place where audit turns a denial into
/// `audit_deny` for both the connection and the request phase.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ruling {
    /// What the policy decided, and why.
    pub(crate) decision: Decision,
    /// What is done about it: `Deny` only when enforced.
    pub(crate) verdict: Verdict,
}

impl Ruling {
    /// Applies the mode to a decision.
    pub(crate) fn new(decision: Decision, audit: bool) -> Self {
        let verdict = match (decision.verdict, audit) {
            (PolicyVerdict::Allow, _) => Verdict::Allow,
            (PolicyVerdict::Deny, false) => Verdict::Deny,
            (PolicyVerdict::Deny, true) => Verdict::AuditDeny,
        };
        Self { decision, verdict }
    }

    /// Whether the traffic is refused.
    pub(crate) fn refuses(&self) -> bool {
        self.verdict == Verdict::Deny
    }
}

/// How inbound traffic was captured (`--capture`; its flag values live with the flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// nat REDIRECT: the original destination comes from SO_ORIGINAL_DST.
    Redirect,
    /// TPROXY: the accepted socket's local address is the original destination, and the
    /// application sees the client's own address.
    Tproxy,
}
