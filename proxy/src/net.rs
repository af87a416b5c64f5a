//! Byte-moving primitives under every stage: one [`stream::Stream`] type (plain or mutual TLS),
//! [`prefixed::Prefixed`] (bytes already read, replayed first), per-thread spare read
//! [`buffers`], and the [`connector`] that opens connections to original destinations.
//! [`H2_PREFACE`] is here because both detection (clients) and the pool (upstreams) read it.

pub(crate) mod buffers;
pub(crate) mod connector;
pub(crate) mod prefixed;
pub(crate) mod stream;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
