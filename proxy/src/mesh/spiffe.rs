//! SPIFFE X.509 identities: reading a certificate's `spiffe://` URI SAN and its expiry. Pure:
//! bytes in, facts out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// Why a certificate carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// The certificate does not parse.
    #[error("invalid certificate: {0}")]
    Certificate(String),
    /// It has no `spiffe://` URI SAN.
    #[error("the certificate has no spiffe:// URI SAN")]
    NoSpiffeId,
}

/// A certificate's SPIFFE ID and when it expires.
pub(crate) fn inspect(cert: &CertificateDer<'_>) -> Result<(String, SystemTime), SpiffeError> {
    let bad = |e: &dyn std::fmt::Display| SpiffeError::Certificate(e.to_string());
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| bad(&e))?;
    let not_after =
        UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    let san = cert.subject_alternative_name().map_err(|e| bad(&e))?;
    let id = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(uri.to_string()),
            _ => None,
        })
        .ok_or(SpiffeError::NoSpiffeId)?;
    Ok((id, not_after))
}

/// The `spiffe://` URI SAN of a certificate, if it has one.
pub(crate) fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    inspect(cert).ok().map(|(id, _)| id)
}
