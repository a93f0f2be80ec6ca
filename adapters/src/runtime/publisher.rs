//! What the runtime publishes, on its own confirming channel: results for the gateway (with the
//! `message_id` copies of one result share, [`result_message_id`]), a task's next message through
//! the delay queues ([`Publisher::later`]), and dead letters with their reason. A publish returns
//! only once the broker confirmed it. It never reads a delivery's stage (that is [`super::stage`]).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use prost::Message;
use yichuang::bus::Names;
use yichuang::bus::headers as hdr;
use yichuang::proto::v1::{ResultKind, ResultMessage};

use super::stage::continued_headers;
use crate::mapping::Decision;

/// Content type of result messages.
pub const RESULT_CONTENT_TYPE: &str = "application/x-protobuf; proto=yichuang.v1.ResultMessage";

/// The `message_id` of a result: `<task id>:<kind>`, with `:<step>` for progress, and
/// `:s<round>` when it is about a supplement round. Copies of one result share it.
pub fn result_message_id(r: &ResultMessage) -> String {
    let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
    let kind_name = kind
        .as_str_name()
        .trim_start_matches("RESULT_KIND_")
        .to_lowercase();
    let mut id = if kind == ResultKind::Progress {
        format!("{}:{kind_name}:{}", r.task_id, r.step)
    } else if kind == ResultKind::Alive {
        // Each heartbeat is news: none is a copy of another.
        let at = r.at.unwrap_or_default();
        format!("{}:{kind_name}:{}.{:09}", r.task_id, at.seconds, at.nanos)
    } else {
        format!("{}:{kind_name}", r.task_id)
    };
    if r.round != 0 {
        id.push_str(&format!(":s{}", r.round));
    }
    id
}

/// The result a decision makes of `base` (its task, department and case number already set):
/// the kind, and the documents, reasons or materials it carries.
pub(super) fn decided(base: ResultMessage, decision: Decision) -> ResultMessage {
    match decision {
        Decision::Approved(documents) => ResultMessage {
            kind: ResultKind::Approved as i32,
            documents,
            ..base
        },
        Decision::Rejected(reasons) => ResultMessage {
            kind: ResultKind::Rejected as i32,
            reasons,
            ..base
        },
        Decision::Supplement(materials) => ResultMessage {
            kind: ResultKind::Supplement as i32,
            materials,
            ..base
        },
    }
}

/// When a department that gives only a date decided: now if that is today in hall time
/// (UTC+8), else the start of that day in hall time.
pub(super) fn decided_at(date: chrono::NaiveDate) -> pbjson_types::Timestamp {
    let hall_today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    if date == hall_today {
        return now();
    }
    let start = date.and_time(chrono::NaiveTime::MIN).and_utc() - chrono::Duration::hours(8);
    pbjson_types::Timestamp {
        seconds: start.timestamp(),
        nanos: 0,
    }
}

