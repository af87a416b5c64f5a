//! The refused-policy corpus (`config/tests/invalid/*.yaml`) at admission: every file is
//! refused by `/validate` with exactly what `portcullis-proxy check` prints for it.
//! - As a policy ConfigMap (the file a key): every error line `check` prints, byte for byte.
//! - As API objects (each document that is an AccessPolicy or NetworkPolicy mapping, sent as
//!   its own object): every message `check` prints for that document, followed by the field it
//!   is at — a path that names a real member of the object sent.
//!
//! Documents the API server could never send as an object are said so per file, not skipped
//! silently: a duplicate key (the API server's JSON decoding keeps one), a document of another
//! kind (the webhook is only sent AccessPolicies and NetworkPolicies), no document at all.

use std::path::{Path, PathBuf};

use portcullis_config::CompileContext;
use portcullis_config::load::load_policy;
use portcullis_controller::admission::Facts;
use portcullis_controller::webhooks::validate::validate;
use serde_json::{Value, json};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is in {}", dir.display());
    files
}

/// What `check` prints on stderr for one file: its errors, `file:line:col: message`, the file
/// named as given (here its bare name, as a ConfigMap key names it).
fn check_errors(path: &Path) -> Vec<String> {
    let dir = tempdir(path);
    let name = path.file_name().expect("name");
    std::fs::copy(path, dir.0.join(name)).expect("copy");
    let errors = match load_policy(&dir.0.join(name), &CompileContext::default()) {
        Ok(_) => panic!("{}: check admits it", path.display()),
        Err(portcullis_config::LoadError::Invalid(errors)) => errors,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let prefix = format!("{}/", dir.0.display());
    errors
        .iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(path: &Path) -> Dir {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("x");
    let d = std::env::temp_dir().join(format!("portcullis-corpus-{}-{stem}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    Dir(d)
}

/// An AdmissionReview CREATE of `object` in namespace `shop`.
fn review(gvk: (&str, &str, &str), object: Value) -> Vec<u8> {
    let (group, version, kind) = gvk;
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "corpus",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
            "name": object["metadata"]["name"].as_str().unwrap_or_default(),
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false,
        }
    }))
    .expect("json")
}

/// The refusal message of `/validate` for `body`.
fn refusal(what: &str, body: &[u8]) -> String {
    let answer = validate(body, "portcullis-policy", Some(&Facts::default())).expect("answered");
    let response = &answer.body["response"];
    assert_eq!(
        response["allowed"], false,
        "{what}: admitted: {}",
        answer.body
    );
    assert_eq!(response["status"]["code"], 422, "{what}");
    assert_eq!(response["status"]["reason"], "Invalid", "{what}");
    response["status"]["message"]
        .as_str()
        .expect("a message")
        .to_string()
}

#[test]
fn every_refused_file_is_refused_in_a_configmap_with_what_check_prints() {
    for path in corpus() {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let text = std::fs::read_to_string(&path).expect("read");
        let configmap = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "portcullis-policy", "namespace": "shop"},
            "data": {name: text},
        });
        let message = refusal(name, &review(("", "v1", "ConfigMap"), configmap));
        let want = check_errors(&path);
        let got: Vec<&str> = message.lines().skip(1).collect();
        assert_eq!(got, want, "{name}: admission said\n{message}");
    }
}

/// Whether `path` (`spec.inbound.rules[0].from[1].cidr`, `metadata.labels["a/b"]`) names a
/// member of `v`.
fn resolves(v: &Value, path: &str) -> bool {
    let mut at = v;
    let mut rest = path;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(r) = rest.strip_prefix('[') {
            let Some((inside, after)) = r.split_once(']') else {
                return false;
            };
            let next = match inside.parse::<usize>() {
                Ok(i) => at.get(i),
                Err(_) => serde_json::from_str::<String>(inside)
                    .ok()
                    .and_then(|k| at.get(k)),
            };
            let Some(next) = next else { return false };
            (at, rest) = (next, after);
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let Some(next) = at.get(&rest[..end]) else {
            return false;
        };
        (at, rest) = (next, &rest[end..]);
    }
    true
}

/// A document as JSON, read as YAML 1.2 (`name: no-port` stays a string; kubectl's YAML 1.1
/// reading would send `false`, which the CRD's schema refuses before any webhook is called).
fn as_json(doc: &str) -> Result<Value, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options(doc, options)
}

/// Why a document cannot be sent as an object, if it cannot.
fn not_an_object(doc: &str) -> Option<String> {
    match as_json(doc) {
        Err(e) => Some(format!(
            "not one object: {}",
            e.to_string().lines().next().unwrap_or("")
        )),
        Ok(Value::Object(m)) => match m.get("kind").and_then(Value::as_str) {
            Some("AccessPolicy" | "NetworkPolicy") => None,
            other => Some(format!(
                "kind {other:?} is not sent to the webhook as a policy"
            )),
        },
        Ok(_) => Some("no mapping".into()),
    }
}

#[test]
fn every_refused_policy_object_is_refused_with_checks_message_at_its_field() {
    let mut sent = 0;
    for path in corpus() {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, doc) in text.split("\n---\n").enumerate() {
            if let Some(why) = not_an_object(doc) {
                eprintln!("{name} document {i}: not sent as an object: {why}");
                continue;
            }
            let single = tempdir(&path);
            let file = single.0.join(format!("doc{i}.yaml"));
            std::fs::write(&file, doc).expect("write");
            let want: Vec<String> = match load_policy(&file, &CompileContext::default()) {
                Ok(_) => continue, // this document is fine; another of the file is not
                Err(portcullis_config::LoadError::Invalid(errors)) => {
                    errors.into_iter().map(|e| e.message).collect()
                }
                Err(e) => panic!("{name}: {e}"),
            };
            let object = as_json(doc).expect("object");
            let api = object["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api.split_once('/').unwrap_or(("", api));
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let message = refusal(name, &review((group, version, &kind), object.clone()));
            let lines: Vec<&str> = message.lines().skip(1).collect();
            assert_eq!(
                lines.len(),
                want.len(),
                "{name} #{i}:\n{message}\nwant {want:#?}"
            );
            // The object's members come in JSON's order, not the YAML's: match each message.
            for want in &want {
                let line = lines
                    .iter()
                    .find(|l| {
                        l.rsplit_once(" (at ")
                            .is_some_and(|(said, _)| said.ends_with(&format!(": {want}")))
                    })
                    .unwrap_or_else(|| panic!("{name} #{i}: {want:?} not in\n{message}"));
                let (_, field) = line.rsplit_once(" (at ").expect("a field");
                let field = field.strip_suffix(')').expect("closed");
                assert!(
                    resolves(&object, field),
                    "{name} #{i}: {field} is not in the object"
                );
                // An unknown field is pointed at itself, wherever it is in its mapping.
                let unknown = want
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next());
                if let Some(f) = unknown {
                    assert!(field.ends_with(f), "{name} #{i}: {want:?} is at {field}");
                }
            }
            sent += 1;
        }
    }
    assert!(sent >= 8, "only {sent} documents were sent as objects");
}
