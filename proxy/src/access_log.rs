//! The access log: one JSON line per decision, serialized by the connection task straight into
//! a shared buffer, which a dedicated writer thread swaps out and writes every
//! [`FLUSH_INTERVAL`] — no wake-up, channel message or allocation per line, and a slow disk
//! never blocks traffic. Past [`MAX_BUFFERED`] unwritten bytes, lines are dropped and counted.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::AccessLogTarget;
use crate::connection::Direction;
use crate::metrics::{Metrics, Verdict};

mod json;

/// Unwritten bytes held at most before new lines are dropped.
pub const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// How often the writer thread writes what has accumulated.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// One decision, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When the connection opened (RFC 3339, milliseconds, in the log).
    #[serde(serialize_with = "serialize_ts")]
    pub ts: SystemTime,
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
    pub policy: Option<Arc<str>>,
    /// The deciding rule, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
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
            ts: SystemTime::now(),
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

fn serialize_ts<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(*t))
}

/// Formats a time as the log's `ts`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

/// The sending side, cheap to clone into connection tasks.
#[derive(Debug, Clone)]
pub struct AccessLog {
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
}

/// The writer thread; [`Writer::finish`] writes what is left and stops it.
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Stops the thread after a last write (blocking; call it off the runtime).
    pub fn finish(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(
        target: &AccessLogTarget,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Option<Writer>)> {
        let out: Box<dyn std::io::Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok((
                    Self {
                        shared: None,
                        metrics,
                    },
                    None,
                ));
            }
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(open_append(path)?),
        };
        Self::with_output(out, metrics)
    }

    /// Starts the writer thread on any output.
    fn with_output(
        out: Box<dyn std::io::Write + Send>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Option<Writer>)> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&s, out))?;
        Ok((
            Self {
                shared: Some(shared.clone()),
                metrics,
            },
            Some(Writer { shared, thread }),
        ))
    }

    /// Appends one record; never waits on IO.
    pub fn log(&self, record: &Record) {
        let Some(shared) = &self.shared else { return };
        let mut buf = shared.buf.lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() >= MAX_BUFFERED {
            drop(buf);
            self.metrics.access_log_dropped.inc();
            return;
        }
        json::write_line(&mut buf, record);
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn write_loop(shared: &Shared, mut out: Box<dyn std::io::Write + Send>) {
    let mut spare = Vec::new();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        {
            let mut buf = shared.buf.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *buf, &mut spare);
        }
        if !spare.is_empty() {
            if out.write_all(&spare).and_then(|()| out.flush()).is_err() {
                tracing::warn!("access log write failed");
            }
            spare.clear();
            // Do not keep a burst's worth of memory for ever.
            spare.shrink_to(64 * 1024);
        }
        if stopping {
            return;
        }
        std::thread::park_timeout(FLUSH_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that blocks until released, then collects.
    struct Gate {
        open: Arc<AtomicBool>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl std::io::Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            while !self.open.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.got
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_and_counts_lines_and_nothing_is_torn() {
        let open = Arc::new(AtomicBool::new(false));
        let got = Arc::new(Mutex::new(Vec::new()));
        let metrics = Arc::new(Metrics::new());
        let out = Gate {
            open: open.clone(),
            got: got.clone(),
        };
        let (log, writer) = AccessLog::with_output(Box::new(out), metrics.clone()).expect("start");
        let rec = Record::new(
            Direction::Inbound,
            "10.0.0.1:1234".parse().expect("addr"),
            Some("10.0.0.2:80".parse().expect("addr")),
            "http1",
        );
        // Let the writer take a first (small) batch and get stuck writing it.
        log.log(&rec);
        std::thread::sleep(FLUSH_INTERVAL * 3);
        let line = serde_json::to_vec(&rec).expect("json").len() + 1;
        let n = MAX_BUFFERED / line + 1000;
        for _ in 0..n {
            log.log(&rec);
        }
        let dropped = metrics.access_log_dropped.get();
        assert!(dropped >= 900, "dropped {dropped} of {n}");
        open.store(true, Ordering::Release);
        writer.expect("writer").finish();
        let text = String::from_utf8(got.lock().expect("lock").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, n as u64 + 1 - dropped);
        assert!(
            lines
                .iter()
                .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }
}
