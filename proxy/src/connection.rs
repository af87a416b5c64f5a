//! One captured connection, end to end: original destination → loop guard → (inbound, with an
//! identity) mutual TLS from a peer sidecar → connection policy → detection → HTTP or opaque
//! forwarding → one access log record and the metrics. Errors are classified here, in one place,
//! into a verdict, a metrics reason and the log's `reason`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Serialize;
use tokio::net::TcpStream;

use bytes::{Bytes, BytesMut};
use portcullis_config::matchers::PortSet;
use portcullis_config::{ConnDecision, Decision};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::access_log::{AccessLog, Record};
use crate::cli::CaptureMode;
use crate::detect::{Detected, detect};
use crate::drain::Drain;
use crate::http;
use crate::identity::IdentityStore;
use crate::metrics::{ConnLabels, DirLabels, ErrorLabels, Metrics, Verdict};
use crate::mtls::MtlsError;
use crate::original_dst::original_dst;
use crate::prefixed::Prefixed;
use crate::reload::PolicyStore;
use crate::stream::Stream;
use crate::tcp;
use crate::upstream::Connector;

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

/// Why a connection was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The kernel could not say where the connection was going.
    #[error("original destination unknown: {0}")]
    OriginalDst(io::Error),
    /// The connection was addressed to the proxy's own listener.
    #[error("loop: original destination {0} is the proxy itself")]
    Loop(SocketAddr),
    /// The policy refused the connection.
    #[error("{}", .0.reason)]
    Denied(Decision),
    /// The upstream socket could not be prepared.
    #[error("upstream socket for {dst}: {source}")]
    UpstreamSocket {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Connecting failed.
    #[error("connect {dst}: {source}")]
    Connect {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Connecting took too long.
    #[error("connect {0}: timed out")]
    ConnectTimeout(SocketAddr),
    /// Writing to the upstream failed.
    #[error("upstream write: {0}")]
    UpstreamWrite(io::Error),
    /// Mutual TLS towards a peer sidecar failed.
    #[error("mTLS to {dst}: {source}")]
    MeshConnect {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: MtlsError,
    },
    /// A peer sidecar's mutual TLS was refused (untrusted or missing certificate, timeout).
    #[error("{0}")]
    PeerHandshake(MtlsError),
    /// A peer sidecar spoke mutual TLS to a proxy that has no identity to answer with.
    #[error("mTLS from a peer sidecar, but this proxy has no --identity-dir")]
    MeshUnconfigured,
}

impl ConnError {
    /// The fixed code used as a metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnError::OriginalDst(_) => "original_dst",
            ConnError::Loop(_) => "loop",
            ConnError::Denied(_) => "policy",
            ConnError::UpstreamSocket { .. } => "upstream_socket",
            ConnError::Connect { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                "connect_refused"
            }
            ConnError::Connect { .. } => "connect_error",
            ConnError::ConnectTimeout(_) => "connect_timeout",
            ConnError::UpstreamWrite(_) => "upstream_write",
            ConnError::MeshConnect { .. } => "mtls_connect",
            ConnError::PeerHandshake(_) => "mtls_handshake",
            ConnError::MeshUnconfigured => "mtls_unconfigured",
        }
    }

    /// Refusals are denials; failures to reach an admitted destination are not.
    pub fn verdict(&self) -> Verdict {
        match self {
            ConnError::OriginalDst(_)
            | ConnError::Loop(_)
            | ConnError::Denied(_)
            | ConnError::PeerHandshake(_)
            | ConnError::MeshUnconfigured => Verdict::Deny,
            _ => Verdict::Allow,
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
pub struct Context {
    /// How captured connections were redirected.
    pub capture: CaptureMode,
    /// Test-only fixed original destination.
    pub original_dst_override: Option<SocketAddr>,
    /// The ports the proxy's capture listeners are bound to.
    pub own_ports: Vec<u16>,
    /// Upstream connection settings.
    pub connector: Connector,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Access log.
    pub access_log: AccessLog,
    /// The active policy (swapped by reloads).
    pub policy: Arc<PolicyStore>,
    /// Audit mode: denials are logged as `audit_deny` and the traffic passes.
    pub audit: bool,
    /// Keys for bearer tokens, when `--jwks` is set.
    pub jwks: Option<Arc<crate::jwt::Jwks>>,
    /// Upstream HTTP connections shared across downstream connections.
    pub pools: Arc<crate::http::upstream::Pools>,
    /// Ports whose connections are never sniffed for a protocol.
    pub opaque_ports: PortSet,
    /// How long to wait for a client's first bytes when requests matter.
    pub detect_timeout: Duration,
    /// The workload identity: inbound mutual TLS from peer sidecars is terminated with it.
    pub identity: Option<Arc<IdentityStore>>,
}

/// Whether `ip` is one of this host's (pod's) own addresses.
fn is_local_ip(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs.into_iter().any(|a| {
                a.address.is_some_and(|s| {
                    s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
                        || s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
                })
            })
        })
        // If the interfaces cannot be listed, treat the address as ours: refusing is safe.
        .unwrap_or(true)
}

