//! Supervision of the gateway's background workers (the outbox relay, the results consumer, the
//! SLA sweeper, the platform push, the stall detector, the calendar watch). Each worker loops
//! forever and handles its own errors (a lost broker, a store that does not answer); a worker
//! that still ends, by a panic or a bug, is started again with backoff (1 s doubling to 60 s),
//! and counted: `AdminService.Status` lists every worker with its state, restarts and last
//! progress (a worker calls [`progressed`] whenever it got something done: published, applied,
//! swept, pushed, looked), and `yichuang_worker_restarts_total{worker}` counts the restarts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::error;

/// What a worker is doing, for `AdminService.Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerState {
    pub running: bool,
    pub restarts: u64,
    /// Why it last ended (a panic's message), empty if it never did.
    pub last_failure: String,
    /// When it last got something done (Unix milliseconds); 0: not yet.
    pub last_progress_ms: i64,
}

/// The gateway's workers by name.
#[derive(Debug, Default)]
pub struct Workers {
    states: Mutex<BTreeMap<&'static str, WorkerState>>,
    progress: Mutex<BTreeMap<&'static str, Arc<AtomicI64>>>,
}

tokio::task_local! {
    /// The last progress of the worker this task runs (set by [`supervise`]).
    static PROGRESS: Arc<AtomicI64>;
}

/// Records that the worker running this task got something done. Outside a supervised worker
/// (a test calling the worker's code directly), nothing.
pub fn progressed() {
    let now = chrono::Utc::now().timestamp_millis();
    let _ = PROGRESS.try_with(|p| p.store(now, Ordering::Relaxed));
}

impl Workers {
    /// Every worker's state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, WorkerState> {
        let progress = self.progress.lock().expect("workers lock");
        let mut states = self.states.lock().expect("workers lock").clone();
        for (name, state) in states.iter_mut() {
            if let Some(p) = progress.get(name) {
                state.last_progress_ms = p.load(Ordering::Relaxed);
            }
        }
        states
    }

    fn progress_of(&self, name: &'static str) -> Arc<AtomicI64> {
        self.progress
            .lock()
            .expect("workers lock")
            .entry(name)
            .or_default()
            .clone()
    }

    fn set(&self, name: &'static str, f: impl FnOnce(&mut WorkerState)) {
        f(self
            .states
            .lock()
            .expect("workers lock")
            .entry(name)
            .or_default());
    }
}

/// Aborts the worker it holds when dropped: aborting the supervisor stops the worker too.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the worker `make()` builds, and builds and runs it again whenever it ends.
pub fn supervise<F, Fut>(workers: Arc<Workers>, name: &'static str, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            workers.set(name, |s| s.running = true);
            let progress = workers.progress_of(name);
            let mut worker = AbortOnDrop(tokio::spawn(PROGRESS.scope(progress, make())));
            let ended = (&mut worker.0).await;
            let why = match ended {
                Ok(()) => "it returned".to_string(),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into())
                }
                Err(_) => "it was cancelled".to_string(),
            };
            let why = crate::privacy::mask_free_text(&why);
            workers.set(name, |s| {
                s.running = false;
                s.restarts += 1;
                s.last_failure = why.clone();
            });
            crate::metrics::meters()
                .worker_restarts
                .get_or_create(&crate::metrics::WorkerLabels {
                    worker: name.to_string(),
                })
                .inc();
            error!(worker = name, failure = %why, restart_in_secs = backoff.as_secs(), "gateway worker stopped; starting it again");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_worker_that_panics_is_started_again_and_counted() {
        let workers = Arc::new(Workers::default());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = supervise(workers.clone(), "flaky", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("worker bug");
                }
                std::future::pending::<()>().await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let state = workers.states()["flaky"].clone();
        assert_eq!(state.restarts, 2);
        assert!(state.running);
        assert_eq!(state.last_failure, "worker bug");
        handle.abort();
    }

    #[tokio::test]
    async fn a_workers_progress_is_reported_and_only_its_own() {
        let workers = Arc::new(Workers::default());
        let busy = supervise(workers.clone(), "busy", || async {
            loop {
                progressed();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let idle = supervise(workers.clone(), "idle", std::future::pending::<()>);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while workers
            .states()
            .get("busy")
            .is_none_or(|s| s.last_progress_ms == 0)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress recorded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let states = workers.states();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(now - states["busy"].last_progress_ms < 30_000);
        assert_eq!(
            states["idle"].last_progress_ms, 0,
            "the idle worker made none"
        );
        // Outside a supervised worker: no panic.
        progressed();
        busy.abort();
        idle.abort();
    }
}
