//! The `kube` source: the API server, watched with kube-rs (a reflector per kind: Namespaces,
//! Pods, Services, EndpointSlices, NetworkPolicies, and AccessPolicies and PolicyGuardrails
//! where their CRDs are installed). A thin adapter — every change rebuilds the snapshot from the
//! reflectors' stores through the same [`Snapshot`] reader a `dir` source uses, and publishes
//! it once all the stores have listed (not before: a half-listed cluster would admit too much
//! or too little). Relists (410 Gone), reconnects and backoff are kube-runtime's. After each
//! rebuild, whether or not it applied, each AccessPolicy whose [`status`](crate::status) is not
//! what it should be is patched (its status subresource; a failure is retried on the next).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use portcullis_config::cluster::Cluster;
use portcullis_config::snapshot::Snapshot;
use tokio::sync::Notify;

use crate::metrics::{LoadLabels, Metrics};
use crate::publish::Publisher;

/// The stores of every kind (AccessPolicies only where the CRD is installed).
#[derive(Clone)]
struct Stores {
    namespaces: Store<Namespace>,
    pods: Store<Pod>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    policies: Store<NetworkPolicy>,
    access: Option<Store<DynamicObject>>,
    guardrails: Option<Store<DynamicObject>>,
}

/// `accesspolicies.portcullis.dev/v1alpha1`.
fn access_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "AccessPolicy"),
        "accesspolicies",
    )
}

/// `policyguardrails.portcullis.dev/v1alpha1` (cluster-scoped).
fn guardrail_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("portcullis.dev", "v1alpha1", "PolicyGuardrail"),
        "policyguardrails",
    )
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stores")
    }
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Adds `objects` as `apiVersion`/`kind` objects (the stores' items may carry neither), sorted
/// by name: the stores keep no order, and views must hash the same whatever order objects came
/// in.
fn add_all<K>(s: &mut Snapshot, api_version: &str, kind: &str, mut objects: Vec<Arc<K>>)
where
    K: kube::Resource + serde::Serialize,
{
    objects.sort_by_key(|o| name_of(o.meta()));
    for object in objects {
        let Ok(mut value) = serde_json::to_value(&*object) else {
            continue;
        };
        value["apiVersion"] = api_version.into();
        value["kind"] = kind.into();
        s.add_object(&format!("{kind} {}", name_of(object.meta())), &value);
    }
}

/// The snapshot the stores hold now.
fn snapshot(stores: &Stores) -> Snapshot {
    let mut s = Snapshot::default();
    add_all(&mut s, "v1", "Namespace", stores.namespaces.state());
    add_all(&mut s, "v1", "Pod", stores.pods.state());
    add_all(&mut s, "v1", "Service", stores.services.state());
    add_all(
        &mut s,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        stores.slices.state(),
    );
    add_all(
        &mut s,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        stores.policies.state(),
    );
    let access = stores.access.as_ref().map(Store::state).unwrap_or_default();
    add_all(&mut s, "portcullis.dev/v1alpha1", "AccessPolicy", access);
    let guardrails = stores
        .guardrails
        .as_ref()
        .map(Store::state)
        .unwrap_or_default();
    add_all(
        &mut s,
        "portcullis.dev/v1alpha1",
        "PolicyGuardrail",
        guardrails,
    );
    s
}

/// How long one status write may take.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Patches the status of each AccessPolicy in `store` that does not say what it should (its
/// validity, and the pods of its namespace in `cluster`).
async fn write_statuses(
    client: &kube::Client,
    store: &Store<DynamicObject>,
    cluster: &Cluster,
    metrics: &Metrics,
) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    for object in store.state() {
        let Ok(mut v) = serde_json::to_value(&*object) else {
            continue;
        };
        v["apiVersion"] = "portcullis.dev/v1alpha1".into();
        v["kind"] = "AccessPolicy".into();
        let ns = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let workloads = cluster.pods.iter().filter(|p| p.namespace == ns).count();
        let want = crate::status::desired(&v, workloads, &now);
        if crate::status::is_current(&v, &want) {
            continue;
        }
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &access_policy_resource());
        let patch = serde_json::json!({ "status": want });
        let (params, merge) = (PatchParams::default(), Patch::Merge(&patch));
        let write = api.patch_status(&name, &params, &merge);
        // Bounded: a slow API server must not hold up the next snapshot.
        let written = match tokio::time::timeout(STATUS_WRITE_TIMEOUT, write).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {STATUS_WRITE_TIMEOUT:?}")),
        };
        if let Err(e) = &written {
            tracing::warn!(policy = %format!("{ns}/{name}"), error = %e, "AccessPolicy status not written; retried on the next change");
        }
        let result = if written.is_ok() {
            "success"
        } else {
            "failure"
        };
        metrics
            .status_writes
            .get_or_create(&LoadLabels { result })
            .inc();
    }
}

