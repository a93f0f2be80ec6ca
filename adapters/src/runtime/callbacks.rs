//! What a legacy system says in a callback (`POST /callback/<dept>`, served by [`crate::http`]),
//! published as results on the current session's publisher. The polling chain still runs; a
//! callback only brings the news sooner.

use std::sync::Arc;

use yichuang::proto::v1::{ResultKind, ResultMessage};

use super::department::Department;
use super::publisher::{Publisher, decided, now};
use crate::system::Answer;

/// Publishes what a legacy system said in a callback. Used by the HTTP endpoint.
pub struct Callbacks {
    pub(super) publisher: tokio::sync::RwLock<Option<Arc<Publisher>>>,
}

impl Callbacks {
    pub fn new() -> Arc<Callbacks> {
        Arc::new(Callbacks {
            publisher: tokio::sync::RwLock::new(None),
        })
    }

    /// Publishes the step and decision a callback carries; the polling chain still runs (a
    /// callback may be lost), and consumers drop the second copy by `message_id`. A callback
    /// does not say which supplement round it is about: its results are round 0, which the
    /// gateway takes as stale once the task resumed after a supplement — that round's results
    /// come from polling.
    pub async fn publish(
        &self,
        department: &Department,
        task_id: &str,
        answer: &Answer,
    ) -> Result<(), String> {
        let publisher = self
            .publisher
            .read()
            .await
            .clone()
            .ok_or("not connected to RabbitMQ")?;
        let reading = department.config.mapping.result.read(answer);
        let base = ResultMessage {
            task_id: task_id.to_string(),
            case_number: super::case_of(task_id).to_string(),
            department: department.code().to_string(),
            department_case_number: reading.department_case_number.clone().unwrap_or_default(),
            at: Some(now()),
            ..Default::default()
        };
        if let Some(step) = reading.step {
            publisher
                .result(
                    ResultMessage {
                        kind: ResultKind::Progress as i32,
                        step,
                        ..base.clone()
                    },
                    None,
                )
                .await?;
        }
        let Some(decision) = reading.decision else {
            return Ok(());
        };
        publisher.result(decided(base, decision), None).await
    }
}
