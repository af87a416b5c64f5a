//! The sidecar as a whole: binds every port first (so that a bad address fails before anything
//! is served), then runs the capture listeners and the admin server until a drain completes.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use portcullis_config::LoadedPolicy;
use tokio::task::JoinSet;

use crate::admin::probes::AppProbes;
use crate::admin::{self, AdminState};
use crate::connection::context::Context;
use crate::connection::listener::{self, Listener};
use crate::drain::Drain;
use crate::http::jwt::Jwks;
pub use crate::http::jwt::JwtError;
pub use crate::mesh::identity::IdentityError;
use crate::mesh::identity::IdentityStore;
pub use crate::mesh::spiffe::SpiffeError;
use crate::net::connector::{Connector, Mesh};
use crate::observe::access_log::{AccessLog, Writer};
use crate::observe::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::watch;
use crate::settings::ProxyConfig;
use crate::vocab::{CaptureMode, Direction};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A port could not be bound.
    #[error("bind {addr} ({what})")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The identity material could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The JWKS file could not be loaded.
    #[error(transparent)]
    Jwks(#[from] JwtError),
    /// The access log could not be opened.
    #[error("access log")]
    AccessLog(#[source] io::Error),
}

/// A bound, not yet running proxy.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    jwks: Option<Arc<Jwks>>,
    identity: Option<Arc<IdentityStore>>,
    metrics: Arc<Metrics>,
    policy: Arc<PolicyStore>,
    listeners: Vec<Listener>,
    admin: tokio::net::TcpListener,
}

fn skippable_v6(addr: SocketAddr, e: &io::Error) -> bool {
    // A kernel without IPv6 (or with it disabled) cannot bind [::]; serve IPv4 only.
    addr.is_ipv6()
        && addr.ip().is_unspecified()
        && matches!(
            e.raw_os_error(),
            Some(nix::libc::EAFNOSUPPORT | nix::libc::EADDRNOTAVAIL)
        )
}

/// One inbound and one outbound listener per listen address.
fn bind_listeners(config: &ProxyConfig) -> Result<Vec<Listener>, ProxyError> {
    let transparent =
        config.capture == CaptureMode::Tproxy && config.original_dst_override.is_none();
    let mut listeners = Vec::new();
    for &ip in &config.listen_ips {
        for (direction, port, transparent, what) in [
            (
                Direction::Inbound,
                config.inbound_port,
                transparent,
                "inbound",
            ),
            (Direction::Outbound, config.outbound_port, false, "outbound"),
        ] {
            let addr = SocketAddr::new(ip, port);
            match listener::bind(addr, transparent) {
                Ok(tcp) => listeners.push(Listener::new(tcp, direction)),
                Err(e) if skippable_v6(addr, &e) => {
                    tracing::warn!(%addr, error = %e, "IPv6 unavailable; serving IPv4 only");
                }
                Err(source) => return Err(ProxyError::Bind { addr, what, source }),
            }
        }
    }
    Ok(listeners)
}

impl Proxy {
    /// Loads the credentials, then binds the capture listeners and the admin port, to serve
    /// `policy`: unusable credentials fail before any port is bound.
    pub fn bind(config: ProxyConfig, policy: LoadedPolicy) -> Result<Self, ProxyError> {
        let jwks = match &config.jwks {
            Some(path) => Some(Arc::new(Jwks::load(path)?)),
            None => None,
        };
        let identity = match &config.identity_dir {
            Some(dir) => Some(Arc::new(IdentityStore::load(dir)?)),
            None => None,
        };
        let listeners = bind_listeners(&config)?;
        let admin =
            listener::bind(config.admin_addr, false).map_err(|source| ProxyError::Bind {
                addr: config.admin_addr,
                what: "admin",
                source,
            })?;
        let metrics = match &identity {
            Some(_) => Metrics::with_identity(),
            None => Metrics::new(),
        };
        let metrics = Arc::new(match &config.controller {
            Some(_) => metrics.with_controller(),
            None => metrics,
        });
        if let Some(id) = &identity {
            metrics.set_identity_expiry(id.current().not_after);
        }
        let store = PolicyStore::new(policy, config.policy_source.clone(), metrics.clone());
        let policy = Arc::new(match &config.controller {
            Some(_) => store.expecting_views(),
            None => store,
        });
        Ok(Self {
            config,
            jwks,
            identity,
            metrics,
            policy,
            listeners,
            admin,
        })
    }

