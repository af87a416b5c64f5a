//! `POST /validate`: a policy write judged at admission — pure, AdmissionReview v1 JSON in,
//! AdmissionReview v1 JSON out. A CREATE or UPDATE of a NetworkPolicy, an AccessPolicy or a
//! policy ConfigMap (see [`is_policy_configmap`]) is read and compiled with the config crate's
//! own entry points, as the controller and sidecars read it, and refused (`422 Invalid`, every
//! located error) when they could not load it; one that loads is held to the guardrails of its
//! namespace and refused (`403 Forbidden`) when it breaks an enforced one — an audit-only
//! guardrail's violations come back as warnings. A DELETE is refused only when it would take a
//! namespace's last default-deny baseline that a guardrail requires. A `PolicyGuardrail` is
//! refused when it does not read whole. Anything else is allowed untouched. A dry run is judged
//! like the write it tries.
//!
//! NetworkPolicies and AccessPolicies are read as the `kube` source reads them
//! ([`Snapshot::add_object`](portcullis_config::snapshot::Snapshot::add_object)), ConfigMaps as a
//! sidecar reads its mounted policy directory (keys are files); [`judge`] reads and holds them
//! to the guardrails, [`fields`] names the field a line is at. Both are compiled for no
//! particular workload, with the cluster known (the controller's view), so warnings that only a
//! workload's own facts could settle are left out.

mod fields;
mod judge;
#[cfg(test)]
mod tests;

use kube::core::DynamicObject;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use portcullis_config::guardrail;
use portcullis_config::guardrail::check::Violation;
use serde_json::Value;

use judge::Judged;
pub use judge::judge_object;

use crate::admission::Facts;

/// The label that marks a ConfigMap as Portcullis policy (besides the injector's default
/// policy ConfigMap name): `portcullis.dev/policy: "true"`.
pub const POLICY_LABEL: &str = "portcullis.dev/policy";

/// Who may always delete a policy: Kubernetes itself emptying a namespace that is going away,
/// and the garbage collector removing what an owner no longer holds. A baseline guardrail must
/// not leave a namespace stuck terminating.
pub const ALWAYS_DELETE: [&str; 2] = [
    "system:serviceaccount:kube-system:namespace-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
];

/// What a review decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A policy object that loads and keeps the guardrails, with this many warnings.
    Allowed {
        /// `Kind namespace/name`.
        object: String,
        /// Warnings sent back.
        warnings: usize,
    },
    /// A policy object that does not load, or breaks a guardrail.
    Denied {
        /// `Kind namespace/name`.
        object: String,
        /// The refusal, as sent back.
        message: String,
    },
    /// Not a write of a policy object: allowed untouched.
    Ignored,
}

/// The AdmissionReview to answer with, and what it means.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The AdmissionReview response body.
    pub body: Value,
    /// For the log.
    pub outcome: Outcome,
    /// The guardrail violations found (refusing or warned), for the metrics.
    pub violations: Vec<Violation>,
}

/// Why a body gets no AdmissionReview answer.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not an AdmissionReview request (answered `400`).
    #[error("not an AdmissionReview request: {0}")]
    NotAReview(String),
    /// A policy write before the controller has read the cluster (answered `503`, so the
    /// webhook's `failurePolicy` decides): its guardrails are not known yet.
    #[error("not ready: the cluster (and its guardrails) is not read yet")]
    NotReady,
}

/// Whether a ConfigMap object holds Portcullis policy: named as the injector's default policy
/// ConfigMap (`--policy`, `portcullis-policy`), or labelled [`POLICY_LABEL`]`: "true"` (for
/// ConfigMaps that pods name with the `portcullis.dev/policy` annotation).
pub fn is_policy_configmap(object: &Value, default_name: &str) -> bool {
    let meta = &object["metadata"];
    meta["name"].as_str() == Some(default_name)
        || meta["labels"][POLICY_LABEL].as_str() == Some("true")
}

/// What a review is about.
enum Subject {
    /// A NetworkPolicy or an AccessPolicy.
    Policy,
    /// A policy ConfigMap.
    ConfigMap,
    /// A `PolicyGuardrail`.
    Guardrail,
}

fn subject(req: &AdmissionRequest<DynamicObject>, raw: &Value, configmap: &str) -> Option<Subject> {
    let kind = req.kind.kind.as_str();
    let object = match req.operation {
        Operation::Delete => &raw["request"]["oldObject"],
        _ => &raw["request"]["object"],
    };
    match req.kind.group.as_str() {
        "networking.k8s.io" if kind == "NetworkPolicy" => Some(Subject::Policy),
        "portcullis.dev" if kind == "AccessPolicy" => Some(Subject::Policy),
        "portcullis.dev" if kind == guardrail::KIND => Some(Subject::Guardrail),
        "" if kind == "ConfigMap" && is_policy_configmap(object, configmap) => {
            Some(Subject::ConfigMap)
        }
        _ => None,
    }
}

