//! Enrollment: the workload certificate from the controller's mesh CA, with no file prepared
//! by anyone. The sidecar makes a fresh key, asks `Identity.Certify` for the SPIFFE ID its
//! projected token names (`spiffe://<td>/ns/<ns>/sa/<sa>`), and writes certificate, key and
//! bundle into its `--identity-dir` (an in-memory volume of its own: the key never leaves the
//! sidecar), where [`super::identity::IdentityStore`] picks them up as it does any rotation.
//! The first certificate is awaited before the proxy starts; renewal runs at half-life, and
//! when the controller is away the current certificate keeps serving until it expires.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use portcullis_api::v1;
use portcullis_api::v1::identity_client::IdentityClient;

use super::identity::{CA_FILE, CERT_FILE, KEY_FILE};
use crate::drain::Drain;
use crate::policy::controller::{ControllerTarget, backoff, connect, wait_backoff};

/// Why a certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token does not say whose it is.
    #[error("--controller-token: {0}")]
    Token(String),
    /// The controller refused or could not be reached.
    #[error("Identity.Certify: {}", .0.message())]
    Certify(tonic::Status),
    /// The key or request could not be made.
    #[error("making the key and request")]
    Key(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("{path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The SPIFFE ID a projected token names (its `kubernetes.io` claims; the controller checks
/// the token, this only reads which identity to ask for).
pub fn spiffe_id(token: &str, trust_domain: &str) -> Result<String, EnrollError> {
    let bad = |m: &str| EnrollError::Token(m.to_string());
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| bad("not a JWT"))?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad("not a JWT"))?;
    let k8s = &claims["kubernetes.io"];
    let (Some(ns), Some(sa)) = (
        k8s["namespace"].as_str(),
        k8s["serviceaccount"]["name"].as_str(),
    ) else {
        return Err(bad(
            "no kubernetes.io namespace and service account: not a projected token",
        ));
    };
    Ok(format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"))
}

/// Writes `text` to `path` atomically, readable by the owner only.
fn write(path: &Path, text: &str) -> Result<(), EnrollError> {
    super::identity::write_private(path, text).map_err(|source| EnrollError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The sidecar's enrollment with the controller.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The controller (TLS, with the token).
    pub target: ControllerTarget,
    /// Where the certificate, key and bundle go.
    pub dir: PathBuf,
    /// The mesh's trust domain.
    pub trust_domain: String,
}

impl Enrollment {
    /// One request: a new key, a certificate for it, all written. Returns the expiry.
    pub async fn once(&self) -> Result<SystemTime, EnrollError> {
        let token_file = self
            .target
            .tls
            .as_ref()
            .and_then(|t| t.token.clone())
            .ok_or_else(|| EnrollError::Token("needed to enroll".into()))?;
        let token = std::fs::read_to_string(&token_file)
            .map_err(|e| EnrollError::Token(format!("{}: {e}", token_file.display())))?;
        let id = spiffe_id(&token, &self.trust_domain)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![rcgen::SanType::URI(id.clone().try_into()?)];
        let csr = params.serialize_request(&key)?.pem()?;
        let (channel, request) = connect(&self.target, v1::CertifyRequest { csr })
            .await
            .map_err(EnrollError::Certify)?;
        let svid = IdentityClient::new(channel)
            .certify(request)
            .await
            .map_err(EnrollError::Certify)?
            .into_inner();
        std::fs::create_dir_all(&self.dir).map_err(|source| EnrollError::Write {
            path: self.dir.clone(),
            source,
        })?;
        write(&self.dir.join(KEY_FILE), &key.serialize_pem())?;
        write(&self.dir.join(CERT_FILE), &svid.certificate)?;
        write(&self.dir.join(CA_FILE), &svid.bundle)?;
        tracing::info!(spiffe_id = %id, not_after = svid.not_after, "workload certificate from the controller");
        Ok(UNIX_EPOCH + Duration::from_secs(svid.not_after))
    }

    /// Until a first certificate is had (retrying with backoff): before the proxy starts.
    pub async fn first(&self) -> SystemTime {
        let mut wait = Duration::ZERO;
        loop {
            match self.once().await {
                Ok(not_after) => return not_after,
                Err(e) => tracing::warn!("no workload certificate yet, retrying: {e}"),
            }
            wait = backoff(wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// Renews at half the remaining life until the drain starts; a failed renewal is retried
    /// with backoff while the current certificate keeps serving.
    pub async fn renew(self, mut not_after: SystemTime, drain: Drain) {
        loop {
            let left = not_after
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                () = drain.started() => return,
                () = tokio::time::sleep(left / 2) => {}
            }
            let mut wait = Duration::ZERO;
            not_after = loop {
                match self.once().await {
                    Ok(next) => break next,
                    Err(e) => {
                        let expired = SystemTime::now() >= not_after;
                        tracing::warn!(expired, "workload certificate not renewed, retrying: {e}");
                    }
                }
                if !wait_backoff(&mut wait, &drain).await {
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_asked_for_is_the_one_the_projected_token_names() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let claims = serde_json::json!({"kubernetes.io": {"namespace": "shop",
            "serviceaccount": {"name": "web"}, "pod": {"name": "web-1"}}});
        let token = format!("h.{}.s", b64(claims.to_string().as_bytes()));
        assert_eq!(
            spiffe_id(&token, "cluster.local").expect("id"),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        let plain = format!("h.{}.s", b64(b"{\"sub\":\"x\"}"));
        for bad in ["junk", plain.as_str()] {
            assert!(spiffe_id(bad, "cluster.local").is_err(), "{bad}");
        }
    }
}
