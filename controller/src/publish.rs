//! Between the index and the subscribers: applies each new snapshot to the [`Index`] and hands
//! every changed view to the watch channel of its workload, so that each subscriber sees every
//! version it has not seen (the newest one, atomically; versions in between may be skipped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_api::v1;
use portcullis_config::snapshot::Snapshot;
use tokio::sync::watch;

use crate::index::{Index, Key};
use crate::metrics::Metrics;

#[derive(Debug, Default)]
struct Inner {
    index: Index,
    senders: HashMap<Key, watch::Sender<Arc<v1::View>>>,
}

/// The current views and their subscribers.
#[derive(Debug)]
pub struct Publisher {
    inner: Mutex<Inner>,
    ready: AtomicBool,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
}

impl Publisher {
    /// Nothing published yet (not ready).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::default(),
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a snapshot: every changed view goes to its subscribers. Returns how many views
    /// changed.
    pub fn apply(&self, snapshot: &Snapshot) -> usize {
        let mut inner = self.lock();
        let changed = inner.index.update(snapshot);
        for key in &changed {
            let view = inner.index.get(key);
            if let Some(tx) = inner.senders.get(key) {
                tx.send_replace(view);
                self.metrics.view_pushes.inc();
            }
        }
        self.metrics.workloads.set(inner.index.len() as i64);
        self.ready.store(true, Ordering::Release);
        changed.len()
    }

    /// The stream of `key`'s views, starting with the current one.
    pub fn subscribe(&self, key: Key) -> watch::Receiver<Arc<v1::View>> {
        let mut inner = self.lock();
        let current = inner.index.get(&key);
        let tx = inner
            .senders
            .entry(key)
            .or_insert_with(|| watch::channel(current).0);
        tx.subscribe()
    }

    /// Whether a first snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
