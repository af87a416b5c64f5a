//! Admission as a table: one policy, every way a connection can go, in both modes.

use std::net::SocketAddr;

use portcullis_config::matchers::PortSet;
use portcullis_config::{CompiledPolicy, Verdict as PolicyVerdict};

use super::*;
use crate::vocab::Verdict;

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: p}
spec:
  inbound:
    default: deny
    rules:
      - {name: ssh-from-admin, action: allow, from: [{cidr: 10.9.0.0/16}], ports: [22]}
      - {name: no-telnet, action: deny, ports: [23]}
      - name: api
        action: allow
        ports: [8080, 5432]
        http:
          - {methods: [GET], paths: ["/api/*"]}
  outbound:
    default: deny
    rules:
      - name: tls-by-name
        action: allow
        ports: [443]
        to: [{host: "*.shop.example"}]
"#;

fn policy() -> CompiledPolicy {
    let docs = portcullis_config::parse_str("p.yaml", POLICY).expect("parse");
    portcullis_config::compile::compile(&docs, &Default::default())
        .expect("compile")
        .0
}

fn conn(src: &str, port: u16) -> Conn<'static> {
    Conn {
        direction: Direction::Inbound,
        src: src.parse().expect("src"),
        dst: SocketAddr::from(([10, 0, 0, 5], port)),
        identity: None,
        trust_domain: None,
    }
}

fn egress(port: u16) -> Conn<'static> {
    Conn {
        direction: Direction::Outbound,
        src: SocketAddr::from(([10, 0, 0, 5], 40000)),
        dst: SocketAddr::from(([10, 7, 0, 1], port)),
        identity: None,
        trust_domain: None,
    }
}

fn tls(sni: Option<&str>, alpn: &[&str]) -> Detected {
    Detected::Tls {
        sni: sni.map(str::to_string),
        alpn: alpn.iter().map(|a| a.to_string()).collect(),
    }
}

