//! Opens the connection to the original destination, from the right source address.
//!
//! - Outbound: a plain connect; the proxy's UID is excluded from capture.
//! - Inbound, redirect mode: bound to 127.0.0.6 / ::6, a source the capture rules never
//!   re-capture. The application is reached on its original address and port, so apps that
//!   listen only on the pod IP keep working; they see 127.0.0.6 as the client.
//! - Inbound, TPROXY mode: IP_TRANSPARENT + the TPROXY mark, bound to the client's own IP (never
//!   its port, which could clash with the client's 4-tuple), so the application sees the real
//!   client. Connections from the pod itself fall back to the redirect-mode source.
//! - Outbound to a meshed pod the controller named, or to a destination in `--mesh-cidrs`:
//!   wrapped in mutual TLS ([`crate::mesh::tls`]) with the workload's current certificate, so the
//!   destination's sidecar learns who is calling. A meshed pod's sidecar must prove that pod's
//!   identity.
//! - Outbound to a Service's ClusterIP: never. Connections to a Service were routed to an
//!   endpoint before they were judged ([`crate::routes`]); one still aimed at a ClusterIP had no
//!   ready endpoint (or its Service changed under it) and fails as [`ConnectError::NoEndpoint`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use socket2::SockRef;
use tokio::net::TcpSocket;

use super::stream::Stream;
use crate::mesh::identity::IdentityStore;
use crate::mesh::tls::{self, MtlsError};
use crate::observe::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::routes::Routes;
use crate::vocab::{CaptureMode, Direction};

/// Source address of inbound deliveries to the application in redirect mode (IPv4). The capture
/// rules never re-capture traffic from it.
pub(crate) const DELIVERY_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
/// Source address of inbound deliveries to the application in redirect mode (IPv6; added to
/// `lo` by `portcullis-init`).
pub(crate) const DELIVERY_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// Packet mark of source-preserving (TPROXY) deliveries; matches `portcullis-init`.
const TPROXY_MARK: u32 = 0x539;

/// Why the original destination could not be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The upstream socket could not be prepared.
    #[error("upstream socket for {dst}")]
    Socket {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Connecting failed.
    #[error("connect {dst}")]
    Connect {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// Connecting took too long.
    #[error("connect {0}: timed out")]
    Timeout(SocketAddr),
    /// A Service address with no endpoint judged for it.
    #[error("{0}: the Service has no ready endpoint")]
    NoEndpoint(SocketAddr),
    /// Mutual TLS towards a peer sidecar failed.
    #[error("mTLS to {dst}")]
    Mesh {
        /// Destination.
        dst: SocketAddr,
        /// Why.
        source: MtlsError,
    },
}

impl ConnectError {
    /// The fixed code used as a metrics label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ConnectError::Socket { .. } => "upstream_socket",
            ConnectError::Connect { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                "connect_refused"
            }
            ConnectError::Connect { .. } => "connect_error",
            ConnectError::Timeout(_) => "connect_timeout",
            ConnectError::Mesh { .. } => "mtls_connect",
            ConnectError::NoEndpoint(_) => "no_endpoint",
        }
    }
}

/// Destinations that run a Portcullis sidecar, and the identity to show them.
#[derive(Debug, Clone)]
pub(crate) struct Mesh {
    /// Where peer sidecars live besides the meshed pods the controller names (`--mesh-cidrs`).
    pub(crate) cidrs: Vec<IpNet>,
    /// This workload's certificate (rotated in place).
    pub(crate) identity: Arc<IdentityStore>,
    /// Where handshakes are counted.
    pub(crate) metrics: Arc<Metrics>,
}

/// Whether, and with whom, a connection speaks mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// Plaintext.
    Plain,
    /// Any sidecar of the trust bundle (`--mesh-cidrs`).
    AnySidecar,
    /// The sidecar of the pod with this identity.
    Pod(String),
}

impl Mesh {
    /// How connections to `ip` are made, given the routes in force.
    fn peer(&self, routes: &Routes, ip: IpAddr) -> Peer {
        if let Some(p) = routes.mesh_peer(ip) {
            return Peer::Pod(p.identity(&self.identity.current().trust_domain));
        }
        let ip = portcullis_config::matchers::canonical(ip);
        if self.cidrs.iter().any(|n| n.contains(&ip)) {
            Peer::AnySidecar
        } else {
            Peer::Plain
        }
    }
}

/// Mutual TLS over a fresh connection to `dst`; the peer must prove `expected` when given.
async fn originate(
    mesh: &Mesh,
    stream: tokio::net::TcpStream,
    dst: SocketAddr,
    expected: Option<String>,
) -> Result<Connected, ConnectError> {
    let direction = Direction::Outbound;
    let config = mesh.identity.current().tls.clone();
    let result = tls::connect(&config, stream, dst.ip()).await;
    let namespace = match &result {
        Ok((_, id)) => portcullis_config::matchers::spiffe_namespace(id).unwrap_or(""),
        Err(_) => "",
    };
    let wrong = match (&result, &expected) {
        (Ok((_, got)), Some(want)) => got != want,
        _ => false,
    };
    let outcome = if result.is_ok() && !wrong {
        "success"
    } else {
        "failure"
    };
    mesh.metrics.count_handshake(direction, outcome, namespace);
    let (s, got) = result.map_err(|source| ConnectError::Mesh { dst, source })?;
    if let Some(expected) = expected.filter(|_| wrong) {
        let source = MtlsError::WrongPeer { expected, got };
        return Err(ConnectError::Mesh { dst, source });
    }
    Ok(Connected {
        stream: Stream::Mesh(Box::new(s)),
        peer_identity: Some(got),
    })
}

