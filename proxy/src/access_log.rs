//! The access log: one JSON line per decision, serialized on the connection task and written by
//! a single writer task fed through a bounded channel, so that a slow disk never blocks traffic.
//! When the channel is full the line is dropped and counted.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::AccessLogTarget;
use crate::connection::Direction;
use crate::metrics::{Metrics, Verdict};

/// Lines buffered before new ones are dropped.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// One decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// RFC 3339 time the connection opened.
    pub ts: String,
    /// `inbound` or `outbound`.
    pub direction: Direction,
    /// The connecting peer.
    pub src: SocketAddr,
    /// The original destination, when it could be recovered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<SocketAddr>,
    /// `tcp`, `tls`, `http1`, `http2` or `grpc`.
    pub protocol: &'static str,
    /// The peer's verified SPIFFE ID: the calling sidecar's (inbound mutual TLS) or the
    /// destination sidecar's (outbound to `--mesh-cidrs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// TLS server name, when the connection opened with a ClientHello.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// HTTP method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Normalized HTTP host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Normalized HTTP path (as forwarded), or the raw one when it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP status returned to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The decision.
    pub verdict: Verdict,
    /// The deciding policy (absent for a default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The deciding rule, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, when it was not a plain allow (a denial or a failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the connection lasted.
    pub duration_ms: u64,
    /// Bytes from the connecting side (connection records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes back to the connecting side (connection records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// The request's `x-request-id`, when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Record {
    /// A record for a decision starting now, allowed until told otherwise.
    pub fn new(
        direction: Direction,
        src: SocketAddr,
        dst: Option<SocketAddr>,
        protocol: &'static str,
    ) -> Self {
        Self {
            ts: timestamp(SystemTime::now()),
            direction,
            src,
            dst,
            protocol,
            identity: None,
            sni: None,
            method: None,
            host: None,
            path: None,
            status: None,
            verdict: Verdict::Allow,
            policy: None,
            rule: None,
            reason: None,
            duration_ms: 0,
            bytes_in: None,
            bytes_out: None,
            request_id: None,
        }
    }
}

/// Formats a time as the log's `ts`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The sending side, cheap to clone into connection tasks.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<String>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens the target and starts the writer task; the task ends (after writing everything
    /// queued) once every `AccessLog` clone is dropped.
    pub async fn start(
        target: &AccessLogTarget,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Option<JoinHandle<()>>)> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AccessLogTarget::Off => return Ok((Self { tx: None, metrics }, None)),
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(path) => Box::new(open_append(path).await?),
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let writer = tokio::spawn(write_lines(rx, out));
        Ok((
            Self {
                tx: Some(tx),
                metrics,
            },
            Some(writer),
        ))
    }

    /// Queues one record; never waits.
    pub fn log(&self, record: &Record) {
        let Some(tx) = &self.tx else { return };
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if tx.try_send(line).is_err() {
            self.metrics.access_log_dropped.inc();
        }
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

async fn write_lines(mut rx: mpsc::Receiver<String>, out: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut out = tokio::io::BufWriter::new(out);
    while let Some(line) = rx.recv().await {
        let mut ok = out.write_all(line.as_bytes()).await.is_ok();
        // Batch whatever else is queued, then flush once.
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(line.as_bytes()).await.is_ok();
        }
        ok &= out.flush().await.is_ok();
        if !ok {
            tracing::warn!("access log write failed");
        }
    }
}
