//! Conformance cases as data: every `conformance/*.yaml` holds a policy and a list of
//! connections/requests with the expected verdict and deciding rule; every `invalid/*.yaml` is a
//! policy that must be refused with exactly the errors its `# expect: LINE:COL: text` lines name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use portcullis_config::decide::{JwtClaims, Trace};
use portcullis_config::normalize::{normalize_host, normalize_target};
use portcullis_config::{
    CompileContext, ConnDecision, Connection, Direction, LoadError, Request, compile, load,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[allow(dead_code)] // documentation for readers of the case file
    description: String,
    #[serde(default)]
    workload_labels: Option<BTreeMap<String, String>>,
    /// `name=port[/PROTOCOL],…`, as `--named-ports` takes them.
    #[serde(default)]
    named_ports: String,
    #[serde(default)]
    workload_namespace: Option<String>,
    policy: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    direction: String,
    peer: String,
    port: u16,
    identity: Option<String>,
    /// The workload's own trust domain.
    trust_domain: Option<String>,
    sni: Option<String>,
    request: Option<Req>,
    #[serde(default)]
    opaque: bool,
    expect: String,
    rule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Req {
    method: String,
    target: String,
    host: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    /// Claims of a token that validated (validation itself is the proxy's job).
    jwt: Option<Claims>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, Vec<String>>,
}

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Runs one case; returns (verdict, rule) as `allow`/`deny`/`need-http`/`reject` and `policy/rule`.
/// With `traced`, the engine scans every rule (to explain it); without, it uses its indexes.
/// Both must decide alike.
fn run(policy: &portcullis_config::CompiledPolicy, c: &Case, traced: bool) -> (String, String) {
    let direction = match c.direction.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        d => panic!("{}: bad direction {d}", c.name),
    };
    let conn = Connection {
        direction,
        peer: c
            .peer
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad peer", c.name)),
        port: c.port,
        identity: c.identity.as_deref(),
        sni: c.sni.as_deref(),
        trust_domain: c.trust_domain.as_deref(),
    };
    let show = |d: &portcullis_config::Decision| {
        let rule = match &d.policy {
            Some(p) => format!("{p}/{}", d.rule),
            None => d.rule.to_string(),
        };
        (d.verdict.as_str().to_string(), rule)
    };
    match policy.decide_connection(&conn, traced.then_some(&mut Trace::default())) {
        ConnDecision::Final(d) => show(&d),
        ConnDecision::NeedHttp if c.opaque => {
            show(&policy.decide_opaque(&conn, traced.then_some(&mut Trace::default())))
        }
        ConnDecision::NeedHttp => match &c.request {
            None => ("need-http".into(), String::new()),
            Some(r) => match normalize_target(&r.target) {
                Err(e) => ("reject".into(), e.to_string()),
                Ok(t) => {
                    let host = t
                        .authority
                        .clone()
                        .or_else(|| r.host.as_deref().map(normalize_host));
                    let jwt = r.jwt.as_ref().map(|j| JwtClaims {
                        issuer: j.iss.clone(),
                        subject: j.sub.clone(),
                        audiences: j.aud.clone(),
                        claims: j.claims.clone().into_iter().collect(),
                    });
                    let req = Request {
                        method: &r.method,
                        path: &t.path,
                        host: host.as_deref(),
                        headers: &r.headers,
                        jwt: jwt.as_ref(),
                    };
                    show(&policy.decide_request(
                        &conn,
                        &req,
                        traced.then_some(&mut Trace::default()),
                    ))
                }
            },
        },
    }
}

