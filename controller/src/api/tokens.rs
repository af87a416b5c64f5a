//! Verifies a sidecar's projected service-account token (audience `portcullis`): offline
//! against the service-account issuer's JWKS (`--sa-jwks`, `--sa-issuer`; public keys only,
//! the file re-read when it changes), or by asking the API server (a TokenReview, with the
//! `kube` source). Reviews are spared the API server where they can be: a token that is no
//! JWT for `portcullis`, or expired, is refused locally; at most [`MAX_REVIEWS`] run at once;
//! a reviewed token is remembered (by its hash) until it expires. Callers are told why in
//! general terms; the details are logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use portcullis_jwks::KeySet;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use super::auth::{self, AUDIENCE, Denied, TokenIdentity};

/// TokenReviews in flight at most.
pub const MAX_REVIEWS: usize = 16;

/// Reviewed tokens remembered at most (expired ones go first, then all).
const MAX_REMEMBERED: usize = 10_000;

/// How tokens are verified.
pub enum TokenVerifier {
    /// Tokens are not accepted (client certificates only, or a plaintext API).
    Refuse,
    /// Against the issuer's keys.
    Jwks(JwksFile),
    /// By the API server.
    Review(Reviewer),
}

/// The issuer's JWKS file and its last good keys (with the file's modification time).
#[derive(Debug)]
pub struct JwksFile {
    path: PathBuf,
    issuer: String,
    last: Mutex<(Option<SystemTime>, Arc<KeySet>)>,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--sa-jwks {path}: {message}")]
pub struct JwksError {
    path: String,
    message: String,
}

impl JwksFile {
    /// Loads the file (an unusable one is an error at start).
    pub fn load(path: PathBuf, issuer: String) -> Result<Self, JwksError> {
        let keys = Self::read(&path)?;
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Self {
            path,
            issuer,
            last: Mutex::new((stamp, Arc::new(keys))),
        })
    }

    fn read(path: &std::path::Path) -> Result<KeySet, JwksError> {
        let err = |message: String| JwksError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        KeySet::parse_public(&text).map_err(|e| err(e.0))
    }

    /// The current keys: re-read when the file's modification time changed; a file that does
    /// not load keeps the last good keys (and says why).
    fn keys(&self) -> Arc<KeySet> {
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if stamp != last.0 {
            last.0 = stamp;
            match Self::read(&self.path) {
                Ok(keys) => last.1 = Arc::new(keys),
                Err(e) => tracing::warn!("{e}; keeping the last good keys"),
            }
        }
        last.1.clone()
    }

    fn verify(&self, token: &str) -> Result<TokenIdentity, Denied> {
        let claims = self.keys().verify(token).map_err(|e| {
            tracing::debug!("token refused: {e}");
            Denied::Token(e.to_string())
        })?;
        auth::token_identity(&claims, &self.issuer)
    }
}

/// The claims of a token whose signature is not (yet) checked.
fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What can be refused before asking the API server: no JWT, not for `portcullis`, no expiry
/// or past it. Returns the expiry.
fn precheck(token: &str, now: SystemTime) -> Result<SystemTime, Denied> {
    let refuse = |m: &str| Denied::Token(m.to_string());
    let claims = unverified_claims(token).ok_or_else(|| refuse("malformed token"))?;
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.as_str()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&AUDIENCE) {
        return Err(refuse("not for audience portcullis"));
    }
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .ok_or_else(|| refuse("a token without an expiry"))?;
    if exp <= now {
        return Err(refuse("expired"));
    }
    Ok(exp)
}

/// TokenReviews, bounded and remembered.
pub struct Reviewer {
    client: kube::Client,
    in_flight: Semaphore,
    remembered: Mutex<HashMap<[u8; 32], TokenIdentity>>,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reviewer")
    }
}

impl Reviewer {
    /// Reviews with `client`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            in_flight: Semaphore::new(MAX_REVIEWS),
            remembered: Mutex::default(),
        }
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], TokenIdentity>> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn verify(&self, token: &str) -> Result<TokenIdentity, Denied> {
        let now = SystemTime::now();
        let expires = precheck(token, now)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(known) = self.remembered().get(&key) {
            return Ok(known.clone());
        }
        let _turn = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Denied::Token("shutting down".into()))?;
        let mut identity = self.review(token).await?;
        identity.expires = Some(expires);
        let mut remembered = self.remembered();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.retain(|_, id| id.expires.is_some_and(|e| e > now));
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
        }
        remembered.insert(key, identity.clone());
        Ok(identity)
    }

    async fn review(&self, token: &str) -> Result<TokenIdentity, Denied> {
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..TokenReview::default()
        };
        let reviewed = api
            .create(&kube::api::PostParams::default(), &request)
            .await
            .map_err(|e| {
                tracing::error!("TokenReview failed: {e}");
                Denied::Token("the token could not be reviewed".into())
            })?;
        let status = serde_json::to_value(reviewed.status.unwrap_or_default())
            .map_err(|e| Denied::Token(e.to_string()))?;
        auth::review_identity(&status)
    }
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refuse => f.write_str("Refuse"),
            Self::Jwks(file) => f.debug_tuple("Jwks").field(file).finish(),
            Self::Review(_) => f.write_str("Review"),
        }
    }
}

impl TokenVerifier {
    /// The identity a bearer token proves.
    pub async fn verify(&self, token: &str) -> Result<TokenIdentity, Denied> {
        match self {
            Self::Refuse => Err(Denied::Token(
                "this controller takes client certificates, not tokens".into(),
            )),
            Self::Jwks(file) => file.verify(token),
            Self::Review(reviewer) => reviewer.verify(token).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.sig",
            b64(b"{\"alg\":\"RS256\"}"),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn tokens_that_cannot_pass_are_refused_before_any_review() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let live = 1_000_600u64;
        let ok = precheck(
            &token(serde_json::json!({"aud": ["portcullis"], "exp": live})),
            now,
        );
        assert_eq!(ok, Ok(UNIX_EPOCH + Duration::from_secs(live)));
        let cases = [
            ("garbage".to_string(), "malformed"),
            (
                token(serde_json::json!({"aud": ["api"], "exp": live})),
                "audience",
            ),
            (
                token(serde_json::json!({"aud": "portcullis"})),
                "without an expiry",
            ),
            (
                token(serde_json::json!({"aud": "portcullis", "exp": 999_999})),
                "expired",
            ),
        ];
        for (t, why) in cases {
            let err = precheck(&t, now).expect_err("refused");
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
    }
}
