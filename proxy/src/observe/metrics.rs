//! Prometheus metrics (prometheus-client), rendered on the admin port's `/metrics`.
//! Labels are bounded enums only: never paths, IPs or other open-ended values.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::vocab::{Direction, Verdict};

/// `direction` + `verdict`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ConnLabels {
    /// Inbound or outbound.
    pub(crate) direction: Direction,
    /// Allow or deny.
    pub(crate) verdict: Verdict,
}

/// `direction`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DirLabels {
    /// Inbound or outbound.
    pub(crate) direction: Direction,
}

/// Why a connection failed after it was admitted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    /// Inbound or outbound.
    pub(crate) direction: Direction,
    /// A fixed reason code (see `connection::ConnError::reason`).
    pub(crate) reason: &'static str,
}

/// `direction`, `verdict`, `policy`, `rule`, `status_class` (bounded by the policy's size).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// Inbound or outbound.
    pub(crate) direction: Direction,
    /// Allow or deny.
    pub(crate) verdict: Verdict,
    /// Deciding policy, empty for a default.
    pub(crate) policy: std::sync::Arc<str>,
    /// Deciding rule or `default` (`none` when no decision was made, e.g. a 400).
    pub(crate) rule: std::sync::Arc<str>,
    /// `2xx` … `5xx`.
    pub(crate) status_class: &'static str,
}

/// `result` of a policy reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ReloadLabels {
    /// `success` or `failure`.
    pub(crate) result: &'static str,
}

/// `hash` of the active policy (one series at a time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PolicyLabels {
    /// Content hash.
    pub(crate) hash: String,
}

/// `direction`, detected `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DetectLabels {
    /// Inbound or outbound.
    pub(crate) direction: Direction,
    /// `http1`, `http2`, `tls` or `opaque`.
    pub(crate) protocol: &'static str,
}

/// `direction`, `result`, `peer_namespace` of a mutual TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct HandshakeLabels {
    /// Inbound (termination) or outbound (origination).
    pub(crate) direction: Direction,
    /// `success` or `failure`.
    pub(crate) result: &'static str,
    /// The peer's SPIFFE namespace (empty on failure; `other` past [`MAX_NAMESPACES`]).
    pub(crate) peer_namespace: String,
}

/// Every `reason` of `portcullis_connection_errors_total`: admitted connections that could not
/// be carried (see `ConnectError::reason`, `ConnError::reason`) and requests answered locally
/// because the upstream failed (see `Local::reason`).
pub(crate) const ERROR_REASONS: [&str; 9] = [
    "upstream_socket",
    "connect_refused",
    "connect_error",
    "connect_timeout",
    "mtls_connect",
    "upstream_write",
    "upstream_unavailable",
    "upstream_timeout",
    "bad_gateway",
];

/// Distinct peer namespaces given their own label value; later ones are counted as `other`.
pub(crate) const MAX_NAMESPACES: usize = 256;

