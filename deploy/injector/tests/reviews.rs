//! Recorded AdmissionReviews (tests/reviews/*.json) through the real review code: the patch is
//! decoded from base64, applied to the input Pod with json-patch, the result asserted, and the
//! patched Pod validated with `kubernetes-validate --strict -k 1.33.0` (from PyPI; the test
//! fails, loudly, if it is missing).

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use portcullis_injector::config::InjectConfig;
use portcullis_injector::review::{Outcome, review};
use serde_json::Value;

fn recorded(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reviews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reviews `name` and returns (outcome, response, patched pod if a patch came back).
fn run(name: &str, cfg: &InjectConfig) -> (Outcome, Value, Option<Value>) {
    let body = recorded(name);
    let answer = review(&body, cfg);
    let resp = answer.body["response"].clone();
    assert_eq!(answer.body["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(answer.body["kind"], "AdmissionReview", "{name}");
    let patched = resp["patch"].as_str().map(|b64| {
        assert_eq!(resp["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON patch");
        for op in &patch.0 {
            assert!(
                matches!(op, json_patch::PatchOperation::Add(_)),
                "only add operations: {op:?}"
            );
        }
        let input: Value = serde_json::from_slice(&body).expect("input");
        let mut pod = input["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the input pod");
        pod
    });
    (answer.outcome, resp, patched)
}

/// Validates `pod` against the Kubernetes 1.33 schema, strictly.
fn validate(name: &str, pod: &Value) {
    let mut pod = pod.clone();
    // Pods from controllers carry only generateName; the API server names them before
    // validation, and so does this test.
    if pod["metadata"]["name"].is_null() {
        pod["metadata"]["name"] = Value::String("web-7d4b9c-x2x9z".into());
    }
    // One file per call: tests run in parallel and several validate the same review's pod.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "portcullis-injector-{}-{n}-{name}",
        std::process::id()
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(&pod).expect("json")).expect("write");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate must be installed (pip install kubernetes-validate)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{name}: patched pod does not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn container<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {list:#}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

fn flag(c: &Value, name: &str) -> Option<String> {
    let a = args(c);
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn env(c: &Value, name: &str) -> Option<Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

#[test]
fn a_plain_pod_gets_init_native_sidecar_volumes_and_probes() {
    let cfg = InjectConfig::defaults();
    let (outcome, resp, pod) = run("plain.json", &cfg);
    assert!(matches!(outcome, Outcome::Injected(_)), "{outcome:?}");
    assert_eq!(resp["uid"], "u-1");
    assert_eq!(resp["allowed"], true);
    let pod = pod.expect("patched");
    assert_eq!(
        pod["metadata"]["annotations"]["portcullis.dev/injected"],
        env!("CARGO_PKG_VERSION")
    );
    let inits = &pod["spec"]["initContainers"];
    assert_eq!(inits[0]["name"], "portcullis-init");
    assert_eq!(inits[1]["name"], "portcullis-proxy");
    let init = &inits[0];
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert!(init.get("restartPolicy").is_none(), "runs to completion");
    let proxy = &inits[1];
    assert_eq!(proxy["restartPolicy"], "Always", "native sidecar");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 15020);
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsUser"], 1337);
    assert_eq!(sc["runAsGroup"], 1337);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no added capabilities in redirect mode"
    );
    assert_eq!(proxy["resources"]["requests"]["memory"], "32Mi");
    assert_eq!(flag(proxy, "--mode").as_deref(), Some("enforce"));
    assert_eq!(flag(proxy, "--capture").as_deref(), Some("redirect"));
    assert_eq!(
        flag(proxy, "--policy").as_deref(),
        Some("/etc/portcullis/policy")
    );
    assert_eq!(
        flag(proxy, "--named-ports").as_deref(),
        Some("http=8080,metrics=9090,serve-80-udp=80/UDP"),
        "named ports keep their protocol"
    );
    assert_eq!(flag(init, "--mode").as_deref(), Some("redirect"));
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let policy = volumes
        .iter()
        .find(|v| v["name"] == "portcullis-policy")
        .expect("policy volume");
    assert_eq!(policy["configMap"]["name"], "portcullis-policy");
    let mounts = proxy["volumeMounts"].as_array().expect("mounts");
    assert!(mounts.iter().all(|m| m["readOnly"] == true));
    let podinfo = volumes
        .iter()
        .find(|v| v["name"] == "portcullis-podinfo")
        .expect("podinfo");
    assert_eq!(
        podinfo["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.labels"
    );

    // Probes now go to the proxy's admin port; the originals travel to the proxy.
    let app = container(&pod["spec"]["containers"], "app");
    assert_eq!(
        app["readinessProbe"]["httpGet"],
        serde_json::json!({"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"})
    );
    assert_eq!(app["readinessProbe"]["periodSeconds"], 5, "timings kept");
    assert!(app["livenessProbe"].get("tcpSocket").is_none());
    assert_eq!(
        app["livenessProbe"]["httpGet"]["path"],
        "/app-health/app/livez"
    );
    assert_eq!(app["livenessProbe"]["initialDelaySeconds"], 3);
    assert!(
        app["startupProbe"].get("exec").is_some(),
        "exec probes untouched"
    );
    let originals: Value = serde_json::from_str(
        env(proxy, "PORTCULLIS_APP_PROBES")
            .and_then(|e| e["value"].as_str().map(str::to_string))
            .as_deref()
            .expect("app probes"),
    )
    .expect("json");
    assert_eq!(
        originals["/app-health/app/readyz"]["httpGet"]["port"], 8080,
        "named port resolved"
    );
    assert_eq!(
        originals["/app-health/app/readyz"]["httpGet"]["path"],
        "/healthz"
    );
    assert_eq!(
        originals["/app-health/app/readyz"]["httpGet"]["httpHeaders"][0]["name"],
        "X-Probe"
    );
    assert_eq!(
        originals["/app-health/app/livez"]["tcpSocket"]["port"],
        8080
    );
    assert_eq!(
        env(proxy, "PORTCULLIS_POD_IP").expect("pod ip")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        env(proxy, "PORTCULLIS_POD_NAMESPACE").expect("namespace")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace",
        "the proxy knows its namespace, so other namespaces' policies never apply"
    );
    // What the injector does not know about is kept.
    assert_eq!(pod["spec"]["os"]["name"], "linux");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    assert_eq!(app["resources"]["requests"]["cpu"], "100m");
    validate("plain.json", &pod);
}

#[test]
fn existing_init_containers_volumes_and_annotations_are_kept_in_order() {
    let (outcome, _, pod) = run("with-init.json", &InjectConfig::defaults());
    assert!(matches!(outcome, Outcome::Injected(_)));
    let pod = pod.expect("patched");
    let names: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .expect("inits")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["portcullis-init", "portcullis-proxy", "migrate"]);
    let vols: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .expect("vols")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vols, ["cache", "portcullis-policy", "portcullis-podinfo"]);
    assert_eq!(pod["metadata"]["annotations"]["team"], "shop");
    assert!(pod["metadata"]["annotations"]["portcullis.dev/injected"].is_string());
    validate("with-init.json", &pod);
}

#[test]
fn annotations_set_mode_capture_policy_and_exclusions() {
    let (outcome, _, pod) = run("labelled-namespace.json", &InjectConfig::defaults());
    assert!(matches!(outcome, Outcome::Injected(_)));
    let pod = pod.expect("patched");
    let inits = &pod["spec"]["initContainers"];
    let (init, proxy) = (&inits[0], &inits[1]);
    assert_eq!(flag(proxy, "--mode").as_deref(), Some("audit"));
    assert_eq!(flag(proxy, "--capture").as_deref(), Some("tproxy"));
    assert_eq!(flag(proxy, "--opaque-ports").as_deref(), Some("3306,5432"));
    assert_eq!(flag(init, "--mode").as_deref(), Some("tproxy"));
    assert_eq!(
        flag(init, "--exclude-inbound-ports").as_deref(),
        Some("9090")
    );
    assert_eq!(
        flag(init, "--exclude-outbound-cidrs").as_deref(),
        Some("169.254.169.254/32")
    );
    assert_eq!(
        proxy["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN"])
    );
    let policy = pod["spec"]["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "portcullis-policy"))
        .expect("policy");
    assert_eq!(policy["configMap"]["name"], "payments-policy");
    // The readiness probe targets an excluded port: the kubelet still reaches it directly.
    let app = container(&pod["spec"]["containers"], "app");
    assert_eq!(app["readinessProbe"]["httpGet"]["port"], "metrics");
    validate("labelled-namespace.json", &pod);
}

#[test]
fn legacy_clusters_get_a_regular_sidecar_container() {
    let mut cfg = InjectConfig::defaults();
    cfg.native_sidecar = false;
    let (_, _, pod) = run("plain.json", &cfg);
    let pod = pod.expect("patched");
    assert_eq!(
        pod["spec"]["initContainers"].as_array().map(Vec::len),
        Some(1)
    );
    let proxy = container(&pod["spec"]["containers"], "portcullis-proxy");
    assert!(proxy.get("restartPolicy").is_none());
    validate("legacy.json", &pod);
}

#[test]
fn pods_that_must_not_be_injected_pass_untouched() {
    let cfg = InjectConfig::defaults();
    for (file, why) in [
        ("opt-out.json", "disabled"),
        ("already-injected.json", "already injected"),
        ("host-network.json", "hostNetwork"),
        ("system-namespace.json", "system namespace"),
        // Found by fuzzing: a patch for these would not apply (no /metadata, no /spec).
        ("no-metadata.json", "not a pod"),
        ("no-spec.json", "not a pod"),
    ] {
        let (outcome, resp, pod) = run(file, &cfg);
        assert!(
            matches!(&outcome, Outcome::Skipped(w) if w.contains(why)),
            "{file}: {outcome:?}"
        );
        assert_eq!(resp["allowed"], true, "{file}");
        assert!(pod.is_none() && resp.get("patch").is_none(), "{file}");
    }
    let (outcome, resp, _) = run("configmap.json", &cfg);
    assert_eq!(outcome, Outcome::Ignored);
    assert_eq!(resp["allowed"], true);
}

#[test]
fn a_dry_run_gets_the_same_patch() {
    let cfg = InjectConfig::defaults();
    let (_, plain, _) = run("plain.json", &cfg);
    let (outcome, dry, pod) = run("dry-run.json", &cfg);
    assert!(matches!(outcome, Outcome::Injected(_)));
    assert_eq!(dry["uid"], "u-7");
    assert_eq!(
        dry["patch"], plain["patch"],
        "sideEffects: None — nothing differs"
    );
    validate("dry-run.json", &pod.expect("patched"));
}

#[test]
fn malformed_reviews_are_allowed_without_a_patch_and_bad_annotations_denied() {
    let cfg = InjectConfig::defaults();
    let (outcome, resp, _) = run("bad-json.json", &cfg);
    assert!(matches!(outcome, Outcome::Malformed(_)), "{outcome:?}");
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
    for junk in [
        &b""[..],
        b"[]",
        b"{\"kind\":\"AdmissionReview\"}",
        b"\xff\xfe",
    ] {
        let a = review(junk, &cfg);
        assert!(matches!(a.outcome, Outcome::Malformed(_)));
        assert_eq!(a.body["response"]["allowed"], true);
    }
    let (outcome, resp, _) = run("bad-annotation.json", &cfg);
    assert!(
        matches!(&outcome, Outcome::Denied(w) if w.contains("portcullis.dev/mode") && w.contains("yolo")),
        "{outcome:?}"
    );
    assert_eq!(resp["allowed"], false);
    assert!(
        resp["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("yolo")),
        "{resp}"
    );
}

#[test]
fn list_annotations_portcullis_init_would_refuse_are_refused_at_admission() {
    // Validated with portcullis-init's own parsers: a pod the injector admits can start.
    let cfg = InjectConfig::defaults();
    let input: Value = serde_json::from_slice(&recorded("plain.json")).expect("json");
    let with = |key: &str, value: &str| {
        let mut review = input.clone();
        review["request"]["object"]["metadata"]["annotations"][key] = Value::String(value.into());
        review
    };
    for (key, value) in [
        ("portcullis.dev/exclude-inbound-ports", "99999"),
        ("portcullis.dev/exclude-inbound-ports", "9-3"),
        ("portcullis.dev/exclude-outbound-ports", "10.0.0.0/8"),
        ("portcullis.dev/exclude-outbound-ports", "0"),
        ("portcullis.dev/opaque-ports", "3306,70000"),
        ("portcullis.dev/exclude-outbound-cidrs", "10.0.0.0/33"),
        ("portcullis.dev/exclude-outbound-cidrs", "25"),
    ] {
        let body = serde_json::to_vec(&with(key, value)).expect("json");
        let answer = review(&body, &cfg);
        assert!(
            matches!(&answer.outcome, Outcome::Denied(w) if w.contains(key) && w.contains(value)),
            "{key}={value}: {:?}",
            answer.outcome
        );
        assert_eq!(answer.body["response"]["allowed"], false, "{key}={value}");
    }
    for (key, value) in [
        ("portcullis.dev/exclude-inbound-ports", "22, 8000-8100"),
        (
            "portcullis.dev/exclude-outbound-cidrs",
            "10.0.0.0/8,fd00::/8,10.1.2.3",
        ),
    ] {
        let body = serde_json::to_vec(&with(key, value)).expect("json");
        let answer = review(&body, &cfg);
        assert!(
            matches!(answer.outcome, Outcome::Injected(_)),
            "{key}={value}: {:?}",
            answer.outcome
        );
    }
}

#[test]
fn with_a_controller_the_sidecar_follows_it_as_its_own_pod() {
    let mut cfg = InjectConfig::defaults();
    cfg.controller = "http://portcullis-controller.portcullis-system:15012".into();
    let (_, _, pod) = run("plain.json", &cfg);
    let pod = pod.expect("patched");
    let inits = pod["spec"]["initContainers"]
        .as_array()
        .expect("init containers");
    let proxy = &inits[1];
    assert_eq!(
        flag(proxy, "--controller").as_deref(),
        Some("http://portcullis-controller.portcullis-system:15012")
    );
    assert_eq!(
        env(proxy, "PORTCULLIS_POD_NAME").expect("pod name")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(proxy, "PORTCULLIS_POD_NAMESPACE").expect("namespace")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // Plaintext (a testbed controller): no token is mounted or sent.
    assert_eq!(flag(proxy, "--controller-token"), None);
    assert!(env(proxy, "PORTCULLIS_CONTROLLER_CA_PEM").is_none());
    validate("plain.json", &pod);
    // Without one, no --controller.
    let (_, _, pod) = run("plain.json", &InjectConfig::defaults());
    let pod = pod.expect("patched");
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(flag(proxy, "--controller"), None);
}

#[test]
fn over_tls_the_sidecar_verifies_the_controller_and_shows_its_projected_token() {
    let mut cfg = InjectConfig::defaults();
    cfg.controller = "https://portcullis-controller.portcullis-system.svc:15012".into();
    cfg.controller_ca_pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into();
    let (_, _, pod) = run("plain.json", &cfg);
    let pod = pod.expect("patched");
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(
        flag(proxy, "--controller-token").as_deref(),
        Some("/var/run/secrets/portcullis/token")
    );
    assert_eq!(
        env(proxy, "PORTCULLIS_CONTROLLER_CA_PEM").expect("ca")["value"],
        cfg.controller_ca_pem.as_str()
    );
    let mounts = proxy["volumeMounts"].as_array().expect("mounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/run/secrets/portcullis")
        .expect("token mount");
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("token volume");
    let token = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "portcullis");
    assert_eq!(token["path"], "token");
    assert_eq!(token["expirationSeconds"], 3600);
    assert_eq!(
        flag(proxy, "--identity-dir"),
        None,
        "no enrollment unless asked for"
    );
    validate("plain.json", &pod);

    // Enrolling with the controller's mesh CA: an in-memory identity volume, written by the
    // proxy alone.
    cfg.identity_from_controller = true;
    let (_, _, pod) = run("plain.json", &cfg);
    let pod = pod.expect("patched");
    let proxy = &pod["spec"]["initContainers"][1];
    let args = proxy["args"].as_array().expect("args");
    assert!(
        args.iter().any(|a| a == "--identity-from-controller"),
        "{args:?}"
    );
    assert_eq!(
        flag(proxy, "--identity-dir").as_deref(),
        Some("/var/run/portcullis/identity")
    );
    assert_eq!(
        flag(proxy, "--trust-domain").as_deref(),
        Some("cluster.local")
    );
    let mounts = proxy["volumeMounts"].as_array().expect("mounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/var/run/portcullis/identity")
        .expect("identity mount");
    assert_eq!(mount["readOnly"], false);
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("identity volume");
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
    assert_eq!(
        pod["metadata"]["annotations"]["portcullis.dev/mtls"], "enabled",
        "what tells the controller and peers that this pod speaks mTLS"
    );
    validate("plain.json", &pod);

    // The owner opts out: no enrollment, and the annotation stays `disabled`.
    let (_, _, pod) = run("mtls-disabled.json", &cfg);
    let pod = pod.expect("patched");
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(flag(proxy, "--identity-dir"), None);
    assert_eq!(
        pod["metadata"]["annotations"]["portcullis.dev/mtls"],
        "disabled"
    );
    assert!(
        flag(proxy, "--controller-token").is_some(),
        "it still follows the controller"
    );
    validate("mtls-disabled.json", &pod);
}
