//! What the controller writes into an AccessPolicy's `status`, so `kubectl get accesspolicies`
//! shows whether it loads and how many workloads it applies to: an `Accepted` condition
//! (`True`/`Valid` with its warnings, `False`/`Invalid` with every error at its field) and
//! `workloads`. Pure: the object and the count in, the status JSON out, and whether the stored
//! one already says it (a write comes back as a watch event; writing only on change keeps that
//! from looping). The `kube` source writes it.

use serde_json::{Value, json};

use crate::webhooks::validate::judge_object;

/// The longest condition message written; longer ones are cut at a line.
pub const MAX_MESSAGE: usize = 4096;

/// The status `object` (an AccessPolicy with `apiVersion` and `kind`) should have when it
/// applies to `workloads` pods; `now` (RFC 3339) is the transition time of a changed condition.
pub fn desired(object: &Value, workloads: usize, now: &str) -> Value {
    let meta = &object["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let name = meta["name"].as_str().unwrap_or_default();
    let generation = meta["generation"].as_i64().unwrap_or(0);
    let (_, result) = judge_object(object, ns, name);
    let (status, reason, message) = match result {
        Ok(w) if w.is_empty() => ("True", "Valid", "loaded".to_string()),
        Ok(w) => (
            "True",
            "Valid",
            format!("loaded with {} warning(s):\n{}", w.len(), cap(&w)),
        ),
        Err(e) => ("False", "Invalid", cap(&e)),
    };
    let old = accepted(&object["status"]);
    let since = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].as_str().unwrap_or(now),
        _ => now,
    };
    json!({
        "observedGeneration": generation,
        "workloads": workloads,
        "conditions": [{
            "type": "Accepted",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        }],
    })
}

/// The members of `status` the controller owns (others, if anyone writes them, are left alone
/// and not compared: a merge patch would never remove them, and comparing them would loop).
const OWNED: [&str; 3] = ["observedGeneration", "workloads", "conditions"];

/// Whether the stored `status` already says `desired`.
pub fn is_current(object: &Value, desired: &Value) -> bool {
    OWNED.iter().all(|k| object["status"][k] == desired[k])
}

/// The `Accepted` condition of a status.
fn accepted(status: &Value) -> Option<&Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Accepted")
}

/// The lines joined, at most [`MAX_MESSAGE`] bytes, cut at a line and saying how many more.
fn cap(errors: &[String]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if out.len() + e.len() + 1 > MAX_MESSAGE {
            out.push_str(&format!("… ({} more)", errors.len() - i));
            break;
        }
        out.push_str(e);
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(spec: Value, generation: i64, status: Value) -> Value {
        json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy",
               "metadata": {"name": "orders", "namespace": "shop", "generation": generation},
               "spec": spec, "status": status})
    }

    const T0: &str = "2026-12-01T00:00:00Z";
    const T1: &str = "2026-12-02T00:00:00Z";

    #[test]
    fn the_status_says_whether_it_loads_and_how_many_workloads_it_applies_to() {
        let good = json!({"inbound": {"default": "deny"}});
        let bad = json!({"inbound": {"rules": [{"name": "r", "action": "maybe"}]}});
        let warned = json!({"inbound": {"rules": [{"name": "r", "action": "allow", "http": [{"methods": ["get"]}]}]}});
        let cases = [
            (
                "valid",
                policy(good.clone(), 1, Value::Null),
                3,
                "True",
                "Valid",
                "loaded",
            ),
            (
                "invalid, at its field",
                policy(bad, 2, Value::Null),
                0,
                "False",
                "Invalid",
                "unknown variant `maybe`, expected one of allow, deny (at spec.inbound.rules[0].action)",
            ),
            (
                "warnings",
                policy(warned, 1, Value::Null),
                1,
                "True",
                "Valid",
                "loaded with 1 warning(s):\nAccessPolicy shop/orders:",
            ),
        ];
        for (name, object, n, status, reason, fragment) in cases {
            let s = desired(&object, n, T0);
            let c = &s["conditions"][0];
            assert_eq!(c["type"], "Accepted", "{name}");
            assert_eq!(c["status"], status, "{name}");
            assert_eq!(c["reason"], reason, "{name}");
            assert!(
                c["message"].as_str().expect("message").contains(fragment),
                "{name}: {c}"
            );
            assert_eq!(c["lastTransitionTime"], T0, "{name}");
            assert_eq!(s["workloads"], n, "{name}");
            assert_eq!(
                s["observedGeneration"], object["metadata"]["generation"],
                "{name}"
            );
            assert_eq!(
                c["observedGeneration"], object["metadata"]["generation"],
                "{name}"
            );
        }
    }

    #[test]
    fn a_status_is_written_only_when_it_changes_and_keeps_its_transition_time() {
        let spec = json!({"inbound": {"default": "deny"}});
        let first = desired(&policy(spec.clone(), 1, Value::Null), 2, T0);
        let stored = policy(spec.clone(), 1, first.clone());
        let again = desired(&stored, 2, T1);
        assert!(
            is_current(&stored, &again),
            "unchanged: no write, the time is kept"
        );
        let mut foreign = stored.clone();
        foreign["status"]["note"] = json!("someone else's");
        assert!(
            is_current(&foreign, &again),
            "what is not ours is not compared"
        );
        let more = desired(&stored, 3, T1);
        assert!(!is_current(&stored, &more), "a workload more");
        assert_eq!(
            more["conditions"][0]["lastTransitionTime"], T0,
            "still True"
        );
        let edited = desired(&policy(spec, 2, first.clone()), 2, T1);
        assert!(!is_current(&stored, &edited), "a new generation");
        let broken = policy(json!({"inbound": {"default": "sometimes"}}), 3, first);
        let refused = desired(&broken, 2, T1);
        assert_eq!(refused["conditions"][0]["status"], "False");
        assert_eq!(
            refused["conditions"][0]["lastTransitionTime"], T1,
            "a transition"
        );
    }

    #[test]
    fn a_long_message_is_cut_at_a_line() {
        let errors: Vec<String> = (0..200)
            .map(|i| format!("error {i}: {}", "x".repeat(60)))
            .collect();
        let m = cap(&errors);
        assert!(m.len() <= MAX_MESSAGE + 20, "{}", m.len());
        assert!(m.ends_with("more)"), "{m}");
        assert!(m.starts_with("error 0: "));
    }
}
