//! The `kube` source driving kube-rs for real against a local server that speaks the API
//! server's list/watch protocol: lists with `metadata.resourceVersion`, watches as chunked JSON
//! event lines (ADDED, MODIFIED, DELETED, BOOKMARK) from a resourceVersion, and `410 Gone` (an
//! ERROR event with a Status) for a resourceVersion older than what it keeps, which makes the
//! client relist; and AccessPolicies' status subresource (a JSON merge patch of `status` only,
//! a MODIFIED event when it changed something). What stays unproven without a real API server:
//! authentication, RBAC, pagination (`continue`), protobuf encoding, and the API server's own
//! timing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_api::v1::WatchRequest;
use portcullis_api::v1::sidecar_client::SidecarClient;
use portcullis_controller::api::tls::TlsFiles;
use portcullis_controller::index::Versioned;
use portcullis_controller::server::Controller;
use portcullis_controller::settings::{ApiSecurity, Settings, Source, TokenCheck};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// One stored change.
#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: &'static str,
    object: Value,
}

/// The fake API server's state: objects by collection path, the event history from
/// `oldest` on, and a channel for new events.
#[derive(Debug)]
struct State {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    history: Vec<(String, Event)>,
    oldest: u64,
    events: broadcast::Sender<(String, Event)>,
    /// Bumped to end every open watch (the client then re-watches from its resourceVersion).
    epoch: broadcast::Sender<()>,
    /// How many watches were answered 410 Gone.
    gone: usize,
    /// How many lists were served.
    lists: usize,
    /// The collections watched.
    watched: std::collections::BTreeSet<String>,
    /// The specs of the TokenReviews asked for.
    reviews: Vec<Value>,
    /// The status merge patches applied, by `namespace/name`.
    patches: Vec<(String, Value)>,
}

#[derive(Debug, Clone)]
struct Fake(Arc<Mutex<State>>);

/// What a watch starts with: the backlog, the current resourceVersion, the live events and
/// the signal that ends it.
type Watch = (
    Vec<Event>,
    u64,
    broadcast::Receiver<(String, Event)>,
    broadcast::Receiver<()>,
);

fn collection(kind: &str) -> &'static str {
    match kind {
        "Namespace" => "/api/v1/namespaces",
        "Pod" => "/api/v1/pods",
        "Service" => "/api/v1/services",
        "EndpointSlice" => "/apis/discovery.k8s.io/v1/endpointslices",
        "AccessPolicy" => "/apis/portcullis.dev/v1alpha1/accesspolicies",
        "PolicyGuardrail" => "/apis/portcullis.dev/v1alpha1/policyguardrails",
        _ => "/apis/networking.k8s.io/v1/networkpolicies",
    }
}

impl Fake {
    /// A server; `crd`: whether AccessPolicies are a served resource.
    fn new(crd: bool) -> Self {
        let mut objects = BTreeMap::new();
        let mut kinds = vec![
            "Namespace",
            "Pod",
            "Service",
            "EndpointSlice",
            "NetworkPolicy",
        ];
        if crd {
            kinds.extend(["AccessPolicy", "PolicyGuardrail"]);
        }
        for kind in kinds {
            objects.insert(collection(kind).to_string(), BTreeMap::new());
        }
        Fake(Arc::new(Mutex::new(State {
            rv: 100,
            objects,
            history: Vec::new(),
            oldest: 100,
            events: broadcast::channel(1024).0,
            epoch: broadcast::channel(16).0,
            gone: 0,
            lists: 0,
            watched: Default::default(),
            reviews: Vec::new(),
            patches: Vec::new(),
        })))
    }

    /// Creates or replaces an object (ADDED or MODIFIED).
    fn put(&self, mut object: Value) {
        let mut s = self.0.lock().expect("lock");
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let path = collection(object["kind"].as_str().unwrap_or_default()).to_string();
        let key = format!(
            "{}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or_default(),
            object["metadata"]["name"].as_str().unwrap_or_default()
        );
        let existed = s
            .objects
            .get_mut(&path)
            .expect("collection")
            .insert(key, object.clone())
            .is_some();
        let event = Event {
            rv,
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object,
        };
        s.history.push((path.clone(), event.clone()));
        let _ = s.events.send((path, event));
    }

