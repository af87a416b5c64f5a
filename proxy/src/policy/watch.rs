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

/// The directories whose entries change when the policy or the labels file change (a
/// ConfigMap or Downward API volume swaps a `..data` symlink inside them).
fn watched_dirs(policy: &Path, labels: Option<&Path>) -> Vec<PathBuf> {
    let parent = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let mut dirs = vec![if policy.is_dir() {
        policy.to_path_buf()
    } else {
        parent(policy)
    }];
    if let Some(l) = labels.map(parent)
        && !dirs.contains(&l)
    {
        dirs.push(l);
    }
    dirs
}

/// Sends on `tx` for every non-access event in `dirs`; `None` (polling only) when it cannot.
fn watch_dirs(dirs: &[PathBuf], tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the policy is itself an access event: reacting to it would loop forever.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    })
    .inspect_err(|e| tracing::warn!(error = %e, "cannot watch for policy changes; polling only"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch this directory; polling only");
        }
    }
    Some(watcher)
}

/// Watches the policy source and the labels file until the drain starts: directory events
/// (debounced) and a periodic content-hash poll both lead to [`PolicyStore::reload`].
pub(crate) async fn watch(
    store: Arc<PolicyStore>,
    jwks: Option<Arc<Jwks>>,
    identity: Option<Arc<IdentityStore>>,
    poll: Duration,
    drain: Drain,
) {
    // Without a policy file (controller only) the keys are still polled.
    let path = store.path().map(Path::to_path_buf);
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
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let _watcher = path
        .as_deref()
        .and_then(|p| watch_dirs(&watched_dirs(p, store.labels_path()), tx));
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
