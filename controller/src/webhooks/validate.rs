//! `POST /validate`: a policy write judged at admission — pure, AdmissionReview v1 JSON in,
//! AdmissionReview v1 JSON out. A CREATE or UPDATE of a NetworkPolicy, an AccessPolicy or a
//! policy ConfigMap (see [`is_policy_configmap`]) is read and compiled with the config crate's
//! own entry points, as the controller and sidecars read it, and refused (`422`, every located
//! error) when they could not load it; anything else is allowed untouched.
//!
//! NetworkPolicies and AccessPolicies are read as the `kube` source reads them
//! ([`Snapshot::add_object`]), ConfigMaps as a sidecar reads its mounted policy directory (keys
//! are files). Both are compiled for no particular workload, with the cluster known (the
//! controller's view), so warnings that only a workload's own facts could settle are left out.

mod fields;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kube::core::DynamicObject;
use kube::core::Status;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use portcullis_config::cluster::Cluster;
use portcullis_config::load::{Source, parse_source};
use portcullis_config::snapshot::Snapshot;
use portcullis_config::{CompileContext, PolicyError, Warning, compile};
use serde_json::Value;

use fields::Fields;

/// The label that marks a ConfigMap as Portcullis policy (besides the injector's default
/// policy ConfigMap name): `portcullis.dev/policy: "true"`.
pub const POLICY_LABEL: &str = "portcullis.dev/policy";

/// What a review decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A policy object that loads, with this many warnings.
    Allowed {
        /// `Kind namespace/name`.
        object: String,
        /// Warnings sent back.
        warnings: usize,
    },
    /// A policy object that does not load.
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
}

/// A body that is no AdmissionReview request (answered `400`).
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview request: {0}")]
pub struct NotAReview(String);

/// Whether a ConfigMap object holds Portcullis policy: named as the injector's default policy
/// ConfigMap (`--policy`, `portcullis-policy`), or labelled [`POLICY_LABEL`]`: "true"` (for
/// ConfigMaps that pods name with the `portcullis.dev/policy` annotation).
pub fn is_policy_configmap(object: &Value, default_name: &str) -> bool {
    let meta = &object["metadata"];
    meta["name"].as_str() == Some(default_name)
        || meta["labels"][POLICY_LABEL].as_str() == Some("true")
}

/// Answers one `/validate` body; `policy_configmap` is the injector's default ConfigMap name.
pub fn validate(body: &[u8], policy_configmap: &str) -> Result<Answer, NotAReview> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| NotAReview(format!("not JSON: {e}")))?;
    let typed: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw.clone()).map_err(|e| NotAReview(e.to_string()))?;
    let req: AdmissionRequest<DynamicObject> =
        typed.try_into().map_err(|e| NotAReview(format!("{e}")))?;
    let response = AdmissionResponse::from(&req);
    let ignored = |response: AdmissionResponse| Answer {
        body: to_body(response),
        outcome: Outcome::Ignored,
    };
    // The raw object, not kube's typed copy: nothing the config crate reads is lost.
    let object = &raw["request"]["object"];
    if !matches!(req.operation, Operation::Create | Operation::Update) || !object.is_object() {
        return Ok(ignored(response));
    }
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| object["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let kind = req.kind.kind.as_str();
    let judged = match req.kind.group.as_str() {
        "networking.k8s.io" if kind == "NetworkPolicy" => policy_object(&req, object, namespace),
        "portcullis.dev" if kind == "AccessPolicy" => policy_object(&req, object, namespace),
        "" if kind == "ConfigMap" && is_policy_configmap(object, policy_configmap) => {
            configmap(object, namespace, &req.name)
        }
        _ => return Ok(ignored(response)),
    };
    Ok(answer(response, judged))
}

/// What one policy object came to: its name, and its warnings or errors, each rendered.
struct Judged {
    object: String,
    result: Result<Vec<String>, Vec<String>>,
}

