//! TLS for the sidecar API. The serving certificate (`--api-tls-cert`, `--api-tls-key`) is
//! re-read when its files change, as a mounted Secret rotates; with `--api-client-ca`, client
//! certificates are verified against that bundle (and optional: a sidecar without one yet
//! presents its service-account token). Each accepted connection carries the workload its
//! verified certificate names.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::auth::{WorkloadId, spiffe_workload};

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most (more wait to be accepted).
const MAX_HANDSHAKES: usize = 256;

/// Open connections at most (one per sidecar; more wait to be accepted).
pub const MAX_CONNECTIONS: usize = 50_000;

/// The certificate files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The serving chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// The bundle client certificates are verified against.
    pub client_ca: Option<PathBuf>,
}

/// Unusable certificate files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file holds no usable PEM.
    #[error("{path}: no {what} in PEM form")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("the API's TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify anything.
    #[error("--api-client-ca")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|_| TlsError::Pem {
        path: files.key.clone(),
        what: "private key",
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots.add(cert)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs(&files.cert)?, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// When each file last changed (a missing file: `None`).
fn stamp(files: &TlsFiles) -> Vec<Option<SystemTime>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .collect()
}

/// The files and the configuration built from them last.
#[derive(Debug)]
pub struct Acceptor {
    files: TlsFiles,
    trust_domain: String,
    last: Mutex<(Vec<Option<SystemTime>>, Arc<ServerConfig>)>,
}

impl Acceptor {
    /// Loads the files (unusable ones are an error at start).
    pub fn new(files: TlsFiles, trust_domain: String) -> Result<Self, TlsError> {
        let config = build(&files)?;
        Ok(Self {
            last: Mutex::new((stamp(&files), config)),
            files,
            trust_domain,
        })
    }

    /// The configuration, rebuilt when a file changed; a rebuild that fails keeps the last good
    /// one (and says why).
    fn config(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.files);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if now != last.0 {
            // The stamp is kept either way: a broken renewal is tried again when the files
            // change again, not on every handshake.
            last.0 = now;
            match build(&self.files) {
                Ok(config) => {
                    tracing::info!("the API's certificate files changed; reloaded");
                    last.1 = config;
                }
                Err(e) => tracing::warn!("keeping the API's last good certificate: {e}"),
            }
        }
        last.1.clone()
    }

    /// The workload a connection's verified client certificate names (its one URI SAN, as an
    /// X.509-SVID has exactly one), and until when.
    fn peer(&self, stream: &TlsStream<TcpStream>) -> Option<(WorkloadId, SystemTime)> {
        let leaf = stream.get_ref().1.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut uris = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
                _ => None,
            });
        let (Some(uri), None) = (uris.next(), uris.next()) else {
            return None;
        };
        let until = std::time::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(cert.validity().not_after.timestamp()).ok()?);
        Some((spiffe_workload(uri, &self.trust_domain)?, until))
    }
}

/// An accepted TLS connection and the workload its client certificate proved, if any.
#[derive(Debug)]
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    peer: PeerCertificate,
    /// Its place among [`MAX_CONNECTIONS`], given back when it closes.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// What a connection's client certificate proved (and until when), as a request extension.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<(WorkloadId, SystemTime)>);

impl Connected for TlsConn {
    type ConnectInfo = PeerCertificate;

    fn connect_info(&self) -> PeerCertificate {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

async fn handshake(
    acceptor: &Acceptor,
    tcp: TcpStream,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> io::Result<TlsConn> {
    // No Nagle: a view is one write, and a delayed ACK would hold each one 40 ms.
    tcp.set_nodelay(true)?;
    let tls = TlsAcceptor::from(acceptor.config());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
    let peer = PeerCertificate(acceptor.peer(&stream));
    Ok(TlsConn {
        stream,
        peer,
        _slot: slot,
    })
}

/// Accepts connections on `listener` and hands on those whose handshake completed (each
/// handshake runs on its own task, so a slow client holds up nobody).
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        while !tx.is_closed() {
            let (Ok(permit), Ok(slot)) = (
                handshakes.clone().acquire_owned().await,
                connections.clone().acquire_owned().await,
            ) else {
                return;
            };
            let (tcp, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting on the API port: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tx, acceptor) = (tx.clone(), acceptor.clone());
            tokio::spawn(async move {
                let done = handshake(&acceptor, tcp, slot).await;
                drop(permit);
                match done {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => tracing::debug!(%from, "API TLS handshake failed: {e}"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