    /// Forgets the history (as etcd compaction does) and ends every open watch: clients come
    /// back with a resourceVersion that is now too old, get 410, and relist.
    fn compact(&self) {
        let mut s = self.0.lock().expect("lock");
        s.history.clear();
        // Every resourceVersion a client holds is now too old.
        s.oldest = s.rv + 1;
        let _ = s.epoch.send(());
    }

    fn served(&self, path: &str) -> bool {
        self.0.lock().expect("lock").objects.contains_key(path)
    }

    fn list(&self, path: &str) -> Value {
        let mut s = self.0.lock().expect("lock");
        s.lists += 1;
        let items: Vec<Value> = s
            .objects
            .get(path)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let kind = match path {
            "/api/v1/namespaces" => "NamespaceList",
            "/api/v1/pods" => "PodList",
            "/apis/portcullis.dev/v1alpha1/accesspolicies" => "AccessPolicyList",
            "/apis/portcullis.dev/v1alpha1/policyguardrails" => "PolicyGuardrailList",
            _ => "NetworkPolicyList",
        };
        json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items})
    }

    /// The events a watch from `from` gets first (`Err`: 410 Gone), and the live channels.
    fn watch(&self, path: &str, from: u64) -> Result<Watch, ()> {
        let mut s = self.0.lock().expect("lock");
        s.watched.insert(path.to_string());
        if from < s.oldest {
            s.gone += 1;
            return Err(());
        }
        let backlog = s
            .history
            .iter()
            .filter(|(p, e)| p == path && e.rv > from)
            .map(|(_, e)| e.clone())
            .collect();
        Ok((backlog, s.rv, s.events.subscribe(), s.epoch.subscribe()))
    }
}

