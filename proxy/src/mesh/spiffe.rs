//! SPIFFE X.509 identities: reading a certificate's one `spiffe://` URI SAN (an X.509-SVID has
//! exactly one URI SAN) and its expiry. Pure: bytes in, facts out.

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
    /// It has more than one URI SAN (an X.509-SVID has exactly one: which would be the peer?).
    #[error("the certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    SeveralUris(usize),
}

/// A certificate's SPIFFE ID and when it expires.
pub(crate) fn inspect(cert: &CertificateDer<'_>) -> Result<(String, SystemTime), SpiffeError> {
    let bad = |e: &dyn std::fmt::Display| SpiffeError::Certificate(e.to_string());
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| bad(&e))?;
    let not_after =
        UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
    let san = cert.subject_alternative_name().map_err(|e| bad(&e))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let id = match uris.as_slice() {
        [one] if one.starts_with("spiffe://") => one.to_string(),
        [] | [_] => return Err(SpiffeError::NoSpiffeId),
        several => return Err(SpiffeError::SeveralUris(several.len())),
    };
    Ok((id, not_after))
}

/// The `spiffe://` URI SAN of a certificate, if it has one.
pub(crate) fn spiffe_id(cert: &CertificateDer<'_>) -> Option<String> {
    inspect(cert).ok().map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn cert(uris: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().expect("uri")))
            .collect();
        params.self_signed(&key).expect("sign").der().clone()
    }

    #[test]
    fn exactly_one_spiffe_uri() {
        let ok = cert(&["spiffe://td/ns/a/sa/b"]);
        assert_eq!(spiffe_id(&ok).as_deref(), Some("spiffe://td/ns/a/sa/b"));
        for (uris, want) in [
            (&[][..], SpiffeError::NoSpiffeId),
            (&["https://td/x"][..], SpiffeError::NoSpiffeId),
            (
                &["spiffe://td/ns/a/sa/b", "spiffe://td/ns/admin/sa/root"][..],
                SpiffeError::SeveralUris(2),
            ),
            (
                &["https://td/x", "spiffe://td/ns/a/sa/b"][..],
                SpiffeError::SeveralUris(2),
            ),
        ] {
            assert_eq!(
                inspect(&cert(uris)).map(|(id, _)| id),
                Err(want),
                "{uris:?}"
            );
        }
    }
}
