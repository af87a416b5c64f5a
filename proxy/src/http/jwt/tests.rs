//! Token validation against a real JWKS file and tokens signed with jsonwebtoken.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use portcullis_jwks::LEEWAY_SECS;

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn jwks_file(name: &str, keys: serde_json::Value) -> (PathBuf, Jwks) {
    let path = std::env::temp_dir().join(format!(
        "portcullis-jwks-{name}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, keys.to_string()).expect("write");
    let jwks = Jwks::load(&path).expect("load");
    (path, jwks)
}

fn oct(kid: &str, alg: Option<&str>, secret: &[u8]) -> serde_json::Value {
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let mut key = json!({"kty": "oct", "kid": kid, "k": k});
    if let Some(a) = alg {
        key["alg"] = json!(a);
    }
    key
}

fn token(kid: Option<&str>, alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign")
}

#[test]
fn valid_tokens_yield_their_claims() {
    let (path, jwks) = jwks_file("valid", json!({"keys": [oct("k1", Some("HS256"), SECRET)]}));
    let t = token(
        Some("k1"),
        Algorithm::HS256,
        SECRET,
        json!({"iss": "https://issuer.example", "sub": "u1", "aud": ["orders", "shop"],
               "groups": ["dev", "admins"], "tier": "gold", "exp": now() + 60}),
    );
    let c = jwks.validate(&t).expect("valid");
    assert_eq!(c.issuer.as_deref(), Some("https://issuer.example"));
    assert_eq!(c.subject.as_deref(), Some("u1"));
    assert_eq!(c.audiences, ["orders", "shop"]);
    let groups = c
        .claims
        .iter()
        .find(|(k, _)| k == "groups")
        .map(|(_, v)| v.clone());
    assert_eq!(groups, Some(vec!["dev".to_string(), "admins".to_string()]));
    let _ = std::fs::remove_file(path);
}

#[test]
fn invalid_tokens_are_refused_with_a_reason() {
    let (path, jwks) = jwks_file("invalid", json!({"keys": [oct("k1", None, SECRET)]}));
    let exp = now() + 60;
    let cases: Vec<(String, &str)> = vec![
        (
            token(
                Some("k1"),
                Algorithm::HS256,
                b"another-secret-another-secret!!!",
                json!({"exp": exp}),
            ),
            "InvalidSignature",
        ),
        (
            token(
                Some("k1"),
                Algorithm::HS256,
                SECRET,
                json!({"exp": now() - LEEWAY_SECS - 60}),
            ),
            "ExpiredSignature",
        ),
        (
            token(
                Some("k1"),
                Algorithm::HS256,
                SECRET,
                json!({"exp": exp, "nbf": now() + LEEWAY_SECS + 60}),
            ),
            "ImmatureSignature",
        ),
        (
            token(
                Some("k1"),
                Algorithm::HS256,
                SECRET,
                json!({"sub": "no-exp"}),
            ),
            "exp",
        ),
        (
            token(Some("nope"), Algorithm::HS256, SECRET, json!({"exp": exp})),
            "unknown key id",
        ),
        (
            token(None, Algorithm::HS256, SECRET, json!({"exp": exp})),
            "unknown key id",
        ),
        (
            token(Some("k1"), Algorithm::HS384, SECRET, json!({"exp": exp})),
            "is not the key's",
        ),
        ("not.a.jwt".to_string(), "malformed"),
    ];
    for (t, want) in cases {
        let e = jwks.validate(&t).expect_err(want).to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains(&t), "the token never appears in an error");
    }
    // Within the leeway is still valid.
    let t = token(
        Some("k1"),
        Algorithm::HS256,
        SECRET,
        json!({"exp": now() - 5}),
    );
    assert!(jwks.validate(&t).is_ok());
    let _ = std::fs::remove_file(path);
}

#[test]
fn key_rotation_by_file_and_bad_files_keep_the_old_keys() {
    let (path, jwks) = jwks_file("rotate", json!({"keys": [oct("k1", None, SECRET)]}));
    let t2 = token(
        Some("k2"),
        Algorithm::HS256,
        SECRET,
        json!({"exp": now() + 60}),
    );
    assert_eq!(
        jwks.validate(&t2).err(),
        Some(JwtError::Token(TokenError::UnknownKey))
    );
    std::fs::write(
        &path,
        json!({"keys": [oct("k2", None, SECRET)]}).to_string(),
    )
    .expect("write");
    assert_eq!(jwks.reload(), Ok(true));
    assert!(jwks.validate(&t2).is_ok());
    assert_eq!(jwks.reload(), Ok(false), "unchanged file");
    std::fs::write(&path, "{not json").expect("write");
    assert!(jwks.reload().is_err());
    assert!(jwks.validate(&t2).is_ok(), "the last good keys stay");
    let _ = std::fs::remove_file(path);
}

#[test]
fn bearer_header_parsing() {
    let mut h = http::HeaderMap::new();
    assert_eq!(presented(&h), Presented::Nothing);
    h.insert(
        "authorization",
        http::HeaderValue::from_static("Bearer abc.def.ghi"),
    );
    assert_eq!(presented(&h), Presented::Token("abc.def.ghi"));
    h.insert("authorization", http::HeaderValue::from_static("bearer  x"));
    assert_eq!(presented(&h), Presented::Token("x"));
    h.insert(
        "authorization",
        http::HeaderValue::from_static("Basic dXNlcg=="),
    );
    assert_eq!(presented(&h), Presented::Nothing);
    // Two headers, whatever their schemes: never a guess at which one counts.
    h.append(
        "authorization",
        http::HeaderValue::from_static("Bearer abc.def.ghi"),
    );
    assert_eq!(presented(&h), Presented::Several);
}

#[test]
fn critical_header_extensions_are_refused() {
    let (path, jwks) = jwks_file("crit", json!({"keys": [oct("k1", Some("HS256"), SECRET)]}));
    let claims = json!({"iss": "https://issuer.example", "exp": now() + 60});
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    header.crit = Some(vec!["b64".into()]);
    let signed = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("sign");
    assert_eq!(
        jwks.validate(&signed).map(|_| ()),
        Err(JwtError::Token(TokenError::Critical(vec!["b64".into()])))
    );
    // The same token without `crit` is fine: only the extension is refused.
    header.crit = None;
    let plain = encode(&header, &claims, &EncodingKey::from_secret(SECRET)).expect("sign");
    assert!(jwks.validate(&plain).is_ok());
    let _ = std::fs::remove_file(path);
}

#[test]
fn short_rsa_keys_are_refused_at_load() {
    let modulus = |bits: usize| {
        // A modulus of exactly `bits` bits (top bit set), as base64url.
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0x80 | 0x01;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n)
    };
    let rsa =
        |bits| json!({"kty": "RSA", "kid": "r1", "alg": "RS256", "n": modulus(bits), "e": "AQAB"});
    for (bits, ok) in [(1024, false), (2040, false), (2048, true), (4096, true)] {
        let path = std::env::temp_dir().join(format!(
            "portcullis-jwks-rsa{bits}-{}.json",
            std::process::id()
        ));
        std::fs::write(&path, json!({"keys": [rsa(bits)]}).to_string()).expect("write");
        let loaded = Jwks::load(&path);
        assert_eq!(loaded.is_ok(), ok, "{bits} bits: {loaded:?}");
        if let Err(e) = loaded {
            assert!(
                e.to_string().contains(&format!("a {bits}-bit RSA key")),
                "{e}"
            );
        }
        let _ = std::fs::remove_file(path);
    }
}

#[test]
fn an_empty_bearer_presents_nothing_however_it_is_spaced() {
    for value in ["Bearer ", "Bearer", "bearer  ", " Bearer \t", "Basic abc"] {
        assert_eq!(bearer_token(value), None, "{value:?}");
    }
    assert_eq!(bearer_token("Bearer abc "), Some("abc"));
    assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
}
