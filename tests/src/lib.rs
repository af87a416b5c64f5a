//! The namespace testbed: real network namespaces, veth links, the real `portcullis-init` and the
//! real proxy (as UID 1337), real servers and clients. Used by the end-to-end tests and by the
//! `testbed` binary (demo and hands-on use).
//!
//! - [`credentials`]: the controller API's TLS certificate and the pods' tokens;
//! - [`netns`]: a named namespace, deleted on drop;
//! - [`netpol_oracle`]: NetworkPolicy reachability from the Kubernetes semantics alone;
//! - [`podnet`]: many pods on one bridge, each with its sidecar, following the controller;
//! - [`process`]: a child process, stopped by PID on drop;
//! - [`tools`]: locating the project's binaries and checking prerequisites (failing loudly);
//! - [`testbed`]: client ↔ pod ↔ upstream topology, IPv4 and IPv6, and helpers to drive it.

pub mod credentials;
pub mod netns;
pub mod netpol_oracle;
pub mod podnet;
pub mod process;
pub mod testbed;
pub mod tools;

pub use testbed::{Capture, Host, Testbed, TestbedOptions};

use std::time::{Duration, Instant};

/// Polls `ready` (every 10 ms) until it holds or `timeout` passes; the error says `what` was
/// awaited. For things that are truly eventual (a reload, a counter); never to synchronise on
/// something that can be awaited directly.
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
