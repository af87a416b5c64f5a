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
    /// The peer proved an identity other than that of the pod the controller knows at its
    /// address (a borrowed address).
    #[error("mTLS peer is {got}, but the pod at its address is {expected}")]
    WrongPeer {
        /// The identity of the pod at the address.
        expected: String,
        /// The identity proved.
        got: String,
    },
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
        // No session resumption between sidecars: a resumed session skips the certificate, so
        // a peer whose certificate expired (or was rotated out) could go on forever on tickets.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});

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
        client.resumption = rustls::client::Resumption::disabled();

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

/// Checks the workload's own leaf the way a peer will: it chains to `roots` (the pod's own
/// trust bundle) and is valid now. Material that fails is never rotated in.
pub(crate) fn verify_own(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
) -> Result<(), rustls::Error> {
    let provider = provider();
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let leaf = ParsedCertificate::try_from(&chain[0])?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &leaf,
        &store,
        &chain[1..],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::HandshakeKind;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::commands::dev_certs::write_dev_certs;
    use crate::mesh::identity::IdentityMaterial;

    /// Mesh TLS for a server and a client workload under one throwaway CA.
    fn pair(name: &str) -> (MeshTls, MeshTls) {
        let out =
            std::env::temp_dir().join(format!("portcullis-tls-{name}-{}", std::process::id()));
        let dirs = write_dev_certs(
            &out,
            "cluster.local",
            &["shop/server".into(), "a/client".into()],
            Duration::from_secs(3600),
        )
        .expect("certs");
        let server = IdentityMaterial::load(&dirs[0]).expect("server").tls;
        let client = IdentityMaterial::load(&dirs[1]).expect("client").tls;
        let _ = std::fs::remove_dir_all(&out);
        (server, client)
    }

    /// Two handshakes in a row from `client` to `server`; how the second one went.
    async fn second_handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> HandshakeKind {
        let mut kind = None;
        for _ in 0..2 {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let accept = TlsAcceptor::from(server.clone()).accept(a);
            let name = ServerName::try_from("server").expect("name");
            let connect = TlsConnector::from(client.clone()).connect(name, b);
            let (s, c) = tokio::join!(accept, connect);
            let (mut s, mut c) = (s.expect("server side"), c.expect("client side"));
            // Tickets travel after the handshake: let them arrive before the next one.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            c.read_exact(&mut byte).await.expect("read");
            kind = c.get_ref().1.handshake_kind();
        }
        kind.expect("handshake done")
    }

    #[tokio::test]
    async fn sessions_between_sidecars_are_never_resumed() {
        // A resumed session skips the certificate: an expired one would keep working.
        let (server, client) = pair("resume");
        // The proxy's server issues no tickets, even to a client that would resume.
        let mut resuming = (*client.client).clone();
        resuming.resumption = rustls::client::Resumption::default();
        assert_eq!(
            second_handshake(server.server.clone(), Arc::new(resuming)).await,
            HandshakeKind::Full
        );
        // The proxy's client never resumes, even with a server that offers tickets.
        let mut ticketing = (*server.server).clone();
        ticketing.send_tls13_tickets = 2;
        ticketing.session_storage = rustls::server::ServerSessionMemoryCache::new(64);
        assert_eq!(
            second_handshake(Arc::new(ticketing), client.client.clone()).await,
            HandshakeKind::Full
        );
        // A control: both sides willing do resume, so the two checks above can fail.
        let mut resuming = (*client.client).clone();
        resuming.resumption = rustls::client::Resumption::default();
        let mut ticketing = (*server.server).clone();
        ticketing.send_tls13_tickets = 2;
        ticketing.session_storage = rustls::server::ServerSessionMemoryCache::new(64);
        assert_eq!(
            second_handshake(Arc::new(ticketing), Arc::new(resuming)).await,
            HandshakeKind::Resumed
        );
    }
}
