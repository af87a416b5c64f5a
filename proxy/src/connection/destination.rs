//! Recovers where a captured connection was going, and refuses connections addressed to the
//! proxy itself (a loop).
//!
//! Under REDIRECT the kernel rewrote the destination; SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for
//! IPv6) reads the pre-NAT destination from conntrack. Under TPROXY nothing was rewritten and the
//! accepted socket's local address is the original destination; conntrack answers with the same
//! address, and when it has no entry at all the local address is used. Under REDIRECT a missing
//! entry is an error: the connection is refused rather than guessed at.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use tokio::net::TcpStream;

use super::outcome::ConnError;
use crate::vocab::CaptureMode;

/// The original destination of an accepted connection.
fn original_dst(stream: &TcpStream, capture: CaptureMode) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let sock = SockRef::from(stream);
    let got = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    };
    match got {
        Ok(addr) => addr.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "original destination is not an IP address",
            )
        }),
        Err(e) if capture == CaptureMode::Tproxy && e.raw_os_error() == Some(nix::libc::ENOENT) => {
            Ok(local)
        }
        Err(e) => Err(e),
    }
}

/// Whether `ip` is one of this host's (pod's) own addresses.
fn is_local_ip(ip: IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() {
        return true;
    }
    nix::ifaddrs::getifaddrs()
        .map(|addrs| {
            addrs.into_iter().any(|a| {
                a.address.is_some_and(|s| {
                    s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())) == Some(ip)
                        || s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())) == Some(ip)
                })
            })
        })
        // If the interfaces cannot be listed, treat the address as ours: refusing is safe.
        .unwrap_or(true)
}

/// Where the connection was going, from the kernel (or `fixed`, in in-process tests); a
/// destination on one of the proxy's own listener ports of this host is a loop.
pub(crate) fn destination(
    stream: &TcpStream,
    capture: CaptureMode,
    fixed: Option<SocketAddr>,
    own_ports: &[u16],
) -> Result<SocketAddr, ConnError> {
    let dst = match fixed {
        Some(dst) => dst,
        None => original_dst(stream, capture).map_err(ConnError::OriginalDst)?,
    };
    if own_ports.contains(&dst.port()) && is_local_ip(dst.ip()) {
        return Err(ConnError::Loop(dst));
    }
    Ok(dst)
}
