//! The indexes are an optimization only: for random policies and random traffic, the indexed
//! decision equals the full scan (which `explain` uses).

use portcullis_config::decide::Trace;
use portcullis_config::{
    CompileContext, ConnDecision, Connection, Direction, Request, compile, load,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct RuleSpec {
    deny: bool,
    host: Option<u8>,
    cidr: Option<(u8, u8)>,
    identity_ns: Option<u8>,
    ports: Option<(u16, u16)>,
    path: Option<(u8, u8)>,
    method: Option<bool>,
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        any::<bool>(),
        prop::option::of((0u8..4, prop_oneof![Just(8u8), Just(16), Just(24), Just(32)])),
        prop::option::of(0u8..3),
        prop::option::of((0u16..6, 0u16..3)),
        prop::option::of((0u8..4, 0u8..4)),
        prop::option::of(any::<bool>()),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(deny, cidr, identity_ns, ports, path, method, host)| RuleSpec {
                deny,
                host,
                cidr,
                identity_ns,
                ports,
                path,
                method,
            },
        )
}

fn yaml(rules: &[RuleSpec], default_deny: bool, outbound: bool) -> String {
    let mut s = format!(
        "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p}}\nspec:\n  {}:\n    default: {}\n    rules:{}\n",
        if outbound { "outbound" } else { "inbound" },
        if default_deny { "deny" } else { "allow" },
        if rules.is_empty() { " []" } else { "" }
    );
    for (i, r) in rules.iter().enumerate() {
        s.push_str(&format!(
            "      - name: r{i}\n        action: {}\n",
            if r.deny { "deny" } else { "allow" }
        ));
        let mut peer = Vec::new();
        if let Some((o, len)) = r.cidr {
            let net: ipnet::Ipv4Net = format!("10.{o}.{o}.{o}/{len}")
                .parse::<ipnet::Ipv4Net>()
                .expect("net")
                .trunc();
            peer.push(format!("cidr: {net}"));
        }
        if let Some(ns) = r.identity_ns {
            peer.push(format!("namespace: ns{ns}"));
        }
        if let Some(h) = r.host.filter(|_| outbound) {
            peer.push(format!("host: h{h}.example"));
        }
        if !peer.is_empty() {
            let key = if outbound { "to" } else { "from" };
            s.push_str(&format!("        {key}: [{{{}}}]\n", peer.join(", ")));
        }
        if let Some((p, w)) = r.ports {
            let first = 8000 + p;
            s.push_str(&format!("        ports: [\"{first}-{}\"]\n", first + w));
        }
        if r.path.is_some() || r.method.is_some() {
            let mut h = Vec::new();
            if let Some((kind, seg)) = r.path {
                h.push(match kind {
                    0 => format!("paths: [\"/s{seg}\"]"),
                    1 => format!("paths: [\"/s{seg}/*\"]"),
                    2 => format!("paths: [\"~/s{seg}/[0-9]+\"]"),
                    _ => "paths: [\"*\"]".to_string(),
                });
            }
            if let Some(get) = r.method {
                h.push(format!("methods: [{}]", if get { "GET" } else { "POST" }));
            }
            s.push_str(&format!("        http: [{{{}}}]\n", h.join(", ")));
        }
    }
    s
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..4).prop_map(|s| format!("/s{s}")),
        (0u8..4, 0u8..3).prop_map(|(s, t)| format!("/s{s}/{t}")),
        (0u8..4).prop_map(|s| format!("/s{s}/x")),
        Just("/".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn indexed_equals_full_scan(
        rules in prop::collection::vec(rule(), 0..12),
        default_deny in any::<bool>(),
        outbound in any::<bool>(),
        traffic in prop::collection::vec((0u8..4, 0u8..255, 0u16..9, prop::option::of(0u8..3), path(), any::<bool>(), prop::option::of(0u8..3), prop::option::of(0u8..3)), 1..12),
    ) {
        let text = yaml(&rules, default_deny, outbound);
        let docs = load::parse_str("p.yaml", &text).expect("valid yaml");
        let (policy, _) = compile::compile(&docs, &CompileContext::default()).expect("valid policy");
        for (o, last, p, ns, path, get, sni, host) in traffic {
            let peer = format!("10.{o}.{o}.{last}").parse().expect("ip");
            let identity = ns.map(|n| format!("spiffe://td/ns/ns{n}/sa/x"));
            let sni = sni.map(|h| format!("h{h}.example"));
            let host = host.map(|h| format!("h{h}.example"));
            let direction = if outbound { Direction::Outbound } else { Direction::Inbound };
            let conn = Connection { direction, peer, port: 8000 + p, identity: identity.as_deref(), sni: sni.as_deref(), trust_domain: None };
            let fast = policy.decide_connection(&conn, None);
            let slow = policy.decide_connection(&conn, Some(&mut Trace::default()));
            prop_assert_eq!(&fast, &slow, "{}", text);
            if fast == ConnDecision::NeedHttp {
                let headers = Vec::new();
                let req = Request { method: if get { "GET" } else { "POST" }, path: &path, host: host.as_deref(), headers: &headers, jwt: None };
                prop_assert_eq!(
                    policy.decide_request(&conn, &req, None),
                    policy.decide_request(&conn, &req, Some(&mut Trace::default())),
                    "{} {}", path, text
                );
                prop_assert_eq!(policy.decide_opaque(&conn, None), policy.decide_opaque(&conn, Some(&mut Trace::default())));
            }
        }
    }
}
