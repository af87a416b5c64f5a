//! Portcullis injector: a Kubernetes mutating admission webhook that adds `portcullis-init` and
//! the proxy to pods.
//!
//! [`review`] answers an AdmissionReview (pure) using [`inject`] (decide and build the patch)
//! and [`probes`] (keep kubelet probes working), both building on [`patch`]; [`tls`] keeps the
//! serving certificate current;
//! [`server`] is the HTTPS shell; [`config`] turns flags into settings once.

pub mod config;
pub mod inject;
pub mod patch;
pub mod probes;
pub mod review;
pub mod server;
pub mod tls;
