//! One captured connection, end to end: original destination → loop guard → connect upstream →
//! forward → one access log record and the metrics. Errors are classified here, in one place,
//! into a verdict, a metrics reason and the log's `reason`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde::Serialize;
use tokio::net::TcpStream;

use portcullis_config::{ConnDecision, Decision, LoadedPolicy};

use crate::access_log::{self, AccessLog, Record};
use crate::cli::CaptureMode;
use crate::metrics::{ConnLabels, DirLabels, ErrorLabels, Metrics, Verdict};
use crate::original_dst::original_dst;
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
        }
    }

    /// Refusals are denials; failures to reach an admitted destination are not.
    pub fn verdict(&self) -> Verdict {
        match self {
            ConnError::OriginalDst(_) | ConnError::Loop(_) | ConnError::Denied(_) => Verdict::Deny,
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
    /// The active policy.
    pub policy: Arc<LoadedPolicy>,
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
    /// The connection-level policy stage. HTTP inspection is not in the data path yet, so a
    /// connection whose fate depends on HTTP is judged as non-HTTP traffic (fail closed).
    fn judge(&self, direction: Direction, src: SocketAddr, dst: SocketAddr) -> Decision {
        let conn = portcullis_config::Connection {
            direction: direction.into(),
            peer: match direction {
                Direction::Inbound => src.ip(),
                Direction::Outbound => dst.ip(),
            },
            port: dst.port(),
            identity: None,
            sni: None,
        };
        let policy = &self.policy.policy;
        match policy.decide_connection(&conn, None) {
            ConnDecision::Final(d) => d,
            ConnDecision::NeedHttp => policy.decide_opaque(&conn, None),
        }
    }

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

/// Serves one accepted connection to completion.
pub async fn serve(ctx: Arc<Context>, direction: Direction, client: TcpStream, src: SocketAddr) {
    let started = Instant::now();
    let ts = access_log::timestamp(SystemTime::now());
    let dir = DirLabels { direction };
    ctx.metrics.open.get_or_create(&dir).inc();
    let _ = client.set_nodelay(true);

    let mut record = Record {
        ts,
        direction,
        src,
        dst: None,
        protocol: "tcp",
        verdict: Verdict::Allow,
        policy: None,
        rule: None,
        reason: None,
        duration_ms: 0,
        bytes_in: 0,
        bytes_out: 0,
    };
    let outcome = async {
        let dst = ctx.destination(&client)?;
        record.dst = Some(dst);
        let decision = ctx.judge(direction, src, dst);
        record.policy = decision.policy.as_deref().map(str::to_string);
        record.rule = Some(decision.rule.to_string());
        if decision.verdict == portcullis_config::Verdict::Deny {
            return Err(ConnError::Denied(decision));
        }
        let upstream = ctx.connector.connect(direction, src, dst).await?;
        Ok::<_, ConnError>(tcp::forward(client, upstream).await)
    }
    .await;

    match outcome {
        Ok(transfer) => {
            record.bytes_in = transfer.bytes_in;
            record.bytes_out = transfer.bytes_out;
            if let Some(e) = transfer.error {
                record.reason = Some(format!("stream error: {e}"));
            }
        }
        Err(e) => {
            record.verdict = e.verdict();
            record.reason = Some(e.to_string());
            let reason = e.reason();
            if record.verdict == Verdict::Allow {
                ctx.metrics
                    .errors
                    .get_or_create(&ErrorLabels { direction, reason })
                    .inc();
            }
            tracing::debug!(%src, ?direction, error = %e, "connection failed");
        }
    }
    record.duration_ms = started.elapsed().as_millis() as u64;
    let m = &ctx.metrics;
    m.connections
        .get_or_create(&ConnLabels {
            direction,
            verdict: record.verdict,
        })
        .inc();
    m.bytes_received.get_or_create(&dir).inc_by(record.bytes_in);
    m.bytes_sent.get_or_create(&dir).inc_by(record.bytes_out);
    m.open.get_or_create(&dir).dec();
    ctx.access_log.log(&record);
}
