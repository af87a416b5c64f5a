//! Graceful shutdown: one signal that stops accept loops and marks the proxy not ready, and a
//! tracker of connection tasks that are given until the drain deadline to finish.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared by the accept loops, the admin server and every connection task.
#[derive(Debug, Clone, Default)]
pub struct Drain {
    signal: CancellationToken,
    tasks: TaskTracker,
}

impl Drain {
    /// A drain that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining (idempotent).
    pub fn start(&self) {
        self.signal.cancel();
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Resolves when draining starts.
    pub async fn started(&self) {
        self.signal.cancelled().await;
    }

    /// The token that starts the drain, for signal handlers.
    pub fn token(&self) -> CancellationToken {
        self.signal.clone()
    }

    /// Spawns a task that the drain waits for.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// Waits for tracked tasks up to `deadline`; returns how many were still running then.
    pub async fn wait(&self, deadline: Duration) -> usize {
        self.tasks.close();
        match tokio::time::timeout(deadline, self.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tasks.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_tasks_until_the_deadline() {
        let drain = Drain::new();
        drain.spawn(tokio::time::sleep(Duration::from_secs(1)));
        drain.spawn(tokio::time::sleep(Duration::from_secs(100)));
        drain.start();
        assert!(drain.is_draining());
        assert_eq!(drain.wait(Duration::from_secs(10)).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_once_when_idle() {
        let drain = Drain::new();
        assert_eq!(drain.wait(Duration::from_secs(10)).await, 0);
    }
}
