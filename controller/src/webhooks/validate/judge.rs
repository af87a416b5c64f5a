//! What one written object comes to: read and compiled as the controller and sidecars read it
//! (errors and warnings), then — when it loads — held to the guardrails of its namespace
//! (violations, or warnings for audit-only guardrails). Every line carries the field it is at
//! when the object is an API object, or `file:line:col` when it is a ConfigMap's policy file.

use std::sync::Arc;

use portcullis_config::cluster::Cluster;
use portcullis_config::guardrail::check::{Scope, Violation, check, check_delete};
use portcullis_config::guardrail::{self, Mode};
use portcullis_config::load::{Source, parse_source};
use portcullis_config::snapshot::Snapshot;
use portcullis_config::source::SourceDoc;
use portcullis_config::{CompileContext, PolicyError, Warning, compile};
use serde_json::Value;

use super::fields::{self, Fields};
use crate::admission::Facts;

/// What one object came to, each line rendered.
#[derive(Debug, Default)]
pub(super) struct Judged {
    /// `Kind namespace/name`.
    pub object: String,
    /// Why it does not load (refused as `422 Invalid`).
    pub errors: Vec<String>,
    /// Which enforced guardrails it breaks (refused as `403 Forbidden`).
    pub violations: Vec<String>,
    /// Sent back with an admission.
    pub warnings: Vec<String>,
    /// Every guardrail violation found (enforced or audited), for the metrics.
    pub found: Vec<Violation>,
}

/// An object read alone: its documents, and what compiling them said.
struct Read {
    origin: String,
    fields: Fields,
    docs: Vec<SourceDoc>,
    result: Result<Vec<Warning>, Vec<PolicyError>>,
}

fn read_object(v: &Value, ns: &str, name: &str) -> Read {
    let kind = v["kind"].as_str().unwrap_or_default();
    let origin = format!("{kind} {ns}/{name}");
    let mut snapshot = Snapshot::default();
    snapshot.add_object(&origin, v);
    let result = if snapshot.errors.is_empty() {
        compile::compile(&snapshot.policies, &context(ns)).map(|(_, warnings)| warnings)
    } else {
        Err(snapshot.errors)
    };
    Read {
        fields: Fields::of(&fields::rendered(v)),
        docs: snapshot.policies,
        origin,
        result,
    }
}

/// A NetworkPolicy or AccessPolicy object (with `apiVersion` and `kind`) of namespace `ns`
/// named `name`, read and compiled alone as the `kube` source reads it: `Kind ns/name`, and its
/// warnings or its errors, each rendered with the field it is at.
pub fn judge_object(v: &Value, ns: &str, name: &str) -> (String, Result<Vec<String>, Vec<String>>) {
    let read = read_object(v, ns, name);
    (read.origin, render(read.result, Some(&read.fields)))
}

/// A written policy object, held to the guardrails when it loads.
pub(super) fn policy_object(v: &Value, ns: &str, name: &str, facts: &Facts) -> Judged {
    let read = read_object(v, ns, name);
    let mut judged = Judged::new(read.origin.clone(), render(read.result, Some(&read.fields)));
    if judged.errors.is_empty() {
        let kind = v["kind"].as_str().unwrap_or_default();
        let scope = facts.scope(ns, Some((kind, name)));
        let found = check(guardrails(facts), &read.docs, &scope);
        judged.add(found, Some(&read.fields));
    }
    judged
}

/// A deleted policy object (`oldObject`): refused only when a guardrail needs the namespace's
/// default-deny baseline and this is the last one.
pub(super) fn deleted_object(v: &Value, ns: &str, name: &str, facts: &Facts) -> Judged {
    let read = read_object(v, ns, name);
    let mut judged = Judged::new(read.origin, Ok(Vec::new()));
    if let (Ok(_), Some(doc)) = (&read.result, read.docs.first()) {
        let kind = v["kind"].as_str().unwrap_or_default();
        let scope = facts.scope(ns, Some((kind, name)));
        judged.add(
            check_delete(guardrails(facts), doc, &scope),
            Some(&read.fields),
        );
    }
    judged
}

/// A `PolicyGuardrail` object: refused when it does not read whole.
pub(super) fn guardrail_object(v: &Value, name: &str) -> Judged {
    let origin = format!("{} {name}", guardrail::KIND);
    let text = fields::rendered(v);
    let fields = Fields::of(&text);
    let result = match guardrail::parse(&Arc::from(origin.as_str()), 0, &text) {
        Ok(_) => Ok(Vec::new()),
        Err(errors) => Err(errors),
    };
    Judged::new(origin, render(result, Some(&fields)))
}

/// A policy ConfigMap, read as a sidecar reads it mounted: each `*.yaml`/`*.yml` key a file
/// (hidden ones skipped), in name order, compiled together — and, as the whole policy of the
/// pods that mount it, its own baseline.
pub(super) fn configmap(object: &Value, ns: &str, name: &str, facts: &Facts) -> Judged {
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
        return Judged::new(origin, Err(vec![message]));
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
    let mut judged = Judged::new(origin, render(result, None));
    if judged.errors.is_empty() {
        let scope = Scope {
            baseline_elsewhere: false,
            ..facts.scope(ns, None)
        };
        judged.add(check(guardrails(facts), &docs, &scope), None);
    }
    judged
}

fn guardrails(facts: &Facts) -> impl Iterator<Item = &guardrail::Guardrail> {
    facts.guardrails.iter().map(|g| &**g)
}

impl Judged {
    fn new(object: String, rendered: Result<Vec<String>, Vec<String>>) -> Self {
        let (warnings, errors) = match rendered {
            Ok(w) => (w, Vec::new()),
            Err(e) => (Vec::new(), e),
        };
        Self {
            object,
            errors,
            violations: Vec::new(),
            warnings,
            found: Vec::new(),
        }
    }

    /// Enforced violations refuse; audited ones are warnings.
    fn add(&mut self, found: Vec<Violation>, fields: Option<&Fields>) {
        for v in &found {
            let line = at(fields, v.error.line, v.error.to_string());
            match v.mode {
                Mode::Enforce => self.violations.push(line),
                Mode::Audit => self.warnings.push(line),
            }
        }
        self.found.extend(found);
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

/// `text`, with the field at `line` when known.
fn at(fields: Option<&Fields>, line: u64, text: String) -> String {
    match fields.and_then(|f| f.at(line)) {
        Some(path) => format!("{text} (at {path})"),
        None => text,
    }
}

/// Each warning or error as a line, with the field it is at when known.
fn render(
    result: Result<Vec<Warning>, Vec<PolicyError>>,
    fields: Option<&Fields>,
) -> Result<Vec<String>, Vec<String>> {
    match result {
        Ok(warnings) => Ok(warnings
            .iter()
            .filter(|w| !about_a_workload(w))
            .map(|w| at(fields, w.0.line, w.to_string()))
            .collect()),
        Err(errors) => Err(errors
            .iter()
            .map(|e| at(fields, e.line, e.to_string()))
            .collect()),
    }
}