impl Context {
    fn destination(&self, stream: &TcpStream) -> Result<SocketAddr, ConnError> {
        let dst = match self.original_dst_override {
            Some(dst) => dst,
            None => original_dst(stream, self.capture).map_err(ConnError::OriginalDst)?,
        };
        if self.own_ports.contains(&dst.port()) && is_local_ip(dst.ip()) {
            return Err(ConnError::Loop(dst));
        }
        Ok(dst)
    }
}

/// How an admitted connection is carried.
enum Carry {
    /// Bytes both ways; `prefix` was already read from the client (detection).
    Opaque { prefix: Bytes },
    /// As HTTP, every request judged.
    Http { prefix: Bytes, http2: bool },
}

/// Bytes read while detecting, at most (a whole TLS ClientHello record fits).
const MAX_SNIFF: usize = 16 * 1024 + 2048;

/// Reads until the protocol is known, the client stops, or `timeout` passes (server-first
/// protocols send nothing: they are opaque).
async fn sniff<S: AsyncRead + Unpin>(client: &mut S, timeout: Duration) -> (Bytes, Detected) {
    // Most request heads and ClientHellos fit; the buffer grows when they do not.
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match detect(&buf) {
            Detected::NeedMore if buf.len() < MAX_SNIFF => {}
            Detected::NeedMore => return (buf.freeze(), Detected::Opaque),
            d => return (buf.freeze(), d),
        }
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return (buf.freeze(), Detected::Opaque),
        }
    }
}

