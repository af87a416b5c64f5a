//! What every connection task shares: the settings of the data path and handles on the policy,
//! credentials, upstream pools, metrics and access log. Built once by the sidecar.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::matchers::PortSet;

use super::http_ports::HttpPorts;
use crate::http::jwt::Jwks;
use crate::http::pool::Pools;
use crate::mesh::identity::IdentityStore;
use crate::net::connector::Connector;
use crate::observe::access_log::AccessLog;
use crate::observe::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::vocab::CaptureMode;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Context {
    /// How captured connections were redirected.
    pub(crate) capture: CaptureMode,
    /// Test-only fixed original destination.
    pub(crate) original_dst_override: Option<SocketAddr>,
    /// The ports the proxy's capture listeners are bound to.
    pub(crate) own_ports: Vec<u16>,
    /// Upstream connection settings.
    pub(crate) connector: Connector,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Access log.
    pub(crate) access_log: AccessLog,
    /// The active policy (swapped by reloads).
    pub(crate) policy: Arc<PolicyStore>,
    /// Audit mode: denials are logged as `audit_deny` and the traffic passes.
    pub(crate) audit: bool,
    /// Keys for bearer tokens, when `--jwks` is set.
    pub(crate) jwks: Option<Arc<Jwks>>,
    /// Upstream HTTP connections shared across downstream connections.
    pub(crate) pools: Arc<Pools>,
    /// Ports whose connections are never sniffed for a protocol.
    pub(crate) opaque_ports: PortSet,
    /// How long to wait for a client's first bytes when requests matter.
    pub(crate) detect_timeout: Duration,
    /// Destination ports that have carried HTTP (their silent clients get more patience).
    pub(crate) http_ports: HttpPorts,
    /// The workload identity: inbound mutual TLS from peer sidecars is terminated with it.
    pub(crate) identity: Option<Arc<IdentityStore>>,
}
