//! `--cluster DIR` for `check` and `explain`: a snapshot of the cluster (`kubectl get -A -o
//! yaml` output, one or more files) read once, the pod a question is about found by its
//! address, and the policies compiled for it as the controller would compile them.

use std::net::IpAddr;
use std::path::Path;

use portcullis_config::cluster::Pod;
use portcullis_config::load::read_source;
use portcullis_config::snapshot::Snapshot;
use portcullis_config::{LoadError, LoadedPolicy, compile, load_path};

/// Reads a snapshot, with the documents of `also` (a `--policy` source) among its policies;
/// `Err` lists everything that could not be read, located.
pub(crate) fn read(dir: &Path, also: Option<&Path>) -> Result<(Snapshot, String), LoadError> {
    let source = read_source(dir)?;
    let mut snapshot = Snapshot::parse(&source.files);
    // A `--policy` source's documents are judged, never passed on: no texts beside them.
    let mut hash = source.content_hash();
    if let Some(path) = also {
        match load_path(path) {
            Ok((extra, docs)) => {
                snapshot.policies.extend(docs);
                hash = format!("{hash}+{}", extra.content_hash());
            }
            Err(LoadError::Invalid(errors)) => snapshot.errors.extend(errors),
            Err(e) => return Err(e),
        }
    }
    if !snapshot.errors.is_empty() {
        return Err(LoadError::Invalid(snapshot.errors));
    }
    Ok((snapshot, hash))
}

/// The pod with address `ip`.
pub(crate) fn pod_at(snapshot: &Snapshot, ip: IpAddr) -> Option<&Pod> {
    snapshot.cluster.pod_by_ip(ip)
}

/// The snapshot's policies compiled for `pod`.
pub(crate) fn compile_for(
    snapshot: &Snapshot,
    hash: &str,
    pod: &Pod,
) -> Result<LoadedPolicy, LoadError> {
    let ctx = snapshot.context_for(pod);
    let (policy, warnings) =
        compile::compile(&snapshot.policies, &ctx).map_err(LoadError::Invalid)?;
    Ok(LoadedPolicy {
        policy,
        warnings,
        hash: hash.to_string(),
    })
}

/// A pod's name as `namespace/name`.
pub(crate) fn name(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}