impl Context {
    /// What the policy knows about a connection when it opens.
    pub fn policy_connection<'a>(
        &self,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
        identity: Option<&'a str>,
        sni: Option<&'a str>,
    ) -> portcullis_config::Connection<'a> {
        portcullis_config::Connection {
            direction: direction.into(),
            peer: match direction {
                Direction::Inbound => src.ip(),
                Direction::Outbound => dst.ip(),
            },
            port: dst.port(),
            identity,
            sni,
        }
    }

    /// Reads the client's first bytes and counts what they are.
    async fn sniff<S: AsyncRead + Unpin>(
        &self,
        direction: Direction,
        client: &mut S,
    ) -> (Bytes, Detected) {
        let (prefix, detected) = sniff(client, self.detect_timeout).await;
        let protocol = match &detected {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tls { alpn, .. } if crate::mtls::is_mesh(alpn) => "mtls",
            Detected::Tls { .. } => "tls",
            Detected::Opaque | Detected::NeedMore => "opaque",
        };
        self.metrics
            .detections
            .get_or_create(&crate::metrics::DetectLabels {
                direction,
                protocol,
            })
            .inc();
        (prefix, detected)
    }

    /// Inbound, when this proxy has an identity: a connection from a peer sidecar (its
    /// ClientHello offers the mesh ALPN) is terminated here and its verified SPIFFE ID becomes
    /// the peer identity. Anything else stays plain and unauthenticated; what was read to tell
    /// the two apart is handed on so that it is not read twice.
    async fn authenticate(
        &self,
        direction: Direction,
        mut client: TcpStream,
        record: &mut Record,
    ) -> Result<Authenticated, ConnError> {
        let plain = |client, sniffed| Authenticated {
            stream: Stream::Plain(client),
            identity: None,
            sniffed,
        };
        let Some(store) = self
            .identity
            .as_ref()
            .filter(|_| direction == Direction::Inbound)
        else {
            return Ok(plain(client, None));
        };
        let (prefix, detected) = self.sniff(direction, &mut client).await;
        let Detected::Tls { alpn, .. } = &detected else {
            return Ok(plain(client, Some((prefix, detected))));
        };
        if !crate::mtls::is_mesh(alpn) {
            return Ok(plain(client, Some((prefix, detected))));
        }
        let tls = store.current().tls.clone();
        let accepted = crate::mtls::accept(&tls, Prefixed::new(prefix, client)).await;
        let (namespace, result) = match &accepted {
            Ok((_, id)) => (
                portcullis_config::matchers::spiffe_namespace(id).unwrap_or(""),
                "success",
            ),
            Err(_) => ("", "failure"),
        };
        self.metrics.count_handshake(direction, result, namespace);
        match accepted {
            Ok((stream, id)) => {
                record.identity = Some(id.clone());
                Ok(Authenticated {
                    stream: Stream::Mesh(Box::new(stream)),
                    identity: Some(id),
                    sniffed: None,
                })
            }
            Err(e) => {
                tracing::info!(src = %record.src, error = %e, "peer mTLS handshake refused");
                Err(ConnError::PeerHandshake(e))
            }
        }
    }

    /// The connection-level stage: a final decision closes or admits the connection as opaque
    /// bytes; when requests matter the protocol is detected — HTTP is served request by
    /// request, TLS is judged again with its SNI, anything else as non-HTTP traffic.
    async fn classify(
        &self,
        direction: Direction,
        src: SocketAddr,
        dst: SocketAddr,
        auth: &mut Authenticated,
        record: &mut Record,
    ) -> Result<Carry, ConnError> {
        let active = self.policy.current();
        let policy = &active.loaded.policy;
        let audit = self.audit;
        let apply = |d: Decision, record: &mut Record| {
            record.policy.clone_from(&d.policy);
            record.rule = Some(d.rule.clone());
            if d.verdict == portcullis_config::Verdict::Deny {
                if !audit {
                    return Err(ConnError::Denied(d));
                }
                record.verdict = Verdict::AuditDeny;
                record.reason = Some(d.reason.to_string());
            }
            Ok(())
        };
        let identity = auth.identity.as_deref();
        let sniffed = auth.sniffed.take();
        let conn = self.policy_connection(direction, src, dst, identity, None);
        let settled = match policy.decide_connection(&conn, None) {
            ConnDecision::Final(d) => Some(d),
            ConnDecision::NeedHttp if self.opaque_ports.contains(dst.port()) => {
                Some(policy.decide_opaque(&conn, None))
            }
            ConnDecision::NeedHttp => None,
        };
        if let Some(d) = settled {
            apply(d, record)?;
            return Ok(Carry::Opaque {
                prefix: sniffed.map(|(p, _)| p).unwrap_or_default(),
            });
        }
        let (prefix, detected) = match sniffed {
            Some(s) => s,
            None => self.sniff(direction, &mut auth.stream).await,
        };
        match detected {
            Detected::Http1 => Ok(Carry::Http {
                prefix,
                http2: false,
            }),
            Detected::Http2 => Ok(Carry::Http {
                prefix,
                http2: true,
            }),
            Detected::Tls { alpn, .. }
                if direction == Direction::Inbound && crate::mtls::is_mesh(&alpn) =>
            {
                Err(ConnError::MeshUnconfigured)
            }
            Detected::Tls { sni, .. } => {
                record.protocol = "tls";
                record.sni = sni.clone();
                let conn = self.policy_connection(direction, src, dst, identity, sni.as_deref());
                let d = match policy.decide_connection(&conn, None) {
                    ConnDecision::Final(d) => d,
                    ConnDecision::NeedHttp => policy.decide_opaque(&conn, None),
                };
                apply(d, record)?;
                Ok(Carry::Opaque { prefix })
            }
            Detected::Opaque | Detected::NeedMore => {
                apply(policy.decide_opaque(&conn, None), record)?;
                Ok(Carry::Opaque { prefix })
            }
        }
    }
}

