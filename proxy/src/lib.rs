//! Portcullis proxy: the sidecar's data path and its operator surface.
//!
//! # Layout
//!
//! A captured connection runs through [`connection`]'s chain of stages — accept → original
//! destination and loop guard → inbound mesh TLS termination → admission (pure) → detection →
//! [`http`] (every request judged, pure) or opaque forwarding — over the primitives in [`net`]
//! (streams, buffers, the connector to original destinations). Around the data path:
//!
//! - [`vocab`]: the words every stage shares (direction, verdict, capture mode, ruling);
//! - [`mesh`]: SPIFFE identities, the workload's certificate store and the mTLS handshakes;
//! - [`policy`]: loading the policy, the store that swaps it atomically, the reload watcher;
//! - [`routes`]: where an outbound connection goes (a Service's endpoints, meshed pods);
//! - [`observe`]: Prometheus metrics and the JSON access log;
//! - [`admin`]: health, metrics, policy and kubelet-probe endpoints;
//! - [`drain`]: graceful shutdown; [`privileges`]: the capability TPROXY capture needs;
//! - [`sidecar`]: binds every port, wires the pieces together and runs until drained;
//! - [`settings`]: flags (clap, in [`settings::cli`]) → one validated [`ProxyConfig`];
//! - [`commands`]: `check`, `explain`, `dev-certs`.
//!
//! Dependencies point one way: the data path never imports [`settings`], and no two modules
//! import each other (`scripts/check-module-cycles.py` checks it in CI).

pub(crate) mod admin;
pub mod commands;
pub(crate) mod connection;
pub mod drain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod mesh;
pub(crate) mod net;
pub(crate) mod observe;
pub mod policy;
pub mod privileges;
pub mod routes;
pub mod settings;
pub mod sidecar;
pub mod vocab;

pub use settings::{AccessLogTarget, ProxyConfig};
pub use sidecar::Proxy;