/// Every metric the proxy exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// `portcullis_connections_total`.
    pub(crate) connections: Family<ConnLabels, Counter>,
    /// `portcullis_connections_open`.
    pub(crate) open: Family<DirLabels, Gauge>,
    /// `portcullis_connection_errors_total`.
    pub(crate) errors: Family<ErrorLabels, Counter>,
    /// `portcullis_bytes_total` from the client side (`direction` label).
    pub(crate) bytes_received: Family<DirLabels, Counter>,
    /// `portcullis_bytes_total` towards the client side.
    pub(crate) bytes_sent: Family<DirLabels, Counter>,
    /// `portcullis_access_log_dropped_total`.
    pub(crate) access_log_dropped: Counter<u64, AtomicU64>,
    /// `portcullis_requests_total`.
    pub(crate) requests: Family<RequestLabels, Counter>,
    /// `portcullis_request_duration_seconds`.
    pub(crate) request_duration: Family<DirLabels, Histogram, fn() -> Histogram>,
    /// `portcullis_policy_reloads_total`.
    pub(crate) reloads: Family<ReloadLabels, Counter>,
    /// `portcullis_policy_info`: 1 for the active policy's hash.
    pub(crate) policy_info: Family<PolicyLabels, Gauge>,
    /// `portcullis_process_resident_memory_bytes`.
    pub(crate) rss: Gauge,
    /// `portcullis_process_open_fds`.
    pub(crate) open_fds: Gauge,
    /// `portcullis_protocol_detections_total`.
    pub(crate) detections: Family<DetectLabels, Counter>,
    /// `portcullis_identity_expiry_timestamp_seconds` (0 without identity material).
    pub(crate) identity_expiry: Gauge,
    /// `portcullis_mtls_handshakes_total`.
    pub(crate) handshakes: Family<HandshakeLabels, Counter>,
    /// `portcullis_identity_reloads_total`: rotations taken in, and refused sets of files.
    pub(crate) identity_reloads: Family<ReloadLabels, Counter>,
    /// `portcullis_connection_panics_total`.
    pub(crate) panics: Counter<u64, AtomicU64>,
    /// `portcullis_controller_connected` (with a controller): 1 while the watch is open.
    pub(crate) controller_connected: Gauge,
    /// `portcullis_controller_view_version`: the version of the view in force.
    pub(crate) controller_view_version: Gauge,
    /// `portcullis_controller_view_applied_timestamp_seconds`: when it came into force.
    pub(crate) controller_view_applied: Gauge<f64, AtomicU64>,
    namespaces: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A new metric, registered under `name`.
fn register<M: Metric + Clone + Default>(r: &mut Registry, name: &str, help: &str) -> M {
    register_as(r, name, help, M::default())
}

