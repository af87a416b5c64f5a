//! The webhook's serving certificate: loaded at start (a bad file is an error), then re-read
//! when the files change (cert-manager renewals), keeping the last good pair when a new one
//! does not load. rustls asks [`CertStore`] for the certificate on every handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair does not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not PEM of the expected kind, or the key does not fit the certificate.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads a certificate chain and key into a rustls signing key.
pub fn load(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>), TlsError> {
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no certificate in PEM form".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(key, format!("no private key in PEM form: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, der, &provider)
        .map_err(|e| invalid(key, format!("does not fit the certificate: {e}")))?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((certified, fingerprint))
}

/// The current serving certificate.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl CertStore {
    /// Loads the pair; any problem is an error.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (ck, fp) = load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((Arc::new(ck), fp)),
        })
    }

    /// Re-reads the files; `Ok(true)` if a new pair is now served. A pair that does not load
    /// leaves the current one in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (ck, fp) = load(&self.cert, &self.key)?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.1 == fp {
            return Ok(false);
        }
        *cur = (Arc::new(ck), fp);
        Ok(true)
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// A server configuration answering with `store`'s current certificate (HTTP/2 and 1.1).
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}
