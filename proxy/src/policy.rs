//! The policy the sidecar enforces: loading it (workload facts, then the whole source compiled
//! at once — a bad policy never half-loads), the [`store`] that holds the active one and swaps
//! it atomically, and the [`watch`] that reloads it (and the credentials) on change.

pub mod controller;
pub mod store;
pub mod view;
pub(crate) mod watch;

use std::path::PathBuf;

use portcullis_config::workload::{WorkloadError, parse_labels, parse_named_ports};
use portcullis_config::{CompileContext, LoadError, LoadedPolicy, load_policy};

/// What the policy needs to know about this workload (NetworkPolicy selection, named ports).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// The workload's labels file, as the Downward API writes it (`key="value"` lines).
    pub labels_file: Option<PathBuf>,
    /// The workload's named container ports: `name=port,…`.
    pub named_ports: String,
    /// The workload's namespace.
    pub namespace: Option<String>,
}

impl Workload {
    /// What the policy's meaning depends on besides its source: the labels file's content (a
    /// relabelled pod may be selected by other policies). Reloads compare it with the source.
    pub(crate) fn fingerprint(&self) -> Result<String, PolicyLoadError> {
        Ok(match &self.labels_file {
            None => String::new(),
            Some(path) => read_labels(path)?,
        })
    }
}

fn read_labels(path: &std::path::Path) -> Result<String, PolicyLoadError> {
    std::fs::read_to_string(path).map_err(|source| PolicyLoadError::LabelsRead {
        path: path.to_path_buf(),
        source,
    })
}

/// Why the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The labels file cannot be read.
    #[error("--workload-labels {}", .path.display())]
    LabelsRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The labels file does not parse.
    #[error("--workload-labels {}", .path.display())]
    Labels {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: WorkloadError,
    },
    /// The named ports.
    #[error("--named-ports")]
    NamedPorts(#[source] WorkloadError),
    /// The namespace is not a namespace name.
    #[error("--pod-namespace {0:?}: not a namespace name (a DNS label: a-z, 0-9, '-', at most 63)")]
    Namespace(String),
    /// The policy itself.
    #[error(transparent)]
    Policy(#[from] LoadError),
}

/// Builds the compile context from the workload flags.
pub(crate) fn context(args: &Workload) -> Result<CompileContext, PolicyLoadError> {
    let workload_labels = match &args.labels_file {
        None => None,
        Some(path) => {
            let text = read_labels(path)?;
            let labels = parse_labels(&text).map_err(|source| PolicyLoadError::Labels {
                path: path.clone(),
                source,
            })?;
            Some(labels)
        }
    };
    let named_ports = parse_named_ports(&args.named_ports).map_err(PolicyLoadError::NamedPorts)?;
    let workload_namespace = match &args.namespace {
        Some(ns) if !is_dns_label(ns) => return Err(PolicyLoadError::Namespace(ns.clone())),
        other => other.clone(),
    };
    Ok(CompileContext {
        workload_labels,
        named_ports,
        workload_namespace,
        cluster: None,
    })
}

fn is_dns_label(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Loads and compiles the policy at `path`.
pub fn load(path: &std::path::Path, args: &Workload) -> Result<LoadedPolicy, PolicyLoadError> {
    Ok(load_policy(path, &context(args)?)?)
}

/// Compiles the documents of the policy source (if any) and of the controller's view (if
/// any) together; the view's workload facts and cluster win over the flags'. Every error of
/// every document is reported.
pub(crate) fn compile_inputs(
    source: Option<(&std::path::Path, &Workload)>,
    view: Option<&view::ViewInputs>,
) -> Result<LoadedPolicy, PolicyLoadError> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    let mut hashes = Vec::new();
    if let Some((path, _)) = source {
        let source = portcullis_config::load::read_source(path)?;
        let (file_docs, file_errors) = portcullis_config::load::parse_source(&source);
        docs.extend(file_docs);
        errors.extend(file_errors);
        hashes.push(source.content_hash());
    }
    if let Some(v) = view {
        for (origin, yaml) in &v.documents {
            match portcullis_config::parse_str(origin, yaml) {
                Ok(d) => docs.extend(d),
                Err(e) => errors.extend(e),
            }
        }
        hashes.push(format!("view-{}", v.hash));
    }
    let ctx = match (view, source) {
        (Some(v), _) => v.ctx.clone(),
        (None, Some((_, w))) => context(w)?,
        (None, None) => CompileContext::default(),
    };
    match portcullis_config::compile::compile(&docs, &ctx) {
        Ok((policy, warnings)) if errors.is_empty() => Ok(LoadedPolicy {
            policy,
            warnings,
            hash: hashes.join("+"),
        }),
        Ok(_) => Err(LoadError::Invalid(errors).into()),
        Err(more) => {
            errors.extend(more);
            Err(LoadError::Invalid(errors).into())
        }
    }
}

/// What a sidecar enforces until the controller's first view arrives, when it has no policy
/// file: nothing it cannot judge gets through, in either direction.
pub fn waiting_for_controller() -> LoadedPolicy {
    let mut policy = portcullis_config::CompiledPolicy::default();
    for direction in [&mut policy.inbound, &mut policy.outbound] {
        direction.mention(Some(portcullis_config::model::Action::Deny));
        direction.reindex();
    }
    LoadedPolicy {
        policy,
        warnings: Vec::new(),
        hash: "waiting-for-controller".into(),
    }
}
