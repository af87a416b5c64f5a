//! Loading the policy for the proxy and its subcommands: workload facts from flags, then the
//! whole source compiled at once (a bad policy never half-loads).

use portcullis_config::workload::{parse_labels, parse_named_ports};
use portcullis_config::{CompileContext, LoadError, LoadedPolicy, load_policy};

use crate::cli::WorkloadArgs;

/// Why the policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The labels file.
    #[error("--workload-labels {path}: {message}")]
    Labels {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The named ports.
    #[error("--named-ports: {0}")]
    NamedPorts(String),
    /// The policy itself.
    #[error("{0}")]
    Policy(#[from] LoadError),
}

/// Builds the compile context from the workload flags.
pub fn context(args: &WorkloadArgs) -> Result<CompileContext, PolicyLoadError> {
    let workload_labels = match &args.workload_labels {
        None => None,
        Some(path) => {
            let labels_err = |message: String| PolicyLoadError::Labels {
                path: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| labels_err(e.to_string()))?;
            Some(parse_labels(&text).map_err(|e| labels_err(e.to_string()))?)
        }
    };
    let named_ports = parse_named_ports(&args.named_ports)
        .map_err(|e| PolicyLoadError::NamedPorts(e.to_string()))?;
    Ok(CompileContext {
        workload_labels,
        named_ports,
    })
}

/// Loads and compiles the policy at `path`.
pub fn load(path: &std::path::Path, args: &WorkloadArgs) -> Result<LoadedPolicy, PolicyLoadError> {
    Ok(load_policy(path, &context(args)?)?)
}
