//! Workload identity material from files, as cert-manager's CSI driver, SPIRE helpers and
//! Kubernetes projected pod certificates mount it: `tls.crt` (the chain, leaf first), `tls.key`
//! and `ca.crt` (the trust bundle). The identity is the leaf's `spiffe://` URI SAN.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate chain file.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file.
pub const KEY_FILE: &str = "tls.key";
/// The trust bundle file.
pub const CA_FILE: &str = "ca.crt";

/// Why identity material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: no {what} in PEM form")]
    Pem {
        /// The file.
        path: PathBuf,
        /// Certificate or private key.
        what: &'static str,
    },
    /// The leaf certificate does not parse.
    #[error("{path}: invalid certificate: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The leaf has no `spiffe://` URI SAN.
    #[error("{0}: the certificate has no spiffe:// URI SAN")]
    NoSpiffeId(PathBuf),
    /// The files parse but do not make a TLS identity (key does not match, unusable root).
    #[error("{dir}: not a usable TLS identity: {message}")]
    Tls {
        /// The identity directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// A workload's certificate, key and trust bundle.
#[derive(Debug)]
pub struct IdentityMaterial {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Trusted roots for peers.
    pub roots: Vec<CertificateDer<'static>>,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// When the leaf expires.
    pub not_after: SystemTime,
    /// The mutual TLS configurations made from this material.
    pub tls: crate::mtls::MeshTls,
}

fn read(path: PathBuf) -> Result<(PathBuf, Vec<u8>), IdentityError> {
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(IdentityError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The leaf's SPIFFE ID and expiry.
pub fn inspect(
    path: &Path,
    leaf: &CertificateDer<'_>,
) -> Result<(String, SystemTime), IdentityError> {
    let bad = |message: String| IdentityError::Certificate {
        path: path.to_path_buf(),
        message,
    };
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| bad(e.to_string()))?;
    let not_after =
        UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    let id = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some(uri.to_string())
            }
            _ => None,
        })
        .ok_or_else(|| IdentityError::NoSpiffeId(path.to_path_buf()))?;
    Ok((id, not_after))
}

impl IdentityMaterial {
    /// Reads `tls.crt`, `tls.key` and `ca.crt` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let (cert_path, cert_pem) = read(dir.join(CERT_FILE))?;
        let (key_path, key_pem) = read(dir.join(KEY_FILE))?;
        let (ca_path, ca_pem) = read(dir.join(CA_FILE))?;
        let chain = certs(&cert_path, &cert_pem)?;
        let roots = certs(&ca_path, &ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| IdentityError::Pem {
            path: key_path,
            what: "private key",
        })?;
        let (spiffe_id, not_after) = inspect(&cert_path, &chain[0])?;
        let tls =
            crate::mtls::MeshTls::new(&chain, &key, &roots).map_err(|e| IdentityError::Tls {
                dir: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            chain,
            key,
            roots,
            spiffe_id,
            not_after,
            tls,
        })
    }

    /// Whether the leaf has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// The workload's identity material, swapped atomically when the files change (rotation)
/// without touching open connections.
#[derive(Debug)]
pub struct IdentityStore {
    dir: PathBuf,
    current: arc_swap::ArcSwap<IdentityMaterial>,
    seen: std::sync::Mutex<u64>,
}

fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in [CERT_FILE, KEY_FILE, CA_FILE] {
        std::fs::read(dir.join(f)).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

impl IdentityStore {
    /// Loads the material; any problem is an error (the proxy does not start without it).
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let material = IdentityMaterial::load(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: arc_swap::ArcSwap::from_pointee(material),
            seen: std::sync::Mutex::new(fingerprint(dir)),
        })
    }

    /// The current material.
    pub fn current(&self) -> std::sync::Arc<IdentityMaterial> {
        self.current.load_full()
    }

    /// Re-reads the files if they changed; invalid new files keep the old material.
    pub fn reload(&self) -> Result<bool, IdentityError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = fingerprint(&self.dir);
        if *seen == now {
            return Ok(false);
        }
        let material = IdentityMaterial::load(&self.dir)?;
        self.current.store(material.into());
        *seen = now;
        Ok(true)
    }
}
