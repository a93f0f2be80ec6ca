//! Dead-letter replays and purges started from the console: each runs as its own task
//! ([`crate::dlq::act`], transactional, at the rate asked, recorded in the audit of operators'
//! actions), and is kept here with its progress so the page that started it can follow it.
//! The latest [`KEPT`] are kept, in memory: a job outlives its page, not the process (the audit
//! record does).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::bus::dead::{Action, Progress, Selection};
use crate::dlq::Actor;
use crate::gateway::Gateway;

/// Jobs kept for their pages.
pub const KEPT: usize = 64;

/// One replay or purge.
pub struct Job {
    pub id: String,
    pub department: String,
    pub action: Action,
    pub operator: String,
    pub started: DateTime<Utc>,
    pub rate: u32,
    /// Messages named by id (0: a reason or all).
    pub named: usize,
    pub progress: Arc<Progress>,
    /// `None` while it runs; then how many were moved, or why it stopped.
    pub outcome: Mutex<Option<Result<usize, String>>>,
}

impl Job {
    pub fn moved(&self) -> usize {
        self.progress.moved.load(Ordering::Relaxed)
    }
    pub fn looked(&self) -> usize {
        self.progress.looked.load(Ordering::Relaxed)
    }
    pub fn queued(&self) -> usize {
        self.progress.queued.load(Ordering::Relaxed)
    }
    pub fn outcome(&self) -> Option<Result<usize, String>> {
        self.outcome.lock().expect("job lock").clone()
    }
}

/// The jobs of this process, newest last.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Jobs {
    /// Starts `action` on `selection` of `department`'s dead queue and returns its job.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        gateway: &Arc<Gateway>,
        department: &str,
        selection: Selection,
        action: Action,
        rate: u32,
        actor: Actor,
    ) -> Arc<Job> {
        let job = Arc::new(Job {
            id: uuid::Uuid::new_v4().simple().to_string(),
            department: department.to_string(),
            action,
            operator: actor.operator.clone(),
            started: Utc::now(),
            rate,
            named: match &selection {
                Selection::Ids(ids) => ids.len(),
                _ => 0,
            },
            progress: Arc::default(),
            outcome: Mutex::new(None),
        });
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            jobs.push_back(job.clone());
            while jobs.len() > KEPT {
                jobs.pop_front();
            }
        }
        let (g, j) = (gateway.clone(), job.clone());
        tokio::spawn(async move {
            let done = crate::dlq::act(
                &g.bus,
                &g.store,
                &j.department,
                selection,
                action,
                rate,
                actor,
                j.progress.clone(),
            )
            .await;
            *j.outcome.lock().expect("job lock") =
                Some(done.map(|moved| moved.len()).map_err(|e| e.to_string()));
        });
        job
    }

    /// Whether a job on `department`'s dead queue is running: one at a time a queue (another
    /// would take the messages the first is looking at), and no list or look meanwhile.
    pub fn busy(&self, department: &str) -> bool {
        self.jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .any(|j| j.department == department && j.outcome().is_none())
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }
}