fn line(v: &Value) -> Result<Frame<Bytes>, Infallible> {
    Ok(Frame::data(Bytes::from(format!("{v}\n"))))
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn answer(fake: &Fake, path: &str, query: &str) -> hyper::Response<Body> {
    if !fake.served(path) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"});
        let body = Full::new(Bytes::from(status.to_string())).boxed_unsync();
        return hyper::Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(body)
            .expect("response");
    }
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if params.get("watch") != Some(&"true") {
        let body = Full::new(Bytes::from(fake.list(path).to_string())).boxed_unsync();
        return hyper::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .expect("response");
    }
    let from = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let path = path.to_string();
    let stream = match fake.watch(&path, from) {
        Err(()) => {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410, "message": "too old resource version"}});
            futures_util::stream::iter(vec![line(&gone)]).boxed()
        }
        Ok((backlog, now, mut live, mut epoch)) => {
            let mut first: Vec<Result<Frame<Bytes>, Infallible>> = backlog
                .iter()
                .map(|e| line(&json!({"type": e.kind, "object": e.object})))
                .collect();
            let kind = [
                ("pods", "Pod"),
                ("namespaces", "Namespace"),
                ("services", "Service"),
                ("endpointslices", "EndpointSlice"),
                ("accesspolicies", "AccessPolicy"),
                ("policyguardrails", "PolicyGuardrail"),
            ]
            .into_iter()
            .find(|(end, _)| path.ends_with(end))
            .map_or("NetworkPolicy", |(_, kind)| kind);
            first.push(line(&json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": now.to_string()}}})));
            let rest = async_stream(move |tx| async move {
                loop {
                    // The end of a watch is seen before any event sent after it.
                    tokio::select! {
                        biased;
                        _ = epoch.recv() => return,
                        e = live.recv() => match e {
                            Ok((p, e)) if p == path => {
                                if tx.send(line(&json!({"type": e.kind, "object": e.object}))).await.is_err() { return; }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        },
                    }
                }
            });
            futures_util::stream::iter(first).chain(rest).boxed()
        }
    };
    hyper::Response::builder()
        .header("content-type", "application/json")
        .body(http_body_util::BodyExt::boxed_unsync(StreamBody::new(
            stream,
        )))
        .expect("response")
}

/// A request's whole body (empty when it cannot be read).
async fn body_of(req: hyper::Request<hyper::body::Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews` as the API server answers it: the
/// token whose signature part is `valid-<pod>` is pod `<pod>` of service account x:default,
/// for the audiences asked;
/// anything else is not authenticated. Each review's spec is kept.
async fn review(fake: &Fake, req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Body> {
    let path = req.uri().path().to_string();
    let body = body_of(req).await;
    let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    fake.0
        .lock()
        .expect("lock")
        .reviews
        .push(asked["spec"].clone());
    let token = asked["spec"]["token"].as_str().unwrap_or_default();
    let status = match token
        .rsplit('.')
        .next()
        .and_then(|sig| sig.strip_prefix("valid-"))
    {
        Some(pod) => json!({"authenticated": true, "audiences": asked["spec"]["audiences"],
            "user": {"username": "system:serviceaccount:x:default", "groups": ["system:serviceaccounts"],
                     "extra": {"authentication.kubernetes.io/pod-name": [pod]}}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let answer = json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": null}, "spec": asked["spec"], "status": status});
    hyper::Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())).boxed_unsync())
        .expect("response")
}

/// RFC 7386 JSON merge patch: `patch` onto `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in p {
        match v {
            Value::Null => {
                target.as_object_mut().expect("object").remove(k);
            }
            v => merge(&mut target[k], v),
        }
    }
}

/// A `Status` as the API server answers a failure with.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// `PATCH …/namespaces/NS/accesspolicies/NAME/status` as the API server answers it for a
/// status subresource: a JSON merge patch (`application/merge-patch+json`) of which only
/// `status` is applied, a new resourceVersion and a MODIFIED event (none for a patch that
/// changes nothing); 404 for an unknown object,
/// 415 for another patch type.
async fn patch_status(
    fake: &Fake,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let path = req.uri().path().to_string();
    let merge_patch = req
        .headers()
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"application/merge-patch+json"));
    let body = body_of(req).await;
    let reply = |code: u16, v: Value| {
        hyper::Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
            .expect("response")
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [
        "apis",
        "portcullis.dev",
        "v1alpha1",
        "namespaces",
        ns,
        "accesspolicies",
        name,
        "status",
    ] = parts.as_slice()
    else {
        return reply(
            404,
            failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    if !merge_patch {
        return reply(
            415,
            failure(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format",
            ),
        );
    }
    let key = format!("{ns}/{name}");
    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
    let stored = fake
        .0
        .lock()
        .expect("lock")
        .objects
        .get(collection("AccessPolicy"))
        .and_then(|o| o.get(&key))
        .cloned();
    let Some(mut object) = stored else {
        let message = format!("accesspolicies.portcullis.dev \"{name}\" not found");
        return reply(404, failure(404, "NotFound", &message));
    };
    let before = object.clone();
    merge(&mut object["status"], &patch["status"]);
    fake.0
        .lock()
        .expect("lock")
        .patches
        .push((key.clone(), patch));
    if object == before {
        // A patch that changes nothing is no write: same resourceVersion, no event.
        return reply(200, before);
    }
    fake.put(object);
    let stored = fake.0.lock().expect("lock").objects[collection("AccessPolicy")][&key].clone();
    reply(200, stored)
}

/// A stream fed by a task.
fn async_stream<F, Fut>(
    f: F,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

use futures_util::StreamExt as _;

async fn serve(fake: Fake) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let fake = fake.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let fake = fake.clone();
                        async move {
                            if req.method() == hyper::Method::POST {
                                return Ok::<_, Infallible>(review(&fake, req).await);
                            }
                            if req.method() == hyper::Method::PATCH {
                                return Ok::<_, Infallible>(patch_status(&fake, req).await);
                            }
                            let resp = answer(
                                &fake,
                                req.uri().path(),
                                req.uri().query().unwrap_or_default(),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A controller on the `kube` source, its API secured by `api_security`, and a client of
/// `fake` for it to run with.
async fn start(fake: &Fake, api_security: ApiSecurity) -> (Controller, kube::Client) {
    let addr = serve(fake.clone()).await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let controller = Controller::bind(Settings {
        source: Source::Kube,
        trust_domain: "cluster.local".into(),
        api_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        source_poll: Duration::from_secs(2),
        api_security,
        webhooks: None,
        ca: None,
    })
    .await
    .expect("bind");
    (controller, client)
}

/// A controller on the `kube` source talking to `fake`, and the watch of x/a's view.
async fn follow(fake: &Fake) -> tokio::sync::watch::Receiver<Arc<Versioned>> {
    let (controller, client) = start(fake, ApiSecurity::Plaintext).await;
    let publisher = controller.publisher.clone();
    tokio::spawn(controller.run_with(Some(client)));
    publisher
        .subscribe(("x".into(), "a".into()))
        .expect("subscribed")
}

fn pod(name: &str, label: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "x", "labels": {"pod": label}},
           "spec": {"containers": [{"name": "app", "image": "app"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn the_kube_source_follows_lists_watches_and_relists_after_410() {
    let fake = Fake::new(false);
    fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "labels": {"ns": "x"}}}));
    fake.put(pod("a", "a", "10.9.0.1"));
    fake.put(pod("b", "b", "10.9.0.2"));
    fake.put(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "from-b", "namespace": "x"},
                    "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}}));
    let rx = follow(&fake).await;
    let selected = |rx: &tokio::sync::watch::Receiver<Arc<Versioned>>| {
        let v = rx.borrow().view();
        (
            v.known,
            v.pods.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            v.documents.len(),
        )
    };
    eventually("the listed cluster is indexed", || {
        selected(&rx) == (true, vec!["b".to_string()], 1)
    })
    .await;

    // A watch event: b is relabelled, so x's policy selects nobody.
    fake.put(pod("b", "other", "10.9.0.2"));
    let took = eventually("the relabel arrives through the watch", || {
        selected(&rx).1.is_empty()
    })
    .await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Compaction: every watch ends and comes back with a resourceVersion that is gone; the
    // server says 410, the client relists — and what changed meanwhile is seen.
    fake.compact();
    fake.put(pod("c", "b", "10.9.0.3"));
    eventually("after 410 and a relist, c (pod=b) is selected", || {
        selected(&rx).1 == vec!["c".to_string()]
    })
    .await;
    fake.put(pod("b", "b", "10.9.0.2"));
    eventually("and watching goes on", || {
        selected(&rx).1 == vec!["b".to_string(), "c".to_string()]
    })
    .await;
    let s = fake.0.lock().expect("lock");
    assert!(s.gone >= 1, "a watch was answered 410 Gone");
    assert!(
        !s.watched.iter().any(|p| p.contains("portcullis.dev")),
        "no CRDs, no watches of them: {:?}",
        s.watched
    );
    assert!(
        s.lists >= 6,
        "five lists (namespaces, pods, services, endpointslices, networkpolicies), then at least one relist: {}",
        s.lists
    );
}

#[tokio::test]
async fn access_policy_custom_resources_are_watched_where_their_crd_is_installed() {
    let fake = Fake::new(true);
    fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    fake.put(pod("a", "a", "10.9.0.1"));
    fake.put(pod("b", "b", "10.9.0.2"));
    fake.put(json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "reads", "namespace": "x"},
                    "spec": {"inbound": {"default": "deny", "rules": [{"name": "from-b", "action": "allow", "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}}}));
    let rx = follow(&fake).await;
    eventually(
        "the AccessPolicy is in x/a's view, its podSelector resolved",
        || {
            let v = rx.borrow().view();
            v.documents.iter().any(|d| d.yaml.contains("from-b"))
                && v.pods.iter().any(|p| p.name == "b")
        },
    )
    .await;
    let guardrails = "/apis/portcullis.dev/v1alpha1/policyguardrails";
    eventually("PolicyGuardrails are watched too", || {
        fake.0.lock().expect("lock").watched.contains(guardrails)
    })
    .await;
}

/// The stored status of AccessPolicy `x/name`.
fn status_of(fake: &Fake, name: &str) -> Value {
    let s = fake.0.lock().expect("lock");
    s.objects[collection("AccessPolicy")]
        .get(&format!("x/{name}"))
        .map(|o| o["status"].clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn access_policies_get_a_status_saying_whether_they_load_and_what_they_apply_to() {
    let fake = Fake::new(true);
    fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    fake.put(pod("a", "a", "10.9.0.1"));
    fake.put(pod("b", "b", "10.9.0.2"));
    fake.put(json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "good", "namespace": "x", "generation": 1},
                    "spec": {"inbound": {"default": "deny"}}}));
    fake.put(json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "bad", "namespace": "x", "generation": 4},
                    "spec": {"inbound": {"rules": [{"name": "r", "action": "maybe"}]}}}));
    let _rx = follow(&fake).await;
    // Written although the snapshot holding `bad` is not applied (fail static).
    eventually("both statuses written", || {
        let (good, bad) = (status_of(&fake, "good"), status_of(&fake, "bad"));
        good["conditions"][0]["status"] == "True" && bad["conditions"][0]["status"] == "False"
    })
    .await;
    let good = status_of(&fake, "good");
    assert_eq!(good["workloads"], 2, "{good}");
    assert_eq!(good["observedGeneration"], 1);
    assert_eq!(good["conditions"][0]["type"], "Accepted");
    assert_eq!(good["conditions"][0]["reason"], "Valid");
    let bad = status_of(&fake, "bad");
    assert_eq!(bad["conditions"][0]["reason"], "Invalid");
    assert_eq!(bad["conditions"][0]["observedGeneration"], 4);
    let message = bad["conditions"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown variant `maybe`")
            && message.contains("(at spec.inbound.rules[0].action)"),
        "{message}"
    );
    fake.put(pod("c", "c", "10.9.0.3"));
    eventually("a third pod counted", || {
        status_of(&fake, "good")["workloads"] == 3
    })
    .await;
    // Settled: a status write comes back as an event, and is not written again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let patches = fake.0.lock().expect("lock").patches.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        fake.0.lock().expect("lock").patches.len(),
        patches,
        "no write loop"
    );
    assert!(patches <= 4, "{patches} patches for 3 changes");
}

#[tokio::test]
async fn the_fake_status_subresource_patches_status_only_as_the_api_server_does() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let fake = Fake::new(true);
    fake.put(json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "p", "namespace": "x"},
                    "spec": {"inbound": {"default": "deny"}}, "status": {"workloads": 1, "note": "kept"}}));
    let addr = serve(fake.clone()).await;
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    );
    let api = kube::Api::<DynamicObject>::namespaced_with(client, "x", &resource);
    let patch = json!({"spec": {"inbound": {"default": "allow"}}, "status": {"workloads": 2}});
    let written = api
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    assert_eq!(
        written.data["spec"]["inbound"]["default"], "deny",
        "spec ignored"
    );
    assert_eq!(
        written.data["status"],
        json!({"workloads": 2, "note": "kept"})
    );
    let rv = written.metadata.resource_version.clone();
    let again = api
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patched");
    assert_eq!(again.metadata.resource_version, rv, "a no-op is no write");
    let missing = api
        .patch_status("q", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("unknown");
    assert!(
        matches!(&missing, kube::Error::Api(e) if e.code == 404),
        "{missing:?}"
    );
    // The two that reached an object are recorded.
    assert_eq!(fake.0.lock().expect("lock").patches.len(), 2);
}

