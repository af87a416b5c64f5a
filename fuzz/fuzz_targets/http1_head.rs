//! HTTP/1 request and response head parsing and forwarding in the relay.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis_proxy::fuzzing::heads(data);
});
