//! The hyper server: HTTP/2 (prior knowledge) and every HTTP/1 request the relay does not carry
//! itself. Each request is judged ([`HttpConn::judge`]); a denied one is answered locally, an
//! allowed one forwarded under its normalized target with bodies and trailers streamed, and a
//! protocol switch (WebSocket, CONNECT) is tunnelled once the upstream agrees.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis_config::normalize::Target;

use super::body::ReadAhead;
use super::conn::HttpConn;
use super::headers::{PolicyHeaders, strip_hop_by_hop};
use super::host::request_host;
use super::idle;
use super::judge::{Ask, Judgement};
use super::limits::{
    HEADER_READ_TIMEOUT, HTTP1_DRAIN_GRACE, IDLE_TIMEOUT, MAX_CONCURRENT_STREAMS, MAX_HEADER_BYTES,
    MAX_HEADERS,
};
use super::pool::UpstreamError;
use super::respond::{Body, Local, is_grpc, local};
use crate::drain::Drain;
use crate::net::prefixed::Prefixed;
use crate::net::stream::Stream;
use crate::observe::Chain;
use crate::observe::access_log::Record;
use crate::vocab::Verdict;

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

/// The protocols an `Upgrade` header asks for, lower-cased.
fn upgrade_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a request asks to switch to cleartext HTTP/2 (`Upgrade: h2c`). Such a switch is
/// never forwarded: the HTTP/2 requests that would follow inside the tunnel would reach the
/// application unjudged. The request is served as the HTTP/1 request it also is.
fn asks_h2c(headers: &http::HeaderMap) -> bool {
    upgrade_tokens(headers)
        .iter()
        .any(|t| t.split('/').next() == Some("h2c"))
}

/// Whether the request already says exactly what was judged (an HTTP/1 origin-form target, or
/// an HTTP/2 one with scheme and authority): the common case, forwarded without a rebuild.
fn says_what_was_judged(uri: &Uri, target: &Target, http2: bool) -> bool {
    let same_target = target.query.as_deref() == uri.query()
        && target.path == uri.path()
        && uri.path_and_query().is_some();
    same_target
        && if http2 {
            uri.scheme().is_some() && uri.authority().is_some()
        } else {
            uri.scheme().is_none() && uri.authority().is_none()
        }
}

/// The URI to forward: the normalized target, with scheme and authority for HTTP/2.
fn forwarded_uri(
    uri: &Uri,
    target: &Target,
    http2: bool,
    host: Option<String>,
    conn: &HttpConn,
) -> Result<Uri, http::Error> {
    if !http2 {
        return Uri::builder()
            .path_and_query(target.path_and_query())
            .build();
    }
    let authority = host.unwrap_or_else(|| conn.dst.to_string());
    Uri::builder()
        .scheme("http")
        .authority(uri.authority().map_or(authority, |a| a.to_string()))
        .path_and_query(target.path_and_query())
        .build()
}

/// Turns an HTTP/2 request into the HTTP/1.1 request that says the same: origin-form target,
/// `:authority` as `Host` (the judged host; a differing `host` header was refused earlier).
fn as_http1<B>(req: &mut Request<B>) {
    *req.version_mut() = http::Version::HTTP_11;
    if let Some(authority) = req.uri().authority()
        && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let origin = req
        .uri()
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    *req.uri_mut() = origin;
}