/// Answers one `/validate` body; `policy_configmap` is the injector's default ConfigMap name,
/// `facts` what the last snapshot says (`None` before the first).
pub fn validate(
    body: &[u8],
    policy_configmap: &str,
    facts: Option<&Facts>,
) -> Result<Answer, ReviewError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| ReviewError::NotAReview(format!("not JSON: {e}")))?;
    let typed: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw.clone()).map_err(|e| ReviewError::NotAReview(e.to_string()))?;
    let req: AdmissionRequest<DynamicObject> = typed
        .try_into()
        .map_err(|e| ReviewError::NotAReview(format!("{e}")))?;
    let response = AdmissionResponse::from(&req);
    let ignored = |response: AdmissionResponse| Answer {
        body: to_body(response),
        outcome: Outcome::Ignored,
        violations: Vec::new(),
    };
    let Some(subject) = subject(&req, &raw, policy_configmap) else {
        return Ok(ignored(response));
    };
    let deleting = req.operation == Operation::Delete;
    // The raw objects, not kube's typed copies: nothing the config crate reads is lost.
    let object = match req.operation {
        Operation::Create | Operation::Update => &raw["request"]["object"],
        Operation::Delete => &raw["request"]["oldObject"],
        Operation::Connect => return Ok(ignored(response)),
    };
    let exempt = deleting
        && (!matches!(subject, Subject::Policy)
            || req
                .user_info
                .username
                .as_deref()
                .is_some_and(|u| ALWAYS_DELETE.contains(&u)));
    if !object.is_object() || exempt {
        return Ok(ignored(response));
    }
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| object["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let judged = match subject {
        Subject::Guardrail => judge::guardrail_object(object, &req.name),
        _ => {
            let facts = facts.ok_or(ReviewError::NotReady)?;
            let (v, name) = with_kind_and_name(&req, object);
            match (subject, deleting) {
                (Subject::ConfigMap, _) => judge::configmap(object, namespace, &name, facts),
                (_, true) => judge::deleted_object(&v, namespace, &name, facts),
                _ => judge::policy_object(&v, namespace, &name, facts),
            }
        }
    };
    Ok(answer(response, judged))
}

/// The object with `apiVersion` and `kind` (the API server sends both, but an object without
/// them would not be read at all), and its name — `PREFIX*` for a CREATE with `generateName`,
/// which has none yet (the object stored will have one).
fn with_kind_and_name(req: &AdmissionRequest<DynamicObject>, object: &Value) -> (Value, String) {
    let mut v = object.clone();
    if v.get("apiVersion").is_none() {
        v["apiVersion"] = format!("{}/{}", req.kind.group, req.kind.version).into();
    }
    if v.get("kind").is_none() {
        v["kind"] = req.kind.kind.clone().into();
    }
    let name = match (
        v["metadata"]["name"].as_str(),
        v["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => {
            // Named as what it will be: the prefix and a suffix the API server adds after.
            let generated = format!("{prefix}*");
            v["metadata"]["name"] = generated.clone().into();
            generated
        }
        _ => req.name.clone(),
    };
    (v, name)
}

/// The response: refused as `422 Invalid` with every error, or as `403 Forbidden` with every
/// enforced guardrail broken, or allowed with the warnings.
fn answer(mut response: AdmissionResponse, judged: Judged) -> Answer {
    let object = judged.object;
    let refusal = if !judged.errors.is_empty() {
        Some((
            "is not a valid Portcullis policy",
            judged.errors,
            "Invalid",
            422,
        ))
    } else if !judged.violations.is_empty() {
        Some((
            "breaks the cluster's policy guardrails",
            judged.violations,
            "Forbidden",
            403,
        ))
    } else {
        None
    };
    let outcome = match refusal {
        None => {
            let n = judged.warnings.len();
            response.warnings = (n > 0).then_some(judged.warnings);
            Outcome::Allowed {
                object,
                warnings: n,
            }
        }
        Some((what, lines, reason, code)) => {
            let message = format!("{object} {what}:\n{}", lines.join("\n"));
            response.allowed = false;
            response.result = Status::failure(&message, reason);
            response.result.code = code;
            // kubectl prints the warnings of a refusal too: audit findings are not lost.
            response.warnings = (!judged.warnings.is_empty()).then_some(judged.warnings);
            Outcome::Denied { object, message }
        }
    };
    Answer {
        body: to_body(response),
        outcome,
        violations: judged.found,
    }
}

fn to_body(response: AdmissionResponse) -> Value {
    serde_json::to_value(response.into_review()).unwrap_or(Value::Null)
}
