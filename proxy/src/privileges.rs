//! The one privilege the sidecar may need: `CAP_NET_ADMIN` for TPROXY capture (transparent
//! sockets and the TPROXY mark). The proxy runs as UID 1337, so it has the capability only
//! through the image's file capability (`cap_net_admin,cap_net_raw+p`: permitted, not effective,
//! so that the binary still starts where the container drops every capability) and a container
//! that allows it. [`raise_for_tproxy`] makes it effective; it runs before the runtime starts,
//! so every thread inherits it.

use caps::{CapSet, Capability};

/// Why TPROXY capture cannot have the capability it needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "--capture tproxy needs CAP_NET_ADMIN: run the shipped image (its binary carries the file \
     capability) with NET_ADMIN added to the container and privilege escalation allowed \
     (Kubernetes: capabilities.add [NET_ADMIN], allowPrivilegeEscalation: true; the injector \
     sets both), or run as root"
)]
pub struct MissingCapability(#[source] Option<caps::errors::CapsError>);

/// Makes `CAP_NET_ADMIN` (and `CAP_NET_RAW`, when permitted) effective for this thread and the
/// threads it starts later.
pub fn raise_for_tproxy() -> Result<(), MissingCapability> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| MissingCapability(Some(e)))?;
    if !permitted.contains(&Capability::CAP_NET_ADMIN) {
        return Err(MissingCapability(None));
    }
    for cap in [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW] {
        if permitted.contains(&cap) {
            caps::raise(None, CapSet::Effective, cap).map_err(|e| MissingCapability(Some(e)))?;
        }
    }
    Ok(())
}
