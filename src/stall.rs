//! Stalled tasks: the gateway does not rely on the broker alone for liveness. It knows which
//! tasks are in a department's hands (dispatched, accepted, in review) and when it last heard of
//! each (its dispatch, any result, the adapter's `ALIVE` heartbeat while it polls or waits to
//! retry). A task silent for longer than its department allows (`[stall]`) has lost its message
//! somewhere (a purge, a dead-letter that was dropped, a bug), so it is flagged, exactly once
//! across replicas (a conditional update in the store), and the relay publishes it again. That
//! is safe because the adapter looks a task up before it submits it. Each repair is counted and
//! logged and goes to the case history (`task-republished`); a task repaired `alert_after` times
//! gets a `task-stalled` entry; `yichuang_tasks_repaired_total` counts repairs by department
//! (docs/bus.md).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::config::StallConfig;
use crate::event::EventKind;
use crate::proto::v1::CaseEvent;
use crate::store::{CaseChange, Store, StoreError};

/// Tasks looked at per round.
const BATCH: usize = 256;

/// Looks for silent tasks once; returns how many it flagged. `wake` is the relay's.
pub async fn check(
    store: &Store,
    config: &StallConfig,
    now: DateTime<Utc>,
    wake: &Notify,
) -> Result<usize, StoreError> {
    let now_ms = now.timestamp_millis();
    let shortest = config
        .departments
        .values()
        .copied()
        .chain([config.after_secs])
        .min()
        .unwrap_or(config.after_secs);
    let candidates = store
        .stall_candidates(now_ms - shortest as i64 * 1000, BATCH)
        .await?;
    let mut flagged = 0;
    for silent in candidates {
        let allowed = config.allowance(&silent.department);
        if silent.since_ms >= now_ms - allowed as i64 * 1000 {
            continue;
        }
        let Some(repairs) = store.flag_repair(&silent).await? else {
            continue; // heard of meanwhile, or another replica flagged it
        };
        flagged += 1;
        let silent_for = (now_ms - silent.since_ms) / 1000;
        crate::metrics::meters()
            .tasks_repaired
            .get_or_create(&crate::metrics::DepartmentLabels {
                department: silent.department.clone(),
            })
            .inc();
        warn!(task = %silent.task_id, department = %silent.department, silent_secs = silent_for, repairs, "task stalled: nothing heard of it for longer than its department allows; publishing it again");
        if repairs == i64::from(config.alert_after) {
            let detail = format!(
                "{} stalled {repairs} times (nothing heard for {} min at the last): published again each time; follow it up with the department",
                silent.department,
                silent_for / 60
            );
            warn!(task = %silent.task_id, department = %silent.department, repairs, "task stalled repeatedly");
            history(
                store,
                &silent.case_number,
                &silent.task_id,
                EventKind::TaskStalled,
                detail,
                now,
            )
            .await?;
        }
    }
    if flagged > 0 {
        wake.notify_one();
    }
    Ok(flagged)
}

/// After the broker confirmed a republished task: its silence starts again, and the case
/// history says so (once: only the call that clears the flag writes it).
pub async fn republished(
    store: &Store,
    task_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some((case_number, repairs)) =
        store.finish_repair(task_id, now.timestamp_millis()).await?
    {
        info!(task = %task_id, repairs, "stalled task published again");
        let detail = format!("published again after a silence (repair {repairs})");
        history(
            store,
            &case_number,
            task_id,
            EventKind::TaskRepublished,
            detail,
            now,
        )
        .await?;
    }
    Ok(())
}

async fn history(
    store: &Store,
    case_number: &str,
    task_id: &str,
    kind: EventKind,
    detail: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let task_id = task_id.to_string();
    store
        .edit_case(case_number, now, move |_case, last_seq, at| {
            let event = CaseEvent {
                seq: last_seq + 1,
                at: Some(at),
                kind: kind.as_str().into(),
                task_id,
                detail,
            };
            let change = CaseChange {
                events: vec![event],
                ..Default::default()
            };
            (Some(change), ())
        })
        .await?;
    Ok(())
}

/// Looks for silent tasks every `[stall] check_secs` until the process ends.
pub async fn run(store: Store, config: StallConfig, wake: Arc<Notify>, now: crate::clock::Now) {
    let every = Duration::from_secs(config.check_secs.max(1));
    info!(
        after_secs = config.after_secs,
        every_secs = every.as_secs(),
        "stall detector running"
    );
    loop {
        if crate::supervise::idle(tokio::time::sleep(every))
            .await
            .is_none()
        {
            return;
        }
        match check(&store, &config, now(), &wake).await {
            Ok(_) => crate::supervise::progressed(),
            Err(e) => warn!(error = %e, "stall detector cannot read the store; trying again"),
        }
    }
}