pub(super) fn now() -> pbjson_types::Timestamp {
    let t = chrono::Utc::now();
    pbjson_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Where results, retries and dead letters go; its own connection, with confirms.
pub(super) struct Publisher {
    pub(super) channel: Channel,
    /// The connection's RabbitMQ user: results carry it as `user_id`, which the broker
    /// validates, so the gateway can refuse a result that claims another department.
    pub(super) user: String,
    pub(super) names: Names,
    pub(super) delays: Vec<u64>,
    pub(super) timeout: Duration,
}

impl Publisher {
    pub(super) async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), String> {
        let confirm = tokio::time::timeout(
            self.timeout,
            self.channel.basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            ),
        )
        .await
        .map_err(|_| format!("publish to {exchange}: no answer within {:?}", self.timeout))?
        .map_err(|e| e.to_string())?;
        let confirmation = tokio::time::timeout(self.timeout, confirm)
            .await
            .map_err(|_| format!("confirm from {exchange}: none within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        if confirmation.is_ack() {
            Ok(())
        } else {
            Err(format!("RabbitMQ refused the message to {exchange}"))
        }
    }

    /// Publishes a result about `task_id`.
    pub(super) async fn result(
        &self,
        r: ResultMessage,
        trace: Option<&AMQPValue>,
    ) -> Result<(), String> {
        let kind = ResultKind::try_from(r.kind).unwrap_or(ResultKind::Unspecified);
        let kind_name = kind
            .as_str_name()
            .trim_start_matches("RESULT_KIND_")
            .to_lowercase();
        let message_id = result_message_id(&r);
        let mut headers = FieldTable::default();
        let text = |v: &str| AMQPValue::LongString(v.into());
        headers.insert(ShortString::from(hdr::CASE_ID), text(&r.case_number));
        headers.insert(ShortString::from(hdr::TASK_ID), text(&r.task_id));
        headers.insert(ShortString::from(hdr::DEPARTMENT), text(&r.department));
        // The result continues the trace from the span it was published in (the delivery's,
        // when spans are exported), else from the task's own header.
        match yichuang::trace::traceparent_of(&tracing::Span::current()) {
            Some(own) => {
                headers.insert(ShortString::from(hdr::TRACEPARENT), text(&own));
            }
            None => {
                if let Some(t) = trace {
                    headers.insert(ShortString::from(hdr::TRACEPARENT), t.clone());
                }
            }
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_content_type(RESULT_CONTENT_TYPE.into())
            .with_timestamp(chrono::Utc::now().timestamp() as u64)
            .with_user_id(self.user.as_str().into())
            .with_headers(headers);
        let key = format!("{}.{kind_name}", r.department);
        self.publish(
            &self.names.results_exchange(),
            &key,
            &r.encode_to_vec(),
            properties,
        )
        .await
    }

    /// Sends the message back to its department's queue after `delay`, through the delay queue
    /// whose TTL is the shortest not below it; the message's own expiration carries the exact
    /// (jittered) delay when it is shorter.
    pub(super) async fn later(
        &self,
        department: &str,
        delivery: &Delivery,
        delay: Duration,
        headers: FieldTable,
    ) -> Result<(), String> {
        let wanted = delay.as_secs().max(1);
        let bucket = self
            .delays
            .iter()
            .copied()
            .find(|&d| d >= wanted)
            .or_else(|| self.delays.last().copied())
            .ok_or("no delay queues configured ([bus] retry_delays_secs)")?;
        let expiration = (delay.as_millis() as u64).clamp(1, bucket * 1000);
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(expiration.to_string().into());
        self.publish(
            &self.names.retry_exchange(),
            &self.names.retry_key(department, bucket),
            &delivery.data,
            properties,
        )
        .await
    }

    pub(super) async fn dead(
        &self,
        department: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), String> {
        let mut headers = continued_headers(delivery);
        headers.insert(
            ShortString::from(hdr::REASON),
            AMQPValue::LongString(reason.into()),
        );
        headers.insert(
            ShortString::from(hdr::DEAD_AT),
            AMQPValue::LongString(chrono::Utc::now().to_rfc3339().into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        self.publish(
            &self.names.dead_exchange(),
            department,
            &delivery.data,
            properties,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_a_supplement_round_have_ids_of_their_own() {
        let r = |kind: ResultKind, step: &str, round: i32| ResultMessage {
            task_id: "C1-01".into(),
            kind: kind as i32,
            step: step.into(),
            round,
            ..Default::default()
        };
        assert_eq!(
            result_message_id(&r(ResultKind::Accepted, "", 0)),
            "C1-01:accepted"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Supplement, "", 0)),
            "C1-01:supplement"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Approved, "", 1)),
            "C1-01:approved:s1"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Progress, "审核", 0)),
            "C1-01:progress:审核"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Progress, "审核", 1)),
            "C1-01:progress:审核:s1"
        );
        assert_eq!(
            result_message_id(&r(ResultKind::Failed, "", 12)),
            "C1-01:failed:s12"
        );
    }

    #[test]
    fn a_decision_date_is_the_start_of_that_hall_day_or_now_when_today() {
        let d = chrono::NaiveDate::from_ymd_opt(2019, 6, 20).unwrap();
        // 2019-06-20 00:00 in UTC+8 is 2019-06-19 16:00 UTC.
        assert_eq!(decided_at(d).seconds, 1_560_960_000);
        let today = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
        let at = decided_at(today).seconds;
        assert!((chrono::Utc::now().timestamp() - at).abs() < 5);
    }
}
