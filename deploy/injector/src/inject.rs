//! The pure core of the webhook: given a Pod as raw JSON (never round-tripped through typed
//! structs, which would drop fields they do not know), decide whether to inject, and build the
//! JSON Patch as explicit `add` operations.
//!
//! What is added: the `portcullis.dev/injected` annotation; `portcullis-init` as the first init
//! container; the proxy as a native sidecar (second init container, `restartPolicy: Always`) or,
//! for clusters older than 1.29, as a regular container; the policy ConfigMap and the pod's
//! labels (Downward API) as read-only volumes; and kubelet probes rewritten to the proxy's admin
//! port (see [`crate::probes`]).

use std::collections::BTreeMap;

use json_patch::Patch;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::config::InjectConfig;
use crate::patch::add;
use crate::probes;

/// The annotation and label that switch injection.
pub const INJECT: &str = "portcullis.dev/inject";
/// Written on injected pods (value: the injector version).
pub const INJECTED: &str = "portcullis.dev/injected";
/// Pod annotation: `enforce` or `audit`.
pub const MODE: &str = "portcullis.dev/mode";
/// Pod annotation: the policy ConfigMap's name.
pub const POLICY: &str = "portcullis.dev/policy";
/// Pod annotation: `redirect` or `tproxy`.
pub const CAPTURE: &str = "portcullis.dev/capture";
/// Pod annotation: comma list.
pub const EXCLUDE_INBOUND_PORTS: &str = "portcullis.dev/exclude-inbound-ports";
/// Pod annotation: comma list.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "portcullis.dev/exclude-outbound-ports";
/// Pod annotation: comma list.
pub const EXCLUDE_OUTBOUND_CIDRS: &str = "portcullis.dev/exclude-outbound-cidrs";
/// Pod annotation: comma list.
pub const OPAQUE_PORTS: &str = "portcullis.dev/opaque-ports";
/// Pod annotation: `enabled` or `disabled` — whether the sidecar gets a certificate from the
/// controller and speaks mutual TLS with peer sidecars. Written on every injected pod with what
/// was done; `disabled` by the owner opts a pod out. (The controller reads it.)
pub const MTLS: &str = "portcullis.dev/mtls";

/// The proxy container's name.
pub const PROXY_NAME: &str = "portcullis-proxy";
/// The init container's name.
pub const INIT_NAME: &str = "portcullis-init";
pub use crate::patch::ADMIN_PORT;
/// The proxy's UID and GID.
pub const PROXY_UID: i64 = 1337;
const POLICY_VOLUME: &str = "portcullis-policy";
const PODINFO_VOLUME: &str = "portcullis-podinfo";
const POLICY_DIR: &str = "/etc/portcullis/policy";
const PODINFO_DIR: &str = "/etc/portcullis/podinfo";
const TOKEN_VOLUME: &str = "portcullis-token";
const IDENTITY_VOLUME: &str = "portcullis-identity";
const IDENTITY_DIR: &str = "/var/run/portcullis/identity";
const TOKEN_DIR: &str = "/var/run/secrets/portcullis";
/// The projected token's lifetime; kubelet rewrites it at 80 % of that.
const TOKEN_SECONDS: i64 = 3600;

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Leave it alone, and why.
    Skip(String),
    /// Apply this patch.
    Inject(Patch),
}

/// A pod annotation value that does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?} is not one of {allowed}")]
pub struct AnnotationError {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What is accepted.
    pub allowed: &'static str,
}

fn str_map<'a>(pod: &'a Value, field: &str) -> Option<&'a serde_json::Map<String, Value>> {
    pod.get("metadata")?.get(field)?.as_object()
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    str_map(pod, "annotations")?.get(key)?.as_str()
}

fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    str_map(pod, "labels")?.get(key)?.as_str()
}

/// Why this pod must not be injected, if it must not.
fn skip_reason(pod: &Value, namespace: &str, cfg: &InjectConfig) -> Option<String> {
    if cfg.system_namespaces.iter().any(|n| n == namespace) {
        return Some(format!("namespace {namespace} is a system namespace"));
    }
    // The API server never sends such a pod (it fails validation), but a patch for it would not
    // apply: leave it to be refused there.
    let shaped = pod.get("metadata").is_some_and(Value::is_object)
        && pod
            .get("spec")
            .and_then(|s| s.get("containers"))
            .is_some_and(Value::is_array);
    if !shaped {
        return Some("not a pod: metadata, spec or spec.containers missing".into());
    }
    if annotation(pod, INJECTED).is_some() {
        return Some("already injected".into());
    }
    let spec = pod.get("spec");
    let has_container = |list: &str, name: &str| {
        spec.and_then(|s| s.get(list))
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == name))
    };
    if has_container("containers", PROXY_NAME) || has_container("initContainers", PROXY_NAME) {
        return Some("already has a portcullis-proxy container".into());
    }
    if spec
        .and_then(|s| s.get("hostNetwork"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Some("hostNetwork pod (its network namespace is the node's)".into());
    }
    // The pod's own word wins over the namespace label that brought it here: annotation first,
    // then label.
    let choice = annotation(pod, INJECT).or_else(|| label(pod, INJECT));
    if choice == Some("disabled") {
        return Some(format!("{INJECT}: disabled"));
    }
    None
}

