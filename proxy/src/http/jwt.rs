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
use portcullis_config::decide::JwtClaims;
use portcullis_jwks::KeySet;
pub(crate) use portcullis_jwks::TokenError;
use serde_json::Value;

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
    /// The token does not verify.
    #[error(transparent)]
    Token(#[from] TokenError),
}

fn parse_keys(path: &Path, text: &str) -> Result<KeySet, JwtError> {
    KeySet::parse(text).map_err(|e| JwtError::Keys {
        path: path.display().to_string(),
        message: e.0,
    })
}

/// The keys, swapped atomically when the file changes.
#[derive(Debug)]
pub(crate) struct Jwks {
    path: PathBuf,
    keys: ArcSwap<KeySet>,
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
        Ok(claims(self.keys.load().verify(token)?))
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