/// A client connection after the (optional) mutual TLS stage.
struct Authenticated {
    stream: Stream,
    /// The peer sidecar's verified SPIFFE ID.
    identity: Option<String>,
    /// Bytes already read from a plain client, and what they looked like.
    sniffed: Option<(Bytes, Detected)>,
}

/// Serves one accepted connection to completion.
pub async fn serve(
    ctx: Arc<Context>,
    direction: Direction,
    client: TcpStream,
    src: SocketAddr,
    drain: Drain,
) {
    let started = Instant::now();
    let dir = DirLabels { direction };
    ctx.metrics.open.get_or_create(&dir).inc();
    let _ = client.set_nodelay(true);
    let mut record = Record::new(direction, src, None, "tcp");
    // Connection records always count bytes (zero when refused before any moved).
    record.bytes_in = Some(0);
    record.bytes_out = Some(0);
    let outcome = async {
        let dst = ctx.destination(&client)?;
        record.dst = Some(dst);
        // The handshake's and the connect's state are boxed: they live only while they run, not
        // for the life of every connection.
        let mut auth = Box::pin(ctx.authenticate(direction, client, &mut record)).await?;
        match Box::pin(ctx.classify(direction, src, dst, &mut auth, &mut record)).await? {
            Carry::Http { prefix, http2 } => {
                Box::pin(http::serve(
                    ctx.clone(),
                    http::Downstream {
                        direction,
                        src,
                        dst,
                        identity: auth.identity,
                        http2,
                    },
                    Prefixed::new(prefix, auth.stream),
                    drain,
                ))
                .await;
                Ok(None)
            }
            Carry::Opaque { prefix } => {
                let connected = Box::pin(ctx.connector.connect(direction, src, dst)).await?;
                if connected.peer_identity.is_some() {
                    record.identity = connected.peer_identity;
                }
                let mut upstream = connected.stream;
                if !prefix.is_empty() {
                    upstream
                        .write_all(&prefix)
                        .await
                        .map_err(ConnError::UpstreamWrite)?;
                }
                let mut t = Box::pin(tcp::forward(auth.stream, upstream)).await;
                t.bytes_in += prefix.len() as u64;
                Ok::<_, ConnError>(Some(t))
            }
        }
    }
    .await;

    let m = &ctx.metrics;
    match outcome {
        Ok(None) => {
            // HTTP: every request was logged and counted on its own.
            m.connections
                .get_or_create(&ConnLabels {
                    direction,
                    verdict: Verdict::Allow,
                })
                .inc();
            m.open.get_or_create(&dir).dec();
            return;
        }
        Ok(Some(transfer)) => {
            record.bytes_in = Some(transfer.bytes_in);
            record.bytes_out = Some(transfer.bytes_out);
            if let Some(e) = transfer.error {
                record.reason = Some(format!("stream error: {e}"));
            }
        }
        Err(e) => {
            record.verdict = e.verdict();
            record.reason = Some(e.to_string());
            let reason = e.reason();
            if record.verdict == Verdict::Allow {
                m.errors
                    .get_or_create(&ErrorLabels { direction, reason })
                    .inc();
            }
            tracing::debug!(%src, ?direction, error = %e, "connection failed");
        }
    }
    record.duration_ms = started.elapsed().as_millis() as u64;
    m.connections
        .get_or_create(&ConnLabels {
            direction,
            verdict: record.verdict,
        })
        .inc();
    m.bytes_received
        .get_or_create(&dir)
        .inc_by(record.bytes_in.unwrap_or(0));
    m.bytes_sent
        .get_or_create(&dir)
        .inc_by(record.bytes_out.unwrap_or(0));
    m.open.get_or_create(&dir).dec();
    ctx.access_log.log(&record);
}
