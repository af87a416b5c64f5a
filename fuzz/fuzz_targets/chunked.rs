//! The chunked-body scanner: the first two bytes (big-endian) are where the rest is split.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (split, body) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
        _ => return,
    };
    portcullis_proxy::fuzzing::chunks(body, split);
});
