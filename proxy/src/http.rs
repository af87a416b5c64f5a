//! HTTP enforcement for connections whose fate depends on their requests: hyper serves the
//! client (HTTP/1.1, or HTTP/2 with prior knowledge), every request is normalized and judged on
//! its own, denied requests are answered locally, allowed ones are forwarded — under their
//! normalized path — to the original destination with bodies and trailers streamed, and
//! protocol switches (WebSocket, CONNECT) are tunnelled once authorized.

pub mod headers;
pub mod idle;
pub mod relay;
pub mod respond;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis_config::normalize::{normalize_host, normalize_target};
use portcullis_config::{Decision, Verdict as PolicyVerdict};

use self::headers::{PolicyHeaders, strip_hop_by_hop};
use self::respond::{Local, is_grpc, local};
use self::upstream::Upstream;
use crate::access_log::Record;
use crate::connection::{Context, Direction};
use crate::drain::Drain;
use crate::metrics::{RequestLabels, Verdict};
use crate::prefixed::Prefixed;
use crate::stream::Stream;

/// Label values for requests without a deciding policy or rule (allocated once).
static NO_POLICY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
static NO_RULE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("none"));

/// The body type of every response the proxy returns.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Largest request head (request line + headers) accepted from a client.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 100;
/// Most concurrent HTTP/2 streams per client connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Who is on the other end of a downstream HTTP connection, and where it was going.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// Which listener took it.
    pub direction: Direction,
    /// The client.
    pub src: SocketAddr,
    /// The original destination.
    pub dst: SocketAddr,
    /// The peer sidecar's verified SPIFFE ID (inbound mutual TLS).
    pub identity: Option<String>,
    /// HTTP/2 with prior knowledge, else HTTP/1.
    pub http2: bool,
}

/// What one request asks for, as the policy reads it.
struct Ask<'a> {
    method: &'a str,
    /// The request target as sent.
    target: &'a str,
    /// The normalized host.
    host: Option<String>,
    headers: &'a dyn portcullis_config::decide::Headers,
    bearer: Option<&'a str>,
}

/// What becomes of one request.
enum Judged {
    /// Rejected by normalization (answered 400); the record says why.
    Reject,
    /// Denied, answered locally.
    Deny(Local, Decision),
    /// Forwarded (allowed, or denied in audit mode), under the normalized target.
    Forward(Decision, portcullis_config::normalize::Target),
}

/// One downstream HTTP connection.
#[derive(Debug)]
struct HttpConn {
    ctx: Arc<Context>,
    direction: Direction,
    src: SocketAddr,
    dst: SocketAddr,
    identity: Option<String>,
    http2: bool,
    upstream: Upstream,
    /// Set when the drain starts: HTTP/1 responses then say `Connection: close`, so clients stop
    /// reusing the connection before it is closed (no request races the close).
    drain: Drain,
}

fn boxed(resp: Response<Incoming>) -> Response<Body> {
    resp.map(|b| b.boxed())
}

fn is_switching(req: &Request<Incoming>) -> bool {
    req.method() == Method::CONNECT
        || req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
            && req.headers().contains_key(header::UPGRADE)
}

