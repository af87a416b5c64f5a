//! Portcullis proxy: the sidecar's data path and its operator surface.
//!
//! A captured connection goes through a short chain of stages, each in its own module:
//! [`listener`] (accept) → [`original_dst`] (where it was going) → loop guard and connection
//! policy ([`connection`]) → [`mtls`] (terminate a peer sidecar's TLS: the peer identity) →
//! [`detect`] (only when requests matter) → [`http`] (judge each request) or [`tcp`] (move
//! bytes), connecting through [`upstream`] (the right source; TLS towards `--mesh-cidrs`), all
//! over one [`stream::Stream`] type. [`identity`] and [`jwt`] hold the credentials.
//! Around it: [`admin`] (health, metrics, policy, [`app_probes`] for the kubelet), [`metrics`], [`access_log`], [`drain`],
//! [`reload`] (the active policy, swapped atomically on change).
//! [`cli`] and [`config`] turn flags into a validated [`config::ProxyConfig`] once; [`policy`]
//! loads the policy, also for the [`check`] and [`explain`] subcommands.

pub mod access_log;
pub mod admin;
pub mod app_probes;
pub mod buffers;
pub mod check;
pub mod cli;
pub mod config;
pub mod connection;
pub mod detect;
pub mod devcerts;
pub mod drain;
pub mod explain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod mtls;
pub mod original_dst;
pub mod policy;
pub mod prefixed;
pub mod proxy;
pub mod reload;
pub mod stream;
pub mod tcp;
pub mod upstream;

pub use config::ProxyConfig;
pub use proxy::Proxy;
