//! AdmissionReview v1 in, AdmissionReview v1 out — pure. The request is parsed with kube-core's
//! types for its envelope (uid, kind, operation) while the Pod itself is taken as raw JSON, so
//! no field the injector does not know is lost. The patch travels base64-encoded, as the
//! Kubernetes documentation specifies.
//!
//! Outcomes: a Pod CREATE is patched or skipped (allowed, no patch); anything else is allowed
//! untouched; a review that cannot be read is answered `allowed: true` without a patch (the
//! caller logs it) — whether a broken webhook blocks pods is the `failurePolicy`'s decision,
//! not this code's. A pod whose `portcullis.dev/*` annotations are invalid is denied with the
//! reason, so the mistake is seen at `kubectl apply` rather than as a pod without a sidecar.

use base64::Engine as _;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::{Value, json};

use crate::config::InjectConfig;
use crate::inject::{Plan, plan};

/// What happened to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Patched with this many operations.
    Injected(usize),
    /// A pod left alone, and why.
    Skipped(String),
    /// Not a Pod CREATE.
    Ignored,
    /// Refused: bad annotations.
    Denied(String),
    /// Unreadable; allowed without a patch.
    Malformed(String),
}

/// The answer to send, and what it means.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The AdmissionReview response body.
    pub body: Value,
    /// For the log and metrics.
    pub outcome: Outcome,
}

fn malformed(uid: &str, why: String) -> Answer {
    Answer {
        body: json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": true},
        }),
        outcome: Outcome::Malformed(why),
    }
}

fn to_body(resp: AdmissionResponse) -> Value {
    serde_json::to_value(resp.into_review()).unwrap_or(Value::Null)
}

/// Answers one AdmissionReview body.
pub fn review(body: &[u8], cfg: &InjectConfig) -> Answer {
    let raw: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return malformed("", format!("not JSON: {e}")),
    };
    let uid = raw["request"]["uid"].as_str().unwrap_or("").to_string();
    let typed: AdmissionReview<DynamicObject> = match serde_json::from_value(raw.clone()) {
        Ok(r) => r,
        Err(e) => return malformed(&uid, format!("not an AdmissionReview: {e}")),
    };
    let req: AdmissionRequest<DynamicObject> = match typed.try_into() {
        Ok(r) => r,
        Err(e) => return malformed(&uid, format!("AdmissionReview without a request: {e}")),
    };
    let allowed = AdmissionResponse::from(&req);
    if req.kind.kind != "Pod" || !req.kind.group.is_empty() || req.operation != Operation::Create {
        return Answer {
            body: to_body(allowed),
            outcome: Outcome::Ignored,
        };
    }
    let pod = &raw["request"]["object"];
    if !pod.is_object() {
        return malformed(&uid, "Pod CREATE without an object".into());
    }
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| pod["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    match plan(pod, namespace, cfg) {
        Err(e) => {
            let why = e.to_string();
            Answer {
                body: to_body(allowed.deny(&why)),
                outcome: Outcome::Denied(why),
            }
        }
        Ok(Plan::Skip(why)) => Answer {
            body: to_body(allowed),
            outcome: Outcome::Skipped(why),
        },
        Ok(Plan::Inject(patch)) => {
            let n = patch.0.len();
            let encoded = serde_json::to_vec(&patch)
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                .unwrap_or_default();
            let mut body = to_body(allowed);
            body["response"]["patch"] = Value::String(encoded);
            body["response"]["patchType"] = Value::String("JSONPatch".into());
            Answer {
                body,
                outcome: Outcome::Injected(n),
            }
        }
    }
}
