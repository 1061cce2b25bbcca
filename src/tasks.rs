//! The one place background tasks are started: each has a name, ends when the set is
//! shut down, and is joined before [`Tasks::shutdown`] returns. Nothing spawned here
//! outlives the [`crate::App`] that started it, so its files and sockets are closed
//! when `serve` returns.

use std::{future::Future, time::Duration};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// A set of named background tasks, cheap to clone and hand to the components that
/// start tasks of their own (the Redis tailer, one task per watch stream).
#[derive(Clone, Debug)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Asks the tasks that read what an operator changes (the API keys file, the TLS
    /// files, issuers' key sets) to read it now rather than at their next period.
    reread: std::sync::Arc<watch::Sender<()>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self {
            tracker: TaskTracker::default(),
            stop: CancellationToken::default(),
            reread: std::sync::Arc::new(watch::channel(()).0),
        }
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it ends or the set shuts down, whichever is first: a task that
    /// is stopped is dropped at its next await, so it needs no shutdown arm of its own.
    pub fn spawn(&self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        let name = name.into();
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => tracing::debug!(task = %name, "finished"),
                () = stop.cancelled() => tracing::debug!(task = %name, "stopped"),
            }
        });
    }

    /// Runs `work` every `period` (the first run at once), and at once whenever
    /// [`Self::reread_now`] asks, until shutdown.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let mut rereads = self.rereads();
        self.spawn(name, async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    Ok(()) = rereads.changed() => {}
                }
                work().await;
            }
        });
    }

    /// Asks every task that reads what an operator changes to read it again now (SIGHUP).
    pub fn reread_now(&self) {
        self.reread.send_replace(());
    }

    /// Changes once for each [`Self::reread_now`] from now on.
    pub fn rereads(&self) -> watch::Receiver<()> {
        self.reread.subscribe()
    }

    /// Fires when the set shuts down, for work that must notice it without being a task
    /// (a stream handed to a client ends with it).
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops every task and waits until each has ended.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Dropped when its task is.
    struct Alive(Arc<AtomicUsize>);

    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_and_joins_every_task() {
        let tasks = Tasks::new();
        let alive = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            alive.fetch_add(1, Ordering::SeqCst);
            let guard = Alive(alive.clone());
            tasks.spawn("forever", async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        assert_eq!(tasks.len(), 3);
        tasks.shutdown().await;
        assert_eq!(alive.load(Ordering::SeqCst), 0, "a task outlived shutdown");
        assert!(tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn every_runs_on_its_period() {
        let tasks = Tasks::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.every("count", Duration::from_secs(10), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        });
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "at 0, 10 and 20 s");
        tasks.reread_now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "asked to read again at 25 s"
        );
        tasks.shutdown().await;
    }
}
