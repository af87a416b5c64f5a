//! The sidecar's side of the controller: one `Sidecar.Watch` stream for this pod, each view
//! applied to the [`PolicyStore`] atomically as a reload is. Fail static: when the stream
//! breaks, the last good view stays in force and the watch is retried with exponential backoff
//! and jitter; `portcullis_controller_connected`, `…_view_version` and
//! `…_view_applied_timestamp_seconds` say how it goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_api::v1;
use portcullis_api::v1::sidecar_client::SidecarClient;
use tokio_stream::StreamExt as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::store::{PolicyStore, Reload};
use super::view;
use crate::drain::Drain;

/// Where the controller is and who this sidecar is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerTarget {
    /// `https://HOST:PORT` (`http://` for a plaintext testbed controller).
    pub url: String,
    /// This pod's namespace.
    pub namespace: String,
    /// This pod's name.
    pub pod: String,
    /// TLS and credentials (`None`: plaintext).
    pub tls: Option<ControllerTls>,
}

/// How the sidecar verifies the controller and proves who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerTls {
    /// The bundle the controller's certificate must chain to.
    pub ca_pem: String,
    /// The projected service-account token file, re-read on every connect.
    pub token: Option<PathBuf>,
    /// The workload certificate to present (re-read on every connect) when there is no token:
    /// a token, which kubelet keeps fresh, is always the credential when there is one (the
    /// certificate may not exist yet, or may have expired, while the controller was away).
    pub identity_dir: Option<PathBuf>,
}

/// Why a connection to the controller could not be set up.
fn unavailable(what: &str, e: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::unavailable(format!("{what}: {e}"))
}

impl ControllerTls {
    /// The TLS configuration of one connect: the bundle, and the workload certificate if there
    /// is one.
    fn client_config(&self) -> Result<ClientTlsConfig, tonic::Status> {
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some(dir) = self.identity_dir.as_ref().filter(|_| self.token.is_none()) {
            let read = |name: &str| {
                std::fs::read(dir.join(name))
                    .map_err(|e| unavailable(&format!("{}", dir.join(name).display()), e))
            };
            config = config.identity(Identity::from_pem(read("tls.crt")?, read("tls.key")?));
        }
        Ok(config)
    }

    /// The `authorization` value of one connect.
    fn bearer(&self) -> Result<Option<MetadataValue<Ascii>>, tonic::Status> {
        let Some(path) = &self.token else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(path)
            .map_err(|e| unavailable(&format!("--controller-token {}", path.display()), e))?;
        format!("Bearer {}", token.trim())
            .parse()
            .map(Some)
            .map_err(|e| unavailable("--controller-token", e))
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The next wait: doubled, capped, with up to 50 % jitter (from the clock's nanoseconds, so
/// that sidecars restarted together do not retry together).
pub(crate) fn backoff(previous: Duration) -> Duration {
    let next = (previous * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    next.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}

/// An enrolled sidecar keeps the view's trust bundle as its own (a root rotation reaches it
/// within a second, not at its next renewal).
fn keep_bundle(dir: Option<&Path>, view: &v1::View) {
    let Some(dir) = dir.filter(|_| !view.trust_bundle.is_empty()) else {
        return;
    };
    match crate::mesh::identity::keep_bundle(dir, &view.trust_bundle) {
        Ok(true) => tracing::info!(
            version = view.version,
            "new trust bundle from the controller"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!("trust bundle from the controller not written: {e}"),
    }
}

/// Applies one view off the async threads.
async fn apply(store: &Arc<PolicyStore>, view: v1::View) {
    let inputs = match view::inputs(&view) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(version = view.version, "controller view not applied: {e}");
            return;
        }
    };
    let version = inputs.version;
    let s = store.clone();
    let outcome = tokio::task::spawn_blocking(move || s.apply_view(inputs)).await;
    match outcome {
        Ok(Reload::Failed(e)) => {
            tracing::error!(
                version,
                "controller view does not compile; keeping the last good policy:\n{e}"
            );
        }
        Ok(_) => {
            store.metrics.controller_view_version.set(version as i64);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            store.metrics.controller_view_applied.set(now);
            tracing::info!(version, "controller view applied");
        }
        Err(e) => tracing::error!("applying a controller view failed: {e}"),
    }
}

/// A connection to the controller (TLS with this sidecar's credentials, where configured) and
/// `message` as a request carrying the sidecar's current token.
pub(crate) async fn connect<T>(
    target: &ControllerTarget,
    message: T,
) -> Result<(tonic::transport::Channel, tonic::Request<T>), tonic::Status> {
    let mut endpoint =
        Endpoint::from_shared(target.url.clone()).map_err(|e| unavailable("--controller", e))?;
    let mut request = tonic::Request::new(message);
    if let Some(tls) = &target.tls {
        endpoint = endpoint
            .tls_config(tls.client_config()?)
            .map_err(|e| unavailable("TLS", e))?;
        if let Some(bearer) = tls.bearer()? {
            request.metadata_mut().insert("authorization", bearer);
        }
    }
    let channel = endpoint
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| unavailable("connecting", e))?;
    Ok((channel, request))
}

/// One watch, until the stream ends or fails.
async fn watch_once(
    target: &ControllerTarget,
    store: &Arc<PolicyStore>,
    bundle_dir: Option<&Path>,
) -> Result<(), tonic::Status> {
    let request = v1::WatchRequest {
        namespace: target.namespace.clone(),
        pod: target.pod.clone(),
    };
    let (channel, request) = connect(target, request).await?;
    let mut stream = SidecarClient::new(channel)
        .watch(request)
        .await?
        .into_inner();
    store.metrics.controller_connected.set(1);
    tracing::info!(url = %target.url, "watching the controller");
    while let Some(view) = stream.next().await {
        let view = view?;
        keep_bundle(bundle_dir, &view);
        apply(store, view).await;
    }
    Ok(())
}

/// Watches the controller until the drain starts; an enrolled sidecar keeps each view's trust
/// bundle in `bundle_dir`.
pub(crate) async fn follow(
    target: ControllerTarget,
    store: Arc<PolicyStore>,
    bundle_dir: Option<PathBuf>,
    drain: Drain,
) {
    let mut wait = Duration::ZERO;
    loop {
        let result = tokio::select! {
            () = drain.started() => return,
            r = watch_once(&target, &store, bundle_dir.as_deref()) => r,
        };
        store.metrics.controller_connected.set(0);
        match result {
            Ok(()) => tracing::warn!("the controller ended the watch; reconnecting"),
            Err(e) => {
                tracing::warn!(code = ?e.code(), "controller watch failed; keeping the last good view: {}", e.message())
            }
        }
        if !wait_backoff(&mut wait, &drain).await {
            return;
        }
    }
}

/// Waits the next backoff after `wait` (and keeps it); false when the drain starts meanwhile.
pub(crate) async fn wait_backoff(wait: &mut Duration, drain: &Drain) -> bool {
    *wait = backoff(*wait);
    tokio::select! {
        () = drain.started() => false,
        () = tokio::time::sleep(*wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        let mut wait = Duration::ZERO;
        for _ in 0..20 {
            let next = backoff(wait);
            assert!(next >= MIN_BACKOFF / 2 && next <= MAX_BACKOFF, "{next:?}");
            wait = next;
        }
        assert!(wait >= MAX_BACKOFF / 2, "reaches the cap: {wait:?}");
    }
}