/// `metric`, registered under `name`.
fn register_as<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub(crate) fn new() -> Self {
        let mut r = Registry::with_prefix("portcullis");
        let request_duration = Family::new_with_constructor(duration_buckets as fn() -> Histogram);
        Self {
            requests: register(&mut r, "requests", "HTTP requests by decision and status"),
            request_duration: register_as(
                &mut r,
                "request_duration_seconds",
                "Time from request to response head",
                request_duration,
            ),
            connections: register(&mut r, "connections", "Connections by decision"),
            open: register(&mut r, "connections_open", "Connections open now"),
            errors: register(
                &mut r,
                "connection_errors",
                "Admitted connections that failed, by reason",
            ),
            bytes_received: register(
                &mut r,
                "received_bytes",
                "Bytes received from the connecting side",
            ),
            bytes_sent: register(
                &mut r,
                "sent_bytes",
                "Bytes sent back to the connecting side",
            ),
            access_log_dropped: register(
                &mut r,
                "access_log_dropped",
                "Access log lines dropped because the writer fell behind",
            ),
            reloads: register(&mut r, "policy_reloads", "Policy reloads by result"),
            policy_info: register(
                &mut r,
                "policy_info",
                "The active policy (value 1, by content hash)",
            ),
            rss: register(
                &mut r,
                "process_resident_memory_bytes",
                "Resident memory of the proxy",
            ),
            open_fds: register(
                &mut r,
                "process_open_fds",
                "Open file descriptors of the proxy",
            ),
            detections: register(
                &mut r,
                "protocol_detections",
                "Connections whose protocol was detected, by outcome",
            ),
            identity_expiry: Gauge::default(),
            handshakes: register(
                &mut r,
                "mtls_handshakes",
                "Mutual TLS handshakes between sidecars, by result and peer namespace",
            ),
            identity_reloads: Family::default(),
            panics: register(
                &mut r,
                "connection_panics",
                "Connection tasks that panicked (each one a bug; its record and gauges are settled)",
            ),
            controller_connected: Gauge::default(),
            controller_view_version: Gauge::default(),
            controller_view_applied: Gauge::default(),
            namespaces: std::sync::Mutex::default(),
            registry: r,
        }
        .zeroed()
    }

    /// The metrics of a proxy with a workload identity: also
    /// `portcullis_identity_expiry_timestamp_seconds` and `portcullis_identity_reloads_total`
    /// (absent without one, rather than 0).
    pub(crate) fn with_identity() -> Self {
        let mut m = Self::new();
        m.registry.register(
            "identity_expiry_timestamp_seconds",
            "When the workload certificate expires (Unix time)",
            m.identity_expiry.clone(),
        );
        m.registry.register(
            "identity_reloads",
            "Identity material re-reads that changed it, by result (a refused set keeps the last good)",
            m.identity_reloads.clone(),
        );
        for result in ["success", "failure"] {
            let _ = m.identity_reloads.get_or_create(&ReloadLabels { result });
        }
        m
    }

    /// Also the controller's metrics (absent without `--controller`).
    pub(crate) fn with_controller(mut self) -> Self {
        self.registry.register(
            "controller_connected",
            "1 while the watch on the controller is open, else 0 (the last good view stays)",
            self.controller_connected.clone(),
        );
        self.registry.register(
            "controller_view_version",
            "The version of the controller's view in force (0: none yet)",
            self.controller_view_version.clone(),
        );
        self.registry.register(
            "controller_view_applied_timestamp_seconds",
            "When the view in force was applied (Unix time; its age is time() minus this)",
            self.controller_view_applied.clone(),
        );
        self
    }

    /// Every series whose labels are known in advance, at 0, so that `increase()` and
    /// `absent()` alerts see the first event (Prometheus' instrumentation guide). Requests are
    /// labelled by the policy's own rule names and appear with their first request.
    fn zeroed(self) -> Self {
        for direction in [Direction::Inbound, Direction::Outbound] {
            let dir = DirLabels { direction };
            let _ = self.open.get_or_create(&dir);
            let _ = self.bytes_received.get_or_create(&dir);
            let _ = self.bytes_sent.get_or_create(&dir);
            let _ = self.request_duration.get_or_create(&dir);
            for verdict in [Verdict::Allow, Verdict::Deny, Verdict::AuditDeny] {
                let _ = self
                    .connections
                    .get_or_create(&ConnLabels { direction, verdict });
            }
            for protocol in ["http1", "http2", "tls", "mtls", "opaque"] {
                let _ = self.detections.get_or_create(&DetectLabels {
                    direction,
                    protocol,
                });
            }
            for reason in ERROR_REASONS {
                let _ = self
                    .errors
                    .get_or_create(&ErrorLabels { direction, reason });
            }
        }
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ReloadLabels { result });
        }
        self
    }

    /// Marks `hash` as the active policy.
    pub(crate) fn set_policy_hash(&self, hash: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&PolicyLabels {
                hash: hash.to_string(),
            })
            .set(1);
    }

    /// Counts one mutual TLS handshake; peer namespaces beyond [`MAX_NAMESPACES`] share the
    /// label value `other`, so a flood of identities cannot grow the exposition.
    pub(crate) fn count_handshake(
        &self,
        direction: Direction,
        result: &'static str,
        namespace: &str,
    ) {
        let peer_namespace = {
            let mut seen = self.namespaces.lock().unwrap_or_else(|p| p.into_inner());
            if seen.contains(namespace) {
                namespace.to_string()
            } else if seen.len() < MAX_NAMESPACES {
                seen.insert(namespace.to_string());
                namespace.to_string()
            } else {
                "other".to_string()
            }
        };
        self.handshakes
            .get_or_create(&HandshakeLabels {
                direction,
                result,
                peer_namespace,
            })
            .inc();
    }

    /// Records when the workload certificate expires.
    pub(crate) fn set_identity_expiry(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.identity_expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    fn sample_process(&self) {
        let page = 4096;
        if let Some(pages) = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<i64>().ok())
            })
        {
            self.rss.set(pages * page);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(dir.count() as i64);
        }
    }

    /// The OpenMetrics text exposition.
    pub(crate) fn render(&self) -> String {
        self.sample_process();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