impl HttpConn {
    fn protocol(&self, grpc: bool) -> &'static str {
        match (grpc, self.http2) {
            (true, _) => "grpc",
            (false, true) => "http2",
            (false, false) => "http1",
        }
    }

    fn log(
        &self,
        rec: &mut Record,
        started: Instant,
        status: StatusCode,
        decision: Option<&Decision>,
    ) {
        rec.status = Some(status.as_u16());
        if let Some(d) = decision {
            rec.policy.clone_from(&d.policy);
            rec.rule = Some(d.rule.clone());
        }
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
            .get_or_create(&crate::metrics::DirLabels {
                direction: self.direction,
            })
            .observe(started.elapsed().as_secs_f64());
        self.ctx.access_log.log(rec);
    }

    /// Counts a request the proxy answered itself because the upstream failed.
    fn count_error(&self, why: Local) {
        self.ctx
            .metrics
            .errors
            .get_or_create(&crate::metrics::ErrorLabels {
                direction: self.direction,
                reason: why.reason(),
            })
            .inc();
    }

    /// A fresh access-log record for one request.
    fn record(&self, method: &str, request_id: Option<&str>, grpc: bool) -> Record {
        let mut rec = Record::new(
            self.direction,
            self.src,
            Some(self.dst),
            self.protocol(grpc),
        );
        rec.identity.clone_from(&self.identity);
        rec.method = Some(method.to_string());
        rec.request_id = request_id.map(str::to_string);
        rec
    }

    /// Normalizes and judges one request, filling in `rec`. Both the HTTP/1 relay and the
    /// hyper server ask here, so every request meets the same checks.
    fn judge(&self, rec: &mut Record, ask: Ask<'_>) -> Judged {
        let target = match normalize_target(ask.target) {
            Ok(t) => t,
            Err(e) => {
                rec.path = Some(ask.target.to_string());
                rec.verdict = Verdict::Deny;
                rec.reason = Some(format!("rejected by normalization: {e}"));
                return Judged::Reject;
            }
        };
        rec.path = Some(target.path.clone());
        rec.host.clone_from(&ask.host);
        let conn = self.ctx.policy_connection(
            self.direction,
            self.src,
            self.dst,
            self.identity.as_deref(),
            None,
        );
        // A bearer token counts only once validated; the token itself is never logged.
        let (claims, token_error) = match (ask.bearer, &self.ctx.jwks) {
            (Some(token), Some(keys)) => match keys.validate(token) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            },
            (Some(_), None) => (None, Some(crate::jwt::JwtError::UnknownKey)),
            (None, _) => (None, None),
        };
        let active = self.ctx.policy.current();
        let decision = active.loaded.policy.decide_request(
            &conn,
            &portcullis_config::Request {
                method: ask.method,
                path: &target.path,
                host: ask.host.as_deref(),
                headers: ask.headers,
                jwt: claims.as_ref(),
            },
            None,
        );
        if decision.verdict == PolicyVerdict::Deny {
            rec.reason = Some(decision.reason.to_string());
            let why = match &token_error {
                Some(e) if active.loaded.policy.uses_jwt(conn.direction) => {
                    rec.reason = Some(format!("{}; invalid token: {e}", decision.reason));
                    Local::Unauthenticated
                }
                _ => Local::Denied,
            };
            if !self.ctx.audit {
                rec.verdict = Verdict::Deny;
                return Judged::Deny(why, decision);
            }
            rec.verdict = Verdict::AuditDeny;
        }
        Judged::Forward(decision, target)
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(req.headers());
        let mut rec = self.record(
            req.method().as_str(),
            req.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            grpc,
        );
        // Framing ambiguities never get here: hyper rejects duplicate Content-Length, obs-fold
        // and non-chunked Transfer-Encoding with 400, and for Content-Length with
        // Transfer-Encoding it uses chunked framing, drops Content-Length and closes the
        // connection after the response (RFC 9112 6.1), so nothing can be smuggled behind it.
        let h = req.headers();
        let host = req
            .uri()
            .authority()
            .map(|a| normalize_host(a.as_str()))
            .or_else(|| {
                h.get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(normalize_host)
            });
        let judged = self.judge(
            &mut rec,
            Ask {
                method: req.method().as_str(),
                target: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                host: host.clone(),
                headers: &PolicyHeaders(h),
                bearer: crate::jwt::bearer(h),
            },
        );
        let (decision, target) = match judged {
            Judged::Reject => {
                let resp = local(Local::BadRequest, grpc);
                self.log(&mut rec, started, resp.status(), None);
                return resp;
            }
            Judged::Deny(why, decision) => {
                let resp = local(why, grpc);
                self.log(&mut rec, started, resp.status(), Some(&decision));
                return resp;
            }
            Judged::Forward(decision, target) => (decision, target),
        };
        let reject = |this: &Self, rec: &mut Record, why: String| {
            rec.verdict = Verdict::Deny;
            rec.reason = Some(why);
            let resp = local(Local::BadRequest, grpc);
            this.log(rec, started, resp.status(), None);
            resp
        };

        let switching = !self.http2 && is_switching(&req);
        strip_hop_by_hop(req.headers_mut(), switching);
        // The common case: the request already says exactly what was judged (an HTTP/1
        // origin-form target, or an HTTP/2 one with scheme and authority) — no rebuild.
        let unchanged = {
            let u = req.uri();
            let same_target = target.query.as_deref() == u.query()
                && target.path == u.path()
                && u.path_and_query().is_some();
            same_target
                && if self.http2 {
                    u.scheme().is_some() && u.authority().is_some()
                } else {
                    u.scheme().is_none() && u.authority().is_none()
                }
        };
        if req.method() != Method::CONNECT && !unchanged {
            let authority = host.clone().unwrap_or_else(|| self.dst.to_string());
            let uri = if self.http2 {
                Uri::builder()
                    .scheme("http")
                    .authority(req.uri().authority().map_or(authority, |a| a.to_string()))
                    .path_and_query(target.path_and_query())
                    .build()
            } else {
                Uri::builder()
                    .path_and_query(target.path_and_query())
                    .build()
            };
            match uri {
                Ok(u) => *req.uri_mut() = u,
                Err(_) => return reject(&self, &mut rec, "unforwardable request target".into()),
            }
        }
        let result = if switching {
            self.switch_protocols(req).await
        } else if self.http2 {
            self.upstream.send_h2(req).await
        } else {
            self.upstream.send_h1(req).await
        };
        let resp = match result {
            Ok(mut resp) => {
                if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(resp.headers_mut(), false);
                }
                resp
            }
            Err(e) => {
                rec.reason = Some(e.to_string());
                self.count_error(e.local());
                local(e.local(), grpc)
            }
        };
        self.log(&mut rec, started, resp.status(), Some(&decision));
        resp
    }

    /// Marks HTTP/1 responses `Connection: close` once the drain has started.
    fn closing(&self, mut resp: Response<Body>) -> Response<Body> {
        if !self.http2
            && self.drain.is_draining()
            && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        resp
    }

    /// Forwards an Upgrade or CONNECT request and, if the upstream agrees, joins the two
    /// upgraded connections.
    async fn switch_protocols(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, upstream::UpstreamError> {
        let connect = req.method() == Method::CONNECT;
        let downstream = hyper::upgrade::on(&mut req);
        let mut resp = self.upstream.send_switching(req).await?;
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (connect && resp.status().is_success());
        if switched {
            let upstream = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((d, u)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(d),
                            &mut TokioIo::new(u),
                        )
                        .await;
                    }
                    Err(e) => tracing::debug!(error = %e, "protocol switch failed"),
                }
            });
        }
        Ok(boxed(resp))
    }
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

