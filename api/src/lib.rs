//! The sidecar API between `portcullis-controller` and each sidecar: the protobuf messages of a
//! workload's view and the gRPC `Sidecar.Watch` stream (client and server), generated from
//! `proto/portcullis/v1/sidecar.proto` at build time. No logic lives here.

#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

/// `portcullis.v1`.
pub mod v1 {
    tonic::include_proto!("portcullis.v1");
}
