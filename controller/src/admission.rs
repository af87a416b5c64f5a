//! What admission judges a policy write against, taken from the last snapshot applied: the
//! `PolicyGuardrail`s, each namespace's labels, and which policies are default-deny baselines
//! of their namespace. Pure: a snapshot in, facts out; the publisher keeps the current ones.

use std::collections::BTreeMap;
use std::sync::Arc;

use portcullis_config::guardrail::Guardrail;
use portcullis_config::guardrail::check::{Baselines, Scope};
use portcullis_config::snapshot::Snapshot;

/// The cluster as admission sees it.
#[derive(Debug, Default)]
pub struct Facts {
    /// The guardrails, in name order.
    pub guardrails: Vec<Arc<Guardrail>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    baselines: Baselines,
}

impl Facts {
    /// The facts of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut guardrails = snapshot.guardrails.clone();
        guardrails.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            guardrails,
            namespaces: snapshot.cluster.namespaces.clone(),
            baselines: Baselines::of(&snapshot.policies),
        }
    }

    /// The scope of a write of `kind` `name` to `namespace`: its labels (none when the namespace
    /// is not known yet), and whether a baseline other than that policy is in place there.
    pub fn scope<'a>(&'a self, namespace: &'a str, policy: Option<(&str, &str)>) -> Scope<'a> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Scope {
            namespace,
            labels: self.namespaces.get(namespace).unwrap_or(&NONE),
            baseline_elsewhere: self.baselines.elsewhere(namespace, policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_are_known_per_namespace_and_a_policy_is_not_its_own_other() {
        let snapshot = Snapshot::parse(&[(
            "c.yaml".into(),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec: {podSelector: {matchLabels: {app: web}}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: z}\nspec: {rules: {forbidAllowAll: true}}\n---\napiVersion: portcullis.dev/v1alpha1\nkind: PolicyGuardrail\nmetadata: {name: a}\nspec: {rules: {requireIngress: true}}\n".into(),
        )]);
        assert!(snapshot.errors.is_empty(), "{:?}", snapshot.errors);
        let facts = Facts::of(&snapshot);
        let names: Vec<&str> = facts.guardrails.iter().map(|g| &*g.name).collect();
        assert_eq!(names, ["a", "z"]);
        let s = facts.scope("shop", Some(("NetworkPolicy", "web")));
        assert!(s.baseline_elsewhere);
        assert_eq!(s.labels.get("team").map(String::as_str), Some("a"));
        assert!(
            !facts
                .scope("shop", Some(("NetworkPolicy", "deny")))
                .baseline_elsewhere
        );
        assert!(
            facts
                .scope("shop", Some(("AccessPolicy", "deny")))
                .baseline_elsewhere
        );
        assert!(!facts.scope("other", None).baseline_elsewhere);
        assert!(facts.scope("other", None).labels.is_empty());
    }
}