/// An annotation that must be one of `allowed`.
fn pick<'a>(
    pod: &'a Value,
    key: &'static str,
    default: &'a str,
    allowed: (&'static str, &'static str),
) -> Result<&'a str, AnnotationError> {
    let v = annotation(pod, key).unwrap_or(default);
    if v == allowed.0 || v == allowed.1 {
        Ok(v)
    } else {
        Err(AnnotationError {
            key,
            value: v.to_string(),
            allowed: match allowed.0 {
                "enforce" => "enforce, audit",
                "enabled" => "enabled, disabled",
                _ => "redirect, tproxy",
            },
        })
    }
}

/// A comma list annotation, checked for characters that could smuggle extra flags.
/// What a list annotation holds, checked with the parser its consumer uses.
#[derive(Debug, Clone, Copy)]
enum ListKind {
    Ports,
    Cidrs,
}

fn list(
    pod: &Value,
    key: &'static str,
    default: &str,
    kind: ListKind,
) -> Result<String, AnnotationError> {
    let v = annotation(pod, key).unwrap_or(default).trim();
    // The same parsers as portcullis-init's flags: a value it would refuse is refused here, at
    // admission, instead of leaving a pod that cannot start.
    let parsed = match kind {
        ListKind::Ports => portcullis_init::config::port_list(v).map(|_| ()),
        ListKind::Cidrs => portcullis_init::config::cidr_list(v).map(|_| ()),
    };
    if parsed.is_err() || v.starts_with('-') {
        return Err(AnnotationError {
            key,
            value: v.to_string(),
            allowed: match kind {
                ListKind::Ports => "a comma list of ports (1-65535) and ranges (8000-8100)",
                ListKind::Cidrs => "a comma list of CIDRs (10.0.0.0/8, fd00::/8)",
            },
        });
    }
    Ok(v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(","))
}

