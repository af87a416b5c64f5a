//! Developer tooling: a throwaway CA and per-workload SPIFFE certificates for the testbed and
//! the compose demo, written in the layout [`crate::mesh::identity`] reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::mesh::identity::{CA_FILE, CERT_FILE, KEY_FILE};

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// A workload is not `namespace/serviceaccount`.
    #[error("workload {0:?}: expected namespace/serviceaccount")]
    Workload(String),
    /// Certificate generation failed.
    #[error("generating certificates")]
    Generate(#[from] rcgen::Error),
    /// Writing failed.
    #[error("{path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn write(path: PathBuf, text: &str) -> Result<(), DevCertError> {
    std::fs::write(&path, text).map_err(|source| DevCertError::Write { path, source })
}

fn mkdir(p: &Path) -> Result<(), DevCertError> {
    std::fs::create_dir_all(p).map_err(|source| DevCertError::Write {
        path: p.to_path_buf(),
        source,
    })
}

/// The CA in `out`, or a new one written there: its PEM and the issuer to sign with.
fn ca(
    out: &Path,
    trust_domain: &str,
    window: &dyn Fn(&mut CertificateParams),
) -> Result<(String, Issuer<'static, KeyPair>), DevCertError> {
    if let (Ok(ca_pem), Ok(key_pem)) = (
        std::fs::read_to_string(out.join(CA_FILE)),
        std::fs::read_to_string(out.join("ca.key")),
    ) {
        // An existing CA is reused: workloads are added or re-issued (rotated) under the same
        // trust bundle.
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
        return Ok((ca_pem, issuer));
    }
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("portcullis dev CA ({trust_domain})"),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    window(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    write(out.join(CA_FILE), &ca_pem)?;
    write(out.join("ca.key"), &ca_key.serialize_pem())?;
    Ok((ca_pem, Issuer::new(ca_params, ca_key)))
}

/// An X509-SVID for `ns/sa`, usable by either side of mutual TLS: certificate and key.
fn svid(
    workload: &str,
    trust_domain: &str,
    window: &dyn Fn(&mut CertificateParams),
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(String, String, rcgen::Certificate, KeyPair), DevCertError> {
    let (ns, sa) = workload
        .split_once('/')
        .filter(|(n, s)| !n.is_empty() && !s.is_empty() && !s.contains('/'))
        .ok_or_else(|| DevCertError::Workload(workload.to_string()))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{sa}.{ns}"));
    let id = format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}");
    params.subject_alt_names = vec![SanType::URI(id.try_into()?)];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    window(&mut params);
    let cert = params.signed_by(&key, issuer)?;
    Ok((ns.to_string(), sa.to_string(), cert, key))
}

/// Writes `out/ca.crt`, `out/ca.key` and, per workload `ns/sa`, `out/<ns>-<sa>/{tls.crt,
/// tls.key, ca.crt}` with the URI SAN `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`. Returns the
/// workload directories. A CA already in `out` is reused (so running it again re-issues
/// certificates that the existing trust bundle accepts: a rotation).
pub fn write_dev_certs(
    out: &Path,
    trust_domain: &str,
    workloads: &[String],
    validity: Duration,
) -> Result<Vec<PathBuf>, DevCertError> {
    mkdir(out)?;
    let window = window(validity);
    let (ca_pem, issuer) = ca(out, trust_domain, &window)?;
    let mut dirs = Vec::new();
    for w in workloads {
        let (ns, sa, cert, key) = svid(w, trust_domain, &window, &issuer)?;
        let dir = out.join(format!("{ns}-{sa}"));
        mkdir(&dir)?;
        write(dir.join(CERT_FILE), &cert.pem())?;
        write(dir.join(KEY_FILE), &key.serialize_pem())?;
        write(dir.join(CA_FILE), &ca_pem)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Writes `out/server/{tls.crt, tls.key, ca.crt}`: a serving certificate for `names` (DNS names
/// or IP addresses; the controller's API) under the CA in `out` (made if missing).
pub fn write_server_cert(
    out: &Path,
    names: &[String],
    validity: Duration,
) -> Result<PathBuf, DevCertError> {
    mkdir(out)?;
    let window = window(validity);
    let (ca_pem, issuer) = ca(out, "server", &window)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    window(&mut params);
    let cert = params.signed_by(&key, &issuer)?;
    let dir = out.join("server");
    mkdir(&dir)?;
    write(dir.join(CERT_FILE), &cert.pem())?;
    write(dir.join(KEY_FILE), &key.serialize_pem())?;
    write(dir.join(CA_FILE), &ca_pem)?;
    Ok(dir)
}

/// Valid from a minute ago (clock skew) for `validity`.
fn window(validity: Duration) -> impl Fn(&mut CertificateParams) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default());
    move |p: &mut CertificateParams| {
        p.not_before = now - Duration::from_secs(60);
        p.not_after = now + validity;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::mesh::identity::{IdentityError, IdentityMaterial};
    use crate::mesh::spiffe::SpiffeError;

    #[test]
    fn generated_material_loads_with_its_spiffe_id() {
        let out = std::env::temp_dir().join(format!("portcullis-devcerts-{}", std::process::id()));
        let dirs = write_dev_certs(
            &out,
            "cluster.local",
            &["a/client".into(), "b/server".into()],
            Duration::from_secs(3600),
        )
        .expect("generate");
        let client = IdentityMaterial::load(&dirs[0]).expect("load");
        assert_eq!(client.spiffe_id, "spiffe://cluster.local/ns/a/sa/client");
        assert!(!client.expired(SystemTime::now()));
        assert!(client.expired(SystemTime::now() + Duration::from_secs(7200)));
        assert_eq!(client.chain.len(), 1);
        assert_eq!(client.roots.len(), 1);
        assert_eq!(
            IdentityMaterial::load(&dirs[1]).expect("load").spiffe_id,
            "spiffe://cluster.local/ns/b/sa/server"
        );
        // A directory missing a file, or a certificate without a SPIFFE ID, is a clear error.
        std::fs::remove_file(dirs[1].join(KEY_FILE)).expect("rm");
        let e = IdentityMaterial::load(&dirs[1]).expect_err("missing key");
        assert!(
            matches!(e, IdentityError::Read { .. }) && e.to_string().contains("tls.key"),
            "{e}"
        );
        std::fs::copy(out.join(CA_FILE), dirs[0].join(CERT_FILE)).expect("cp");
        let e = IdentityMaterial::load(&dirs[0]).expect_err("no spiffe id");
        assert!(
            matches!(
                e,
                IdentityError::Certificate {
                    source: SpiffeError::NoSpiffeId,
                    ..
                }
            ),
            "{e}"
        );
        assert!(matches!(
            write_dev_certs(&out, "td", &["nope".into()], Duration::from_secs(60)),
            Err(DevCertError::Workload(_))
        ));
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_second_run_reuses_the_ca_and_reissues() {
        let out = std::env::temp_dir().join(format!("portcullis-reissue-{}", std::process::id()));
        let day = Duration::from_secs(86_400);
        let first = write_dev_certs(&out, "td", &["a/x".into()], day).expect("first");
        let ca = std::fs::read(out.join(CA_FILE)).expect("ca");
        let cert = std::fs::read(first[0].join(CERT_FILE)).expect("cert");
        let second = write_dev_certs(&out, "td", &["a/x".into()], day).expect("second");
        assert_eq!(std::fs::read(out.join(CA_FILE)).expect("ca"), ca);
        assert_ne!(
            std::fs::read(second[0].join(CERT_FILE)).expect("cert"),
            cert
        );
        assert!(IdentityMaterial::load(&second[0]).is_ok());
        // A key that does not match the certificate is refused with the directory named.
        std::fs::write(
            second[0].join(KEY_FILE),
            KeyPair::generate().expect("key").serialize_pem(),
        )
        .expect("write");
        let e = IdentityMaterial::load(&second[0]).expect_err("mismatched key");
        assert!(matches!(e, IdentityError::Tls { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
