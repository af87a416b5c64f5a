//! Developer tooling: a throwaway service-account issuer and projected-style tokens (audience
//! `portcullis`, bound to a pod), as kubelet mounts them, for a controller run with
//! `--sa-jwks` in the testbeds: `out/sa/jwks.json`, `out/sa/issuer.key` (reused when present)
//! and `out/sa/tokens/<ns>/<pod>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::json;

use super::dev_certs::DevCertError;

/// The key id the issuer signs with.
const KID: &str = "portcullis-dev";
/// The audience the controller accepts.
pub const AUDIENCE: &str = "portcullis";

/// Who the tokens are from and for.
#[derive(Debug, Clone, Copy)]
pub struct Issuer<'a> {
    /// `iss`.
    pub iss: &'a str,
    /// `aud`.
    pub aud: &'a str,
}

/// A pod to make a token for: `namespace/pod=serviceaccount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFor {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Service account.
    pub service_account: String,
}

impl std::str::FromStr for TokenFor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected namespace/pod=serviceaccount");
        let (ns, rest) = s.split_once('/').ok_or_else(bad)?;
        let (pod, sa) = rest.split_once('=').ok_or_else(bad)?;
        if [ns, pod, sa]
            .iter()
            .any(|p| p.is_empty() || p.contains(['/', '=', ':']))
        {
            return Err(bad());
        }
        Ok(Self {
            namespace: ns.into(),
            pod: pod.into(),
            service_account: sa.into(),
        })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevCertError + '_ {
    move |source| DevCertError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The issuer key in `dir`, or a new one written there.
fn issuer_key(dir: &Path) -> Result<KeyPair, DevCertError> {
    let path = dir.join("issuer.key");
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return Ok(KeyPair::from_pem(&pem)?);
    }
    let key = KeyPair::generate()?;
    std::fs::write(&path, key.serialize_pem()).map_err(io(&path))?;
    Ok(key)
}

fn jwks(key: &KeyPair) -> serde_json::Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let raw = key.public_key_raw(); // 0x04 ‖ X ‖ Y (P-256)
    json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": KID,
                     "x": b64(&raw[1..33]), "y": b64(&raw[33..])}]})
}

/// One projected-style token for `pod`, valid for `validity`.
pub fn token(key: &KeyPair, issuer: Issuer<'_>, pod: &TokenFor, validity: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({
        "iss": issuer.iss, "aud": [issuer.aud],
        "sub": format!("system:serviceaccount:{}:{}", pod.namespace, pod.service_account),
        "iat": now, "nbf": now, "exp": now + validity.as_secs(),
        "kubernetes.io": {"namespace": pod.namespace,
                          "pod": {"name": pod.pod, "uid": format!("uid-{}", pod.pod)},
                          "serviceaccount": {"name": pod.service_account,
                                             "uid": format!("uid-{}", pod.service_account)}}
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.into());
    let signing = EncodingKey::from_ec_der(&key.serialize_der());
    // Signing with a freshly made P-256 key cannot fail.
    jsonwebtoken::encode(&header, &claims, &signing).unwrap_or_default()
}

/// Writes the issuer's JWKS and a token per pod (audience `portcullis`); returns the token
/// files.
pub fn write_tokens(
    out: &Path,
    issuer: &str,
    pods: &[TokenFor],
    validity: Duration,
) -> Result<Vec<PathBuf>, DevCertError> {
    let issuer = Issuer {
        iss: issuer,
        aud: AUDIENCE,
    };
    write_tokens_of(out, issuer, pods, validity)
}

/// [`write_tokens`] for any issuer and audience.
pub fn write_tokens_of(
    out: &Path,
    issuer: Issuer<'_>,
    pods: &[TokenFor],
    validity: Duration,
) -> Result<Vec<PathBuf>, DevCertError> {
    let dir = out.join("sa");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let key = issuer_key(&dir)?;
    let jwks_path = dir.join("jwks.json");
    std::fs::write(&jwks_path, jwks(&key).to_string()).map_err(io(&jwks_path))?;
    let mut files = Vec::new();
    for pod in pods {
        let ns_dir = dir.join("tokens").join(&pod.namespace);
        std::fs::create_dir_all(&ns_dir).map_err(io(&ns_dir))?;
        let path = ns_dir.join(&pod.pod);
        std::fs::write(&path, token(&key, issuer, pod, validity)).map_err(io(&path))?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_the_written_key_set_with_their_claims() {
        let out = std::env::temp_dir().join(format!("portcullis-devtokens-{}", std::process::id()));
        let pod: TokenFor = "shop/web-1=web".parse().expect("parse");
        let files =
            write_tokens(&out, "https://issuer", &[pod], Duration::from_secs(600)).expect("write");
        let set = portcullis_jwks::KeySet::parse(
            &std::fs::read_to_string(out.join("sa/jwks.json")).expect("jwks"),
        )
        .expect("keys");
        let token = std::fs::read_to_string(&files[0]).expect("token");
        let claims = set.verify(&token).expect("verifies");
        assert_eq!(claims["sub"], "system:serviceaccount:shop:web");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web-1");
        // A second run reuses the issuer: old tokens still verify.
        write_tokens(&out, "https://issuer", &[], Duration::from_secs(600)).expect("again");
        let set = portcullis_jwks::KeySet::parse(
            &std::fs::read_to_string(out.join("sa/jwks.json")).expect("jwks"),
        )
        .expect("keys");
        assert!(set.verify(&token).is_ok());
        for bad in ["shop/web", "shop=web", "/p=s", "a/b=c/d"] {
            assert!(bad.parse::<TokenFor>().is_err(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
