//! Where cluster state comes from. [`dir`]: a directory (or file) of manifests, re-read when it
//! changes; a snapshot that does not read whole is reported and the last good one stays.
//! [`kube`]: the API server, watched.

pub mod dir;
pub mod kube;
