//! A `dir:PATH` source: manifests as `kubectl get -A -o yaml` writes them. Read whole on each
//! change (directory events, debounced, and a content-hash poll); a snapshot with errors is
//! logged with every located error and counted, and the last good one stays (fail static).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use portcullis_config::load::{LoadError, read_source};
use portcullis_config::snapshot::Snapshot;
use tokio::sync::mpsc;

use crate::metrics::LoadLabels;
use crate::publish::Publisher;

/// Reads the snapshot at `path`, or every located error.
pub fn read(path: &Path) -> Result<(Snapshot, String), LoadError> {
    let source = read_source(path)?;
    let snapshot = Snapshot::parse(&source.files);
    if !snapshot.errors.is_empty() {
        return Err(LoadError::Invalid(snapshot.errors));
    }
    Ok((snapshot, source.content_hash()))
}

/// Loads `path` if its content changed since `last`; publishes it when it reads whole.
fn load(path: &Path, last: &mut Option<String>, publisher: &Publisher) {
    let hash = read_source(path).map(|s| s.content_hash()).ok();
    if hash.is_some() && hash == *last {
        return;
    }
    let result = match read(path) {
        Ok((snapshot, hash)) => {
            let changed = publisher.apply(&snapshot);
            tracing::info!(
                %hash,
                pods = snapshot.cluster.pods.len(),
                policies = snapshot.policies.len(),
                changed,
                "snapshot applied"
            );
            *last = Some(hash);
            "success"
        }
        Err(e) => {
            tracing::error!("snapshot not applied; keeping the last good one:\n{e}");
            *last = hash;
            "failure"
        }
    };
    publisher
        .metrics
        .source_loads
        .get_or_create(&LoadLabels { result })
        .inc();
}

/// Watches `path` forever, publishing each new snapshot.
pub async fn watch(path: PathBuf, poll: Duration, publisher: Arc<Publisher>) {
    let mut last = None;
    let p = path.clone();
    let publish = publisher.clone();
    let mut last_seen = tokio::task::spawn_blocking(move || {
        load(&p, &mut last, &publish);
        last
    })
    .await
    .unwrap_or_default();
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
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = tick.tick() => {}
        }
        let (p, publish) = (path.clone(), publisher.clone());
        let mut last = last_seen.take();
        last_seen = tokio::task::spawn_blocking(move || {
            load(&p, &mut last, &publish);
            last
        })
        .await
        .unwrap_or_default();
    }
}
