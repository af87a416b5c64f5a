//! Table tests and properties of protocol detection.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

/// A real ClientHello from rustls with the given SNI and ALPN.
fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

#[test]
fn table() {
    let cases: &[(&[u8], Detected)] = &[
        (b"", Detected::NeedMore),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Detected::Http1),
        (b"POST /x?y=1 HTTP/1.0\r\n", Detected::Http1),
        (b"OPTIONS * HTTP/1.1\r\n", Detected::Http1),
        (b"GET / HTTP/1.1\n", Detected::Http1),
        (b"GET", Detected::NeedMore),
        (b"GET /partial", Detected::NeedMore),
        (b"GET / HTTP/2.0\r\n", Detected::Opaque),
        (b"GET  / HTTP/1.1\r\n", Detected::Opaque),
        // No request target: once a panic (an inverted slice), now simply not HTTP.
        (b"GET HTTP/1.1\r\n", Detected::Opaque),
        (b"GET  HTTP/1.1\r\n", Detected::Opaque),
        (b"G HTTP/1.0\n", Detected::Opaque),
        (b"GET HTTP/1.1", Detected::NeedMore),
        (b"get / HTTP/1.1\r\n", Detected::Http1),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Detected::Opaque),
        (b"\x00\x00\x00\x01", Detected::Opaque),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Detected::Http2),
        (b"PRI * HTTP/2.0\r\n", Detected::NeedMore),
        (b"*1\r\n$4\r\nPING\r\n", Detected::Opaque),
        (b"\x16\x03", Detected::NeedMore),
        (b"\x16\x09\x01\x00\x05", Detected::Opaque),
    ];
    for (input, want) in cases {
        assert_eq!(&detect(input), want, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn tls_client_hello_gives_sni_and_alpn() {
    let hello = client_hello("API.Payments.Example", &["h2", "http/1.1"]);
    assert_eq!(
        detect(&hello),
        Detected::Tls {
            sni: Some("api.payments.example".into()),
            alpn: vec!["h2".into(), "http/1.1".into()],
        }
    );
}

#[test]
fn a_long_request_line_is_http_so_that_it_gets_an_answer() {
    let mut line = b"GET /".to_vec();
    line.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
    assert_eq!(detect(&line), Detected::Http1);
    assert_eq!(detect(&line[..MAX_REQUEST_LINE - 1]), Detected::NeedMore);
    let mut binary = b"GET /".to_vec();
    binary.extend(std::iter::repeat_n(0u8, MAX_REQUEST_LINE));
    assert_eq!(detect(&binary), Detected::Opaque);
}

proptest! {
    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = detect(&bytes);
    }

    /// Request lines of every short shape — empty or odd targets, extra spaces — where random
    /// bytes rarely land.
    #[test]
    fn never_panics_on_request_lines(
        method in "[A-Z]{1,8}",
        gap in " {1,3}",
        target in "[ -~]{0,4}",
        version in prop::sample::select(vec![" HTTP/1.1", " HTTP/1.0", "HTTP/1.1", ""]),
        end in prop::sample::select(vec!["\r\n", "\n", ""]),
    ) {
        let line = format!("{method}{gap}{target}{version}{end}");
        let _ = detect(line.as_bytes());
    }

    #[test]
    fn truncated_client_hello_waits_for_more(cut in 0usize..200) {
        let hello = client_hello("svc.example", &["h2"]);
        let cut = cut.min(hello.len() - 1);
        prop_assert_eq!(detect(&hello[..cut]), Detected::NeedMore);
    }

    #[test]
    fn truncated_request_lines_wait_or_agree(cut in 0usize..40) {
        let full = b"DELETE /api/v1/items/42 HTTP/1.1\r\nHost: x\r\n\r\n";
        let got = detect(&full[..cut.min(full.len())]);
        prop_assert!(got == Detected::NeedMore || got == Detected::Http1, "{:?}", got);
    }
}
