//! The mesh CA, a pure core: a workload's certificate signing request and the identity its
//! token proved in, a short-lived X.509-SVID (or the reason why not) out. The key stays with
//! the sidecar: only its public key is in the request, whose signature proves the sidecar holds
//! it. The certificate is built afresh — exactly one URI SAN, `spiffe://<td>/ns/<ns>/sa/<sa>`
//! of the caller, client and server use, never a CA — from nothing the request asks for but
//! its key; a request that asks for another identity, more names, or a CA is refused.
//!
//! [`roots`] says which roots peers trust while the signing root changes; [`live`] keeps the
//! root's files loaded and re-reads them when they change (a rotation).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::api::auth::WorkloadId;

pub mod live;
pub mod roots;

/// How long an SVID is valid unless said otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Clock skew allowed for at the start of an SVID's validity.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60);

/// Why a request gets no certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a certificate signing request, or its signature does not verify.
    #[error("not a valid certificate signing request: {0}")]
    Malformed(String),
    /// It asks for another identity, or for more than one name.
    #[error("the request must name exactly {expected}, and nothing else; it names {asked:?}")]
    Names {
        /// What the caller may have.
        expected: String,
        /// What the request names.
        asked: Vec<String>,
    },
    /// It asks to be a CA.
    #[error("the request asks for a CA certificate")]
    Ca,
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(String),
}

/// An issued SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svid {
    /// The certificate (PEM).
    pub certificate: String,
    /// The trust bundle to verify peers with (PEM).
    pub bundle: String,
    /// When it expires.
    pub not_after: SystemTime,
}

/// A signing root.
#[derive(Debug)]
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    bundle: String,
    trust_domain: String,
}

/// A root that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("the mesh CA: {0}")]
pub struct AuthorityError(String);

impl AuthorityError {
    /// An error saying `what`.
    pub fn new(what: String) -> Self {
        Self(what)
    }
}

/// Sets the validity of `params`: from a minute before `from` until `until`.
fn validity(params: &mut CertificateParams, from: SystemTime, until: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since(from - BACKDATE);
    params.not_after = epoch + since(until);
}

impl Authority {
    /// A new self-signed root for `trust_domain`, valid for ten years from `now`.
    pub fn generate(trust_domain: &str, now: SystemTime) -> Result<Self, AuthorityError> {
        let err = |e: rcgen::Error| AuthorityError(e.to_string());
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            format!("portcullis mesh CA ({trust_domain})"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(
            &mut params,
            now,
            now + Duration::from_secs(10 * 365 * 86_400),
        );
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            bundle: cert.pem(),
            issuer: Issuer::new(params, key),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// A root from its certificate and key (PEM, e.g. a Secret cert-manager wrote); `bundle`
    /// is what peers trust (the root, plus the previous one while rotating).
    pub fn from_pem(
        trust_domain: &str,
        certificate: &str,
        key: &str,
        bundle: &str,
    ) -> Result<Self, AuthorityError> {
        let err = |e: rcgen::Error| AuthorityError(e.to_string());
        let key = KeyPair::from_pem(key).map_err(|e| {
            AuthorityError(format!(
                "the root key: {e} (expected PKCS#8 PEM, BEGIN PRIVATE KEY: cert-manager's privateKey.encoding: PKCS8, or `openssl pkcs8 -topk8 -nocrypt` converts)"
            ))
        })?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(certificate.as_bytes())
            .map_err(|e| AuthorityError(format!("the root certificate: {e}")))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| AuthorityError(format!("the root certificate: {e}")))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(AuthorityError(
                "the key is not the root certificate's (half of a rotation?)".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_pem(certificate, key).map_err(err)?;
        Ok(Self {
            issuer,
            bundle: bundle.to_string(),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The trust bundle (PEM).
    pub fn bundle(&self) -> &str {
        &self.bundle
    }

    /// The SPIFFE ID of `id` in this trust domain.
    pub fn spiffe_id(&self, id: &WorkloadId) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, id.namespace, id.service_account
        )
    }

    /// Signs `csr` (PEM) for `caller`, valid from a minute before `now` for `ttl`.
    pub fn sign(
        &self,
        csr: &str,
        caller: &WorkloadId,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<Svid, Refused> {
        let request = CertificateSigningRequestParams::from_pem(csr)
            .map_err(|e| Refused::Malformed(e.to_string()))?;
        let expected = self.spiffe_id(caller);
        let asked: Vec<String> = request
            .params
            .subject_alt_names
            .iter()
            .map(|n| match n {
                SanType::URI(uri) => uri.as_str().to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        if asked != [expected.clone()] {
            return Err(Refused::Names { expected, asked });
        }
        if matches!(request.params.is_ca, IsCa::Ca(_)) {
            return Err(Refused::Ca);
        }
        let signing = |e: rcgen::Error| Refused::Signing(e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(signing)?;
        params.subject_alt_names = vec![SanType::URI(expected.try_into().map_err(signing)?)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, now, now + ttl);
        let issued = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(signing)?;
        Ok(Svid {
            certificate: issued.pem(),
            bundle: self.bundle.clone(),
            not_after: now + ttl,
        })
    }
}

#[cfg(test)]
mod tests;
