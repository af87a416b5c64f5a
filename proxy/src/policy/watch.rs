//! What triggers reloads, until the drain starts: directory events (a ConfigMap swaps a
//! `..data` symlink in the watched directory; debounced) and a periodic content-hash poll that
//! catches anything the watcher misses, for the policy; the same poll re-reads the JWKS and the
//! identity material. Each source keeps its last good content when a new one is invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::store::PolicyStore;
use crate::drain::Drain;
use crate::http::jwt::Jwks;
use crate::mesh::identity::IdentityStore;
use crate::observe::Chain;
use crate::observe::metrics::ReloadLabels;

/// Watches the policy source until the drain starts: directory events (debounced) and a
/// periodic content-hash poll both lead to [`PolicyStore::reload`].
pub(crate) async fn watch(
    store: Arc<PolicyStore>,
    jwks: Option<Arc<Jwks>>,
    identity: Option<Arc<IdentityStore>>,
    poll: Duration,
    drain: Drain,
) {
    let Some(path) = store.path().map(Path::to_path_buf) else {
        return;
    };
    let metrics = store.metrics.clone();
    let reload_keys = move || {
        if let Some(j) = &jwks {
            match j.reload() {
                Ok(true) => tracing::info!("JWKS reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    "JWKS reload failed; keeping the last good keys: {}",
                    Chain(&e)
                ),
            }
        }
        if let Some(id) = &identity {
            let result = match id.reload() {
                Ok(false) => return,
                Ok(true) => {
                    let current = id.current();
                    metrics.set_identity_expiry(current.not_after);
                    tracing::info!(identity = %current.spiffe_id, "identity material rotated");
                    "success"
                }
                Err(e) => {
                    tracing::error!(
                        "identity reload refused; keeping the current material: {}",
                        Chain(&e)
                    );
                    "failure"
                }
            };
            metrics
                .identity_reloads
                .get_or_create(&ReloadLabels { result })
                .inc();
        }
    };
    let dir = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the policy is itself an access event: reacting to it would loop forever.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    if let Err(e) = &watcher {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; polling only");
    }
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = drain.started() => return,
            Some(()) = rx.recv() => {
                // Editors and ConfigMap updates touch several entries: settle, then reload once.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
                store.reload_async().await;
            }
            _ = tick.tick() => {
                store.reload_async().await;
                reload_keys();
            }
        }
    }
}
