//! JSON Web Key Sets and the signature and time checks of a JWT against them. Shared by the
//! proxy (`jwt` policy rules, `--jwks`) and the controller (projected service-account tokens,
//! `--sa-jwks`).
//!
//! A token verifies when its `kid` names a key, its algorithm is the one that key is pinned to
//! (the JWK's `alg`, else the only algorithm its type allows, so no algorithm confusion), its
//! signature verifies, and `exp` / `nbf` hold within [`LEEWAY_SECS`]. Issuer, audience and
//! claims are the caller's to match. Errors name what failed, never the token.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// RSA keys shorter than this are refused at load (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

/// A key set that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeysError(pub String);

/// Why a token does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
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
    /// The token's header lists critical extensions (`crit`), none of which is understood
    /// (RFC 7515 §4.1.11: such a token must be refused).
    #[error("critical header extensions {0:?} are not understood")]
    Critical(Vec<String>),
}

#[derive(Debug)]
struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Keys by `kid`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
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

/// The size of an RSA modulus given as base64url (`n`), in bits.
fn modulus_bits(n: &str) -> Option<usize> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    Some((bytes.len() - first) * 8 - bytes[first].leading_zeros() as usize)
}

fn key(jwk: &Jwk) -> Result<(String, Key), KeysError> {
    let kid = jwk
        .common
        .key_id
        .clone()
        .ok_or_else(|| KeysError("every key needs a kid".into()))?;
    let err = |m: &str| KeysError(format!("key {kid}: {m}"));
    let algorithm = algorithm(jwk).ok_or_else(|| err("no usable algorithm"))?;
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let bits = modulus_bits(&rsa.n).ok_or_else(|| err("bad modulus"))?;
        if bits < MIN_RSA_BITS {
            return Err(err(&format!(
                "a {bits}-bit RSA key; at least {MIN_RSA_BITS} bits are needed"
            )));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| err(&e.to_string()))?;
    Ok((kid, Key { algorithm, key }))
}

impl KeySet {
    /// Parses a JWKS document; every key must be usable.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| KeysError(e.to_string()))?;
        let keys = set.keys.iter().map(key).collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Parses a JWKS document of public keys only: a symmetric (`oct`) key — which whoever can
    /// read the file could sign with — is an error.
    pub fn parse_public(text: &str) -> Result<Self, KeysError> {
        let set = Self::parse(text)?;
        match set
            .keys
            .iter()
            .find(|(_, k)| k.algorithm.family() == AlgorithmFamily::Hmac)
        {
            Some((kid, _)) => Err(KeysError(format!(
                "key {kid}: a symmetric key; only public keys verify service-account tokens"
            ))),
            None => Ok(set),
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verifies a token's signature and times; returns its claims.
    pub fn verify(&self, token: &str) -> Result<HashMap<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if let Some(crit) = header.crit {
            return Err(TokenError::Critical(crit));
        }
        let key = header
            .kid
            .as_ref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        if header.alg != key.algorithm {
            return Err(TokenError::Algorithm(header.alg));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.validate_aud = false; // audiences are the caller's to match
        jsonwebtoken::decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests;
