//! Recovers where a captured connection was going.
//!
//! Under REDIRECT the kernel rewrote the destination; SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for
//! IPv6) reads the pre-NAT destination from conntrack. Under TPROXY nothing was rewritten and the
//! accepted socket's local address is the original destination; conntrack answers with the same
//! address, and when it has no entry at all the local address is used. Under REDIRECT a missing
//! entry is an error: the connection is refused rather than guessed at.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

use crate::cli::CaptureMode;

/// The original destination of an accepted connection.
pub fn original_dst(stream: &TcpStream, capture: CaptureMode) -> io::Result<SocketAddr> {
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
