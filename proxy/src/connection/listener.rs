//! Capture listeners: binding (plain, or IP_TRANSPARENT for TPROXY; IPv6 sockets are v6-only so
//! that each family has its own listener and its own original-destination lookup) and the accept
//! loop, which hands each connection to [`super::serve`] and backs off on errors.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use super::context::Context;
use crate::drain::Drain;
use crate::vocab::Direction;

const BACKLOG: i32 = 1024;
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Binds a listening socket; `transparent` accepts connections for any address (TPROXY).
pub(crate) fn bind(addr: SocketAddr, transparent: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if transparent {
        match addr {
            SocketAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
            SocketAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// One bound capture listener.
#[derive(Debug)]
pub(crate) struct Listener {
    tcp: TcpListener,
    direction: Direction,
}

impl Listener {
    /// Wraps a bound socket.
    pub(crate) fn new(tcp: TcpListener, direction: Direction) -> Self {
        Self { tcp, direction }
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Which side of the workload it serves.
    pub(crate) fn direction(&self) -> Direction {
        self.direction
    }

    /// Accepts until the drain starts, then closes the socket (new connections are refused).
    pub(crate) async fn run(self, ctx: Arc<Context>, drain: Drain) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let accepted = tokio::select! {
                () = drain.started() => return,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, src)) => {
                    backoff = MIN_BACKOFF;
                    drain.spawn(super::serve(
                        ctx.clone(),
                        self.direction,
                        stream,
                        src,
                        drain.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning, then retry.
                    tracing::warn!(direction = self.direction.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
