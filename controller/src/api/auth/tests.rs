//! Tables: who may watch what, SPIFFE IDs, token claims and TokenReview statuses.

use serde_json::json;

use super::*;

fn id(ns: &str, sa: &str) -> WorkloadId {
    WorkloadId {
        namespace: ns.into(),
        service_account: sa.into(),
    }
}

fn token(ns: &str, sa: &str, pod: Option<&str>) -> Caller {
    Caller::Token(TokenIdentity {
        id: id(ns, sa),
        pod: pod.map(String::from),
        expires: None,
    })
}

fn view(known: bool, sa: &str) -> v1::View {
    v1::View {
        known,
        workload: Some(v1::Workload {
            namespace: "shop".into(),
            pod: "web-1".into(),
            service_account: sa.into(),
            ..v1::Workload::default()
        }),
        ..v1::View::default()
    }
}

#[test]
fn a_watch_is_admitted_only_for_the_callers_own_namespace_and_pod() {
    let cert = Caller::Certificate(id("shop", "web"), None);
    // (caller, pod watched, the service account every view must have, or the refusal)
    type Case<'a> = (Option<Caller>, &'a str, Result<Option<&'a str>, &'a str>);
    let cases: Vec<Case<'_>> = vec![
        (None, "web-1", Err("no credentials")),
        (Some(Caller::Anyone), "web-1", Ok(None)),
        (Some(cert.clone()), "web-1", Ok(Some("web"))),
        (
            Some(Caller::Certificate(id("other", "web"), None)),
            "web-1",
            Err("namespace \"other\""),
        ),
        (
            Some(token("shop", "web", Some("web-1"))),
            "web-1",
            Ok(Some("web")),
        ),
        (
            Some(token("shop", "web", Some("web-2"))),
            "web-1",
            Err("bound to pod \"web-2\""),
        ),
        (
            Some(token("shop", "web", None)),
            "web-1",
            Err("not bound to a pod"),
        ),
        (
            Some(token("other", "web", Some("web-1"))),
            "web-1",
            Err("namespace \"other\""),
        ),
    ];
    for (caller, pod, want) in cases {
        let got = admit(caller.as_ref(), "shop", pod);
        match (got, want) {
            (Ok(g), Ok(sa)) => assert_eq!(g.service_account.as_deref(), sa, "{caller:?}"),
            (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{caller:?}: {e}"),
            (got, want) => panic!("{caller:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn every_view_must_be_of_the_callers_service_account() {
    let grant = admit(
        Some(&Caller::Certificate(id("shop", "web"), None)),
        "shop",
        "web-1",
    )
    .expect("admitted");
    assert_eq!(grant.permits(&view(true, "web")), Ok(()));
    assert_eq!(grant.permits(&view(false, "")), Ok(()), "unknown: empty");
    assert_eq!(
        grant.permits(&view(true, "payments")),
        Err(Denied::ServiceAccount {
            caller: "web".into(),
            pod: "payments".into()
        })
    );
    let anyone = admit(Some(&Caller::Anyone), "shop", "web-1").expect("admitted");
    assert_eq!(anyone.permits(&view(true, "payments")), Ok(()));
}

#[test]
fn a_certificate_grant_ends_when_the_certificate_does() {
    let until = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    let caller = Caller::Certificate(id("shop", "web"), Some(until));
    let grant = admit(Some(&caller), "shop", "web-1").expect("admitted");
    assert_eq!(grant.until, Some(until));
}

#[test]
fn spiffe_ids_of_the_trust_domain_name_a_workload() {
    let td = "cluster.local";
    let cases = [
        (
            "spiffe://cluster.local/ns/shop/sa/web",
            Some(id("shop", "web")),
        ),
        ("spiffe://other.domain/ns/shop/sa/web", None),
        ("spiffe://cluster.localx/ns/shop/sa/web", None),
        ("spiffe://cluster.local/ns/shop/sa/web/extra", None),
        ("spiffe://cluster.local/ns//sa/web", None),
        ("spiffe://cluster.local/sa/web/ns/shop", None),
        ("https://cluster.local/ns/shop/sa/web", None),
    ];
    for (uri, want) in cases {
        assert_eq!(spiffe_workload(uri, td), want, "{uri}");
    }
}

fn claims(v: serde_json::Value) -> HashMap<String, Value> {
    serde_json::from_value(v).expect("object")
}

fn projected(iss: &str, aud: serde_json::Value, sub: &str, ns: &str) -> HashMap<String, Value> {
    claims(json!({
        "iss": iss, "aud": aud, "sub": sub, "exp": 2_000_000_000u64,
        "kubernetes.io": {"namespace": ns, "pod": {"name": "web-1", "uid": "u"},
                          "serviceaccount": {"name": "web", "uid": "s"}}
    }))
}

#[test]
fn projected_token_claims_name_their_pod_or_are_refused() {
    let iss = "https://kubernetes.default.svc";
    let sub = "system:serviceaccount:shop:web";
    let ok =
        token_identity(&projected(iss, json!(["portcullis"]), sub, "shop"), iss).expect("valid");
    assert_eq!(ok.id, id("shop", "web"));
    assert_eq!(ok.pod.as_deref(), Some("web-1"));
    assert_eq!(
        ok.expires,
        Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
    );
    let refused = [
        (
            projected("https://evil", json!(["portcullis"]), sub, "shop"),
            "issuer",
        ),
        (
            projected(iss, json!(["https://kubernetes.default.svc"]), sub, "shop"),
            "audience",
        ),
        (
            projected(iss, json!("portcullis-x"), sub, "shop"),
            "audience",
        ),
        (
            projected(iss, json!(["portcullis"]), "alice", "shop"),
            "service account",
        ),
        (
            projected(iss, json!(["portcullis"]), sub, "other"),
            "disagree",
        ),
    ];
    for (c, why) in refused {
        let err = token_identity(&c, iss).expect_err("refused");
        assert!(err.to_string().contains(why), "{err} should say {why}");
    }
}

#[test]
fn token_review_statuses_give_the_service_account_and_pod() {
    let ok = review_identity(&json!({
        "authenticated": true, "audiences": ["portcullis"],
        "user": {"username": "system:serviceaccount:shop:web",
                 "extra": {"authentication.kubernetes.io/pod-name": ["web-1"]}}
    }))
    .expect("valid");
    assert_eq!(
        (ok.id, ok.pod.as_deref()),
        (id("shop", "web"), Some("web-1"))
    );
    let refused = [
        (
            json!({"authenticated": false, "error": "token expired"}),
            "token expired",
        ),
        (
            json!({"authenticated": true, "audiences": ["api"],
                "user": {"username": "system:serviceaccount:shop:web"}}),
            "audience",
        ),
        (
            json!({"authenticated": true, "audiences": ["portcullis"],
                "user": {"username": "admin"}}),
            "service account",
        ),
        (
            json!({"authenticated": true, "audiences": ["portcullis"],
                "user": {"username": "system:serviceaccount:shop:web:x"}}),
            "service account",
        ),
    ];
    for (status, why) in refused {
        let err = review_identity(&status).expect_err("refused");
        assert!(err.to_string().contains(why), "{err} should say {why}");
    }
}
