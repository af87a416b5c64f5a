//! Bearer tokens on the namespace testbed: real RS256 and ES256 keys (made by `openssl`),
//! tokens signed with them, a JWKS file the pod's proxy reads with `--jwks`, and curl as the
//! client. Valid tokens with the right claims pass, the wrong claims or no token get 403, and
//! invalid tokens (expired, not yet valid, forged, unknown key, algorithm swapped) get 401.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis_testbed::testbed::POD_V4;
use portcullis_testbed::{Testbed, TestbedOptions};
use serde_json::json;

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: api}
spec:
  inbound:
    default: deny
    rules:
      - name: admins
        action: allow
        http: [{paths: ["/admin/*"], jwt: {issuer: "https://issuer.example", audiences: [orders], claims: {groups: admins}}}]
"#;

/// A private key in PEM made by openssl (`args` pick the algorithm).
fn openssl_key(dir: &std::path::Path, name: &str, args: &[&str]) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let out = Command::new("openssl")
        .args(["genpkey", "-out"])
        .arg(&path)
        .args(args)
        .output()
        .context("openssl (install it: scripts/install-deps.sh)")?;
    if !out.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(std::fs::read(path)?)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Signer {
    fn sign(&self, claims: &serde_json::Value) -> Result<String> {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.to_string());
        Ok(encode(&h, claims, &self.key)?)
    }
}

fn status(tb: &Testbed, path: &str, token: Option<&str>) -> String {
    let url = format!("http://{POD_V4}:8080{path}");
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    args.push(&url);
    tb.curl_args(&tb.client, &args).body
}

#[test]
fn rs256_and_es256_tokens_allow_deny_and_401() -> Result<()> {
    let mut tb = Testbed::start(TestbedOptions {
        policy: POLICY.to_string(),
        proxy: false,
        ..TestbedOptions::default()
    })?;
    let dir = tb.dir().to_path_buf();
    let rsa = openssl_key(
        &dir,
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    )?;
    let ec = openssl_key(
        &dir,
        "ec.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )?;
    let other = openssl_key(
        &dir,
        "other.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )?;
    let signers = [
        Signer {
            key: EncodingKey::from_rsa_pem(&rsa)?,
            alg: Algorithm::RS256,
            kid: "rsa-1",
        },
        Signer {
            key: EncodingKey::from_ec_pem(&ec)?,
            alg: Algorithm::ES256,
            kid: "ec-1",
        },
    ];
    let mut keys = Vec::new();
    for s in &signers {
        let mut jwk = Jwk::from_encoding_key(&s.key, s.alg)?;
        jwk.common.key_id = Some(s.kid.to_string());
        keys.push(jwk);
    }
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::to_string(&JwkSet { keys })?)?;
    tb.set_proxy_args(&["--jwks", jwks.to_str().context("path")?]);
    tb.start_proxy()?;

    let claims = |groups: &str, aud: &str, exp: u64| {
        json!({"iss": "https://issuer.example", "aud": aud, "groups": [groups], "sub": "alice",
               "exp": exp, "nbf": now() - 10})
    };
    let later = now() + 300;
    for s in &signers {
        let what = format!("{:?}", s.alg);
        let admin = s.sign(&claims("admins", "orders", later))?;
        assert_eq!(status(&tb, "/admin/x", Some(&admin)), "200", "{what} admin");
        let user = s.sign(&claims("users", "orders", later))?;
        assert_eq!(
            status(&tb, "/admin/x", Some(&user)),
            "403",
            "{what} wrong claim"
        );
        let other_aud = s.sign(&claims("admins", "billing", later))?;
        assert_eq!(
            status(&tb, "/admin/x", Some(&other_aud)),
            "403",
            "{what} wrong audience"
        );
        assert_eq!(status(&tb, "/admin/x", None), "403", "{what} no token");
        let expired = s.sign(&claims("admins", "orders", now() - 3600))?;
        assert_eq!(
            status(&tb, "/admin/x", Some(&expired)),
            "401",
            "{what} expired"
        );
        let mut early = claims("admins", "orders", later);
        early["nbf"] = json!(now() + 3600);
        assert_eq!(
            status(&tb, "/admin/x", Some(&s.sign(&early)?)),
            "401",
            "{what} not yet valid"
        );
        // Signed by a key that is not in the JWKS, under this key's kid: forged.
        let forged = Signer {
            key: EncodingKey::from_ec_pem(&other)?,
            alg: Algorithm::ES256,
            kid: s.kid,
        }
        .sign(&claims("admins", "orders", later))?;
        assert_eq!(
            status(&tb, "/admin/x", Some(&forged)),
            "401",
            "{what} forged"
        );
    }
    // A token naming the RSA key but signed as ES256: the algorithm is pinned by the key.
    let swapped = Signer {
        key: EncodingKey::from_ec_pem(&ec)?,
        alg: Algorithm::ES256,
        kid: "rsa-1",
    }
    .sign(&claims("admins", "orders", later))?;
    assert_eq!(
        status(&tb, "/admin/x", Some(&swapped)),
        "401",
        "algorithm swap"
    );
    let unknown = Signer {
        key: EncodingKey::from_ec_pem(&ec)?,
        alg: Algorithm::ES256,
        kid: "nope",
    }
    .sign(&claims("admins", "orders", later))?;
    assert_eq!(
        status(&tb, "/admin/x", Some(&unknown)),
        "401",
        "unknown kid"
    );

    // Tokens never reach the access log.
    // The access log is written in batches: wait for every line, then read the raw text.
    tb.wait_access_log(16)?;
    let log = std::fs::read_to_string(tb.access_log_path())?;
    assert_eq!(log.lines().count(), 16, "{log}");
    assert!(!log.contains("eyJ"), "a token leaked into the log: {log}");
    Ok(())
}
