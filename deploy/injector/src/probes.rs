//! Kubelet probes in an injected pod. The kubelet probes from the node to the pod IP; with
//! inbound capture and a default-deny policy those probes would be judged like any client (and
//! refused). So the injector rewrites HTTP and TCP probes to the proxy's admin port
//! (`/app-health/<container>/<livez|readyz|startupz>`, never captured) and hands the original
//! probes to the proxy (`PORTCULLIS_APP_PROBES`), which runs them against the application from
//! its delivery address. Probes on excluded ports, HTTPS probes, probes with a `host`, gRPC and
//! exec probes are left as they are.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use serde_json::{Value, json};

use crate::patch::{ADMIN_PORT, add};

/// Probe kinds and the names used in rewritten paths.
const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// What rewriting produced.
#[derive(Debug, Default)]
pub struct Rewritten {
    /// The `add` operations replacing the probes.
    pub ops: Vec<PatchOperation>,
    /// The original probes as JSON (path → probe), for the proxy; none if nothing was rewritten.
    pub app_probes: Option<String>,
}

/// Parses `8080,9000-9100` into ranges (bad items are ignored: the annotation was validated).
pub fn ports(list: &str) -> Vec<(u16, u16)> {
    list.split(',')
        .filter_map(|item| {
            let item = item.trim();
            let n = |s: &str| s.trim().parse::<u16>().ok();
            match item.split_once('-') {
                Some((a, b)) => n(a).zip(n(b)),
                None => n(item).map(|p| (p, p)),
            }
        })
        .collect()
}

/// A probe's port as a number: an integer, or the name of one of the container's ports.
fn resolve(port: &Value, container: &Value) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(name) => container["ports"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok()),
        _ => None,
    }
}

/// Rewrites the HTTP and TCP probes of every container in `pod`.
pub fn rewrite(pod: &Value, excluded: &[(u16, u16)]) -> Rewritten {
    let mut out = Rewritten::default();
    let mut originals = BTreeMap::new();
    let is_excluded = |p: u16| excluded.iter().any(|(a, b)| (*a..=*b).contains(&p));
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, c) in containers.iter().enumerate() {
        let Some(name) = c["name"].as_str() else {
            continue;
        };
        for (field, kind) in KINDS {
            let probe = &c[field];
            let path = format!("/app-health/{name}/{kind}");
            let target = json!({"path": path, "port": ADMIN_PORT, "scheme": "HTTP"});
            let index = i.to_string();
            let pointer = ["spec", "containers", index.as_str(), field];
            if let Some(get) = probe.get("httpGet") {
                let scheme = get["scheme"].as_str().unwrap_or("HTTP");
                let Some(port) = resolve(&get["port"], c) else {
                    continue;
                };
                if !scheme.eq_ignore_ascii_case("HTTP")
                    || get.get("host").is_some()
                    || is_excluded(port)
                {
                    continue;
                }
                originals.insert(
                    path,
                    json!({"httpGet": {
                        "path": get["path"].as_str().unwrap_or("/"),
                        "port": port,
                        "httpHeaders": get.get("httpHeaders").cloned().unwrap_or(json!([])),
                    }}),
                );
                let mut tokens = pointer.to_vec();
                tokens.push("httpGet");
                out.ops.push(add(&tokens, target));
            } else if let Some(tcp) = probe.get("tcpSocket") {
                let Some(port) = resolve(&tcp["port"], c) else {
                    continue;
                };
                if tcp.get("host").is_some() || is_excluded(port) {
                    continue;
                }
                originals.insert(path, json!({"tcpSocket": {"port": port}}));
                let mut replaced = probe.clone();
                if let Some(obj) = replaced.as_object_mut() {
                    obj.remove("tcpSocket");
                    obj.insert("httpGet".into(), target);
                }
                out.ops.push(add(&pointer, replaced));
            }
        }
    }
    if !originals.is_empty() {
        out.app_probes = serde_json::to_string(&originals).ok();
    }
    out
}
