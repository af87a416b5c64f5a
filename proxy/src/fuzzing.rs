//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing` only): each runs one of the
//! proxy's parsers on arbitrary bytes and checks the invariants that must hold for any input.
//! Nothing here is part of the proxy's API.

use crate::connection::detect::{Detected, detect};
use crate::http::limits::MAX_HEADERS;
use crate::http::relay::chunked::Scanner;
use crate::http::relay::head::{self, Parse};

/// Protocol detection: never panics, and a verdict reached on a prefix holds for the whole input
/// (more bytes cannot turn HTTP into TLS).
pub fn detection(data: &[u8]) {
    let whole = detect(data);
    for cut in 0..data.len().min(64) {
        match detect(&data[..cut]) {
            Detected::NeedMore => {}
            d => assert_eq!(
                std::mem::discriminant(&d),
                std::mem::discriminant(&whole),
                "prefix {cut} of {data:?}"
            ),
        }
    }
}

/// The relay's request and response head parsers: never panic; a complete request head lies
/// within the input, and the head forwarded from it parses again.
pub fn heads(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    if let Parse::Complete((req, n)) = head::parse_request(data, &mut headers) {
        assert!(req.len <= data.len());
        let mut out = Vec::new();
        head::forward_request(&mut out, &req, &headers[..n], req.target);
        let mut again = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert!(
            matches!(
                head::parse_request(&out, &mut again),
                Parse::Complete(_) | Parse::Handover(_)
            ),
            "forwarded head does not parse: {out:?}"
        );
    }
    for head_request in [false, true] {
        if let Ok(Some(resp)) = head::parse_response(data, head_request) {
            assert!(resp.len <= data.len());
            let mut out = Vec::new();
            head::forward_response(&mut out, &data[..resp.len], true);
        }
    }
}

/// The chunk scanner: whatever the input and however it is split, the scanner reaches the same
/// end at the same byte (or the same error).
pub fn chunks(data: &[u8], split: usize) {
    let mut whole = Scanner::new();
    let one = whole.feed(data);
    let mut parts = Scanner::new();
    let cut = split.min(data.len());
    let two = parts.feed(&data[..cut]).and_then(|a| {
        if parts.is_done() {
            Ok(a)
        } else {
            parts.feed(&data[cut..]).map(|b| a + b)
        }
    });
    assert_eq!(one.is_ok(), two.is_ok(), "{data:?} split at {cut}");
    if let (Ok(a), Ok(b)) = (one, two) {
        assert_eq!(a, b, "{data:?} split at {cut}");
        assert_eq!(whole.is_done(), parts.is_done());
    }
}

/// A JWKS and a bearer token: parsing keys and validating any token never panics, and no token
/// validates against keys it was not signed with (the fuzzer cannot sign).
pub fn jwt(jwks_text: &str, token: &str) {
    let _ = crate::http::jwt::Jwks::from_text(jwks_text);
    let _ = crate::http::jwt::Presented::from_values(std::iter::once(token.as_bytes()));
    let keys = crate::http::jwt::Jwks::from_text(FIXED_JWKS).expect("the fixed JWKS is valid");
    assert!(
        keys.validate(token).is_err(),
        "an unsigned token validated: {token:?}"
    );
}

/// A real RSA public key (the private half was thrown away), so that every algorithm-confusion
/// trick (`none`, HS256 with the public key as secret) must fail.
const FIXED_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw","e":"AQAB"}]}"#;
