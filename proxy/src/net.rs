//! Byte-moving primitives under every stage: one [`stream::Stream`] type (plain or mutual TLS),
//! [`prefixed::Prefixed`] (bytes already read, replayed first), per-thread spare read
//! [`buffers`], and the [`connector`] that opens connections to original destinations.

pub(crate) mod buffers;
pub(crate) mod connector;
pub(crate) mod prefixed;
pub(crate) mod stream;
