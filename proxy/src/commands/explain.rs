//! `portcullis-proxy explain`: one connection (and optionally one request) through the decision
//! engine, printed as the verdict, the deciding rule, the reason and the step-by-step trace.
//! First line `allow`, `deny` or `error`; exit 0, 1 or 2.

use std::net::{IpAddr, SocketAddr};

use portcullis_config::decide::{JwtClaims, Trace};
use portcullis_config::normalize::{normalize_host, normalize_target};
use portcullis_config::{
    CompiledPolicy, ConnDecision, Connection, Decision, Direction, LoadedPolicy, Request, Verdict,
};

use super::cluster;
use crate::http::jwt::Jwks;
use crate::observe::Chain;
use crate::policy;
use crate::settings::cli::ExplainArgs;

/// What `explain` prints and how it exits.
#[derive(Debug)]
pub struct Report {
    /// Everything printed.
    pub out: String,
    /// 0 allow, 1 deny, 2 error.
    pub code: u8,
}

fn error(message: impl std::fmt::Display) -> Report {
    Report {
        out: format!("error\n{message}\n"),
        code: 2,
    }
}

fn parse_src(s: &str) -> Option<IpAddr> {
    s.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

fn render(d: &Decision, trace: &Trace, notes: &[String]) -> Report {
    let mut out = format!("{}\n", d.verdict.as_str());
    match &d.policy {
        Some(p) => out.push_str(&format!("rule: {p}/{}\n", d.rule)),
        None => out.push_str("rule: default\n"),
    }
    out.push_str(&format!("reason: {}\n", d.reason));
    out.push_str("trace:\n");
    for (i, step) in notes.iter().chain(trace.steps.iter()).enumerate() {
        out.push_str(&format!("  {}. {step}\n", i + 1));
    }
    Report {
        out,
        code: if d.verdict == Verdict::Allow { 0 } else { 1 },
    }
}

/// The policy to judge with, and what `--cluster` found: notes for the trace and the peer
/// pod's identity.
struct Judged {
    loaded: LoadedPolicy,
    notes: Vec<String>,
    peer_identity: Option<String>,
}

/// Loads `--policy`, or compiles the snapshot's policies for the pod the question is about.
fn judged(args: &ExplainArgs, workload_ip: IpAddr, peer_ip: IpAddr) -> Result<Judged, Report> {
    let Some(dir) = &args.cluster else {
        let Some(path) = &args.policy else {
            return Err(error("--policy or --cluster is required"));
        };
        return policy::load(path, &args.workload.workload())
            .map(|loaded| Judged {
                loaded,
                notes: Vec::new(),
                peer_identity: None,
            })
            .map_err(|e| error(Chain(&e)));
    };
    let (snapshot, hash) =
        cluster::read(dir, args.policy.as_deref()).map_err(|e| error(Chain(&e)))?;
    let Some(pod) = cluster::pod_at(&snapshot, workload_ip) else {
        return Err(error(format!(
            "no pod of the snapshot has the address {workload_ip} (the workload is the pod at --dst inbound, at --src outbound)"
        )));
    };
    let loaded = cluster::compile_for(&snapshot, &hash, pod).map_err(|e| error(Chain(&e)))?;
    let trust_domain = args.trust_domain.as_deref().unwrap_or("cluster.local");
    let peer = cluster::pod_at(&snapshot, peer_ip);
    let mut notes = vec![format!("workload: pod {}", cluster::name(pod))];
    notes.push(match peer {
        Some(p) => format!(
            "peer: pod {} ({})",
            cluster::name(p),
            p.identity(trust_domain)
        ),
        None => format!("peer: {peer_ip}, no pod of the snapshot"),
    });
    Ok(Judged {
        loaded,
        notes,
        peer_identity: peer.map(|p| p.identity(trust_domain)),
    })
}

/// Runs `explain`.
pub fn run(args: &ExplainArgs) -> Report {
    let Some(src) = parse_src(&args.src) else {
        return error(format!("--src {:?}: expected IP or IP:PORT", args.src));
    };
    let Ok(dst) = args.dst.parse::<SocketAddr>() else {
        return error(format!("--dst {:?}: expected IP:PORT", args.dst));
    };
    let direction = if args.direction == "inbound" {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    let (workload_ip, peer_ip) = match direction {
        Direction::Inbound => (dst.ip(), src),
        Direction::Outbound => (src, dst.ip()),
    };
    let judged = match judged(args, workload_ip, peer_ip) {
        Ok(j) => j,
        Err(report) => return report,
    };
    // Outbound connections are judged before they open: a destination's identity is unknown.
    let identity = args.identity.clone().or(match direction {
        Direction::Inbound => judged.peer_identity.clone(),
        Direction::Outbound => None,
    });
    let trust_domain = args
        .trust_domain
        .clone()
        .or_else(|| args.cluster.as_ref().map(|_| "cluster.local".to_string()));
    let sni = args.sni.as_deref().map(normalize_host);
    let conn = Connection {
        direction,
        peer: peer_ip,
        port: dst.port(),
        identity: identity.as_deref(),
        sni: sni.as_deref(),
        trust_domain: trust_domain.as_deref(),
    };
    let policy = &judged.loaded.policy;
    let mut trace = Trace::default();
    let mut notes = judged.notes;
    notes.push(format!(
        "{} connection: peer {}, port {}, identity {}, sni {}",
        args.direction,
        conn.peer,
        conn.port,
        conn.identity.unwrap_or("none"),
        conn.sni.unwrap_or("none")
    ));
    let decision = match policy.decide_connection(&conn, Some(&mut trace)) {
        ConnDecision::Final(d) => d,
        ConnDecision::NeedHttp if args.method.is_none() && args.path.is_none() => {
            notes.push("no --method/--path given: judged as non-HTTP traffic".into());
            trace.steps.clear();
            policy.decide_opaque(&conn, Some(&mut trace))
        }
        ConnDecision::NeedHttp => {
            match explain_request(args, policy, &conn, &mut trace, &mut notes) {
                Ok(d) => d,
                Err(report) => return report,
            }
        }
    };
    render(&decision, &trace, &notes)
}

/// The bearer token's claims, validated against `--jwks`, with a note saying what happened.
fn token_claims(args: &ExplainArgs, notes: &mut Vec<String>) -> Option<JwtClaims> {
    let (token, path) = match (&args.jwt, &args.jwks) {
        (None, _) => return None,
        (Some(_), None) => {
            notes.push(
                "bearer token given without --jwks: it cannot be validated, jwt matches fail"
                    .into(),
            );
            return None;
        }
        (Some(token), Some(path)) => (token, path),
    };
    match Jwks::load(path).and_then(|k| k.validate(token)) {
        Ok(c) => {
            notes.push(format!(
                "token valid: iss {}, sub {}",
                c.issuer.as_deref().unwrap_or("none"),
                c.subject.as_deref().unwrap_or("none")
            ));
            Some(c)
        }
        Err(e) => {
            notes.push(format!("token invalid ({e}): jwt matches fail"));
            None
        }
    }
}

/// Judges the request the flags describe; a target normalization rejects is reported as such.
fn explain_request(
    args: &ExplainArgs,
    policy: &CompiledPolicy,
    conn: &Connection<'_>,
    trace: &mut Trace,
    notes: &mut Vec<String>,
) -> Result<Decision, Report> {
    let target = args.path.as_deref().unwrap_or("/");
    let t = normalize_target(target).map_err(|e| Report {
        out: format!("deny\nrule: normalization\nreason: request rejected with 400: {e}\n"),
        code: 1,
    })?;
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let host = t
        .authority
        .clone()
        .or_else(|| args.host.as_deref().map(normalize_host));
    let method = args.method.as_deref().unwrap_or("GET");
    notes.push(format!(
        "request: {method} {} (normalized from {target:?}), host {}",
        t.path,
        host.as_deref().unwrap_or("none")
    ));
    let claims = token_claims(args, notes);
    trace.steps.clear();
    let req = Request {
        method,
        path: &t.path,
        host: host.as_deref(),
        headers: &headers,
        jwt: claims.as_ref(),
    };
    Ok(policy.decide_request(conn, &req, Some(trace)))
}
