//! The Kubernetes manifests in deploy/kubernetes: every resource the kustomization lists
//! validates strictly against 1.33 with `kubernetes-validate` (fails loudly if it is missing),
//! every manifest is listed, and the webhooks point at what the controller serves.

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kubernetes")
}

fn resources() -> Vec<String> {
    let text = std::fs::read_to_string(dir().join("kustomization.yaml")).expect("kustomization");
    text.lines()
        .skip_while(|l| !l.starts_with("resources:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.trim().strip_prefix("- ").map(str::to_string))
        .collect()
}

#[test]
fn every_listed_manifest_validates_strictly_against_1_33() {
    let listed = resources();
    assert!(listed.len() >= 6, "{listed:?}");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .expect("dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, on_disk, "every manifest is in the kustomization");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.33.0"])
        .args(listed.iter().map(|f| dir().join(f)))
        .output()
        .expect("kubernetes-validate must be installed (pip install kubernetes-validate)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // One "passed" line per resource: nothing was skipped as unknown.
    let passed = report.matches(" passed for resource ").count();
    let documents: usize = listed
        .iter()
        .map(|f| {
            std::fs::read_to_string(dir().join(f))
                .expect("read")
                .split("\n---")
                .filter(|d| d.contains("kind:"))
                .count()
        })
        .sum();
    assert_eq!(passed, documents, "{report}");
}

#[test]
fn the_webhooks_point_at_what_the_controller_serves() {
    let mutating =
        std::fs::read_to_string(dir().join("mutatingwebhookconfiguration.yaml")).expect("read");
    assert_eq!(mutating.matches("path: /mutate").count(), 2);
    assert_eq!(mutating.matches("sideEffects: None").count(), 2);
    assert_eq!(
        mutating
            .matches("service:\n        name: portcullis-controller\n")
            .count(),
        2
    );
    assert!(mutating.contains("reinvocationPolicy: IfNeeded"));
    let validating =
        std::fs::read_to_string(dir().join("validatingwebhookconfiguration.yaml")).expect("read");
    assert_eq!(validating.matches("path: /validate").count(), 4);
    assert_eq!(validating.matches("sideEffects: None").count(), 4);
    assert_eq!(
        validating
            .matches("service:\n        name: portcullis-controller\n")
            .count(),
        4
    );
    // What a write does while no controller answers: a NetworkPolicy Kubernetes accepts is
    // never blocked; Portcullis' own kinds wait for the controller.
    for (resource, failure, delete) in [
        ("networkpolicies", "Ignore", true),
        ("accesspolicies", "Fail", true),
        ("policyguardrails", "Fail", false),
        ("configmaps", "Ignore", false),
    ] {
        let hook = validating
            .split("  - name: ")
            .find(|h| h.contains(&format!("resources: [\"{resource}\"]")))
            .unwrap_or_else(|| panic!("{resource}"));
        assert!(
            hook.contains(&format!("failurePolicy: {failure}")),
            "{resource}"
        );
        assert_eq!(hook.contains("\"DELETE\""), delete, "{resource}");
    }
    for webhooks in [&mutating, &validating] {
        assert!(webhooks.contains("inject-ca-from: portcullis-system/portcullis-controller"));
    }
    let controller = std::fs::read_to_string(dir().join("controller.yaml")).expect("read");
    assert!(controller.contains("containerPort: 8443"));
    assert!(
        controller.contains("--webhook-tls-cert=") && controller.contains("--webhook-tls-key=")
    );
    assert!(controller.contains("--controller-ca=") && controller.contains("--proxy-image="));
    assert!(controller.contains("port: 443") && controller.contains("targetPort: webhook"));
}
