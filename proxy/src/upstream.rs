//! Opens the connection to the original destination, from the right source address.
//!
//! - Outbound: a plain connect; the proxy's UID is excluded from capture.
//! - Inbound, redirect mode: bound to 127.0.0.6 / ::6, a source the capture rules never
//!   re-capture. The application is reached on its original address and port, so apps that
//!   listen only on the pod IP keep working; they see 127.0.0.6 as the client.
//! - Inbound, TPROXY mode: IP_TRANSPARENT + the TPROXY mark, bound to the client's own IP (never
//!   its port, which could clash with the client's 4-tuple), so the application sees the real
//!   client. Connections from the pod itself fall back to the redirect-mode source.
//! - Outbound to a destination in `--mesh-cidrs`: wrapped in mutual TLS ([`crate::mtls`]) with
//!   the workload's current certificate, so the destination's sidecar learns who is calling.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use socket2::SockRef;
use tokio::net::TcpSocket;

use crate::cli::CaptureMode;
use crate::config::TPROXY_MARK;
use crate::connection::{ConnError, Direction};
use crate::identity::IdentityStore;
use crate::stream::Stream;

/// Destinations that run a Portcullis sidecar, and the identity to show them.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// Where peer sidecars live.
    pub cidrs: Vec<IpNet>,
    /// This workload's certificate (rotated in place).
    pub identity: Arc<IdentityStore>,
    /// Where handshakes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Mesh {
    /// Whether connections to `ip` are wrapped in mutual TLS.
    pub fn covers(&self, ip: IpAddr) -> bool {
        let ip = portcullis_config::matchers::canonical(ip);
        self.cidrs.iter().any(|n| n.contains(&ip))
    }
}

/// How to connect to original destinations.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Capture mode of the inbound side.
    pub capture: CaptureMode,
    /// Redirect-mode delivery source (v4, v6), or none to let the kernel choose.
    pub delivery_source: Option<(std::net::Ipv4Addr, std::net::Ipv6Addr)>,
    /// Connect timeout.
    pub timeout: Duration,
    /// Mutual TLS towards peer sidecars, when `--mesh-cidrs` is set.
    pub mesh: Option<Mesh>,
}

/// An open upstream connection.
#[derive(Debug)]
pub struct Connected {
    /// The stream.
    pub stream: Stream,
    /// The destination sidecar's verified identity, when the connection is mutual TLS.
    pub peer_identity: Option<String>,
}

impl Connector {
    /// Whether a connection in `direction` to `dst` is originated as mutual TLS.
    pub fn is_mesh(&self, direction: Direction, dst: SocketAddr) -> bool {
        direction == Direction::Outbound && self.mesh.as_ref().is_some_and(|m| m.covers(dst.ip()))
    }

    /// Connects to `dst` on behalf of `client`.
    pub async fn connect(
        &self,
        direction: Direction,
        client: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Connected, ConnError> {
        let socket = self
            .socket(direction, client, dst)
            .map_err(|source| ConnError::UpstreamSocket { dst, source })?;
        let stream = tokio::time::timeout(self.timeout, socket.connect(dst))
            .await
            .map_err(|_| ConnError::ConnectTimeout(dst))?
            .map_err(|source| ConnError::Connect { dst, source })?;
        let _ = stream.set_nodelay(true);
        match &self.mesh {
            Some(mesh) if self.is_mesh(direction, dst) => {
                let tls = mesh.identity.current().tls.clone();
                let result = crate::mtls::connect(&tls, stream, dst.ip()).await;
                let namespace = match &result {
                    Ok((_, id)) => portcullis_config::matchers::spiffe_namespace(id).unwrap_or(""),
                    Err(_) => "",
                };
                let outcome = if result.is_ok() { "success" } else { "failure" };
                mesh.metrics.count_handshake(direction, outcome, namespace);
                let (s, id) = result.map_err(|source| ConnError::MeshConnect { dst, source })?;
                Ok(Connected {
                    stream: Stream::Mesh(Box::new(s)),
                    peer_identity: Some(id),
                })
            }
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