/// What a row expects, in short.
#[derive(Debug, PartialEq)]
enum Want {
    Close(&'static str),
    Opaque(Verdict, &'static str),
    Http(bool),
    Detect,
    MeshUnconfigured,
}

fn short(a: &Admission) -> Want {
    let rule = |d: &portcullis_config::Decision| -> &'static str { d.rule.to_string().leak() };
    match a {
        Admission::Close(Refusal::Denied(d)) => Want::Close(rule(d)),
        Admission::Close(Refusal::MeshUnconfigured) => Want::MeshUnconfigured,
        Admission::Opaque(r) => Want::Opaque(r.verdict, rule(&r.decision)),
        Admission::Http { http2 } => Want::Http(*http2),
    }
}

/// Admission as the connection stage asks: at open, then with the bytes when it must.
fn admit(view: View<'_>, c: Conn<'_>, sniffed: Option<&Detected>) -> Want {
    match (at_open(view, c), sniffed) {
        (Some(a), _) => short(&a),
        (None, None) => Want::Detect,
        (None, Some(d)) => short(&with_bytes(view, c, d)),
    }
}

#[test]
fn admission_table() {
    let p = policy();
    let opaque_ports = PortSet::new(vec![(5432, 5432)]);
    let mesh = tls(None, &["portcullis-mtls/1"]);
    let cases: Vec<(&str, bool, Conn<'_>, Option<Detected>, Want)> = vec![
        (
            "peer and port allow: opaque at once",
            false,
            conn("10.9.1.1:4000", 22),
            None,
            Want::Opaque(Verdict::Allow, "ssh-from-admin"),
        ),
        (
            "connection deny closes",
            false,
            conn("10.9.1.1:4000", 23),
            None,
            Want::Close("no-telnet"),
        ),
        (
            "connection deny in audit passes as audit_deny",
            true,
            conn("10.9.1.1:4000", 23),
            None,
            Want::Opaque(Verdict::AuditDeny, "no-telnet"),
        ),
        (
            "default deny closes",
            false,
            conn("10.1.1.1:4000", 22),
            None,
            Want::Close("default"),
        ),
        (
            "HTTP rules: read the bytes first",
            false,
            conn("10.1.1.1:4000", 8080),
            None,
            Want::Detect,
        ),
        (
            "HTTP/1 bytes: served as HTTP",
            false,
            conn("10.1.1.1:4000", 8080),
            Some(Detected::Http1),
            Want::Http(false),
        ),
        (
            "h2 preface: served as HTTP/2",
            false,
            conn("10.1.1.1:4000", 8080),
            Some(Detected::Http2),
            Want::Http(true),
        ),
        (
            "not HTTP where only HTTP allows: fails closed",
            false,
            conn("10.1.1.1:4000", 8080),
            Some(Detected::Opaque),
            Want::Close("default"),
        ),
        (
            "not HTTP, audit: passes as audit_deny",
            true,
            conn("10.1.1.1:4000", 8080),
            Some(Detected::Opaque),
            Want::Opaque(Verdict::AuditDeny, "default"),
        ),
        (
            "opaque port: never read, judged as non-HTTP",
            false,
            conn("10.1.1.1:4000", 5432),
            None,
            Want::Close("default"),
        ),
        (
            "opaque port in audit",
            true,
            conn("10.1.1.1:4000", 5432),
            None,
            Want::Opaque(Verdict::AuditDeny, "default"),
        ),
        (
            "already-sniffed bytes do not skip the open decision",
            false,
            conn("10.9.1.1:4000", 23),
            Some(Detected::Http1),
            Want::Close("no-telnet"),
        ),
        (
            "TLS: judged again by SNI, allowed",
            false,
            egress(443),
            Some(tls(Some("eu.shop.example"), &["h2"])),
            Want::Opaque(Verdict::Allow, "tls-by-name"),
        ),
        (
            "TLS with another SNI: denied",
            false,
            egress(443),
            Some(tls(Some("evil.example"), &[])),
            Want::Close("default"),
        ),
        (
            "TLS without SNI: denied",
            false,
            egress(443),
            Some(tls(None, &[])),
            Want::Close("default"),
        ),
        (
            "mesh TLS to a proxy without identity: refused",
            false,
            conn("10.1.1.1:4000", 8080),
            Some(mesh.clone()),
            Want::MeshUnconfigured,
        ),
        (
            "mesh ALPN outbound is only TLS: judged by SNI",
            false,
            egress(443),
            Some(tls(Some("a.shop.example"), &["portcullis-mtls/1"])),
            Want::Opaque(Verdict::Allow, "tls-by-name"),
        ),
        (
            "mesh TLS is refused even in audit mode",
            true,
            conn("10.1.1.1:4000", 8080),
            Some(mesh),
            Want::MeshUnconfigured,
        ),
    ];
    for (name, audit, c, sniffed, want) in cases {
        let view = View {
            policy: &p,
            audit,
            opaque_ports: &opaque_ports,
        };
        assert_eq!(admit(view, c, sniffed.as_ref()), want, "{name}");
        if let Some(d) = &sniffed {
            assert_eq!(
                short(&with_bytes(view, c, d)),
                want,
                "{name} (bytes in hand)"
            );
        }
    }
}

#[test]
fn outbound_judges_the_destination_as_the_peer() {
    let p = portcullis_config::parse_str(
        "p.yaml",
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: o}\nspec:\n  outbound:\n    default: deny\n    rules:\n      - {name: db, action: allow, to: [{cidr: 10.2.0.0/16}], ports: [5432]}\n",
    )
    .map(|docs| portcullis_config::compile::compile(&docs, &Default::default()).expect("compile").0)
    .expect("parse");
    let ports = PortSet::default();
    let view = View {
        policy: &p,
        audit: false,
        opaque_ports: &ports,
    };
    let out = |dst: [u8; 4]| Conn {
        direction: Direction::Outbound,
        src: SocketAddr::from(([10, 0, 0, 5], 40000)),
        dst: SocketAddr::from((dst, 5432)),
        identity: None,
        trust_domain: None,
    };
    assert!(
        matches!(at_open(view, out([10, 2, 3, 4])), Some(Admission::Opaque(r)) if r.decision.verdict == PolicyVerdict::Allow)
    );
    assert!(matches!(
        at_open(view, out([10, 3, 3, 4])),
        Some(Admission::Close(Refusal::Denied(_)))
    ));
}
