//! The policy the sidecar enforces: loading it (workload facts, then the whole source compiled
//! at once — a bad policy never half-loads), the [`store`] that holds the active one and swaps
//! it atomically, and the [`watch`] that reloads it (and the credentials) on change.

pub mod store;
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
    /// The policy itself.
    #[error(transparent)]
    Policy(#[from] LoadError),
}

/// Builds the compile context from the workload flags.
pub(crate) fn context(args: &Workload) -> Result<CompileContext, PolicyLoadError> {
    let workload_labels = match &args.labels_file {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| PolicyLoadError::LabelsRead {
                    path: path.clone(),
                    source,
                })?;
            let labels = parse_labels(&text).map_err(|source| PolicyLoadError::Labels {
                path: path.clone(),
                source,
            })?;
            Some(labels)
        }
    };
    let named_ports = parse_named_ports(&args.named_ports).map_err(PolicyLoadError::NamedPorts)?;
    Ok(CompileContext {
        workload_labels,
        named_ports,
    })
}

/// Loads and compiles the policy at `path`.
pub fn load(path: &std::path::Path, args: &Workload) -> Result<LoadedPolicy, PolicyLoadError> {
    Ok(load_policy(path, &context(args)?)?)
}