/// A self-signed serving certificate for 127.0.0.1 in `dir`: the TLS files.
fn serving_cert(dir: &std::path::Path) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("mkdir");
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).expect("write");
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).expect("write");
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: None,
    }
}

#[tokio::test]
async fn in_cluster_a_sidecars_token_is_reviewed_by_the_api_server() {
    let fake = Fake::new(false);
    fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    fake.put(pod("a", "a", "10.0.0.1"));
    let dir = std::env::temp_dir().join(format!("portcullis-review-{}", std::process::id()));
    let files = serving_cert(&dir);
    let ca = std::fs::read_to_string(&files.cert).expect("ca");
    let security = ApiSecurity::Tls {
        files,
        tokens: TokenCheck::Review,
    };
    let (controller, client) = start(&fake, security).await;
    let url = format!("https://{}", controller.api_addr().expect("addr"));
    let publisher = controller.publisher.clone();
    tokio::spawn(controller.run_with(Some(client)));
    let mut views = publisher
        .subscribe(("x".into(), "a".into()))
        .expect("subscribed");
    views.wait_for(|v| v.known()).await.expect("indexed");

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let channel = Endpoint::from_shared(url)
        .expect("url")
        .tls_config(tls)
        .expect("tls");
    let mut api = SidecarClient::new(channel.connect().await.expect("connect"));
    let watch = async |api: &mut SidecarClient<_>, pod: &str, token: &str| {
        let mut request = tonic::Request::new(WatchRequest {
            namespace: "x".into(),
            pod: pod.into(),
        });
        let bearer = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", bearer);
        let mut stream = api.watch(request).await?.into_inner();
        stream.message().await.map(|m| m.is_some_and(|v| v.known))
    };
    // Shaped like projected tokens (the API server checks the signature; here the fake
    // reads its last part).
    let jwt = |aud: &str, sig: &str| {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 600;
        let claims = json!({"aud": [aud], "exp": exp}).to_string();
        format!(
            "{}.{}.{sig}",
            b64(b"{\"alg\":\"RS256\"}"),
            b64(claims.as_bytes())
        )
    };
    let valid = jwt("portcullis", "valid-a");
    assert_eq!(watch(&mut api, "a", &valid).await.ok(), Some(true));
    let refused = watch(&mut api, "a", &jwt("portcullis", "stolen"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("invalid bearer token"),
        "{refused:?}"
    );
    let other = watch(&mut api, "b", &valid).await.expect_err("refused");
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    // Refused without asking the API server: no JWT, another audience.
    for junk in ["junk".to_string(), jwt("kubernetes", "valid-a")] {
        let e = watch(&mut api, "a", &junk).await.expect_err("refused");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    // One review for `valid` (remembered afterwards) and one for the stolen token.
    let reviews = fake.0.lock().expect("lock").reviews.clone();
    assert_eq!(reviews.len(), 2, "{reviews:?}");
    assert_eq!(
        reviews[0],
        json!({"token": valid, "audiences": ["portcullis"]})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn slice(ready: bool) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "api-x1", "namespace": "x", "labels": {"kubernetes.io/service-name": "api"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": ["10.9.0.2"], "conditions": {"ready": ready},
                          "targetRef": {"kind": "Pod", "name": "b", "namespace": "x"}}]})
}