    /// Addresses of the listeners for `direction`.
    pub fn addrs(&self, direction: Direction) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.direction() == direction)
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The active policy and its reloads (for SIGHUP handlers and tests).
    pub fn policy_store(&self) -> Arc<PolicyStore> {
        self.policy.clone()
    }

    /// The admin server's address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// What every connection task shares.
    fn context(&self, access_log: AccessLog) -> Context {
        let config = &self.config;
        let mesh = self.identity.as_ref().map(|identity| Mesh {
            cidrs: config.mesh_cidrs.clone(),
            identity: identity.clone(),
            metrics: self.metrics.clone(),
        });
        Context {
            capture: config.capture,
            original_dst_override: config.original_dst_override,
            own_ports: self
                .listeners
                .iter()
                .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
                .collect(),
            connector: Connector {
                capture: config.capture,
                delivery_source: config.delivery_source,
                timeout: config.connect_timeout,
                mesh,
                policy: self.policy.clone(),
            },
            metrics: self.metrics.clone(),
            access_log,
            policy: self.policy.clone(),
            audit: config.audit,
            jwks: self.jwks.clone(),
            pools: Arc::default(),
            opaque_ports: config.opaque_ports.clone(),
            detect_timeout: config.detect_timeout,
            http_ports: Default::default(),
            identity: self.identity.clone(),
        }
    }

    /// What the admin endpoints report on.
    fn admin_state(&self, drain: &Drain, connector: &Connector) -> AdminState {
        let config = &self.config;
        AdminState {
            ready: false.into(),
            drain: drain.clone(),
            metrics: self.metrics.clone(),
            policy: self.policy.clone(),
            audit: config.audit,
            identity: self.identity.clone(),
            app_probes: (!config.app_probes.is_empty()).then(|| {
                Arc::new(AppProbes {
                    probes: config.app_probes.clone(),
                    target: config.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    connector: connector.clone(),
                })
            }),
        }
    }

    /// Serves until `drain` starts, then stops accepting, waits for open connections up to the
    /// drain timeout, flushes the access log and returns.
    pub async fn run(self, drain: Drain) -> Result<(), ProxyError> {
        let (access_log, writer) = AccessLog::start(&self.config.access_log, self.metrics.clone())
            .map_err(ProxyError::AccessLog)?;
        let ctx = Arc::new(self.context(access_log));
        let state = Arc::new(self.admin_state(&drain, &ctx.connector));
        let watcher = tokio::spawn(watch::watch(
            self.policy.clone(),
            self.jwks.clone(),
            self.identity.clone(),
            self.config.policy_poll,
            drain.clone(),
        ));
        let admin = tokio::spawn(admin::serve(self.admin, state.clone()));
        let follower = self.config.controller.clone().map(|target| {
            tokio::spawn(crate::policy::controller::follow(
                target,
                self.policy.clone(),
                self.config.enrollment.as_ref().map(|e| e.dir.clone()),
                drain.clone(),
            ))
        });
        if let (Some(enrollment), Some(identity)) = (self.config.enrollment.clone(), &self.identity)
        {
            let not_after = identity.current().not_after;
            tokio::spawn(enrollment.renew(not_after, drain.clone()));
        }
        let mut accept_loops = JoinSet::new();
        for l in self.listeners {
            accept_loops.spawn(l.run(ctx.clone(), drain.clone()));
        }
        state.ready.store(true, Ordering::Release);
        tracing::info!("serving");

        drain.started().await;
        accept_loops.join_all().await;
        let timeout = self.config.drain_timeout;
        tracing::info!(?timeout, "draining: listeners closed");
        finish(&drain, timeout, ctx, writer).await;
        admin.abort();
        watcher.abort();
        if let Some(f) = follower {
            f.abort();
        }
        Ok(())
    }
}

/// Waits for open connections up to the drain timeout, then writes what is left of the log.
async fn finish(
    drain: &Drain,
    timeout: std::time::Duration,
    ctx: Arc<Context>,
    writer: Option<Writer>,
) {
    let left = drain.wait(timeout).await;
    if left > 0 {
        tracing::warn!(left, "drain deadline passed; closing remaining connections");
    }
    drop(ctx);
    if let Some(writer) = writer {
        let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
    }
}