/// The pod's named container ports, for `--named-ports` (`name=port`, or `name=port/UDP` and
/// `/SCTP`: a NetworkPolicy's named port matches only with its protocol).
fn named_ports(pod: &Value) -> String {
    let mut out = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let (Some(name), Some(port)) = (p["name"].as_str(), p["containerPort"].as_i64()) {
                let protocol = p["protocol"].as_str().unwrap_or("TCP");
                out.entry(name.to_string())
                    .or_insert((port, protocol.to_string()));
            }
        }
    }
    out.into_iter()
        .map(|(n, (p, proto))| match proto.as_str() {
            "TCP" => format!("{n}={p}"),
            _ => format!("{n}={p}/{proto}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serializing the k8s-openapi types cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    let m: BTreeMap<String, Quantity> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// The settings for one pod: defaults overridden by its annotations.
struct PodSettings {
    mode: String,
    capture: String,
    policy: String,
    exclude_inbound_ports: String,
    exclude_outbound_ports: String,
    exclude_outbound_cidrs: String,
    opaque_ports: String,
    /// Enrols with the controller's CA and speaks mutual TLS.
    mtls: bool,
}

fn settings(pod: &Value, cfg: &InjectConfig) -> Result<PodSettings, AnnotationError> {
    let policy = annotation(pod, POLICY).unwrap_or(&cfg.policy_configmap);
    let dns_label = !policy.is_empty()
        && policy.len() <= 253
        && policy
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !dns_label {
        return Err(AnnotationError {
            key: POLICY,
            value: policy.to_string(),
            allowed: "a ConfigMap name",
        });
    }
    Ok(PodSettings {
        mode: pick(pod, MODE, &cfg.mode, ("enforce", "audit"))?.to_string(),
        capture: pick(pod, CAPTURE, &cfg.capture, ("redirect", "tproxy"))?.to_string(),
        policy: policy.to_string(),
        exclude_inbound_ports: list(
            pod,
            EXCLUDE_INBOUND_PORTS,
            &cfg.exclude_inbound_ports,
            ListKind::Ports,
        )?,
        exclude_outbound_ports: list(
            pod,
            EXCLUDE_OUTBOUND_PORTS,
            &cfg.exclude_outbound_ports,
            ListKind::Ports,
        )?,
        exclude_outbound_cidrs: list(
            pod,
            EXCLUDE_OUTBOUND_CIDRS,
            &cfg.exclude_outbound_cidrs,
            ListKind::Cidrs,
        )?,
        opaque_ports: list(pod, OPAQUE_PORTS, &cfg.opaque_ports, ListKind::Ports)?,
        mtls: pick(pod, MTLS, "enabled", ("enabled", "disabled"))? == "enabled" && enrolls(cfg),
    })
}

fn init_container(s: &PodSettings, cfg: &InjectConfig) -> Container {
    let mut args = vec!["--mode".to_string(), s.capture.clone()];
    for (flag, v) in [
        ("--exclude-inbound-ports", &s.exclude_inbound_ports),
        ("--exclude-outbound-ports", &s.exclude_outbound_ports),
        ("--exclude-outbound-cidrs", &s.exclude_outbound_cidrs),
    ] {
        if !v.is_empty() {
            args.extend([flag.to_string(), v.clone()]);
        }
    }
    Container {
        name: INIT_NAME.into(),
        image: Some(cfg.init_image.clone()),
        args: Some(args),
        resources: Some(ResourceRequirements {
            requests: quantities(&[("cpu", "10m"), ("memory", "16Mi")]),
            limits: quantities(&[("cpu", "100m"), ("memory", "64Mi")]),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn admin_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ADMIN_PORT),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    }
}

fn proxy_container(
    s: &PodSettings,
    cfg: &InjectConfig,
    pod: &Value,
    app_probes: Option<String>,
) -> Container {
    let mut args = vec![
        "run".to_string(),
        "--policy".into(),
        POLICY_DIR.into(),
        "--workload-labels".into(),
        format!("{PODINFO_DIR}/labels"),
        "--mode".into(),
        s.mode.clone(),
        "--capture".into(),
        s.capture.clone(),
        "--log-format".into(),
        "json".into(),
    ];
    let named = named_ports(pod);
    if !named.is_empty() {
        args.extend(["--named-ports".into(), named]);
    }
    if !s.opaque_ports.is_empty() {
        args.extend(["--opaque-ports".into(), s.opaque_ports.clone()]);
    }
    let field = |name: &str, field_path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = vec![
        field("PORTCULLIS_POD_IP", "status.podIP"),
        field("PORTCULLIS_POD_NAMESPACE", "metadata.namespace"),
    ];
    if !cfg.controller.is_empty() {
        args.extend(["--controller".into(), cfg.controller.clone()]);
        env.push(field("PORTCULLIS_POD_NAME", "metadata.name"));
    }
    if s.mtls {
        args.extend(["--identity-from-controller".into(), "--identity-dir".into()]);
        args.extend([
            IDENTITY_DIR.into(),
            "--trust-domain".into(),
            cfg.trust_domain.clone(),
        ]);
    }
    if follows_tls(cfg) {
        args.extend(["--controller-token".into(), format!("{TOKEN_DIR}/token")]);
        env.push(EnvVar {
            name: "PORTCULLIS_CONTROLLER_CA_PEM".into(),
            value: Some(cfg.controller_ca_pem.clone()),
            ..Default::default()
        });
    }
    if let Some(json) = app_probes {
        env.push(EnvVar {
            name: "PORTCULLIS_APP_PROBES".into(),
            value: Some(json),
            ..Default::default()
        });
    }
    let tproxy = s.capture == "tproxy";
    Container {
        name: PROXY_NAME.into(),
        image: Some(cfg.proxy_image.clone()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            container_port: ADMIN_PORT,
            name: Some("portcullis-adm".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        restart_policy: cfg.native_sidecar.then(|| "Always".to_string()),
        startup_probe: Some(admin_probe("/ready", 1, 60)),
        readiness_probe: Some(admin_probe("/ready", 5, 3)),
        liveness_probe: Some(admin_probe("/live", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: quantities(&[
                ("cpu", &cfg.proxy_cpu_request),
                ("memory", &cfg.proxy_memory_request),
            ]),
            limits: quantities(&[
                ("cpu", &cfg.proxy_cpu_limit),
                ("memory", &cfg.proxy_memory_limit),
            ]),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            // TPROXY needs CAP_NET_ADMIN, which a non-root process only gets from the binary's
            // file capability (set in the proxy image) — that needs privilege escalation.
            allow_privilege_escalation: Some(tproxy),
            capabilities: Some(Capabilities {
                add: tproxy.then(|| vec!["NET_ADMIN".to_string()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts(s, cfg)),
        ..Default::default()
    }
}

/// The proxy's mounts: policy, pod info, and (following the controller over TLS) its token
/// and (enrolling) its identity — the only one it writes.
fn mounts(s: &PodSettings, cfg: &InjectConfig) -> Vec<VolumeMount> {
    let mut mounts = vec![
        (POLICY_VOLUME, POLICY_DIR, true),
        (PODINFO_VOLUME, PODINFO_DIR, true),
    ];
    if follows_tls(cfg) {
        mounts.push((TOKEN_VOLUME, TOKEN_DIR, true));
    }
    if s.mtls {
        mounts.push((IDENTITY_VOLUME, IDENTITY_DIR, false));
    }
    mounts
        .into_iter()
        .map(|(name, dir, read_only)| VolumeMount {
            name: name.into(),
            mount_path: dir.into(),
            read_only: Some(read_only),
            ..Default::default()
        })
        .collect()
}

/// Whether sidecars get their certificate from the controller's mesh CA (unless a pod opts
/// out).
fn enrolls(cfg: &InjectConfig) -> bool {
    cfg.identity_from_controller && follows_tls(cfg)
}

/// The sidecar's identity volume: in memory, its own (the key never touches a disk).
fn identity_volume() -> Volume {
    Volume {
        name: IDENTITY_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity("1Mi".into())),
        }),
        ..Default::default()
    }
}

/// Whether sidecars follow the controller over TLS (and so authenticate with a token).
fn follows_tls(cfg: &InjectConfig) -> bool {
    cfg.controller.starts_with("https://")
}

/// The projected service-account token a sidecar shows the controller: audience `portcullis`,
/// bound to the pod, rotated by kubelet.
fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some("portcullis".into()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: "token".into(),
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes(s: &PodSettings, cfg: &InjectConfig) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: POLICY_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: s.policy.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: PODINFO_VOLUME.into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if follows_tls(cfg) {
        volumes.push(token_volume());
    }
    if s.mtls {
        volumes.push(identity_volume());
    }
    volumes
}

/// Decides and, when injecting, builds the patch for `pod` created in `namespace`.
pub fn plan(pod: &Value, namespace: &str, cfg: &InjectConfig) -> Result<Plan, AnnotationError> {
    if let Some(why) = skip_reason(pod, namespace, cfg) {
        return Ok(Plan::Skip(why));
    }
    let s = settings(pod, cfg)?;
    let mut ops = Vec::new();

    let version = Value::String(cfg.version.clone());
    let mtls = Value::from(if s.mtls { "enabled" } else { "disabled" });
    if str_map(pod, "annotations").is_some() {
        ops.push(add(&["metadata", "annotations", INJECTED], version));
        ops.push(add(&["metadata", "annotations", MTLS], mtls));
    } else {
        ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ INJECTED: version, MTLS: mtls }),
        ));
    }

    let volumes: Vec<Value> = volumes(&s, cfg).iter().map(to_value).collect();
    if pod["spec"]["volumes"].is_array() {
        for v in volumes {
            ops.push(add(&["spec", "volumes", "-"], v));
        }
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
    }

    let excluded = probes::ports(&s.exclude_inbound_ports);
    let rewritten = probes::rewrite(pod, &excluded);
    ops.extend(rewritten.ops);

    let init = to_value(&init_container(&s, cfg));
    let proxy = to_value(&proxy_container(&s, cfg, pod, rewritten.app_probes));
    let has_inits = pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    // portcullis-init runs first; a native sidecar runs next, so the pod's own init containers
    // already have a proxy (their traffic is captured too).
    match (has_inits, cfg.native_sidecar) {
        (false, true) => ops.push(add(
            &["spec", "initContainers"],
            Value::Array(vec![init, proxy]),
        )),
        (false, false) => {
            ops.push(add(&["spec", "initContainers"], Value::Array(vec![init])));
            ops.push(add(&["spec", "containers", "-"], proxy));
        }
        (true, true) => {
            ops.push(add(&["spec", "initContainers", "0"], init));
            ops.push(add(&["spec", "initContainers", "1"], proxy));
        }
        (true, false) => {
            ops.push(add(&["spec", "initContainers", "0"], init));
            ops.push(add(&["spec", "containers", "-"], proxy));
        }
    }
    Ok(Plan::Inject(Patch(ops)))
}
