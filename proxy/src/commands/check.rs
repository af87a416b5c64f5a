//! `portcullis-proxy check`: validates policy sources and summarizes each document; with
//! `--cluster`, also what selects each pod and which stored policies break the snapshot's
//! guardrails. Output is
//! built as text (pure apart from reading the sources) so that it can be tested directly.

use portcullis_config::LoadError;
use portcullis_config::guardrail::Mode;
use portcullis_config::guardrail::check::stored;

use crate::observe::Chain;
use crate::policy::{self, PolicyLoadError};
use crate::settings::cli::CheckArgs;

/// What `check` prints and how it exits.
#[derive(Debug, Default)]
pub struct Report {
    /// Summaries (stdout).
    pub out: String,
    /// Errors and warnings (stderr).
    pub err: String,
    /// 0 valid, 1 invalid.
    pub code: u8,
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// One direction of a pod's compiled policy, in words.
fn isolation(rules: &portcullis_config::compiled::DirectionRules) -> String {
    if !rules.mentioned {
        return "open".into();
    }
    format!("isolated, {}", plural(rules.rules.len(), "rule"))
}

/// `check --cluster`: the snapshot's policies, then one line per pod.
fn cluster(dir: &std::path::Path, r: &mut Report) {
    let (snapshot, hash) = match super::cluster::read(dir, None) {
        Ok(s) => s,
        Err(e) => return invalid(dir, &e, r),
    };
    let mut pods: Vec<_> = snapshot.cluster.pods.iter().collect();
    pods.sort_by_key(|p| super::cluster::name(p));
    for pod in pods {
        match super::cluster::compile_for(&snapshot, &hash, pod) {
            Ok(loaded) => {
                let p = &loaded.policy;
                let selected: Vec<&str> = p
                    .documents
                    .iter()
                    .filter(|d| d.applies && d.kind == "NetworkPolicy")
                    .map(|d| d.name.as_str())
                    .collect();
                r.out.push_str(&format!(
                    "{}: inbound {}, outbound {}; selected by: {}\n",
                    super::cluster::name(pod),
                    isolation(&p.inbound),
                    isolation(&p.outbound),
                    if selected.is_empty() {
                        "none".into()
                    } else {
                        selected.join(", ")
                    }
                ));
                for w in &loaded.warnings {
                    r.err.push_str(&format!("{w}\n"));
                }
            }
            Err(e) => return invalid(dir, &e, r),
        }
    }
    r.out.push_str(&format!(
        "{}: valid ({}, {}, {})\n",
        dir.display(),
        plural(snapshot.cluster.namespaces.len(), "namespace"),
        plural(snapshot.cluster.pods.len(), "pod"),
        plural(snapshot.policies.len(), "policy document")
    ));
    guardrails(dir, &snapshot, r);
}

/// The snapshot's policies held to its guardrails, as admission would hold each if it were
/// written now: every violation on stderr; an enforced one makes `check` fail.
fn guardrails(
    dir: &std::path::Path,
    snapshot: &portcullis_config::snapshot::Snapshot,
    r: &mut Report,
) {
    if snapshot.guardrails.is_empty() {
        return;
    }
    let guardrails: Vec<_> = snapshot.guardrails.iter().map(|g| &**g).collect();
    let found = stored(
        &guardrails,
        &snapshot.policies,
        &snapshot.cluster.namespaces,
    );
    for v in &found {
        r.err.push_str(&format!("{}\n", v.error));
    }
    let enforced = found.iter().filter(|v| v.mode == Mode::Enforce).count();
    r.out.push_str(&format!(
        "{}: {}: {} enforced, {} audit-only\n",
        dir.display(),
        plural(guardrails.len(), "guardrail"),
        plural(enforced, "violation"),
        found.len() - enforced
    ));
    if enforced > 0 {
        r.code = 1;
    }
}

/// Reports an invalid source.
fn invalid(path: &std::path::Path, e: &LoadError, r: &mut Report) {
    r.code = 1;
    let LoadError::Invalid(errors) = e else {
        r.err.push_str(&format!("{}\n", Chain(e)));
        return;
    };
    for e in errors {
        r.err.push_str(&format!("{e}\n"));
    }
    r.err.push_str(&format!(
        "{}: invalid ({})\n",
        path.display(),
        plural(errors.len(), "error")
    ));
}

/// Checks every path; all of them are checked even after a failure.
pub fn run(args: &CheckArgs) -> Report {
    let mut r = Report::default();
    if let Some(dir) = &args.cluster {
        cluster(dir, &mut r);
    }
    for path in &args.paths {
        match policy::load(path, &args.workload.workload()) {
            Ok(loaded) => {
                for d in &loaded.policy.documents {
                    let scope = if d.applies {
                        ""
                    } else {
                        " (does not select this workload)"
                    };
                    r.out.push_str(&format!(
                        "{}: {} {:?}: {}, {}{scope}\n",
                        d.file,
                        d.kind,
                        d.name,
                        plural(d.inbound_rules, "inbound rule"),
                        plural(d.outbound_rules, "outbound rule"),
                    ));
                }
                for w in &loaded.warnings {
                    r.err.push_str(&format!("{w}\n"));
                }
                r.out.push_str(&format!(
                    "{}: valid ({}, hash {})\n",
                    path.display(),
                    plural(loaded.policy.documents.len(), "document"),
                    loaded.hash
                ));
            }
            Err(PolicyLoadError::Policy(e)) => invalid(path, &e, &mut r),
            Err(e) => {
                r.err.push_str(&format!("{}\n", Chain(&e)));
                r.code = 1;
            }
        }
    }
    r
}
