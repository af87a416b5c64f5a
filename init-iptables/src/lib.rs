//! `portcullis-init`: installs the iptables rules that send a pod's TCP traffic through the
//! Portcullis proxy, and removes them again.
//!
//! Layout:
//! - [`config`]: flags (with `PORTCULLIS_INIT_*` environment twins) validated into [`InitConfig`];
//! - [`rules`]: the pure function `&InitConfig × Family → Vec<TableRules>` (what should exist);
//! - [`state`]: parsing `iptables-save` output into what exists now;
//! - [`plan`]: the pure diff of the two, as `iptables-restore --noflush` input, one per table;
//! - [`routing`]: the `ip rule` / `ip route` / `ip addr` commands TPROXY and IPv6 need;
//! - [`apply`]: the thin shell that detects the backend, reads state and runs the restores.

pub mod apply;
pub mod config;
pub mod plan;
pub mod routing;
pub mod rules;
pub mod state;

pub use config::{Backend, CaptureMode, InitArgs, InitConfig, Ipv6Mode};
pub use rules::Family;
