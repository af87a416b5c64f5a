//! Generated policies for the decision benchmarks: `n` rules, a mix of connection-level CIDR +
//! port rules, HTTP rules with exact, prefix and (1 %) regex paths, header rules and denies,
//! spread over one `AccessPolicy` document per 1 000 rules.

use std::net::IpAddr;

use portcullis_config::{CompileContext, CompiledPolicy, compile, load};

/// The policy text for `n` rules.
pub fn policy_yaml(n: usize) -> String {
    let mut s = String::new();
    for doc in 0..n.div_ceil(1000).max(1) {
        s.push_str(&format!(
            "---\napiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: p{doc}}}\nspec:\n  inbound:\n    default: deny\n    rules:\n"
        ));
        for i in doc * 1000..n.min((doc + 1) * 1000) {
            let (a, b) = ((i >> 8) & 255, i & 255);
            let rule = match i % 10 {
                0..=2 => format!(
                    "{{name: r{i}, action: allow, from: [{{cidr: 10.{a}.{b}.0/24}}], ports: [{}]}}",
                    1000 + i % 5000
                ),
                3 | 4 => format!(
                    "{{name: r{i}, action: allow, http: [{{methods: [GET], paths: [\"/svc{i}/items\"]}}]}}"
                ),
                5 | 6 => format!(
                    "{{name: r{i}, action: allow, from: [{{cidr: 10.0.0.0/8}}], http: [{{paths: [\"/api{i}/*\"]}}]}}"
                ),
                7 if i % 100 == 7 => format!(
                    "{{name: r{i}, action: allow, http: [{{paths: [\"~/re{i}/[0-9]+\"]}}]}}"
                ),
                7 => format!(
                    "{{name: r{i}, action: allow, ports: [8080], http: [{{paths: [\"/p{i}\"]}}]}}"
                ),
                8 => format!(
                    "{{name: r{i}, action: allow, http: [{{paths: [\"/h{i}\"], headers: {{x-tenant: t{i}}}}}]}}"
                ),
                _ => format!(
                    "{{name: r{i}, action: deny, from: [{{cidr: 172.16.{a}.{b}/32}}], ports: [{}]}}",
                    1000 + i % 5000
                ),
            };
            s.push_str(&format!("      - {rule}\n"));
        }
    }
    s
}

/// Parses the generated policy as one file per document (as a ConfigMap directory would hold
/// it; each stays far below the per-file size budget).
pub fn parsed(n: usize) -> Vec<load::SourceDoc> {
    policy_yaml(n)
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .enumerate()
        .flat_map(|(i, d)| {
            load::parse_str(&format!("p{i}.yaml"), d).expect("generated policy parses")
        })
        .collect()
}

/// Compiles the generated policy.
pub fn compiled(n: usize) -> CompiledPolicy {
    compile::compile(&parsed(n), &CompileContext::default())
        .expect("generated policy compiles")
        .0
}

/// One unit of traffic.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Source IP.
    pub peer: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Method.
    pub method: &'static str,
    /// Normalized path.
    pub path: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
}

/// 64 samples over a policy of `n` rules: hits on each rule kind and misses.
pub fn traffic(n: usize) -> Vec<Sample> {
    (0..64)
        .map(|k| {
            let i = (k * 7919) % n.max(1);
            let (a, b) = ((i >> 8) & 255, i & 255);
            let ip = |s: String| s.parse::<IpAddr>().expect("ip");
            let (peer, port, path, headers) = match k % 6 {
                0 => (
                    ip(format!("10.{a}.{b}.9")),
                    (1000 + i % 5000) as u16,
                    "/".to_string(),
                    vec![],
                ),
                1 => (
                    ip("192.0.2.1".into()),
                    8080,
                    format!("/svc{i}/items"),
                    vec![],
                ),
                2 => (ip("10.1.2.3".into()), 8080, format!("/api{i}/v1/x"), vec![]),
                3 => (
                    ip("192.0.2.1".into()),
                    8080,
                    format!("/h{i}"),
                    vec![("x-tenant".to_string(), format!("t{i}"))],
                ),
                4 => (
                    ip(format!("172.16.{a}.{b}")),
                    (1000 + i % 5000) as u16,
                    "/".to_string(),
                    vec![],
                ),
                _ => (
                    ip("198.51.100.1".into()),
                    9999,
                    "/nothing/here".to_string(),
                    vec![],
                ),
            };
            Sample {
                peer,
                port,
                method: "GET",
                path,
                headers,
            }
        })
        .collect()
}

/// One decision as the proxy makes it: the connection phase, then the request phase if needed.
pub fn decide(policy: &CompiledPolicy, s: &Sample) -> portcullis_config::Verdict {
    use portcullis_config::{ConnDecision, Connection, Direction, Request};
    let conn = Connection {
        direction: Direction::Inbound,
        peer: s.peer,
        port: s.port,
        identity: None,
        sni: None,
        trust_domain: None,
    };
    match policy.decide_connection(&conn, None) {
        ConnDecision::Final(d) => d.verdict,
        ConnDecision::NeedHttp => {
            let req = Request {
                method: s.method,
                path: &s.path,
                host: None,
                headers: &s.headers,
                jwt: None,
            };
            policy.decide_request(&conn, &req, None).verdict
        }
    }
}
