//! `portcullis-controller`: the one component that knows the cluster.
//!
//! # Layout
//!
//! State flows one way: a [`source`] (today `dir:PATH`, a directory of manifests as `kubectl
//! get -A -o yaml` writes them, watched) yields cluster snapshots; the [`index`] (pure) turns a
//! snapshot into one view per workload — the policy documents of its namespace, its own labels
//! and named ports, and the pods and namespaces its selectors can select — versioned by content;
//! the [`publish`]er hands each changed view to its subscribers; the [`api`] serves each sidecar a `Sidecar.Watch` stream of its own view (gRPC, 15012); the
//! [`admin`] server answers `/live`, `/ready` and `/metrics` (15014); the [`webhooks`] are the
//! admission webhooks (HTTPS, 8443): sidecar injection (the injector library) and policy
//! validation, judged against the [`admission`] facts of the last snapshot (its guardrails).
//! The `kube` source writes each AccessPolicy's [`status`] (Accepted or Invalid, and the
//! workloads it applies to). [`settings`] parses the flags once; [`server`] wires the pieces;
//! [`metrics`] are the controller's own.

pub mod admin;
pub mod admission;
pub mod api;
pub mod ca;
pub mod index;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod settings;
pub mod source;
pub mod status;
pub mod webhooks;