/// A NetworkPolicy or AccessPolicy object, read as the `kube` source reads it.
fn policy_object(req: &AdmissionRequest<DynamicObject>, object: &Value, ns: &str) -> Judged {
    let mut v = object.clone();
    // The API server sends both, but an object without them would not be read at all.
    if v.get("apiVersion").is_none() {
        v["apiVersion"] = format!("{}/{}", req.kind.group, req.kind.version).into();
    }
    if v.get("kind").is_none() {
        v["kind"] = req.kind.kind.clone().into();
    }
    // A CREATE with `generateName` has no name yet; the object stored will have one.
    let name = match (
        v["metadata"]["name"].as_str(),
        v["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(prefix)) => {
            let generated = format!("{prefix}generated");
            v["metadata"]["name"] = generated.clone().into();
            generated
        }
        _ => req.name.clone(),
    };
    let origin = format!("{} {ns}/{name}", req.kind.kind);
    let fields = Fields::of(&fields::rendered(&v));
    let mut snapshot = Snapshot::default();
    snapshot.add_object(&origin, &v);
    let result = if snapshot.errors.is_empty() {
        compile::compile(&snapshot.policies, &context(ns)).map(|(_, warnings)| warnings)
    } else {
        Err(snapshot.errors)
    };
    Judged {
        result: render(result, Some(&fields)),
        object: origin,
    }
}

/// A policy ConfigMap, read as a sidecar reads it mounted: each `*.yaml`/`*.yml` key a file
/// (hidden ones skipped), in name order, compiled together.
fn configmap(object: &Value, ns: &str, request_name: &str) -> Judged {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or(request_name)
        .to_string();
    let origin = format!("ConfigMap {ns}/{name}");
    let mut files: Vec<(String, String)> = object["data"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| is_policy_file(key))
        .filter_map(|(key, text)| Some((key.clone(), text.as_str()?.to_string())))
        .collect();
    files.sort();
    if files.is_empty() {
        let message = format!(
            "{origin}: no *.yaml or *.yml key (a sidecar mounting it exits with `no *.yaml or *.yml files`)"
        );
        return Judged {
            object: origin,
            result: Err(vec![message]),
        };
    }
    let (docs, mut errors) = parse_source(&Source { files });
    let result = match compile::compile(&docs, &context(ns)) {
        Ok((_, warnings)) if errors.is_empty() => Ok(warnings),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(errors)
        }
    };
    Judged {
        object: origin,
        result: render(result, None),
    }
}

/// What a sidecar's policy directory reads (`portcullis_config::load::read_source`).
fn is_policy_file(key: &str) -> bool {
    !key.starts_with('.') && (key.ends_with(".yaml") || key.ends_with(".yml"))
}

/// A policy compiled for no workload in particular, in namespace `ns`, with the cluster known
/// (as the controller's views compile it): selectors resolve, rather than warn that a sidecar
/// alone cannot see their peers.
fn context(ns: &str) -> CompileContext {
    CompileContext {
        workload_namespace: Some(ns.to_string()),
        cluster: Some(Arc::new(Cluster::default())),
        ..CompileContext::default()
    }
}

/// Warnings only a workload's own facts could settle (a named port that is not one of *its*
/// container ports): at admission there is no workload, so they would only mislead.
fn about_a_workload(w: &Warning) -> bool {
    w.0.message.contains("of this workload")
}

/// Each warning or error as a line, with the field it is at when known.
fn render(
    result: Result<Vec<Warning>, Vec<PolicyError>>,
    fields: Option<&Fields>,
) -> Result<Vec<String>, Vec<String>> {
    let at = |line: u64, text: String| match fields.and_then(|f| f.at(line)) {
        Some(path) => format!("{text} (at {path})"),
        None => text,
    };
    match result {
        Ok(warnings) => Ok(warnings
            .iter()
            .filter(|w| !about_a_workload(w))
            .map(|w| at(w.0.line, w.to_string()))
            .collect()),
        Err(errors) => Err(errors.iter().map(|e| at(e.line, e.to_string())).collect()),
    }
}

/// The response: allowed with the warnings, or refused as `422 Invalid` with every error.
fn answer(mut response: AdmissionResponse, judged: Judged) -> Answer {
    let object = judged.object;
    let outcome = match judged.result {
        Ok(warnings) => {
            let n = warnings.len();
            response.warnings = (n > 0).then_some(warnings);
            Outcome::Allowed {
                object,
                warnings: n,
            }
        }
        Err(errors) => {
            let message = format!(
                "{object} is not a valid Portcullis policy:\n{}",
                errors.join("\n")
            );
            response.allowed = false;
            response.result = Status::failure(&message, "Invalid");
            response.result.code = 422;
            Outcome::Denied { object, message }
        }
    };
    Answer {
        body: to_body(response),
        outcome,
    }
}

fn to_body(response: AdmissionResponse) -> Value {
    serde_json::to_value(response.into_review()).unwrap_or(Value::Null)
}
