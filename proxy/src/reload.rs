//! The active policy and its hot reload.
//!
//! The policy lives behind an `ArcSwap`: every new connection and every new request reads the
//! current one, so a reload affects them at once while work in progress keeps the policy it
//! started with. A reload reads the whole source, and replaces the policy only if it changed and
//! compiles completely; a failure keeps the last good policy, is logged with its
//! `file:line:col` errors and counted. Reloads are triggered by SIGHUP, by changes in the
//! watched directory (a ConfigMap swaps a `..data` symlink there) and by a periodic content-hash
//! poll that catches anything the watcher misses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use portcullis_config::LoadedPolicy;
use portcullis_config::load::read_source;
use tokio::sync::mpsc;

use crate::cli::WorkloadArgs;
use crate::drain::Drain;
use crate::identity::IdentityStore;
use crate::jwt::Jwks;
use crate::metrics::{Metrics, ReloadLabels};
use crate::policy;

/// A compiled policy and when it became active.
#[derive(Debug)]
pub struct Active {
    /// The policy.
    pub loaded: LoadedPolicy,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The source is byte-for-byte what is active.
    Unchanged,
    /// A new policy is active.
    Reloaded {
        /// Its content hash.
        hash: String,
    },
    /// The source is invalid or unreadable; the previous policy stays.
    Failed(String),
}

/// The active policy and where it comes from.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Active>,
    /// Serializes reloads (SIGHUP, the watcher and the poll may fire together) and remembers the
    /// content hash of the last source that failed, so it is reported once, not on every poll.
    reloading: Mutex<Option<String>>,
    source: Option<(PathBuf, WorkloadArgs)>,
    metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Starts with `loaded`; `source` is where reloads read from (none: never reloads).
    pub fn new(
        loaded: LoadedPolicy,
        source: Option<(PathBuf, WorkloadArgs)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_policy_hash(&loaded.hash);
        Self {
            current: ArcSwap::from_pointee(Active {
                loaded,
                loaded_at: SystemTime::now(),
            }),
            reloading: Mutex::new(None),
            source,
            metrics,
        }
    }

    /// The active policy.
    pub fn current(&self) -> Arc<Active> {
        self.current.load_full()
    }

    /// The policy source, if reloads read one.
    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|(p, _)| p.as_path())
    }

    /// Reads the source and activates it if it changed and is valid (blocking: file IO and
    /// compilation).
    pub fn reload(&self) -> Reload {
        let Some((path, workload)) = &self.source else {
            return Reload::Unchanged;
        };
        let mut last_failed = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match read_source(path).map(|src| src.content_hash()) {
            Ok(seen)
                if seen == self.current().loaded.hash || last_failed.as_ref() == Some(&seen) =>
            {
                return Reload::Unchanged;
            }
            Ok(seen) => match policy::load(path, workload) {
                Ok(loaded) => {
                    let hash = loaded.hash.clone();
                    for w in &loaded.warnings {
                        tracing::warn!("{w}");
                    }
                    self.metrics.set_policy_hash(&hash);
                    self.current.store(Arc::new(Active {
                        loaded,
                        loaded_at: SystemTime::now(),
                    }));
                    *last_failed = None;
                    Reload::Reloaded { hash }
                }
                Err(e) => {
                    *last_failed = Some(seen);
                    Reload::Failed(e.to_string())
                }
            },
            Err(e) => Reload::Failed(e.to_string()),
        };
        let result = match &outcome {
            Reload::Reloaded { hash } => {
                tracing::info!(%hash, "policy reloaded");
                "success"
            }
            Reload::Failed(e) => {
                tracing::error!("policy reload failed; keeping the last good policy:\n{e}");
                "failure"
            }
            Reload::Unchanged => return outcome,
        };
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
        outcome
    }

    /// Reloads off the async threads.
    pub async fn reload_async(self: &Arc<Self>) -> Reload {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.reload())
            .await
            .unwrap_or_else(|e| Reload::Failed(format!("reload task failed: {e}")))
    }
}

/// Watches the policy source until the drain starts: directory events (debounced) and a
/// periodic content-hash poll both lead to [`PolicyStore::reload`].
pub async fn watch(
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
                Err(e) => tracing::error!("JWKS reload failed; keeping the last good keys: {e}"),
            }
        }
        if let Some(id) = &identity {
            match id.reload() {
                Ok(true) => {
                    let current = id.current();
                    metrics.set_identity_expiry(current.not_after);
                    tracing::info!(identity = %current.spiffe_id, "identity material rotated");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!("identity reload failed; keeping the current material: {e}")
                }
            }
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