/// Runs one reflector until the process ends, waking `changed` on every event.
async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch error; kube-runtime retries");
        }
        changed.notify_one();
    }
}

/// The reflector of one of Portcullis' own kinds, if its CRD is installed (a first list says;
/// without AccessPolicies the controller carries on with NetworkPolicies and ConfigMaps, without
/// PolicyGuardrails admission has none). Any other failure to list is retried: starting
/// without them would serve views (or admit writes) that miss them.
async fn custom_resources(
    client: kube::Client,
    resource: ApiResource,
    changed: Arc<Notify>,
) -> Option<Store<DynamicObject>> {
    let api = Api::<DynamicObject>::all_with(client, &resource);
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::info!(kind = %resource.kind, "its CRD is not installed");
                return None;
            }
            Err(e) => {
                tracing::error!(kind = %resource.kind, error = %e, "cannot list; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let writer = reflector::store::Writer::new(resource);
    let store = writer.as_reader();
    tokio::spawn(reflect(api, writer, changed));
    Some(store)
}

/// Watches the cluster `client` talks to, publishing each new snapshot.
pub async fn watch(client: kube::Client, publisher: Arc<Publisher>) {
    let (namespaces, ns_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (services, svc_writer) = reflector::store();
    let (slices, slice_writer) = reflector::store();
    let (policies, np_writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    tokio::spawn(reflect(
        Api::<Namespace>::all(client.clone()),
        ns_writer,
        changed.clone(),
    ));
    tokio::spawn(reflect(
        Api::<Pod>::all(client.clone()),
        pod_writer,
        changed.clone(),
    ));
    tokio::spawn(reflect(
        Api::<Service>::all(client.clone()),
        svc_writer,
        changed.clone(),
    ));
    tokio::spawn(reflect(
        Api::<EndpointSlice>::all(client.clone()),
        slice_writer,
        changed.clone(),
    ));
    tokio::spawn(reflect(
        Api::<NetworkPolicy>::all(client.clone()),
        np_writer,
        changed.clone(),
    ));
    let access = custom_resources(client.clone(), access_policy_resource(), changed.clone()).await;
    let guardrails = custom_resources(client.clone(), guardrail_resource(), changed.clone()).await;
    let stores = Stores {
        namespaces,
        pods,
        services,
        slices,
        policies,
        access,
        guardrails,
    };
    let mut ready = vec![
        stores.namespaces.wait_until_ready().await.is_ok(),
        stores.pods.wait_until_ready().await.is_ok(),
        stores.services.wait_until_ready().await.is_ok(),
        stores.slices.wait_until_ready().await.is_ok(),
        stores.policies.wait_until_ready().await.is_ok(),
    ];
    for store in [&stores.access, &stores.guardrails].into_iter().flatten() {
        ready.push(store.wait_until_ready().await.is_ok());
    }
    if ready.contains(&false) {
        tracing::error!("a reflector ended before listing; no snapshot");
        return;
    }
    loop {
        // Events come in bursts (a rollout): settle, then rebuild once.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = snapshot(&stores);
        if s.errors.is_empty() {
            let changed_views = publisher.apply(&s);
            tracing::info!(
                pods = s.cluster.pods.len(),
                policies = s.policies.len(),
                changed = changed_views,
                "cluster snapshot applied"
            );
        } else {
            for e in &s.errors {
                tracing::error!("{e}");
            }
        }
        publisher.count_load(s.errors.is_empty());
        if let Some(access) = &stores.access {
            write_statuses(&client, access, &s.cluster, &publisher.metrics).await;
        }
        changed.notified().await;
    }
}
