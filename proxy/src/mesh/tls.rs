//! Mutual TLS between sidecars: the rustls configurations built from the workload's identity
//! material, and the two handshakes.
//!
//! - Origination (outbound, destination in `--mesh-cidrs`): TLS 1.3 with the workload
//!   certificate and the dedicated ALPN [`MESH_ALPN`]; the server must present a chain to the
//!   trust bundle with a `spiffe://` URI SAN. Server names are not checked — SPIFFE
//!   certificates carry no DNS names and the proxy reaches destinations by IP.
//! - Termination (inbound, ClientHello offering [`MESH_ALPN`]): the client must present a
//!   certificate that chains to the trust bundle; its SPIFFE ID becomes the peer's identity.
//!
//! Both use the ring provider and TLS 1.3 only.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::spiffe::spiffe_id;
use crate::net::prefixed::Prefixed;

/// The ALPN protocol that marks a connection between two Portcullis sidecars.
pub(crate) const MESH_ALPN: &[u8] = b"portcullis-mtls/1";
/// [`MESH_ALPN`] as text (protocol detection reports ALPN as strings).
pub(crate) const MESH_ALPN_STR: &str = "portcullis-mtls/1";
/// How long either handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS stream between sidecars (either side).
pub(crate) type MeshStream = tokio_rustls::TlsStream<Prefixed<TcpStream>>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MtlsError {
    /// The peer did not finish in time.
    #[error("mTLS handshake timed out")]
    Timeout,
    /// TLS refused (bad certificate, wrong ALPN, protocol error) or the connection broke.
    #[error("mTLS handshake failed")]
    Handshake(#[source] io::Error),
    /// The peer's verified certificate carries no SPIFFE ID.
    #[error("mTLS peer certificate has no spiffe:// URI SAN")]
    NoPeerIdentity,
}

/// The client and server configurations for one identity; rebuilt on every rotation.
#[derive(Debug, Clone)]
pub(crate) struct MeshTls {
    /// Origination.
    pub(crate) client: Arc<ClientConfig>,
    /// Termination.
    pub(crate) server: Arc<ServerConfig>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl MeshTls {
    /// Builds both configurations; fails if the key does not match the certificate or the
    /// bundle holds no usable root.
    pub(crate) fn new(
        chain: &[CertificateDer<'static>],
        key: &PrivateKeyDer<'static>,
        roots: &[CertificateDer<'static>],
    ) -> Result<Self, rustls::Error> {
        let provider = provider();
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root.clone())?;
        }
        let store = Arc::new(store);
        let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.to_vec(), key.clone_key())?;
        server.alpn_protocols = vec![MESH_ALPN.to_vec()];

        let server_verifier = Arc::new(MeshServerVerifier {
            roots: store,
            provider: provider.clone(),
        });
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain.to_vec(), key.clone_key())?;
        client.alpn_protocols = vec![MESH_ALPN.to_vec()];

        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// Verifies a peer sidecar's server certificate: chain to the trust bundle and a SPIFFE ID,
/// with no server-name check.
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if spiffe_id(end_entity).is_none() {
            return Err(rustls::Error::General(
                "server certificate has no spiffe:// URI SAN".into(),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Whether a ClientHello's ALPN list marks a connection from another sidecar.
pub(crate) fn is_mesh(alpn: &[String]) -> bool {
    alpn.iter().any(|p| p == MESH_ALPN_STR)
}

/// The SPIFFE ID of the peer's leaf certificate (verified by the handshake).
fn peer_id(certs: Option<&[CertificateDer<'static>]>) -> Result<String, MtlsError> {
    certs
        .and_then(|c| c.first())
        .and_then(spiffe_id)
        .ok_or(MtlsError::NoPeerIdentity)
}

/// Terminates a sidecar's TLS on an accepted connection (whose ClientHello was already read
/// into `io`'s prefix); returns the stream and the peer's SPIFFE ID.
pub(crate) async fn accept(
    tls: &MeshTls,
    io: Prefixed<TcpStream>,
) -> Result<(MeshStream, String), MtlsError> {
    let acceptor = TlsAcceptor::from(tls.server.clone());
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
        .await
        .map_err(|_| MtlsError::Timeout)?
        .map_err(MtlsError::Handshake)?;
    let id = peer_id(stream.get_ref().1.peer_certificates())?;
    Ok((tokio_rustls::TlsStream::Server(stream), id))
}

/// Opens TLS to a peer sidecar on a connected socket; returns the stream and the server's
/// SPIFFE ID.
pub(crate) async fn connect(
    tls: &MeshTls,
    tcp: TcpStream,
    dst: IpAddr,
) -> Result<(MeshStream, String), MtlsError> {
    let connector = TlsConnector::from(tls.client.clone());
    let io = Prefixed::new(bytes::Bytes::new(), tcp);
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        connector.connect(ServerName::IpAddress(dst.into()), io),
    )
    .await
    .map_err(|_| MtlsError::Timeout)?
    .map_err(MtlsError::Handshake)?;
    let id = peer_id(stream.get_ref().1.peer_certificates())?;
    Ok((tokio_rustls::TlsStream::Client(stream), id))
}
