//! AdmissionReview bodies through the injector's review, with the default flags: never panics,
//! always answers a review with the request's uid, and a patch is base64 JSON Patch of `add`
//! operations that applies to the pod it came with.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis_injector::config::InjectConfig;
use portcullis_injector::review::{Outcome, review};
use serde_json::Value;

static CFG: LazyLock<InjectConfig> = LazyLock::new(InjectConfig::defaults);

fuzz_target!(|data: &[u8]| {
    let answer = review(data, &CFG);
    let body = &answer.body;
    let input: Option<Value> = serde_json::from_slice(data).ok();
    if let Outcome::Malformed(_) = answer.outcome {
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
        return;
    }
    // A review that was read is answered with its own apiVersion and kind (kube-core echoes
    // them; the API server only sends admission.k8s.io/v1 AdmissionReviews).
    let input = input.expect("a review that was read is JSON");
    assert_eq!(body["apiVersion"], input["apiVersion"]);
    assert_eq!(body["kind"], input["kind"]);
    assert_eq!(body["response"]["uid"], input["request"]["uid"]);
    assert!(body["response"]["allowed"].is_boolean(), "{body}");
    match &answer.outcome {
        Outcome::Injected(n) => {
            assert_eq!(body["response"]["patchType"], "JSONPatch");
            let b64 = body["response"]["patch"].as_str().expect("patch");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64 patch");
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("JSON patch");
            assert_eq!(patch.0.len(), *n);
            assert!(
                patch
                    .0
                    .iter()
                    .all(|op| matches!(op, json_patch::PatchOperation::Add(_))),
                "only add operations: {patch:?}"
            );
            let mut pod = input["request"]["object"].clone();
            if let Err(e) = json_patch::patch(&mut pod, &patch) {
                panic!(
                    "the patch does not apply to the pod: {e}\npatch: {patch:?}\npod: {}",
                    input["request"]["object"]
                );
            }
        }
        _ => assert!(body["response"].get("patch").is_none(), "{body}"),
    }
});
