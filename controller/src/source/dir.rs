//! A `dir:PATH` source: manifests as `kubectl get -A -o yaml` writes them. Read whole on each
//! change (directory events, debounced, and a content-hash poll), parsing again only the
//! documents that changed ([`DocumentCache`]); a snapshot with errors is logged with every
//! located error and counted, and the last good one stays (fail static).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use portcullis_config::load::{LoadError, read_source};
use portcullis_config::snapshot::{DocumentCache, Snapshot};
use tokio::sync::mpsc;

use crate::publish::Publisher;

/// What the last load left: the content hash read, and its parsed Namespaces and Pods.
#[derive(Debug, Default)]
struct Last {
    hash: Option<String>,
    cache: DocumentCache,
}

/// Loads `path` if its content changed since `last`; publishes it when it reads whole.
fn load(path: &Path, last: &mut Last, publisher: &Publisher) {
    let source = match read_source(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("snapshot not read; keeping the last good one: {e}");
            return publisher.count_load(false);
        }
    };
    let hash = source.content_hash();
    if last.hash.as_ref() == Some(&hash) {
        return;
    }
    last.hash = Some(hash.clone());
    let started = Instant::now();
    let snapshot = Snapshot::parse_cached(&source.files, &mut last.cache);
    if !snapshot.errors.is_empty() {
        let e = LoadError::Invalid(snapshot.errors);
        tracing::error!("snapshot not applied; keeping the last good one:\n{e}");
        return publisher.count_load(false);
    }
    let parsed = started.elapsed();
    let changed = publisher.apply(&snapshot);
    tracing::info!(
        %hash,
        pods = snapshot.cluster.pods.len(),
        policies = snapshot.policies.len(),
        changed,
        parse_ms = parsed.as_millis() as u64,
        index_ms = (started.elapsed() - parsed).as_millis() as u64,
        "snapshot applied"
    );
    publisher.count_load(true);
}

/// Watches `path` forever, publishing each new snapshot.
pub async fn watch(path: PathBuf, poll: Duration, publisher: Arc<Publisher>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let dir = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let _watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the source; polling only"));
    // The first tick is at once: the first load.
    let mut tick = tokio::time::interval(poll);
    let mut last = Last::default();
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let (p, publish) = (path.clone(), publisher.clone());
        let mut seen = std::mem::take(&mut last);
        last = tokio::task::spawn_blocking(move || {
            load(&p, &mut seen, &publish);
            seen
        })
        .await
        .unwrap_or_default();
    }
}