impl HttpConn {
    /// Judges and answers or forwards one request.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let grpc = is_grpc(req.headers());
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        let mut rec = self.record(req.method().as_str(), request_id, grpc);
        // Framing ambiguities never get here: hyper rejects duplicate Content-Length, obs-fold
        // and non-chunked Transfer-Encoding with 400, and for Content-Length with
        // Transfer-Encoding it uses chunked framing, drops Content-Length and closes the
        // connection after the response (RFC 9112 6.1), so nothing can be smuggled behind it.
        let host = match request_host(req.uri(), req.headers(), req.version()) {
            Ok(host) => host,
            Err(e) => {
                rec.path = req.uri().path_and_query().map(|p| p.as_str().to_string());
                rec.verdict = Verdict::Deny;
                rec.reason = Some(e.to_string());
                let resp = local(Local::BadRequest, grpc);
                self.log(&mut rec, started, resp.status());
                return resp;
            }
        };
        let judged = {
            let h = req.headers();
            let ask = Ask {
                method: req.method().as_str(),
                target: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                host: host.clone(),
                headers: &PolicyHeaders(h),
            };
            self.judge(&mut rec, &ask, super::jwt::presented(h))
        };
        let resp = match judged {
            Judgement::Reject { .. } => local(Local::BadRequest, grpc),
            Judgement::Deny { answer, .. } => local(answer, grpc),
            Judgement::Forward { target, .. } => {
                self.forward(req, &target, host, &mut rec, grpc).await
            }
        };
        self.log(&mut rec, started, resp.status());
        resp
    }

    /// Forwards an admitted request under its normalized target and returns the response (or
    /// the local answer to an upstream failure).
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        target: &Target,
        host: Option<String>,
        rec: &mut Record,
        grpc: bool,
    ) -> Response<Body> {
        let mut switching = !self.http2 && is_switching(&req);
        if switching && req.method() != Method::CONNECT && asks_h2c(req.headers()) {
            switching = false;
            req.headers_mut().remove(header::UPGRADE);
            req.headers_mut().remove("http2-settings");
        }
        strip_hop_by_hop(req.headers_mut(), switching);
        if req.method() != Method::CONNECT && !says_what_was_judged(req.uri(), target, self.http2) {
            // HTTP/1 absolute form: the authority that was judged replaces Host.
            if let Some(a) = req.uri().authority().filter(|_| !self.http2) {
                match http::HeaderValue::from_str(a.as_str()) {
                    Ok(v) => {
                        req.headers_mut().insert(header::HOST, v);
                    }
                    Err(_) => return local(Local::BadRequest, grpc),
                }
            }
            match forwarded_uri(req.uri(), target, self.http2, host, self) {
                Ok(u) => *req.uri_mut() = u,
                Err(_) => {
                    rec.verdict = Verdict::Deny;
                    rec.reason = Some("unforwardable request target".into());
                    rec.policy = None;
                    rec.rule = None;
                    return local(Local::BadRequest, grpc);
                }
            }
        }
        let result = if switching {
            self.switch_protocols(req).await
        } else if self.http2 {
            match self.upstream.speaks_h2().await {
                Ok(true) => self.upstream.send_h2(req).await,
                Ok(false) => {
                    // The app speaks only HTTP/1: the request goes to it translated (as Envoy
                    // does), judged exactly as it was.
                    as_http1(&mut req);
                    match self.send_h1(req, rec).await {
                        Ok(result) => result,
                        Err(answer) => return local(answer, grpc),
                    }
                }
                Err(e) => Err(e),
            }
        } else {
            match self.send_h1(req, rec).await {
                Ok(result) => result,
                Err(answer) => return local(answer, grpc),
            }
        };
        let result = result.and_then(|resp| {
            // Only a request that asked may be answered with a switch.
            if !switching && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                return Err(UpstreamError::UnrequestedSwitch(String::new()));
            }
            Ok(resp)
        });
        match result {
            Ok(mut resp) => {
                if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                    strip_hop_by_hop(resp.headers_mut(), false);
                }
                resp
            }
            Err(e) => {
                rec.reason = Some(Chain(&e).to_string());
                self.count_error(e.local());
                local(e.local(), grpc)
            }
        }
    }

    /// Forwards over HTTP/1 with the body read ahead ([`ReadAhead`]): malformed framing is a
    /// 400 (`Err`), before anything is forwarded or, for a long body, once it shows.
    async fn send_h1(
        &self,
        req: Request<Incoming>,
        rec: &mut Record,
    ) -> Result<Result<Response<Body>, UpstreamError>, Local> {
        let (parts, body) = req.into_parts();
        let malformed = |rec: &mut Record, e: &(dyn std::error::Error + 'static)| {
            rec.verdict = Verdict::Deny;
            rec.reason = Some(format!("malformed request body: {}", Chain(e)));
            rec.policy = None;
            rec.rule = None;
            Local::BadRequest
        };
        let (body, broke) = match ReadAhead::read(body).await {
            Ok(read) => read,
            Err(e) => return Err(malformed(rec, &e)),
        };
        let req = Request::from_parts(parts, body.boxed());
        match self.upstream.send_h1(req).await {
            Err(e) if broke.get() => Err(malformed(rec, &e)),
            result => Ok(result),
        }
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
    ) -> Result<Response<Body>, UpstreamError> {
        let connect = req.method() == Method::CONNECT;
        let asked = upgrade_tokens(req.headers());
        let downstream = hyper::upgrade::on(&mut req);
        let mut resp = self.upstream.send_switching(req).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // After a 101 only the protocol the request asked for (and the policy allowed) may
            // follow — never h2c, never one the request did not name.
            let answered = upgrade_tokens(resp.headers());
            let fits = !answered.is_empty()
                && answered.iter().all(|t| asked.contains(t))
                && !asks_h2c(resp.headers());
            if connect || !fits {
                return Err(UpstreamError::UnrequestedSwitch(answered.join(",")));
            }
        }
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

/// Resolves when the connection should stop taking requests: the drain started (HTTP/2
/// clients learn from GOAWAY which streams were taken; HTTP/1 clients first get
/// `Connection: close` on every response for a grace period, so a request sent on an idle
/// keep-alive connection is answered rather than lost in the close), or it was idle too long.
async fn stop(drain: &Drain, activity: &idle::Activity, http2: bool) {
    tokio::select! {
        () = drain.started() => {
            if !http2 {
                tokio::time::sleep(HTTP1_DRAIN_GRACE).await;
            }
        }
        () = activity.idle(IDLE_TIMEOUT) => {}
    }
}

/// Serves a connection with hyper until it closes or [`stop`] asks it to; hyper finishes what
/// is in flight first.
pub(crate) async fn serve(conn: Arc<HttpConn>, io: Prefixed<Stream>, drain: Drain) {
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
    let stop = stop(&drain, &activity, http2);
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
            .header_read_timeout(HEADER_READ_TIMEOUT)
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
