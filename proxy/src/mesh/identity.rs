//! Workload identity material from files, as cert-manager's CSI driver, SPIRE helpers and
//! Kubernetes projected pod certificates mount it: `tls.crt` (the chain, leaf first), `tls.key`
//! and `ca.crt` (the trust bundle). The identity is the leaf's `spiffe://` URI SAN.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::spiffe::{self, SpiffeError};
use super::tls::MeshTls;

/// The certificate chain file.
pub(crate) const CERT_FILE: &str = "tls.crt";
/// The private key file.
pub(crate) const KEY_FILE: &str = "tls.key";
/// The trust bundle file.
pub(crate) const CA_FILE: &str = "ca.crt";

/// Writes `text` to `path` atomically (a rename), readable by the owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// Makes `bundle` (PEM) the trust bundle in `dir` unless it is already; true when it wrote.
/// The identity watcher then takes it in, like a renewal.
pub(crate) fn keep_bundle(dir: &Path, bundle: &str) -> std::io::Result<bool> {
    let path = dir.join(CA_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|now| now == bundle) {
        return Ok(false);
    }
    write_private(&path, bundle)?;
    Ok(true)
}

/// Why identity material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file could not be read.
    #[error("{path}")]
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
    /// The leaf certificate does not parse or has no `spiffe://` URI SAN.
    #[error("{path}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: SpiffeError,
    },
    /// The certificate does not chain to the trust bundle beside it, or is not valid now.
    #[error("{}: not trusted by {CA_FILE} or not valid now", .path.display())]
    Untrusted {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// The files parse but do not make a TLS identity (key does not match, unusable root).
    #[error("{dir}: not a usable TLS identity")]
    Tls {
        /// The identity directory.
        dir: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// A workload's identity, made from its certificate, key and trust bundle.
#[derive(Debug)]
pub(crate) struct IdentityMaterial {
    /// The chain as loaded, leaf first (kept for tests; the TLS configurations hold their own).
    #[cfg(test)]
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The trust bundle as loaded (kept for tests).
    #[cfg(test)]
    pub(crate) roots: Vec<CertificateDer<'static>>,
    /// `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub(crate) spiffe_id: String,
    /// The trust domain of [`Self::spiffe_id`].
    pub(crate) trust_domain: String,
    /// When the leaf expires.
    pub(crate) not_after: SystemTime,
    /// The mutual TLS configurations made from this material.
    pub(crate) tls: MeshTls,
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

impl IdentityMaterial {
    /// Reads `tls.crt`, `tls.key` and `ca.crt` from `dir`.
    pub(crate) fn load(dir: &Path) -> Result<Self, IdentityError> {
        let (cert_path, cert_pem) = read(dir.join(CERT_FILE))?;
        let (key_path, key_pem) = read(dir.join(KEY_FILE))?;
        let (ca_path, ca_pem) = read(dir.join(CA_FILE))?;
        let chain = certs(&cert_path, &cert_pem)?;
        let roots = certs(&ca_path, &ca_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| IdentityError::Pem {
            path: key_path,
            what: "private key",
        })?;
        let (spiffe_id, not_after) =
            spiffe::inspect(&chain[0]).map_err(|source| IdentityError::Certificate {
                path: cert_path,
                source,
            })?;
        super::tls::verify_own(&chain, &roots).map_err(|source| IdentityError::Untrusted {
            path: dir.join(CERT_FILE),
            source,
        })?;
        let tls = MeshTls::new(&chain, &key, &roots).map_err(|source| IdentityError::Tls {
            dir: dir.to_path_buf(),
            source,
        })?;
        let trust_domain = portcullis_config::matchers::spiffe_trust_domain(&spiffe_id)
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            #[cfg(test)]
            chain,
            #[cfg(test)]
            roots,
            trust_domain,
            spiffe_id,
            not_after,
            tls,
        })
    }

    /// Whether the leaf has expired at `now`.
    pub(crate) fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// The workload's identity material, swapped atomically when the files change (rotation)
/// without touching open connections.
#[derive(Debug)]
pub(crate) struct IdentityStore {
    dir: PathBuf,
    current: arc_swap::ArcSwap<IdentityMaterial>,
    seen: std::sync::Mutex<u64>,
    /// The fingerprint of files that failed to load, so that they are reported once.
    failed: std::sync::Mutex<Option<u64>>,
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
    pub(crate) fn load(dir: &Path) -> Result<Self, IdentityError> {
        let material = IdentityMaterial::load(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: arc_swap::ArcSwap::from_pointee(material),
            seen: std::sync::Mutex::new(fingerprint(dir)),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// The current material.
    pub(crate) fn current(&self) -> std::sync::Arc<IdentityMaterial> {
        self.current.load_full()
    }

    /// Re-reads the files if they changed; invalid new files keep the old material.
    /// A set of files that fails is reported once (`Err`), then `Ok(false)` until it changes.
    pub(crate) fn reload(&self) -> Result<bool, IdentityError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let now = fingerprint(&self.dir);
        if *seen == now || *failed == Some(now) {
            return Ok(false);
        }
        match IdentityMaterial::load(&self.dir) {
            Ok(material) => {
                self.current.store(material.into());
                *seen = now;
                *failed = None;
                Ok(true)
            }
            Err(e) => {
                *failed = Some(now);
                Err(e)
            }
        }
    }
}
