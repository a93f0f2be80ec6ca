//! Supervision of the gateway's background workers (the outbox relay, the results consumer, the
//! SLA sweeper, the platform push, the stall detector, the calendar watch). Each worker loops
//! forever and handles its own errors (a lost broker, a store that does not answer); a worker
//! that still ends, by a panic or a bug, is started again with backoff (1 s doubling to 60 s),
//! and counted: `AdminService.Status` lists every worker with its state, restarts and last
//! progress (a worker calls [`progressed`] whenever it got something done: published, applied,
//! swept, pushed, looked), and `yichuang_worker_restarts_total{worker}` counts the restarts.
//!
//! Shutdown (the mini-redis pattern): a [`Shutdown`] is sent once; every worker run under it
//! waits through [`idle`], which ends when it is sent, so the worker finishes the unit of work
//! in hand (a batch published and confirmed, a result applied, a sweep) and returns. What a
//! worker never does is stop in the middle of a unit: nothing here cancels one, except
//! [`Shutdown::finish`] after its grace period, and every unit is safe to repeat.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, warn};

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
    /// The shutdown the worker this task runs obeys (set by [`Shutdown::scope`]).
    static STOP: watch::Receiver<bool>;
}

/// A process's shutdown signal: sent once ([`Shutdown::stop`]); every worker run in its
/// [`Shutdown::scope`] (every [`supervise`]d one is) sees it in [`idle`] and returns.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            sender: Arc::new(watch::Sender::new(false)),
        }
    }
}

impl Shutdown {
    /// Tells every worker to finish what it is doing and return.
    pub fn stop(&self) {
        self.sender.send_replace(true);
    }

    /// Whether [`Shutdown::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once [`Shutdown::stop`] is called.
    pub async fn stopped(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives as long as `self`: this returns only when stop was sent.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    /// Runs `work` as a worker of this shutdown: its [`idle`] waits end once stop is sent.
    pub fn scope<F: Future>(&self, work: F) -> impl Future<Output = F::Output> + use<F> {
        STOP.scope(self.sender.subscribe(), work)
    }

    /// After [`Shutdown::stop`]: waits up to `grace` for the `workers` to return, then aborts
    /// the ones still running (each is safe to cut; the grace only spares copies and retries).
    pub async fn finish(&self, workers: Vec<JoinHandle<()>>, grace: Duration) {
        self.stop();
        let deadline = tokio::time::Instant::now() + grace;
        for mut worker in workers {
            if tokio::time::timeout_at(deadline, &mut worker)
                .await
                .is_err()
            {
                warn!(
                    grace_secs = grace.as_secs(),
                    "a worker did not finish within the grace period; stopped"
                );
                worker.abort();
            }
        }
    }
}

/// What wakes a worker that reloads a file (the calendar, `[limits]`): its period, when it has
/// one, or `SIGHUP`.
pub struct Reloads {
    every: Option<Duration>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Reloads {
    /// Installs the `SIGHUP` handler at once: a SIGHUP must never meet the default action
    /// (ending the process).
    pub fn new(every: Option<Duration>) -> Reloads {
        Reloads {
            every,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Waits for the next reload, through [`idle`]: `Some(true)` on `SIGHUP`, `Some(false)` when
    /// the period ran out, `None` when the worker is to stop.
    pub async fn next(&mut self) -> Option<bool> {
        let every = self.every;
        let tick = async move {
            match every {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let hangup = &mut self.hangup;
        #[cfg(unix)]
        return idle(async {
            tokio::select! {
                _ = tick => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            }
        })
        .await;
        #[cfg(not(unix))]
        return idle(async {
            tick.await;
            false
        })
        .await;
    }
}

/// Waits for `wait` (a sleep, a wake-up, the next delivery) unless the worker running this is
/// told to stop first: then `None`, and the worker returns. Outside a [`Shutdown::scope`] (a
/// test calling the worker's code directly), just `wait`.
pub async fn idle<T>(wait: impl Future<Output = T>) -> Option<T> {
    let Ok(mut stop) = STOP.try_with(|stop| stop.clone()) else {
        return Some(wait.await);
    };
    if *stop.borrow_and_update() {
        return None;
    }
    let stopped = async move {
        if stop.wait_for(|stopped| *stopped).await.is_err() {
            // The shutdown was dropped unsent: it never comes.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        biased;
        _ = stopped => None,
        v = wait => Some(v),
    }
}

/// `work`, about to be spawned, under the shutdown of the task spawning it (a spawned task does
/// not inherit it): its [`idle`] waits end when that shutdown is sent.
pub fn inherit<F: Future>(work: F) -> impl Future<Output = F::Output> {
    // Outside a scope: a shutdown that is never sent.
    let stop = STOP
        .try_with(|stop| stop.clone())
        .unwrap_or_else(|_| watch::channel(false).1);
    STOP.scope(stop, work)
}

/// Completes when the process is asked to end: SIGTERM (what Kubernetes and systemd send) or
/// Ctrl-C (SIGINT).
pub async fn terminated() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process gracefully");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Whether the worker running this has been told to stop (false outside a [`Shutdown::scope`]).
pub fn stopping() -> bool {
    STOP.try_with(|stop| *stop.borrow()).unwrap_or(false)
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

/// Runs the worker `make()` builds, and builds and runs it again whenever it ends, until
/// `shutdown` is sent: then the worker returns at its next [`idle`] and is not started again.
pub fn supervise<F, Fut>(
    workers: Arc<Workers>,
    shutdown: &Shutdown,
    name: &'static str,
    make: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            workers.set(name, |s| s.running = true);
            let progress = workers.progress_of(name);
            let mut worker = AbortOnDrop(tokio::spawn(
                PROGRESS.scope(progress, shutdown.scope(make())),
            ));
            let ended = (&mut worker.0).await;
            if shutdown.is_stopped() {
                workers.set(name, |s| s.running = false);
                return;
            }
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
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.stopped() => return,
            }
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
        let handle = supervise(workers.clone(), &Shutdown::default(), "flaky", move || {
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
        let busy = supervise(workers.clone(), &Shutdown::default(), "busy", || async {
            loop {
                progressed();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let idle = supervise(
            workers.clone(),
            &Shutdown::default(),
            "idle",
            std::future::pending::<()>,
        );
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

    #[tokio::test]
    async fn a_stopped_worker_finishes_its_unit_of_work_returns_and_is_not_started_again() {
        let workers = Arc::new(Workers::default());
        let shutdown = Shutdown::default();
        let (begun, done, runs) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicU32::new(0)),
        );
        let (b, d, r) = (begun.clone(), done.clone(), runs.clone());
        let handle = supervise(workers.clone(), &shutdown, "careful", move || {
            let (begun, done, runs) = (b.clone(), d.clone(), r.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                loop {
                    // A unit of work that takes a while and must not be cut.
                    begun.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    if idle(tokio::time::sleep(Duration::from_millis(10)))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while done.load(Ordering::SeqCst) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no unit done");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Most likely in the middle of the second unit.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = tokio::time::Instant::now();
        shutdown.finish(vec![handle], Duration::from_secs(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the worker returned on its own, not at the end of the grace period"
        );
        assert_eq!(
            begun.load(Ordering::SeqCst),
            done.load(Ordering::SeqCst),
            "the unit in hand was finished, not cut"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not started again");
        let state = workers.states()["careful"].clone();
        assert!(!state.running);
        assert_eq!(state.restarts, 0);
    }

    #[tokio::test]
    async fn idle_outside_a_shutdown_just_waits() {
        assert_eq!(idle(async { 7 }).await, Some(7));
        assert!(!stopping());
    }
}
