//! Request judging as a table: every kind of answer, in both modes, gRPC or not.

use std::borrow::Cow;
use std::net::SocketAddr;

use portcullis_config::CompiledPolicy;
use portcullis_config::decide::{Headers, JwtClaims};

use super::*;
use crate::http::jwt::TokenError;
use crate::http::respond::Wire;
use crate::vocab::Direction;

const POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: api}
spec:
  inbound:
    default: deny
    rules:
      - name: reads
        action: allow
        http:
          - {methods: [GET], paths: ["/api/*"]}
      - name: admins
        action: allow
        http:
          - paths: ["/admin/*"]
            jwt: {issuer: "https://issuer.example", claims: {groups: admins}}
"#;

const NO_JWT_POLICY: &str = r#"
apiVersion: portcullis.dev/v1alpha1
kind: AccessPolicy
metadata: {name: plain}
spec:
  inbound:
    default: deny
    rules:
      - {name: reads, action: allow, http: [{methods: [GET], paths: ["/api/*"]}]}
"#;

fn compiled(yaml: &str) -> CompiledPolicy {
    let docs = portcullis_config::parse_str("p.yaml", yaml).expect("parse");
    portcullis_config::compile::compile(&docs, &Default::default())
        .expect("compile")
        .0
}

struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
}

fn admin_claims() -> Token {
    Token::Valid(JwtClaims {
        issuer: Some("https://issuer.example".into()),
        claims: vec![("groups".into(), vec!["admins".into()])],
        ..Default::default()
    })
}

/// A row's outcome in short: the verdict, the wire answer (for local answers), the rule.
#[derive(Debug, PartialEq)]
enum Want {
    Reject(Wire),
    Deny(Wire, &'static str),
    Forward(Verdict, &'static str, &'static str),
}

fn wire(status: u16, grpc_status: Option<u8>, challenge: bool) -> Wire {
    Wire {
        status,
        grpc_status,
        challenge,
    }
}

fn short(j: &Judgement, grpc: bool) -> Want {
    let rule = |r: &Ruling| -> &'static str { r.decision.rule.to_string().leak() };
    match j {
        Judgement::Reject { .. } => Want::Reject(Local::BadRequest.wire(grpc)),
        Judgement::Deny { ruling, answer, .. } => Want::Deny(answer.wire(grpc), rule(ruling)),
        Judgement::Forward { ruling, target, .. } => {
            Want::Forward(ruling.verdict, rule(ruling), target.path.clone().leak())
        }
    }
}

/// name, policy, audit, method, target, gRPC, token, expected.
type Row<'a> = (
    &'a str,
    &'a CompiledPolicy,
    bool,
    &'a str,
    &'a str,
    bool,
    Token,
    Want,
);

#[test]
fn judgement_table() {
    let (p, plain) = (compiled(POLICY), compiled(NO_JWT_POLICY));
    let conn = Conn {
        direction: Direction::Inbound,
        src: SocketAddr::from(([10, 1, 1, 1], 4000)),
        dst: SocketAddr::from(([10, 0, 0, 5], 8080)),
        identity: None,
        trust_domain: None,
    };
    let bad = || Token::Invalid(JwtError::Token(TokenError::UnknownKey));
    #[rustfmt::skip]
    let cases: Vec<Row<'_>> = vec![
        ("allowed: forwarded", &p, false, "GET", "/api/x", false, Token::Absent,
            Want::Forward(Verdict::Allow, "reads", "/api/x")),
        ("forwarded under the normalized path", &p, false, "GET", "/api/a/../b", false, Token::Absent,
            Want::Forward(Verdict::Allow, "reads", "/api/b")),
        ("denied: 403", &p, false, "POST", "/api/x", false, Token::Absent,
            Want::Deny(wire(403, None, false), "default")),
        ("denied gRPC: status 7", &p, false, "POST", "/api/x", true, Token::Absent,
            Want::Deny(wire(200, Some(7), false), "default")),
        ("denied in audit: forwarded as audit_deny", &p, true, "POST", "/api/x", false, Token::Absent,
            Want::Forward(Verdict::AuditDeny, "default", "/api/x")),
        ("invalid token where jwt rules apply: 401 + challenge", &p, false, "GET", "/admin/x", false, bad(),
            Want::Deny(wire(401, None, true), "default")),
        ("invalid token, gRPC: status 16", &p, false, "GET", "/admin/x", true, bad(),
            Want::Deny(wire(200, Some(16), false), "default")),
        ("invalid token in audit: forwarded", &p, true, "GET", "/admin/x", false, bad(),
            Want::Forward(Verdict::AuditDeny, "default", "/admin/x")),
        ("no token where jwt rules apply: 403, not 401", &p, false, "GET", "/admin/x", false, Token::Absent,
            Want::Deny(wire(403, None, false), "default")),
        ("valid token: allowed by its claims", &p, false, "GET", "/admin/x", false, admin_claims(),
            Want::Forward(Verdict::Allow, "admins", "/admin/x")),
        ("invalid token on an allowed request: forwarded", &p, false, "GET", "/api/x", false, bad(),
            Want::Forward(Verdict::Allow, "reads", "/api/x")),
        ("invalid token, no jwt rules: plain 403", &plain, false, "POST", "/api/x", false, bad(),
            Want::Deny(wire(403, None, false), "default")),
        ("two Authorization headers where jwt rules apply: 400", &p, false, "GET", "/admin/x", false, Token::Several,
            Want::Reject(wire(400, None, false))),
        ("two Authorization headers without jwt rules: judged as no token", &plain, false, "GET", "/api/x", false, Token::Several,
            Want::Forward(Verdict::Allow, "reads", "/api/x")),
        ("encoded slash: rejected 400", &p, false, "GET", "/api%2Fx", false, Token::Absent,
            Want::Reject(wire(400, None, false))),
        ("rejected in audit mode too", &p, true, "GET", "/api%2Fx", false, Token::Absent,
            Want::Reject(wire(400, None, false))),
    ];
    for (name, policy, audit, method, target, grpc, token, want) in cases {
        let ask = Ask {
            method,
            target,
            host: None,
            headers: &NoHeaders,
        };
        let got = judge(View { policy, audit }, conn, &ask, &token);
        assert_eq!(short(&got, grpc), want, "{name}");
    }
}

#[test]
fn reasons_say_why_and_never_leak_the_token() {
    let p = compiled(POLICY);
    let conn = Conn {
        direction: Direction::Inbound,
        src: SocketAddr::from(([10, 1, 1, 1], 4000)),
        dst: SocketAddr::from(([10, 0, 0, 5], 8080)),
        identity: None,
        trust_domain: None,
    };
    let ask = Ask {
        method: "GET",
        target: "/admin/x",
        host: None,
        headers: &NoHeaders,
    };
    let view = View {
        policy: &p,
        audit: false,
    };
    let Judgement::Deny { reason, .. } = judge(
        view,
        conn,
        &ask,
        &Token::Invalid(JwtError::Token(TokenError::Malformed)),
    ) else {
        panic!("not denied");
    };
    assert!(
        reason.ends_with("; invalid token: malformed token"),
        "{reason}"
    );
    let audit = View {
        audit: true,
        ..view
    };
    let Judgement::Forward { reason, .. } = judge(audit, conn, &ask, &Token::Absent) else {
        panic!("not forwarded");
    };
    assert!(reason.is_some_and(|r| !r.is_empty()));
    let ask = Ask {
        target: "/api/x",
        ..ask
    };
    let Judgement::Forward { reason, .. } = judge(view, conn, &ask, &Token::Absent) else {
        panic!("not forwarded");
    };
    assert_eq!(reason, None);
}
