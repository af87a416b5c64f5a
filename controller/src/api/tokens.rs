//! Verifies a sidecar's projected service-account token (audience `portcullis`): offline
//! against the service-account issuer's JWKS (`--sa-jwks`, `--sa-issuer`; the file is re-read
//! when it changes), or by asking the API server (a TokenReview, with the `kube` source).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use portcullis_jwks::KeySet;

use super::auth::{self, AUDIENCE, Denied, TokenIdentity};

/// How tokens are verified.
pub enum TokenVerifier {
    /// Tokens are not accepted (client certificates only, or a plaintext API).
    Refuse,
    /// Against the issuer's keys.
    Jwks(JwksFile),
    /// By the API server.
    Review(kube::Client),
}

/// The issuer's JWKS file and its last good keys.
#[derive(Debug)]
pub struct JwksFile {
    path: PathBuf,
    issuer: String,
    last: Mutex<(String, Arc<KeySet>)>,
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
        let file = Self {
            path,
            issuer,
            last: Mutex::new((String::new(), Arc::default())),
        };
        file.keys()?;
        Ok(file)
    }

    /// The current keys: re-parsed when the file's content changed; on a read or parse error
    /// the last good keys stay (and the error is logged).
    fn keys(&self) -> Result<Arc<KeySet>, JwksError> {
        let err = |message: String| JwksError {
            path: self.path.display().to_string(),
            message,
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let text = std::fs::read_to_string(&self.path).map_err(|e| err(e.to_string()))?;
        if text != last.0 {
            let keys = KeySet::parse(&text).map_err(|e| err(e.0))?;
            *last = (text, Arc::new(keys));
        }
        Ok(last.1.clone())
    }

    fn verify(&self, token: &str) -> Result<TokenIdentity, Denied> {
        let keys = self.keys().unwrap_or_else(|e| {
            tracing::warn!("{e}; keeping the last good keys");
            self.last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone()
        });
        let claims = keys
            .verify(token)
            .map_err(|e| Denied::Token(e.to_string()))?;
        auth::token_identity(&claims, &self.issuer)
    }
}

/// The `exp` of a token the API server already verified.
fn unverified_expiry(token: &str) -> Option<std::time::SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

async fn review(client: &kube::Client, token: &str) -> Result<TokenIdentity, Denied> {
    let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
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
        .map_err(|e| Denied::Token(format!("TokenReview failed: {e}")))?;
    let status = serde_json::to_value(reviewed.status.unwrap_or_default())
        .map_err(|e| Denied::Token(e.to_string()))?;
    let mut identity = auth::review_identity(&status)?;
    identity.expires = unverified_expiry(token);
    Ok(identity)
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
            Self::Review(client) => review(client, token).await,
        }
    }
}