#[test]
fn conformance_cases() {
    let mut failures = Vec::new();
    let mut count = 0;
    for path in files("conformance") {
        let text = std::fs::read_to_string(&path).expect("read case file");
        let file: CaseFile =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let docs = load::parse_str("policy.yaml", &file.policy)
            .unwrap_or_else(|e| panic!("{}: policy: {e:?}", path.display()));
        let ctx = CompileContext {
            workload_labels: file.workload_labels.clone(),
            named_ports: portcullis_config::workload::parse_named_ports(&file.named_ports)
                .unwrap_or_else(|e| panic!("{}: named_ports: {e}", path.display())),
            workload_namespace: file.workload_namespace.clone(),
            cluster: None,
        };
        let (policy, _) = compile::compile(&docs, &ctx).unwrap_or_else(|e| {
            panic!(
                "{}: policy: {}",
                path.display(),
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        });
        for c in &file.cases {
            count += 1;
            let (verdict, rule) = run(&policy, c, false);
            let full_scan = run(&policy, c, true);
            if full_scan != (verdict.clone(), rule.clone()) {
                failures.push(format!(
                    "{}: indexed {verdict} {rule} but full scan {full_scan:?}",
                    c.name
                ));
            }
            let rule_ok = c.rule.as_ref().is_none_or(|want| *want == rule);
            if verdict != c.expect || !rule_ok {
                failures.push(format!(
                    "{} / {}: got {verdict} {rule:?}, want {} {:?}",
                    path.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default(),
                    c.name,
                    c.expect,
                    c.rule
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("{count} conformance cases passed");
}

#[test]
fn invalid_policies_are_refused_with_located_errors() {
    let mut failures = Vec::new();
    for path in files("invalid") {
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).expect("read");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expected.is_empty(), "{name}: no `# expect:` lines");
        // As the proxy and `check` load it: every document's errors, parse and compile alike.
        let errors: Vec<String> = match load::load_policy(&path, &CompileContext::default()) {
            Err(LoadError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        };
        for want in &expected {
            let (loc, msg) = want.split_once(": ").unwrap_or((want, ""));
            let prefix = format!("{}:{loc}: ", path.display());
            if !errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(msg))
            {
                failures.push(format!(
                    "{name}: expected `{prefix}…{msg}…`, got {errors:#?}"
                ));
            }
        }
        if errors.len() != expected.len() {
            failures.push(format!(
                "{name}: expected {} errors, got {errors:#?}",
                expected.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lower_case_methods_are_warned_about_where_they_are_written() {
    let yaml = "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: m}\nspec:\n  inbound:\n    rules:\n      - {name: reads, action: allow, http: [{methods: [GET, get]}]}\n";
    let docs = load::parse_str("m.yaml", yaml).expect("parse");
    let (_, warnings) = compile::compile(&docs, &CompileContext::default()).expect("compile");
    let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "m.yaml:7:61: warning: method \"get\" is matched case-sensitively: requests that say \"GET\" do not match"
        ],
    );
}

#[test]
fn regexes_share_one_compiled_size_budget() {
    // Each regex is within the per-regex limit; together they would cost every sidecar far
    // more than a policy should. The first one past the budget is the error, where it is.
    let re = "~/[a-z0-9]{6000}";
    let many = |n: usize| {
        let mut y = String::from(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: big}\nspec:\n  inbound:\n    rules:\n",
        );
        for i in 0..n {
            y.push_str(&format!(
                "      - {{name: r{i}, action: deny, http: [{{paths: [\"{re}\"]}}]}}\n"
            ));
        }
        y
    };
    let fits = load::parse_str("big.yaml", &many(8)).expect("parse");
    assert!(
        compile::compile(&fits, &CompileContext::default()).is_ok(),
        "8 fit"
    );
    let docs = load::parse_str("big.yaml", &many(80)).expect("parse");
    let errors: Vec<String> = match compile::compile(&docs, &CompileContext::default()) {
        Ok(_) => panic!("80 large regexes must not load"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    };
    let first = errors.first().expect("an error");
    assert!(
        first.contains("exceed their compiled-size budget of 32 MiB"),
        "{first}"
    );
    let line: usize = first
        .split(':')
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("line");
    assert!((7..86).contains(&line), "at one of the regexes: {first}");
    assert!(line > 7 + 8, "the first rules fit: {first}");
}
