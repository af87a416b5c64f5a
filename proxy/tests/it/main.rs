//! The proxy's in-process integration tests, in one test binary (each binary links the whole
//! stack): the proxy on `127.0.0.1:0` with an injected original destination, driven by real
//! clients and upstreams over real sockets.

mod cli;
mod controller;
mod http;
mod identity;
mod jwt;
mod l4;
mod mtls;
mod relay;
mod reload;
mod routing;
mod support;