/// Serves one downstream HTTP connection until it closes or the drain asks it to (HTTP/2
/// GOAWAY; HTTP/1 closes after the response in flight). HTTP/1.1 goes through the relay, which
/// hands anything it does not carry itself to the hyper server.
pub async fn serve(ctx: Arc<Context>, down: Downstream, io: Prefixed<Stream>, drain: Drain) {
    let Downstream {
        direction,
        src,
        dst,
        identity,
        http2,
    } = down;
    let upstream = Upstream::new(
        ctx.pools.clone(),
        ctx.connector.clone(),
        direction,
        src,
        dst,
    );
    let conn = Arc::new(HttpConn {
        ctx,
        direction,
        src,
        dst,
        identity,
        http2,
        upstream,
        drain: drain.clone(),
    });
    // Boxed: a connection carries the state of only the server it uses.
    if http2 {
        return Box::pin(serve_hyper(conn, io, drain)).await;
    }
    let (prefix, stream) = io.into_parts();
    if let relay::End::Handover(rest, stream) =
        Box::pin(relay::serve(conn.clone(), prefix, stream)).await
    {
        Box::pin(serve_hyper(conn, Prefixed::new(rest, stream), drain)).await;
    }
}

/// Serves a connection with hyper (HTTP/2, and HTTP/1 requests the relay does not carry).
async fn serve_hyper(conn: Arc<HttpConn>, io: Prefixed<Stream>, drain: Drain) {
    let (http2, src) = (conn.http2, conn.src);
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move {
            let resp = conn.clone().handle(req).await;
            Ok::<_, Infallible>(conn.closing(resp))
        }
    });
    let activity = idle::Activity::new();
    let io = TokioIo::new(idle::Tracked::new(io, activity.clone()));
    // Stop when the drain starts or the connection has been idle too long; either way hyper
    // finishes what is in flight first.
    let stop = async {
        tokio::select! {
            () = drain.started() => {
                // HTTP/2 clients learn from GOAWAY which streams were taken. HTTP/1 clients get
                // `Connection: close` on every response for a grace period first, so a request
                // sent on an idle keep-alive connection is answered rather than lost in the close.
                if !http2 {
                    tokio::time::sleep(crate::config::HTTP1_DRAIN_GRACE).await;
                }
            }
            () = activity.idle(crate::config::IDLE_TIMEOUT) => {}
        }
    };
    let result = if http2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256));
        let c = b.serve_connection(io, svc);
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            () = stop => {
                c.as_mut().graceful_shutdown();
                c.await
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(crate::config::HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS);
        let c = b.serve_connection(io, svc).with_upgrades();
        tokio::pin!(c);
        tokio::select! {
            r = c.as_mut() => r,
            () = stop => {
                c.as_mut().graceful_shutdown();
                c.await
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%src, error = %e, "http connection ended with an error");
    }
}
