//! Properties of the patch over generated pods: it always applies to the pod it was built
//! for, never loses a container, volume or annotation, and a patched pod is never injected
//! again.

use portcullis_injector::config::InjectConfig;
use portcullis_injector::inject::{Plan, plan};
use proptest::prelude::*;
use serde_json::{Value, json};

fn pod() -> impl Strategy<Value = Value> {
    (
        1usize..4,
        0usize..3,
        prop::option::of(0usize..3),
        prop::option::of(prop::collection::btree_map(
            "[a-z]{1,8}",
            "[a-z0-9]{0,8}",
            0..3,
        )),
        any::<bool>(),
    )
        .prop_map(|(containers, inits, volumes, annotations, probe)| {
            let cs: Vec<Value> = (0..containers)
                .map(|i| {
                    let mut c = json!({"name": format!("c{i}"), "image": "x",
                        "ports": [{"name": format!("p{i}"), "containerPort": 8000 + i}]});
                    if probe {
                        c["readinessProbe"] =
                            json!({"httpGet": {"path": "/h", "port": format!("p{i}")}});
                        c["livenessProbe"] = json!({"tcpSocket": {"port": 8000 + i}});
                    }
                    c
                })
                .collect();
            let mut p = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"app": "a"}},
                "spec": {"containers": cs}});
            if inits > 0 {
                p["spec"]["initContainers"] = (0..inits)
                    .map(|i| json!({"name": format!("i{i}"), "image": "x"}))
                    .collect();
            }
            if let Some(n) = volumes {
                p["spec"]["volumes"] = (0..n)
                    .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
                    .collect();
            }
            if let Some(a) = annotations {
                p["metadata"]["annotations"] = serde_json::to_value(a).unwrap_or_default();
            }
            p
        })
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

proptest! {
    #[test]
    fn the_patch_applies_keeps_everything_and_is_not_repeated(p in pod(), native in any::<bool>()) {
        let mut cfg = InjectConfig::defaults();
        cfg.native_sidecar = native;
        let Ok(Plan::Inject(patch)) = plan(&p, "shop", &cfg) else {
            return Err(TestCaseError::fail("expected an injection"));
        };
        let mut patched = p.clone();
        prop_assert!(json_patch::patch(&mut patched, &patch).is_ok());
        let spec = (&p["spec"], &patched["spec"]);
        prop_assert_eq!(len(&spec.1["containers"]), len(&spec.0["containers"]) + usize::from(!native));
        prop_assert_eq!(len(&spec.1["initContainers"]), len(&spec.0["initContainers"]) + 1 + usize::from(native));
        prop_assert_eq!(len(&spec.1["volumes"]), len(&spec.0["volumes"]) + 2);
        prop_assert_eq!(&patched["spec"]["initContainers"][0]["name"], "portcullis-init");
        for (k, v) in p["metadata"]["annotations"].as_object().into_iter().flatten() {
            prop_assert_eq!(&patched["metadata"]["annotations"][k], v);
        }
        for (i, c) in p["spec"]["containers"].as_array().into_iter().flatten().enumerate() {
            prop_assert_eq!(&patched["spec"]["containers"][i]["name"], &c["name"]);
            prop_assert_eq!(&patched["spec"]["containers"][i]["image"], &c["image"]);
        }
        let again = plan(&patched, "shop", &cfg);
        prop_assert!(matches!(again, Ok(Plan::Skip(_))), "{:?}", again);
    }
}
