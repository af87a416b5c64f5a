//! The controller's Prometheus metrics (bounded labels only), served on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result` of a source load.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Every metric.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Snapshots read from the source, by result.
    pub source_loads: Family<LoadLabels, Counter>,
    /// Workloads with a view.
    pub workloads: Gauge,
    /// Open `Sidecar.Watch` streams.
    pub subscribers: Gauge,
    /// Views sent to subscribers.
    pub view_pushes: Counter,
    /// Workload certificates issued.
    pub svids_issued: Counter,
    /// Certificate requests refused, by reason.
    pub svids_refused: Family<RefusedLabels, Counter>,
    /// AccessPolicy status writes, by result.
    pub status_writes: Family<LoadLabels, Counter>,
    /// `/validate` reviews, by outcome.
    pub admission_reviews: Family<ReviewLabels, Counter>,
    /// Guardrail violations found at admission, by guardrail, rule and mode.
    pub guardrail_violations: Family<ViolationLabels, Counter>,
}

/// What a `/validate` review came to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `admitted`, `invalid` (422), `forbidden` (403, a guardrail), `ignored` (not a policy
    /// write), `not_ready` (503) or `malformed` (400).
    pub outcome: &'static str,
}

/// One guardrail violation (guardrails are cluster objects only cluster admins write: a
/// bounded set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    /// The guardrail's name.
    pub guardrail: String,
    /// The rule (`forbidAllowAll`).
    pub rule: &'static str,
    /// `enforce` or `audit`.
    pub mode: &'static str,
}

/// Why a certificate request was refused.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RefusedLabels {
    /// `unauthenticated`, `plaintext`, `identity`, `ca`, `malformed` or `signing`.
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis_controller");
        let source_loads = Family::<LoadLabels, Counter>::default();
        for result in ["success", "failure"] {
            let _ = source_loads.get_or_create(&LoadLabels { result });
        }
        registry.register(
            "source_loads",
            "Snapshots read from the source",
            source_loads.clone(),
        );
        let workloads = Gauge::default();
        registry.register("workloads", "Workloads with a view", workloads.clone());
        let subscribers = Gauge::default();
        registry.register(
            "subscribers",
            "Open Sidecar.Watch streams",
            subscribers.clone(),
        );
        let view_pushes = Counter::default();
        registry.register(
            "view_pushes",
            "Views sent to subscribers",
            view_pushes.clone(),
        );
        let svids_issued = Counter::default();
        registry.register(
            "svids_issued",
            "Workload certificates issued",
            svids_issued.clone(),
        );
        let svids_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "svids_refused",
            "Certificate requests refused, by reason",
            svids_refused.clone(),
        );
        let status_writes = Family::<LoadLabels, Counter>::default();
        registry.register(
            "status_writes",
            "AccessPolicy status writes, by result",
            status_writes.clone(),
        );
        let admission_reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Policy validation reviews, by outcome",
            admission_reviews.clone(),
        );
        let guardrail_violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "guardrail_violations",
            "Guardrail violations found at admission (refused when enforced, warned when audit)",
            guardrail_violations.clone(),
        );
        Self {
            registry,
            admission_reviews,
            guardrail_violations,
            status_writes,
            source_loads,
            workloads,
            subscribers,
            view_pushes,
            svids_issued,
            svids_refused,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
