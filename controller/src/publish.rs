//! Between the index and the subscribers: applies each new snapshot to the [`Index`] and hands
//! every changed view to the watch channel of its workload, so that each subscriber sees every
//! version it has not seen (the newest one, atomically; versions in between may be skipped).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use portcullis_config::snapshot::Snapshot;
use tokio::sync::watch;

use crate::admission::Facts;
use crate::index::{Index, Key, Versioned};
use crate::metrics::{LoadLabels, Metrics};

/// Watches of pods the index does not know, at most (any client may ask for any name).
pub const MAX_UNKNOWN_WATCHES: usize = 4096;

#[derive(Debug, Default)]
struct Inner {
    index: Index,
    senders: HashMap<Key, watch::Sender<Arc<Versioned>>>,
}

/// The current views and their subscribers.
#[derive(Debug)]
pub struct Publisher {
    inner: Mutex<Inner>,
    facts: Mutex<Option<Arc<Facts>>>,
    ready: AtomicBool,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
}

impl Publisher {
    /// Nothing published yet (not ready).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::default(),
            facts: Mutex::default(),
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a snapshot: every changed view goes to its subscribers, and admission judges by
    /// its facts from now on. Returns how many views changed.
    pub fn apply(&self, snapshot: &Snapshot) -> usize {
        let facts = Arc::new(Facts::of(snapshot));
        *self.facts.lock().unwrap_or_else(|p| p.into_inner()) = Some(facts);
        let mut inner = self.lock();
        inner.senders.retain(|_, tx| tx.receiver_count() > 0);
        let changed = inner.index.update(snapshot);
        self.push(&inner, &changed);
        self.metrics.workloads.set(inner.index.len() as i64);
        self.ready.store(true, Ordering::Release);
        changed.len()
    }

    /// Every view carries `bundle` (PEM) as its trust bundle from now on; the changed ones go to
    /// their subscribers.
    pub fn set_trust_bundle(&self, bundle: &str) {
        let mut inner = self.lock();
        let changed = inner.index.set_trust_bundle(bundle);
        self.push(&inner, &changed);
    }

    /// Sends each changed view to its subscribers.
    fn push(&self, inner: &Inner, changed: &[Key]) {
        for key in changed {
            let view = inner.index.versioned(key);
            if let Some(tx) = inner.senders.get(key) {
                tx.send_replace(view);
                self.metrics.view_pushes.inc();
            }
        }
    }

    /// The stream of `key`'s views, starting with the current one; `None` when too many
    /// watches wait for pods nobody knows (names a client made up cost memory, not views).
    pub fn subscribe(&self, key: Key) -> Option<watch::Receiver<Arc<Versioned>>> {
        let mut inner = self.lock();
        if let Some(tx) = inner.senders.get(&key) {
            return Some(tx.subscribe());
        }
        let current = inner.index.versioned(&key);
        if !current.known() {
            // Channels nobody listens to any more go first.
            inner.senders.retain(|_, tx| tx.receiver_count() > 0);
            let unknown = inner
                .senders
                .values()
                .filter(|tx| !tx.borrow().known())
                .count();
            if unknown >= MAX_UNKNOWN_WATCHES {
                return None;
            }
        }
        let tx = inner
            .senders
            .entry(key)
            .or_insert_with(|| watch::channel(current).0);
        Some(tx.subscribe())
    }

    /// Counts one read of the source (`portcullis_controller_source_loads_total{result}`).
    pub fn count_load(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.metrics
            .source_loads
            .get_or_create(&LoadLabels { result })
            .inc();
    }

    /// What admission judges by: the facts of the last snapshot applied (`None` before the
    /// first).
    pub fn facts(&self) -> Option<Arc<Facts>> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a first snapshot has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_names_cannot_grow_the_watches_without_bound() {
        let p = Publisher::new(Arc::new(Metrics::default()));
        let mut held = Vec::new();
        for i in 0..MAX_UNKNOWN_WATCHES {
            held.push(
                p.subscribe(("nowhere".into(), format!("p{i}")))
                    .expect("within the bound"),
            );
        }
        assert!(p.subscribe(("nowhere".into(), "one-more".into())).is_none());
        // Once their streams are gone, their channels are too.
        held.clear();
        assert!(p.subscribe(("nowhere".into(), "one-more".into())).is_some());
        // A second watch of the same workload shares its channel.
        assert!(p.subscribe(("nowhere".into(), "one-more".into())).is_some());
    }
}
