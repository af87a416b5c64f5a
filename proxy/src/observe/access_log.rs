//! The access log: one JSON line per decision, serialized by the connection task straight into
//! a shared buffer, which a dedicated writer thread swaps out and writes every
//! [`FLUSH_INTERVAL`] — no wake-up, channel message or allocation per line, and a slow disk
//! never blocks traffic. Past [`MAX_BUFFERED`] unwritten bytes, lines are dropped and counted.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::metrics::Metrics;

mod json;
mod record;

pub(crate) use self::record::{Record, timestamp};

/// Unwritten bytes held at most before new lines are dropped.
pub(crate) const MAX_BUFFERED: usize = 8 * 1024 * 1024;
/// How often the writer thread writes what has accumulated.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Nowhere (benchmarks, tests).
    Off,
}

#[derive(Debug, Default)]
struct Shared {
    buf: Mutex<Vec<u8>>,
    stop: AtomicBool,
}

/// The sending side, cheap to clone into connection tasks.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    shared: Option<Arc<Shared>>,
    metrics: Arc<Metrics>,
}

/// The writer thread; [`Writer::finish`] writes what is left and stops it.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Stops the thread after a last write (blocking; call it off the runtime).
    pub(crate) fn finish(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub(crate) fn start(
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
    pub(crate) fn log(&self, record: &Record) {
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
    use crate::vocab::Direction;

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
