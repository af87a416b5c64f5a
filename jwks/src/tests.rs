//! Tokens signed with jsonwebtoken (HMAC and ECDSA keys from rcgen) against parsed key sets.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs_token(kid: &str, alg: Algorithm, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("sign")
}

fn hs_set() -> KeySet {
    KeySet::parse(&json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(SECRET)}]}).to_string())
        .expect("keys")
}

#[test]
fn an_ecdsa_key_verifies_its_tokens_and_nothing_else() {
    let pair = rcgen::KeyPair::generate().expect("key");
    let raw = pair.public_key_raw(); // 0x04 ‖ X ‖ Y
    let set = KeySet::parse(
        &json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "e",
                           "x": b64(&raw[1..33]), "y": b64(&raw[33..])}]})
        .to_string(),
    )
    .expect("keys");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("e".into());
    let signing = EncodingKey::from_ec_der(&pair.serialize_der());
    let token = encode(&header, &json!({"sub": "s", "exp": now() + 60}), &signing).expect("sign");
    assert_eq!(set.verify(&token).expect("valid")["sub"], "s");
    let other = rcgen::KeyPair::generate().expect("key");
    let forged = encode(
        &header,
        &json!({"sub": "s", "exp": now() + 60}),
        &EncodingKey::from_ec_der(&other.serialize_der()),
    )
    .expect("sign");
    assert!(matches!(set.verify(&forged), Err(TokenError::Invalid(_))));
}

#[test]
fn bad_tokens_fail_with_their_reason() {
    let set = hs_set();
    let live = json!({"exp": now() + 60});
    let expired = json!({"exp": now() - LEEWAY_SECS - 60});
    let early = json!({"exp": now() + 600, "nbf": now() + LEEWAY_SECS + 300});
    assert_eq!(set.verify("not.a.jwt"), Err(TokenError::Malformed));
    assert_eq!(
        set.verify(&hs_token("other", Algorithm::HS256, live.clone())),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        set.verify(&hs_token("h", Algorithm::HS384, live.clone())),
        Err(TokenError::Algorithm(Algorithm::HS384))
    );
    for claims in [expired, early] {
        let t = hs_token("h", Algorithm::HS256, claims.clone());
        assert!(
            matches!(set.verify(&t), Err(TokenError::Invalid(_))),
            "{claims}"
        );
    }
    assert!(set.verify(&hs_token("h", Algorithm::HS256, live)).is_ok());
}

#[test]
fn unusable_key_sets_say_which_key() {
    let short_rsa =
        json!({"keys": [{"kty": "RSA", "kid": "r", "e": "AQAB", "n": b64(&[0xc5; 128])}]});
    let cases = [
        (
            json!({"keys": [{"kty": "oct", "k": b64(SECRET)}]}),
            "every key needs a kid",
        ),
        (short_rsa, "key r: a 1024-bit RSA key"),
        (json!({"keys": "none"}), "invalid type"),
    ];
    for (text, want) in cases {
        let err = KeySet::parse(&text.to_string()).expect_err("refused");
        assert!(err.0.contains(want), "{err} should say {want}");
    }
}

#[test]
fn public_key_sets_refuse_symmetric_keys() {
    let text = json!({"keys": [{"kty": "oct", "kid": "h", "k": b64(SECRET)}]}).to_string();
    let err = KeySet::parse_public(&text).expect_err("refused");
    assert!(err.0.contains("key h: a symmetric key"), "{err}");
    let pair = rcgen::KeyPair::generate().expect("key");
    let raw = pair.public_key_raw();
    let ec = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "e",
                              "x": b64(&raw[1..33]), "y": b64(&raw[33..])}]});
    assert_eq!(
        KeySet::parse_public(&ec.to_string()).expect("public").len(),
        1
    );
}
