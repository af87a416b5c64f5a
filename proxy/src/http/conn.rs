//! One downstream HTTP connection as both servers see it: who is calling and where it was
//! going, the upstream side, and what every request shares — a fresh access-log record, the
//! judgement (validated token in, [`super::judge`] decides, the record is filled in from the
//! value), and the one place a request is logged and counted.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use http::StatusCode;

use super::judge::{self, Ask, Judgement, Token, View};
use super::pool::Upstream;
use super::respond::Local;
use crate::connection::admit::Conn;
use crate::connection::context::Context;
use crate::drain::Drain;
use crate::http::jwt::{JwtError, Presented, TokenError};
use crate::observe::access_log::Record;
use crate::observe::metrics::{DirLabels, ErrorLabels, RequestLabels};
use crate::vocab::{Direction, Verdict};

/// Label values for requests without a deciding policy or rule (allocated once).
static NO_POLICY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
static NO_RULE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("none"));

/// One downstream HTTP connection.
#[derive(Debug)]
pub(crate) struct HttpConn {
    pub(crate) ctx: Arc<Context>,
    pub(crate) direction: Direction,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) identity: Option<String>,
    /// The Service dialled, when `dst` is its endpoint.
    pub(crate) service: Option<Arc<str>>,
    /// This workload's own trust domain, when it has an identity.
    pub(crate) trust_domain: Option<String>,
    pub(crate) http2: bool,
    pub(crate) upstream: Upstream,
    /// Set when the drain starts: HTTP/1 responses then say `Connection: close`, so clients stop
    /// reusing the connection before it is closed (no request races the close).
    pub(crate) drain: Drain,
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl HttpConn {
    fn protocol(&self, grpc: bool) -> &'static str {
        match (grpc, self.http2) {
            (true, _) => "grpc",
            (false, true) => "http2",
            (false, false) => "http1",
        }
    }

    /// Finishes a request's record — status, deciding rule, duration — logs and counts it.
    pub(crate) fn log(&self, rec: &mut Record, started: Instant, status: StatusCode) {
        rec.status = Some(status.as_u16());
        rec.duration_ms = started.elapsed().as_millis() as u64;
        let m = &self.ctx.metrics;
        m.requests
            .get_or_create(&RequestLabels {
                direction: self.direction,
                verdict: rec.verdict,
                policy: rec.policy.clone().unwrap_or_else(|| NO_POLICY.clone()),
                rule: rec.rule.clone().unwrap_or_else(|| NO_RULE.clone()),
                status_class: status_class(status),
            })
            .inc();
        m.request_duration
            .get_or_create(&DirLabels {
                direction: self.direction,
            })
            .observe(started.elapsed().as_secs_f64());
        self.ctx.access_log.log(rec);
    }

    /// Counts a request the proxy answered itself because the upstream failed.
    pub(crate) fn count_error(&self, why: Local) {
        self.ctx
            .metrics
            .errors
            .get_or_create(&ErrorLabels {
                direction: self.direction,
                reason: why.reason(),
            })
            .inc();
    }

    /// A fresh access-log record for one request.
    pub(crate) fn record(&self, method: &str, request_id: Option<&str>, grpc: bool) -> Record {
        let mut rec = Record::new(
            self.direction,
            self.src,
            Some(self.dst),
            self.protocol(grpc),
        );
        rec.identity.clone_from(&self.identity);
        rec.service.clone_from(&self.service);
        rec.method = Some(method.to_string());
        rec.request_id = request_id.map(str::to_string);
        rec
    }

    /// A bearer token counts only once validated; the token itself is never logged.
    fn token(&self, presented: Presented<'_>) -> Token {
        match (presented, &self.ctx.jwks) {
            (Presented::Token(token), Some(keys)) => match keys.validate(token) {
                Ok(claims) => Token::Valid(claims),
                Err(e) => Token::Invalid(e),
            },
            (Presented::Token(_), None) => Token::Invalid(JwtError::Token(TokenError::UnknownKey)),
            (Presented::Several, _) => Token::Several,
            (Presented::Nothing, _) => Token::Absent,
        }
    }

    /// Judges one request and fills in `rec` from the judgement. Both the HTTP/1 relay and the
    /// hyper server ask here, so every request meets the same checks.
    pub(crate) fn judge(
        &self,
        rec: &mut Record,
        ask: &Ask<'_>,
        bearer: Presented<'_>,
    ) -> Judgement {
        let active = self.ctx.policy.current();
        let view = View {
            policy: &active.loaded.policy,
            audit: self.ctx.audit,
        };
        let conn = Conn {
            direction: self.direction,
            src: self.src,
            dst: self.dst,
            identity: self.identity.as_deref(),
            trust_domain: self.trust_domain.as_deref(),
        };
        let judgement = judge::judge(view, conn, ask, &self.token(bearer));
        match &judgement {
            Judgement::Reject { reason } => {
                rec.path = Some(ask.target.to_string());
                rec.verdict = Verdict::Deny;
                rec.reason = Some(reason.clone());
            }
            Judgement::Deny {
                ruling,
                reason,
                target,
                ..
            } => {
                rec.path = Some(target.path.clone());
                rec.host.clone_from(&ask.host);
                rec.verdict = ruling.verdict;
                rec.reason = Some(reason.clone());
                rec.policy.clone_from(&ruling.decision.policy);
                rec.rule = Some(ruling.decision.rule.clone());
            }
            Judgement::Forward {
                ruling,
                reason,
                target,
            } => {
                rec.path = Some(target.path.clone());
                rec.host.clone_from(&ask.host);
                rec.verdict = ruling.verdict;
                rec.reason.clone_from(reason);
                rec.policy.clone_from(&ruling.decision.policy);
                rec.rule = Some(ruling.decision.rule.clone());
            }
        }
        judgement
    }
}