/// How to connect to original destinations.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    /// Capture mode of the inbound side.
    pub(crate) capture: CaptureMode,
    /// Redirect-mode delivery source (v4, v6), or none to let the kernel choose.
    pub(crate) delivery_source: Option<(Ipv4Addr, Ipv6Addr)>,
    /// Connect timeout.
    pub(crate) timeout: Duration,
    /// Mutual TLS towards peer sidecars, when the workload has an identity.
    pub(crate) mesh: Option<Mesh>,
    /// The policy in force, whose routes say which addresses are Services and meshed pods.
    pub(crate) policy: Arc<PolicyStore>,
}

/// An open upstream connection.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The stream.
    pub(crate) stream: Stream,
    /// The destination sidecar's verified identity, when the connection is mutual TLS.
    pub(crate) peer_identity: Option<String>,
}

impl Connector {
    /// Whether, and with whom, a connection in `direction` to `dst` speaks mutual TLS.
    fn peer(&self, routes: &Routes, direction: Direction, dst: SocketAddr) -> Peer {
        match &self.mesh {
            Some(mesh) if direction == Direction::Outbound => mesh.peer(routes, dst.ip()),
            _ => Peer::Plain,
        }
    }

    /// The identity a connection to `dst` will be proven to reach: a meshed pod's, whose
    /// sidecar must present it (outbound, with an identity of our own).
    pub(crate) fn expected_peer(&self, direction: Direction, dst: SocketAddr) -> Option<String> {
        match self.peer(&self.policy.current().routes, direction, dst) {
            Peer::Pod(id) => Some(id),
            Peer::Plain | Peer::AnySidecar => None,
        }
    }

    /// Connects to `dst` on behalf of `client`.
    pub(crate) async fn connect(
        &self,
        direction: Direction,
        client: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Connected, ConnectError> {
        let routes = &self.policy.current().routes;
        if direction == Direction::Outbound && routes.is_service(dst) {
            return Err(ConnectError::NoEndpoint(dst));
        }
        let peer = self.peer(routes, direction, dst);
        let socket = self
            .socket(direction, client, dst)
            .map_err(|source| ConnectError::Socket { dst, source })?;
        let stream = tokio::time::timeout(self.timeout, socket.connect(dst))
            .await
            .map_err(|_| ConnectError::Timeout(dst))?
            .map_err(|source| ConnectError::Connect { dst, source })?;
        let _ = stream.set_nodelay(true);
        match (&self.mesh, peer) {
            (Some(mesh), Peer::AnySidecar) => originate(mesh, stream, dst, None).await,
            (Some(mesh), Peer::Pod(id)) => originate(mesh, stream, dst, Some(id)).await,
            _ => Ok(Connected {
                stream: Stream::Plain(stream),
                peer_identity: None,
            }),
        }
    }

    fn socket(
        &self,
        direction: Direction,
        client: SocketAddr,
        dst: SocketAddr,
    ) -> io::Result<TcpSocket> {
        let socket = match dst {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if direction == Direction::Outbound || dst.ip().is_loopback() {
            return Ok(socket);
        }
        let same_family = client.is_ipv4() == dst.is_ipv4();
        let from_elsewhere = !client.ip().is_loopback() && client.ip() != dst.ip();
        if self.capture == CaptureMode::Tproxy && same_family && from_elsewhere {
            let sock = SockRef::from(&socket);
            match dst {
                SocketAddr::V4(_) => sock.set_ip_transparent_v4(true)?,
                SocketAddr::V6(_) => sock.set_ip_transparent_v6(true)?,
            }
            sock.set_mark(TPROXY_MARK)?;
            defer_port(&socket);
            socket.bind(SocketAddr::new(client.ip(), 0))?;
            return Ok(socket);
        }
        if let Some((v4, v6)) = self.delivery_source {
            let ip = match dst {
                SocketAddr::V4(_) => IpAddr::V4(v4),
                SocketAddr::V6(_) => IpAddr::V6(v6),
            };
            defer_port(&socket);
            socket.bind(SocketAddr::new(ip, 0)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("bind {ip} (is portcullis-init's address on lo?): {e}"),
                )
            })?;
        }
        Ok(socket)
    }
}

/// Binding to an address with port 0 makes the kernel pick a port at `bind`, unique for that
/// address alone — under a high connection rate that search is slow and ports run out while
/// TIME_WAIT holds them. IP_BIND_ADDRESS_NO_PORT defers the choice to `connect`, where the
/// whole 4-tuple only has to be unique. (IPv4 only in the kernel; harmless elsewhere.)
fn defer_port(socket: &TcpSocket) {
    let _ = nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    );
}
