//! Bearer-token validation for `jwt` policy matches.
//!
//! Keys come from a JWKS file (`--jwks`), re-read when its content changes. A token is valid when
//! its `kid` names a key, its algorithm is the one that key is pinned to (the JWK's `alg`, else
//! the only algorithm its type allows), its signature verifies, and `exp` / `nbf` hold within a
//! small leeway. Issuer, audience and claims are then matched by the policy. Tokens are never
//! logged; errors name what failed, not the token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_config::decide::JwtClaims;
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`.
pub(crate) const LEEWAY_SECS: u64 = 30;

/// Why keys could not be loaded or a token is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// The JWKS file.
    #[error("--jwks {path}: {message}")]
    Keys {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The token is not a JWT.
    #[error("malformed token")]
    Malformed,
    /// No key has the token's `kid` (or it has none).
    #[error("unknown key id")]
    UnknownKey,
    /// The token's algorithm is not its key's.
    #[error("algorithm {0:?} is not the key's")]
    Algorithm(Algorithm),
    /// Signature or time checks failed.
    #[error("{0}")]
    Invalid(String),
    /// The token's header lists critical extensions (`crit`), none of which this proxy
    /// understands (RFC 7515 §4.1.11: such a token must be refused).
    #[error("critical header extensions {0:?} are not understood")]
    Critical(Vec<String>),
}

#[derive(Debug)]
struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The pinned algorithm of a JWK.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return Algorithm::try_from(alg).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => Some(Algorithm::HS256),
        _ => None,
    }
}

/// RSA keys shorter than this are refused at load (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

/// The size of an RSA modulus given as base64url (`n`), in bits.
fn modulus_bits(n: &str) -> Option<usize> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

fn parse_keys(path: &Path, text: &str) -> Result<HashMap<String, Key>, JwtError> {
    let err = |message: String| JwtError::Keys {
        path: path.display().to_string(),
        message,
    };
    let set: JwkSet = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| err("every key needs a kid".into()))?;
        let algorithm =
            algorithm(jwk).ok_or_else(|| err(format!("key {kid}: no usable algorithm")))?;
        if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits =
                modulus_bits(&rsa.n).ok_or_else(|| err(format!("key {kid}: bad modulus")))?;
            if bits < MIN_RSA_BITS {
                return Err(err(format!(
                    "key {kid}: a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are needed"
                )));
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("key {kid}: {e}")))?;
        keys.insert(kid, Key { algorithm, key });
    }
    Ok(keys)
}

/// The keys, swapped atomically when the file changes.
#[derive(Debug)]
pub(crate) struct Jwks {
    path: PathBuf,
    keys: ArcSwap<HashMap<String, Key>>,
    seen: Mutex<String>,
}

impl Jwks {
    /// Loads the JWKS file; a missing or invalid file is an error.
    pub(crate) fn load(path: &Path) -> Result<Self, JwtError> {
        let text = std::fs::read_to_string(path).map_err(|e| JwtError::Keys {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let keys = parse_keys(path, &text)?;
        Ok(Self {
            path: path.to_path_buf(),
            keys: ArcSwap::from_pointee(keys),
            seen: Mutex::new(text),
        })
    }

    /// Keys from JWKS text with no file behind them (fuzzing).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn from_text(text: &str) -> Result<Self, JwtError> {
        let path = PathBuf::from("fuzz.jwks");
        Ok(Self {
            keys: ArcSwap::from_pointee(parse_keys(&path, text)?),
            path,
            seen: Mutex::new(text.to_string()),
        })
    }

    /// Re-reads the file; a changed valid file replaces the keys, an invalid one keeps them.
    pub(crate) fn reload(&self) -> Result<bool, JwtError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| JwtError::Keys {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == text {
            return Ok(false);
        }
        let keys = parse_keys(&self.path, &text)?;
        self.keys.store(keys.into());
        *seen = text;
        Ok(true)
    }

    /// Validates a token and returns its claims.
    pub(crate) fn validate(&self, token: &str) -> Result<JwtClaims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if let Some(crit) = header.crit {
            return Err(JwtError::Critical(crit));
        }
        let keys = self.keys.load();
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| keys.get(kid))
            .ok_or(JwtError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(JwtError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false; // audiences are the policy's to match
        let data = jsonwebtoken::decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?;
        Ok(claims(data.claims))
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

fn claims(mut raw: HashMap<String, Value>) -> JwtClaims {
    let take = |raw: &mut HashMap<String, Value>, k: &str| {
        raw.remove(k).and_then(|v| v.as_str().map(String::from))
    };
    JwtClaims {
        issuer: take(&mut raw, "iss"),
        subject: take(&mut raw, "sub"),
        audiences: raw.remove("aud").map(|v| strings(&v)).unwrap_or_default(),
        claims: raw.into_iter().map(|(k, v)| (k, strings(&v))).collect(),
    }
}

/// What a request's `Authorization` headers present, as far as bearer tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No bearer token (no header, or another scheme).
    Nothing,
    /// One header, a bearer token.
    Token(&'a str),
    /// More than one `Authorization` header: which one counts would be a guess (and the
    /// application might read the other).
    Several,
}

impl<'a> Presented<'a> {
    /// From the values of every `Authorization` header, in order.
    pub(crate) fn from_values(mut values: impl Iterator<Item = &'a [u8]>) -> Self {
        let Some(first) = values.next() else {
            return Presented::Nothing;
        };
        if values.next().is_some() {
            return Presented::Several;
        }
        std::str::from_utf8(first)
            .ok()
            .and_then(bearer_token)
            .map_or(Presented::Nothing, Presented::Token)
    }
}

/// What the `Authorization` headers of a request present.
pub(crate) fn presented(headers: &http::HeaderMap) -> Presented<'_> {
    Presented::from_values(
        headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .map(|v| v.as_bytes()),
    )
}

/// The token in an `Authorization` header value, if its scheme is `Bearer` and it has one. The
/// value is trimmed first, as HTTP/1 parsers trim it and HTTP/2 does not: `Bearer ` presents
/// nothing on every protocol.
pub(crate) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests;
