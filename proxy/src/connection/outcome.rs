//! How a connection ended: the one place a connection's errors become a verdict, a metrics
//! reason and the log's `reason`, and [`Settle`], the guard that finishes a connection's access
//! log record and gauges however its task ends — also when it panics.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use portcullis_config::Decision;

use super::context::Context;
use crate::mesh::tls::MtlsError;
use crate::net::connector::ConnectError;
use crate::observe::Chain;
use crate::observe::access_log::{AccessLog, Record};
use crate::observe::metrics::{ConnLabels, DirLabels, ErrorLabels, Metrics};
use crate::vocab::{Direction, Verdict};

/// Why a connection was refused or failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// The kernel could not say where the connection was going.
    #[error("original destination unknown")]
    OriginalDst(#[source] io::Error),
    /// The connection was addressed to the proxy's own listener.
    #[error("loop: original destination {0} is the proxy itself")]
    Loop(SocketAddr),
    /// The policy refused the connection.
    #[error("{}", .0.reason)]
    Denied(Decision),
    /// The destination could not be reached.
    #[error(transparent)]
    Upstream(#[from] ConnectError),
    /// Writing to the upstream failed.
    #[error("upstream write")]
    UpstreamWrite(#[source] io::Error),
    /// A peer sidecar's mutual TLS was refused (untrusted or missing certificate, timeout).
    #[error(transparent)]
    PeerHandshake(MtlsError),
    /// A peer sidecar spoke mutual TLS to a proxy that has no identity to answer with.
    #[error("mTLS from a peer sidecar, but this proxy has no --identity-dir")]
    MeshUnconfigured,
}

impl ConnError {
    /// The fixed code used as a metrics label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ConnError::OriginalDst(_) => "original_dst",
            ConnError::Loop(_) => "loop",
            ConnError::Denied(_) => "policy",
            ConnError::Upstream(e) => e.reason(),
            ConnError::UpstreamWrite(_) => "upstream_write",
            ConnError::PeerHandshake(_) => "mtls_handshake",
            ConnError::MeshUnconfigured => "mtls_unconfigured",
        }
    }

    /// Refusals are denials; failures to reach an admitted destination are not.
    pub(crate) fn verdict(&self) -> Verdict {
        match self {
            ConnError::OriginalDst(_)
            | ConnError::Loop(_)
            | ConnError::Denied(_)
            | ConnError::PeerHandshake(_)
            | ConnError::MeshUnconfigured => Verdict::Deny,
            ConnError::Upstream(_) | ConnError::UpstreamWrite(_) => Verdict::Allow,
        }
    }
}

/// Bytes moved by a forwarded connection, and how it ended.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// Client → destination.
    pub(crate) bytes_in: u64,
    /// Destination → client.
    pub(crate) bytes_out: u64,
    /// The error that ended it, if any.
    pub(crate) error: Option<io::Error>,
}

/// How the connection's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Still running (dropped like this: cancelled, or panicked).
    Running,
    /// Served as HTTP: each request logged and counted itself.
    Http,
    /// Carried as bytes, or refused: the record is the connection's.
    Record,
}

/// Settles one connection when dropped: the open-connections gauge, the connection counters
/// and (unless it was served as HTTP) its access log record.
#[derive(Debug)]
pub(crate) struct Settle {
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    record: Record,
    started: Instant,
    end: End,
}

impl Settle {
    /// Counts a connection as open, with a record that is allowed until told otherwise.
    pub(crate) fn open(ctx: &Context, direction: Direction, src: SocketAddr) -> Self {
        ctx.metrics
            .open
            .get_or_create(&DirLabels { direction })
            .inc();
        let mut record = Record::new(direction, src, None, "tcp");
        // Connection records always count bytes (zero when refused before any moved).
        record.bytes_in = Some(0);
        record.bytes_out = Some(0);
        Self {
            metrics: ctx.metrics.clone(),
            access_log: ctx.access_log.clone(),
            record,
            started: Instant::now(),
            end: End::Running,
        }
    }

    /// The record, for the stages to fill in.
    pub(crate) fn record(&mut self) -> &mut Record {
        &mut self.record
    }

    /// The connection was served as HTTP.
    pub(crate) fn http(mut self) {
        self.end = End::Http;
    }

    /// The connection's bytes were carried until both sides ended.
    pub(crate) fn transferred(mut self, t: Transfer) {
        self.record.bytes_in = Some(t.bytes_in);
        self.record.bytes_out = Some(t.bytes_out);
        if let Some(e) = t.error {
            self.record.reason = Some(format!("stream error: {e}"));
        }
        self.end = End::Record;
    }

    /// The connection was refused or failed.
    pub(crate) fn failed(mut self, e: ConnError) {
        let direction = self.record.direction;
        self.record.verdict = e.verdict();
        self.record.reason = Some(Chain(&e).to_string());
        if self.record.verdict == Verdict::Allow {
            self.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    direction,
                    reason: e.reason(),
                })
                .inc();
        }
        tracing::debug!(src = %self.record.src, ?direction, error = %Chain(&e), "connection failed");
        self.end = End::Record;
    }

    /// A task that ends without saying how was cancelled (shutdown) or panicked.
    fn unfinished(&mut self) {
        if std::thread::panicking() {
            self.metrics.panics.inc();
            self.record.verdict = Verdict::Deny;
            self.record.reason = Some("internal error: the connection task panicked".into());
        } else {
            self.record.reason = Some("cancelled".into());
        }
        self.end = End::Record;
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if self.end == End::Running {
            self.unfinished();
        }
        let direction = self.record.direction;
        let dir = DirLabels { direction };
        let m = &self.metrics;
        m.open.get_or_create(&dir).dec();
        let verdict = match self.end {
            End::Http => Verdict::Allow,
            _ => self.record.verdict,
        };
        m.connections
            .get_or_create(&ConnLabels { direction, verdict })
            .inc();
        if self.end == End::Http {
            return;
        }
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        m.bytes_received
            .get_or_create(&dir)
            .inc_by(self.record.bytes_in.unwrap_or(0));
        m.bytes_sent
            .get_or_create(&dir)
            .inc_by(self.record.bytes_out.unwrap_or(0));
        self.access_log.log(&self.record);
    }
}
