//! Protocol detection on the first bytes of a connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis_proxy::fuzzing::detection(data);
});
