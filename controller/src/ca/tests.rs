//! Requests made as a sidecar makes them (rcgen, its own key), signed or refused.

use rcgen::{CertificateParams, KeyPair, PublicKeyData as _, SanType};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;

fn id(ns: &str, sa: &str) -> WorkloadId {
    WorkloadId {
        namespace: ns.into(),
        service_account: sa.into(),
    }
}

/// A CSR with these URI SANs (and a DNS name when `dns`), signed by `key`.
fn csr(uris: &[&str], dns: bool, ca: bool, key: &KeyPair) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().expect("uri")))
        .collect();
    if dns {
        params
            .subject_alt_names
            .push(SanType::DnsName("evil.example".try_into().expect("dns")));
    }
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    params
        .serialize_request(key)
        .expect("csr")
        .pem()
        .expect("pem")
}

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

#[test]
fn a_request_for_the_callers_own_identity_gets_a_short_lived_svid_of_its_key() {
    let now = SystemTime::now();
    let ca = Authority::generate("cluster.local", now).expect("root");
    let key = KeyPair::generate().expect("key");
    let svid = ca
        .sign(
            &csr(&[WEB], false, false, &key),
            &id("shop", "web"),
            now,
            DEFAULT_TTL,
        )
        .expect("signed");
    assert_eq!(svid.not_after, now + DEFAULT_TTL);
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(svid.certificate.as_bytes())
        .map(|d: rustls_pki_types::CertificateDer<'_>| d.to_vec())
        .expect("pem");
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .expect("san")
        .expect("present")
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => (*u).to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, [WEB]);
    assert_eq!(
        cert.public_key().raw,
        key.subject_public_key_info(),
        "the sidecar's own key"
    );
    assert!(!cert.is_ca());
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(life, 24 * 3600 + 60, "a day, backdated a minute");
    // Signed by the root, which is the bundle.
    let root = rustls_pki_types::pem::PemObject::from_pem_slice(svid.bundle.as_bytes())
        .map(|d: rustls_pki_types::CertificateDer<'_>| d.to_vec())
        .expect("pem");
    let (_, root) = X509Certificate::from_der(&root).expect("x509");
    assert!(cert.verify_signature(Some(root.public_key())).is_ok());
}

#[test]
fn requests_for_anything_else_are_refused_with_the_reason() {
    let now = SystemTime::now();
    let ca = Authority::generate("cluster.local", now).expect("root");
    let key = KeyPair::generate().expect("key");
    let caller = id("shop", "web");
    let cases = [
        (
            csr(
                &["spiffe://cluster.local/ns/shop/sa/admin"],
                false,
                false,
                &key,
            ),
            "must name exactly",
        ),
        (
            csr(
                &["spiffe://other.domain/ns/shop/sa/web"],
                false,
                false,
                &key,
            ),
            "must name exactly",
        ),
        (
            csr(
                &[WEB, "spiffe://cluster.local/ns/kube-system/sa/admin"],
                false,
                false,
                &key,
            ),
            "must name exactly",
        ),
        (csr(&[WEB], true, false, &key), "must name exactly"),
        (csr(&[], false, false, &key), "must name exactly"),
        (csr(&[WEB], false, true, &key), "CA certificate"),
        (
            "not a csr".to_string(),
            "not a valid certificate signing request",
        ),
    ];
    for (request, why) in cases {
        let err = ca
            .sign(&request, &caller, now, DEFAULT_TTL)
            .expect_err("refused");
        assert!(err.to_string().contains(why), "{err} should say {why}");
    }
    // A request whose signature does not match its key: someone else's public key.
    let good = csr(&[WEB], false, false, &key);
    let pem = pem_body(&good);
    let mut der = base64_decode(&pem);
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64_encode(&der)
    );
    let err = ca
        .sign(&tampered, &caller, now, DEFAULT_TTL)
        .expect_err("refused");
    assert!(matches!(err, Refused::Malformed(_)), "{err}");
}

#[test]
fn a_root_from_pem_signs_what_its_bundle_verifies() {
    let now = SystemTime::now();
    let generated = Authority::generate("cluster.local", now).expect("root");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = params.self_signed(&key).expect("root");
    let bundle = format!("{}{}", root.pem(), generated.bundle());
    let ca = Authority::from_pem("cluster.local", &root.pem(), &key.serialize_pem(), &bundle)
        .expect("from pem");
    assert_eq!(ca.bundle(), bundle, "old and new roots, while rotating");
    let sidecar = KeyPair::generate().expect("key");
    assert!(
        ca.sign(
            &csr(&[WEB], false, false, &sidecar),
            &id("shop", "web"),
            now,
            DEFAULT_TTL
        )
        .is_ok()
    );
    assert!(Authority::from_pem("cluster.local", "junk", &key.serialize_pem(), "").is_err());
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A self-signed CA: (certificate PEM, key PEM).
fn root() -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    (
        params.self_signed(&key).expect("root").pem(),
        key.serialize_pem(),
    )
}

#[test]
fn a_root_whose_key_is_not_its_own_is_refused() {
    let ((cert_a, _), (_, key_b)) = (root(), root());
    let err = Authority::from_pem("cluster.local", &cert_a, &key_b, &cert_a).expect_err("mismatch");
    assert!(
        err.to_string().contains("not the root certificate's"),
        "{err}"
    );
}

#[test]
fn the_live_ca_follows_a_rotation_of_its_files_and_keeps_the_old_root_trusted() {
    use super::live::LiveCa;
    use super::roots::certificates;
    let dir = std::env::temp_dir().join(format!("portcullis-liveca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let write = |(c, k): &(String, String)| {
        std::fs::write(&cert, c).expect("cert");
        std::fs::write(&key, k).expect("key");
    };
    let (a, b) = (root(), root());
    write(&a);
    let ttl = Duration::from_secs(3600);
    let live =
        LiveCa::from_files("cluster.local", ttl, (cert.clone(), key.clone(), None)).expect("loads");
    let t0 = SystemTime::now();
    assert_eq!(live.refresh(t0).expect("same"), None, "nothing changed");
    write(&b);
    let bundle = live.refresh(t0).expect("rotates").expect("a new bundle");
    assert_eq!(
        certificates(&bundle),
        [certificates(&b.0), certificates(&a.0)].concat()
    );
    let sidecar = KeyPair::generate().expect("key");
    let svid = live
        .current()
        .sign(
            &csr(&[WEB], false, false, &sidecar),
            &id("shop", "web"),
            t0,
            ttl,
        )
        .expect("signed");
    let (_, pem) = x509_parser::pem::parse_x509_pem(svid.certificate.as_bytes()).expect("pem");
    let issued = pem.parse_x509().expect("x509");
    let (_, root_b) = x509_parser::pem::parse_x509_pem(b.0.as_bytes()).expect("pem");
    let root_b = root_b.parse_x509().expect("x509");
    assert!(
        issued.verify_signature(Some(root_b.public_key())).is_ok(),
        "signed by the new root"
    );
    // Half a rotation (a's key under b's certificate) keeps b.
    std::fs::write(&key, &a.1).expect("key");
    assert!(live.refresh(t0).is_err());
    assert!(
        live.current()
            .bundle()
            .starts_with(certificates(&b.0)[0].as_str())
    );
    std::fs::write(&key, &b.1).expect("key");
    // After the old root's last certificates expired, it leaves the bundle.
    let later = t0 + ttl + Duration::from_secs(120);
    let bundle = live
        .refresh(later)
        .expect("reads")
        .expect("the old root retires");
    assert_eq!(certificates(&bundle), certificates(&b.0));
    let _ = std::fs::remove_dir_all(&dir);
}
