//! Dead-letter operations as operators run them, from `yichuang dlq` or `AdminService`: the
//! selection checked, the move itself ([`crate::bus::dead`]), and its record in the audit of
//! operators' actions (the store's `operator_actions`: who, from where, which queue, which message
//! ids; never contents). A move that happened is always reported, even when its record could not
//! be written: the error then says so, and the log carries the record instead.

use tracing::{error, info};

use crate::bus::dead::{self, Action, DeadLetter, Selection};
use crate::config::BusConfig;
use crate::store::{OperatorAction, Store};

/// Why an operation was not done (or not recorded).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("{0}")]
    Selection(String),
    #[error("{0}")]
    Bus(#[from] crate::bus::BusError),
    #[error("the operation stopped before it finished ({0}); list the queue to see where it is")]
    Stopped(String),
    #[error(
        "{action} of {count} message(s) of {queue} done, but its audit record could not be written ({source}); the log has it"
    )]
    Unrecorded {
        action: &'static str,
        count: usize,
        queue: String,
        source: crate::store::StoreError,
    },
}

/// The selection an operator asked for: exactly one of message ids, a reason, or all.
pub fn selection(
    message_ids: Vec<String>,
    reason_contains: &str,
    all: bool,
) -> Result<Selection, DlqError> {
    let reason = reason_contains.trim();
    match (!message_ids.is_empty(), !reason.is_empty(), all) {
        (true, false, false) => Ok(Selection::Ids(message_ids)),
        (false, true, false) => Ok(Selection::Reason(reason.to_string())),
        (false, false, true) => Ok(Selection::All),
        _ => Err(DlqError::Selection(
            "name the messages by message_id, or by a reason they contain, or say all (exactly one of them)".into(),
        )),
    }
}

/// Up to `limit` messages of the dead queue whose reason contains `reason_contains` (all when
/// it is empty), oldest first; the queue is left as it was.
pub async fn list(
    bus: &BusConfig,
    department: &str,
    limit: usize,
    reason_contains: &str,
) -> Result<Vec<DeadLetter>, DlqError> {
    let reason = reason_contains.trim();
    let all = dead::list(
        bus,
        department,
        if reason.is_empty() { limit } else { usize::MAX },
    )
    .await?;
    Ok(all
        .into_iter()
        .filter(|d| d.reason.contains(reason))
        .take(limit)
        .collect())
}

/// One message of the dead queue in full (headers, deaths, masked body), among its first 1000.
pub async fn look(
    bus: &BusConfig,
    department: &str,
    message_id: &str,
) -> Result<Option<dead::DeadDetail>, DlqError> {
    Ok(dead::look(bus, department, message_id, 1000).await?)
}

/// Who asks for an operation, for its record: their account, where the request came from
/// (`grpc@<peer>`, `console@<peer>`), and their reason (required for a purge by the console;
/// empty when none was given).
#[derive(Debug, Clone)]
pub struct Actor {
    pub operator: String,
    pub origin: String,
    pub note: String,
}

/// Moves back (or discards) the selected messages, at most `rate` a second, and records what
/// was moved, also when the move failed part-way. It runs as a task of its own: a caller that
/// goes away (a gRPC client cancelling, a browser closed) does not cut it between a move and
/// its record. `progress` counts as it goes.
#[allow(clippy::too_many_arguments)]
pub async fn act(
    bus: &BusConfig,
    store: &Store,
    department: &str,
    selection: Selection,
    action: Action,
    rate: u32,
    actor: Actor,
    progress: std::sync::Arc<dead::Progress>,
) -> Result<Vec<DeadLetter>, DlqError> {
    let (bus, store, department) = (bus.clone(), store.clone(), department.to_string());
    tokio::spawn(async move {
        let mut moved = Vec::new();
        let done = dead::act(
            &bus,
            &department,
            &selection,
            action,
            rate,
            &mut moved,
            &progress,
        )
        .await;
        if done.is_ok() || !moved.is_empty() {
            record(&bus, &store, &department, action, &moved, &actor).await?;
        }
        done?;
        Ok(moved)
    })
    .await
    .unwrap_or_else(|e| Err(DlqError::Stopped(e.to_string())))
}

async fn record(
    bus: &BusConfig,
    store: &Store,
    department: &str,
    action: Action,
    moved: &[DeadLetter],
    actor: &Actor,
) -> Result<(), DlqError> {
    let (operator, origin) = (actor.operator.as_str(), actor.origin.as_str());
    let name = match action {
        Action::Replay => "dlq-replay",
        Action::Purge => "dlq-purge",
    };
    let queue = dead::queue(bus, department);
    let ids: Vec<String> = moved.iter().map(|d| d.message_id.clone()).collect();
    let note = crate::privacy::mask_free_text(&actor.note);
    info!(action = name, operator, origin, queue = %queue, count = ids.len(), message_ids = %ids.join(" "), note = %note, "operator action");
    let record = OperatorAction {
        at_ms: chrono::Utc::now().timestamp_millis(),
        operator: operator.to_string(),
        origin: origin.to_string(),
        action: name.to_string(),
        target: queue.clone(),
        message_ids: ids,
        note,
    };
    if let Err(source) = store.record_operator_action(record).await {
        error!(action = name, operator, queue = %queue, error = %source, "operator action not recorded in the store");
        return Err(DlqError::Unrecorded {
            action: name,
            count: moved.len(),
            queue,
            source,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_way_of_selecting() {
        assert_eq!(
            selection(vec!["m1".into()], "", false).unwrap(),
            Selection::Ids(vec!["m1".into()])
        );
        assert_eq!(
            selection(vec![], " delivery_limit ", false).unwrap(),
            Selection::Reason("delivery_limit".into())
        );
        assert_eq!(selection(vec![], "", true).unwrap(), Selection::All);
        assert!(selection(vec![], "", false).is_err(), "nothing selected");
        assert!(selection(vec!["m1".into()], "", true).is_err(), "two ways");
        assert!(selection(vec![], "x", true).is_err(), "two ways");
    }
}
