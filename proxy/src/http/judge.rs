//! Request judging, the pure decision of the request phase: one request (as read from either
//! HTTP server), the connection it came on and its validated bearer token in; out comes what to
//! do — reject (400), deny with the reason to answer (403, 401 + `WWW-Authenticate`, or their
//! gRPC status, see [`Local::wire`]), or forward under the normalized target — with audit mode applied once, in
//! [`Ruling`].

use portcullis_config::decide::{Headers, JwtClaims};
use portcullis_config::normalize::{Target, normalize_target};
use portcullis_config::{CompiledPolicy, Request, Verdict as PolicyVerdict};

use super::jwt::JwtError;
use super::respond::Local;
use crate::connection::admit::Conn;
use crate::vocab::{Ruling, Verdict};

/// What judging reads besides the request: the policy in force and how it is enforced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    /// The active policy.
    pub(crate) policy: &'a CompiledPolicy,
    /// Audit mode: a denial is logged as `audit_deny` and the request passes.
    pub(crate) audit: bool,
}

/// What one request asks for, as the policy reads it.
pub(crate) struct Ask<'a> {
    /// The method.
    pub(crate) method: &'a str,
    /// The request target as sent.
    pub(crate) target: &'a str,
    /// The normalized host.
    pub(crate) host: Option<String>,
    /// The request's headers.
    pub(crate) headers: &'a dyn Headers,
}

/// The request's bearer token, once validated.
#[derive(Debug, Clone)]
pub(crate) enum Token {
    /// None was sent.
    Absent,
    /// It verified: its claims.
    Valid(JwtClaims),
    /// It did not verify.
    Invalid(JwtError),
    /// More than one `Authorization` header was sent.
    Several,
}

/// What becomes of one request.
#[derive(Debug)]
pub(crate) enum Judgement {
    /// Rejected by normalization: answered 400, never judged by the policy.
    Reject {
        /// Why, for the log.
        reason: String,
    },
    /// Denied and answered locally.
    Deny {
        /// The decision.
        ruling: Ruling,
        /// What to answer.
        answer: Local,
        /// Why, for the log.
        reason: String,
        /// The normalized target.
        target: Target,
    },
    /// Forwarded under the normalized target (allowed, or denied in audit mode).
    Forward {
        /// The decision.
        ruling: Ruling,
        /// Why it would have been denied, in audit mode.
        reason: Option<String>,
        /// The normalized target.
        target: Target,
    },
}

/// Judges one request.
pub(crate) fn judge(view: View<'_>, conn: Conn<'_>, ask: &Ask<'_>, token: &Token) -> Judgement {
    let target = match normalize_target(ask.target) {
        Ok(t) => t,
        Err(e) => {
            return Judgement::Reject {
                reason: format!("rejected by normalization: {e}"),
            };
        }
    };
    let c = conn.policy(None);
    // Two credentials where tokens are judged: the one validated might not be the one the
    // application reads.
    if matches!(token, Token::Several) && view.policy.uses_jwt(c.direction) {
        return Judgement::Reject {
            reason: "more than one Authorization header".into(),
        };
    }
    let claims = match token {
        Token::Valid(claims) => Some(claims),
        Token::Absent | Token::Invalid(_) | Token::Several => None,
    };
    let decision = view.policy.decide_request(
        &c,
        &Request {
            method: ask.method,
            path: &target.path,
            host: ask.host.as_deref(),
            headers: ask.headers,
            jwt: claims,
        },
        None,
    );
    // A denial that a valid token might have turned around is answered 401, not 403.
    let invalid_token = match token {
        Token::Invalid(e)
            if decision.verdict == PolicyVerdict::Deny && view.policy.uses_jwt(c.direction) =>
        {
            Some(e)
        }
        _ => None,
    };
    let reason = match invalid_token {
        Some(e) => format!("{}; invalid token: {e}", decision.reason),
        None => decision.reason.to_string(),
    };
    let ruling = Ruling::new(decision, view.audit);
    if ruling.refuses() {
        let answer = match invalid_token {
            Some(_) => Local::Unauthenticated,
            None => Local::Denied,
        };
        return Judgement::Deny {
            ruling,
            answer,
            reason,
            target,
        };
    }
    Judgement::Forward {
        reason: (ruling.verdict == Verdict::AuditDeny).then_some(reason),
        ruling,
        target,
    }
}

#[cfg(test)]
mod tests;
