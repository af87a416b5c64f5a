//! The active policy and its reload.
//!
//! The policy lives behind an `ArcSwap`: every new connection and every new request reads the
//! current one, so a reload affects them at once while work in progress keeps the policy it
//! started with. A reload reads the whole source, and replaces the policy only if it changed and
//! compiles completely; a failure keeps the last good policy, is logged with its
//! `file:line:col` errors and counted. What triggers reloads is [`super::watch`]'s (and SIGHUP's).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use portcullis_config::LoadedPolicy;
use portcullis_config::load::read_source;

use super::Workload;
use super::view::ViewInputs;
use crate::observe::Chain;
use crate::observe::metrics::{Metrics, ReloadLabels};
use crate::routes::Routes;

/// A compiled policy and when it became active.
#[derive(Debug)]
pub struct Active {
    /// The policy.
    pub loaded: LoadedPolicy,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Where outbound connections go (from the controller's view; empty without one).
    pub routes: Routes,
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

/// What a compiled policy was compiled from: the source's content hash and the workload facts
/// that can change under a running pod (its labels file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Inputs {
    source: String,
    workload: String,
    view: String,
}

/// The routes of a view (none without one).
fn routes(view: Option<&ViewInputs>) -> Routes {
    match view {
        Some(v) => match &v.ctx.cluster {
            Some(cluster) => Routes::new(cluster, &v.mesh),
            None => Routes::new(&Default::default(), &v.mesh),
        },
        None => Routes::default(),
    }
}

/// The inputs of the active policy and of the last that failed (reported once, not every poll).
#[derive(Debug, Default)]
struct Seen {
    active: Inputs,
    failed: Option<Inputs>,
}

/// The active policy and where it comes from.
#[derive(Debug)]
pub struct PolicyStore {
    current: ArcSwap<Active>,
    /// Serializes reloads (SIGHUP, the watcher and the poll may fire together).
    reloading: Mutex<Seen>,
    source: Option<(PathBuf, Workload)>,
    /// Whether a controller's view is expected, and the latest one it sent.
    controller: bool,
    view: Mutex<Option<Arc<ViewInputs>>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl PolicyStore {
    /// Starts with `loaded`; `source` is where reloads read from (none: never reloads).
    pub(crate) fn new(
        loaded: LoadedPolicy,
        source: Option<(PathBuf, Workload)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.set_policy_hash(&loaded.hash);
        let active = Inputs {
            source: loaded.hash.clone(),
            workload: source
                .as_ref()
                .and_then(|(_, w)| w.fingerprint().ok())
                .unwrap_or_default(),
            view: String::new(),
        };
        Self {
            current: ArcSwap::from_pointee(Active {
                loaded,
                loaded_at: SystemTime::now(),
                routes: Routes::default(),
            }),
            reloading: Mutex::new(Seen {
                active,
                failed: None,
            }),
            source,
            controller: false,
            view: Mutex::new(None),
            metrics,
        }
    }

    /// Expects views from a controller: until the first arrives, the store is waiting.
    pub(crate) fn expecting_views(mut self) -> Self {
        self.controller = true;
        self
    }

    /// Whether a controller's first view is still awaited (the sidecar is not ready then).
    pub fn waiting_for_view(&self) -> bool {
        self.controller && self.latest_view().is_none()
    }

    fn latest_view(&self) -> Option<Arc<ViewInputs>> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a new view from the controller and recompiles with it (blocking).
    pub fn apply_view(&self, view: ViewInputs) -> Reload {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(view));
        self.reload()
    }

    /// The active policy.
    pub fn current(&self) -> Arc<Active> {
        self.current.load_full()
    }

    /// The policy source, if reloads read one.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|(p, _)| p.as_path())
    }

    /// The workload's labels file, whose changes re-evaluate which policies select it.
    pub(crate) fn labels_path(&self) -> Option<&Path> {
        self.source.as_ref()?.1.labels_file.as_deref()
    }

    /// Reads the source (and the workload's labels) and activates the policy if either changed
    /// and it is valid (blocking: file IO and compilation).
    pub fn reload(&self) -> Reload {
        let view = self.latest_view();
        if self.source.is_none() && view.is_none() {
            return Reload::Unchanged;
        }
        let source = self.source.as_ref().map(|(p, w)| (p.as_path(), w));
        let mut seen = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match self.inputs(view.as_deref()) {
            Ok(now) if now == seen.active || seen.failed.as_ref() == Some(&now) => {
                return Reload::Unchanged;
            }
            Ok(now) => match super::compile_inputs(source, view.as_deref()) {
                Ok(loaded) => {
                    let hash = loaded.hash.clone();
                    for w in &loaded.warnings {
                        tracing::warn!("{w}");
                    }
                    self.metrics.set_policy_hash(&hash);
                    self.current.store(Arc::new(Active {
                        loaded,
                        loaded_at: SystemTime::now(),
                        routes: routes(view.as_deref()),
                    }));
                    *seen = Seen {
                        active: now,
                        failed: None,
                    };
                    Reload::Reloaded { hash }
                }
                Err(e) => {
                    seen.failed = Some(now);
                    Reload::Failed(Chain(&e).to_string())
                }
            },
            Err(e) => Reload::Failed(e),
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

    /// What the policy would be compiled from now.
    fn inputs(&self, view: Option<&ViewInputs>) -> Result<Inputs, String> {
        let view = view.map(|v| v.hash.clone()).unwrap_or_default();
        let Some((path, workload)) = &self.source else {
            return Ok(Inputs {
                view,
                ..Inputs::default()
            });
        };
        let src = read_source(path).map_err(|e| Chain(&e).to_string())?;
        Ok(Inputs {
            source: src.content_hash(),
            workload: workload.fingerprint().map_err(|e| Chain(&e).to_string())?,
            view,
        })
    }

    /// Reloads off the async threads.
    pub async fn reload_async(self: &Arc<Self>) -> Reload {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.reload())
            .await
            .unwrap_or_else(|e| Reload::Failed(format!("reload task failed: {e}")))
    }
}
