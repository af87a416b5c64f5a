//! A JWKS and a bearer token, split at the first NUL byte (no NUL: all of it is the token).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (jwks, token) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let jwks = String::from_utf8_lossy(jwks);
    let token = String::from_utf8_lossy(token);
    portcullis_proxy::fuzzing::jwt(&jwks, &token);
});
