//! Workload identity between sidecars: [`spiffe`] reads SPIFFE IDs from certificates,
//! [`identity`] holds the workload's certificate, key and trust bundle (rotated in place),
//! [`enroll`] gets them from the controller's mesh CA, and [`tls`] builds the mutual TLS
//! configurations and runs both handshakes.

pub mod enroll;
pub(crate) mod identity;
pub(crate) mod spiffe;
pub(crate) mod tls;