#[tokio::test]
async fn services_and_endpoint_slices_reach_every_view() {
    let fake = Fake::new(false);
    fake.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    fake.put(pod("a", "a", "10.9.0.1"));
    fake.put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "x"},
                    "spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}));
    fake.put(slice(true));
    let rx = follow(&fake).await;
    let endpoints = |rx: &tokio::sync::watch::Receiver<Arc<Versioned>>| {
        let v = rx.borrow().view();
        v.services
            .iter()
            .map(|s| {
                let ends: Vec<String> = s
                    .endpoints
                    .iter()
                    .map(|e| format!("{}@{}", e.pod, e.ips.join(",")))
                    .collect();
                format!(
                    "{}/{} {} -> {}",
                    s.namespace,
                    s.name,
                    s.cluster_ips.join(","),
                    ends.join(" ")
                )
            })
            .collect::<Vec<_>>()
    };
    eventually("the Service and its endpoint are in x/a's view", || {
        endpoints(&rx) == ["x/api 10.96.0.7 -> x/b@10.9.0.2"]
    })
    .await;
    // The endpoint turns unready (a watch event): it leaves the view.
    fake.put(slice(false));
    eventually("the unready endpoint is gone", || {
        endpoints(&rx) == ["x/api 10.96.0.7 -> "]
    })
    .await;
}
