//! `AdminService`: the gateway's own state for operators (status, workers, backlogs, on-time
//! rates) and the dead-letter operations, every one of which is audited. Only operators call
//! it; the one change it makes to a case is closing a rectification (整改), audited too.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::store_status;
use crate::case;
use crate::gateway::Gateway;
use crate::proto::v1::admin_service_server::AdminService;
use crate::proto::v1::{StatusRequest, StatusResponse};

/// The `AdminService` implementation.
pub struct AdminApi {
    pub(super) gateway: Arc<Gateway>,
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = &self.gateway.store;
        let backlogs = async { Ok((store.outbox_backlog().await?, store.events_backlog().await?)) };
        let (store_ok, store_error, (backlog, events_backlog)) =
            match backlogs.await as Result<_, crate::store::StoreError> {
                Ok(n) => (true, String::new(), n),
                Err(e) => (false, e.to_string(), (-1, -1)),
            };
        let (broker_connected, broker_error) = self.gateway.relay_status.get();
        let clocks = &self.gateway.clocks;
        let live = clocks.calendar();
        let (now, zone) = (clocks.now(), clocks.zone());
        let (loaded_at, reload_problems) = live.loaded();
        let calendar = crate::proto::v1::CalendarStatus {
            years: live.current().years().collect(),
            next_year_missing: live.next_year_missing(now, zone),
            warning: live.warning(now, zone).unwrap_or_default(),
            provisional_deadlines: store.provisional_open().await.unwrap_or(-1),
            loaded_at: Some(case::timestamp(loaded_at)),
            reload_problems,
        };
        Ok(Response::new(StatusResponse {
            store_ok,
            store_error,
            relay_enabled: self.gateway.relay.is_some(),
            broker_connected,
            broker_error,
            outbox_backlog: backlog,
            events_backlog,
            calendar: Some(calendar),
            workers: self
                .gateway
                .workers
                .states()
                .into_iter()
                .map(|(name, s)| crate::proto::v1::WorkerStatus {
                    name: name.to_string(),
                    running: s.running,
                    restarts: s.restarts as i64,
                    last_failure: s.last_failure,
                    last_progress: chrono::DateTime::from_timestamp_millis(s.last_progress_ms)
                        .filter(|_| s.last_progress_ms > 0)
                        .map(crate::case::timestamp),
                })
                .collect(),
        }))
    }

    async fn on_time_rates(
        &self,
        request: Request<crate::proto::v1::OnTimeRatesRequest>,
    ) -> Result<Response<crate::proto::v1::OnTimeRatesResponse>, Status> {
        let r = request.into_inner();
        let rows = self
            .gateway
            .store
            .on_time(
                r.department.trim(),
                r.item_code.trim(),
                self.gateway.clocks.now(),
            )
            .await
            .map_err(store_status)?;
        let rates = rows
            .into_iter()
            .map(|row| crate::proto::v1::OnTimeRate {
                rate: if row.decided > 0 {
                    row.on_time as f64 / row.decided as f64
                } else {
                    0.0
                },
                department: row.department,
                item_code: row.item_code,
                decided: row.decided,
                on_time: row.on_time,
                open_overdue: row.open_overdue,
            })
            .collect();
        Ok(Response::new(crate::proto::v1::OnTimeRatesResponse {
            rates,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<crate::proto::v1::ListDeadLettersRequest>,
    ) -> Result<Response<crate::proto::v1::ListDeadLettersResponse>, Status> {
        let r = request.into_inner();
        let department = self.dead_queue_owner(&r.department)?;
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit {n} is out of range: give 1 to 1000, or 0 for 100"
                )));
            }
        };
        let letters = crate::dlq::list(&self.gateway.bus, &department, limit, &r.reason_contains)
            .await
            .map_err(dlq_status)?;
        Ok(Response::new(crate::proto::v1::ListDeadLettersResponse {
            dead_letters: letters.into_iter().map(dead_letter).collect(),
        }))
    }

    async fn show_dead_letter(
        &self,
        request: Request<crate::proto::v1::ShowDeadLetterRequest>,
    ) -> Result<Response<crate::proto::v1::ShowDeadLetterResponse>, Status> {
        let r = request.into_inner();
        let department = self.dead_queue_owner(&r.department)?;
        let id = r.message_id.trim();
        let found = crate::dlq::look(&self.gateway.bus, &department, id)
            .await
            .map_err(dlq_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no message {id:?} among the first 1000 of the dead queue of {department}; list the queue for the ids"
                ))
            })?;
        Ok(Response::new(crate::proto::v1::ShowDeadLetterResponse {
            dead_letter: Some(dead_letter(found.letter)),
            headers: found
                .headers
                .into_iter()
                .map(|(name, value)| crate::proto::v1::Header { name, value })
                .collect(),
            deaths: found.deaths,
            body: found.body,
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        self.dead_letter_action(request, crate::bus::dead::Action::Replay)
            .await
    }

    async fn purge_dead_letters(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        self.dead_letter_action(request, crate::bus::dead::Action::Purge)
            .await
    }

    async fn access_log(
        &self,
        request: Request<crate::proto::v1::AccessLogRequest>,
    ) -> Result<Response<crate::proto::v1::AccessLogResponse>, Status> {
        let access = crate::auth::Access::of(
            &request,
            &self.gateway.guard.auditor,
            "AdminService/AccessLog",
        )?;
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is outside 1–1000"
                )));
            }
        };
        let query = crate::store::AccessQuery {
            target: r.case_number.trim().to_string(),
            caller: r.caller.trim().to_string(),
            limit: i64::from(limit),
        };
        // Who looked at the log, and for what, is itself in it.
        let asked = format!(
            "access log: case {:?} caller {:?}",
            query.target, query.caller
        );
        let records = self
            .gateway
            .store
            .access_log(query)
            .await
            .map_err(super::store_status)?;
        access.read(asked).await?;
        Ok(Response::new(crate::proto::v1::AccessLogResponse {
            records: records
                .into_iter()
                .map(|a| crate::proto::v1::AccessRecord {
                    at: Some(pbjson_types::Timestamp {
                        seconds: a.at_ms.div_euclid(1000),
                        nanos: (a.at_ms.rem_euclid(1000) * 1_000_000) as i32,
                    }),
                    caller: a.caller,
                    role: a.role,
                    hall: a.hall,
                    method: a.method,
                    outcome: a.outcome,
                    target: a.target,
                    reason: a.reason,
                })
                .collect(),
        }))
    }

    async fn hotline_orders(
        &self,
        request: Request<crate::proto::v1::HotlineOrdersRequest>,
    ) -> Result<Response<crate::proto::v1::HotlineOrdersResponse>, Status> {
        let access = crate::auth::Access::of(
            &request,
            &self.gateway.guard.auditor,
            "AdminService/HotlineOrders",
        )?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n @ 1..=1000 => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit: {n} is outside 1–1000"
                )));
            }
        };
        let orders = self
            .gateway
            .store
            .hotline_orders(i64::from(limit))
            .await
            .map_err(store_status)?;
        access
            .read(format!("12345 work orders: the last {limit}"))
            .await?;
        Ok(Response::new(crate::proto::v1::HotlineOrdersResponse {
            orders: orders
                .into_iter()
                .map(|o| crate::proto::v1::HotlineOrder {
                    order_no: o.order_no,
                    kind: o.kind,
                    subject: o.case_number,
                    caller: o.caller,
                    at: Some(pbjson_types::Timestamp {
                        seconds: o.at_ms.div_euclid(1000),
                        nanos: (o.at_ms.rem_euclid(1000) * 1_000_000) as i32,
                    }),
                    outcome: o.outcome,
                    answer: o.answer,
                    classification: o.classification,
                })
                .collect(),
        }))
    }

    async fn reply_complaint(
        &self,
        request: Request<crate::proto::v1::ReplyComplaintRequest>,
    ) -> Result<Response<crate::proto::v1::ReplyComplaintResponse>, Status> {
        let access = crate::auth::Access::of(
            &request,
            &self.gateway.guard.auditor,
            "AdminService/ReplyComplaint",
        )?;
        let origin = request
            .remote_addr()
            .map_or_else(|| "grpc".to_string(), |a| format!("grpc@{a}"));
        let operator = access.caller.name.clone();
        let r = request.into_inner();
        let number = r.case_number.trim().to_string();
        let order_no = r.order_no.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument("caseNumber: is required"));
        }
        crate::hotline::check_order_no(&order_no).map_err(Status::invalid_argument)?;
        let store = &self.gateway.store;
        let (case, _) = store
            .get_case(&number)
            .await
            .map_err(store_status)?
            .ok_or_else(|| super::not_found(&number))?;
        let hall = case
            .submission
            .as_ref()
            .map_or("", |s| s.hall_code.as_str());
        access.case(&number, hall).await?;
        let now = self.gateway.clocks.now();
        let (o, reply, who) = (order_no.clone(), r.reply.clone(), operator.clone());
        let (case, closed) = store
            .edit_case(
                &number,
                now,
                move |case, last_seq, at| match crate::hotline::reply(
                    case, &o, &reply, &who, last_seq, at,
                ) {
                    Ok(events) if events.is_empty() => (None, Ok(false)),
                    Ok(events) => {
                        // The reply to send back, queued in the closing's own transaction.
                        let watch = case
                            .supervisions
                            .iter()
                            .find(|s| s.order_no == o)
                            .and_then(|s| s.watch.clone())
                            .unwrap_or_default();
                        let body = crate::hotline::reply_body(
                            &case.case_number,
                            &o,
                            &watch.assignee,
                            &watch.response,
                            now,
                        );
                        (
                            Some(crate::store::CaseChange {
                                events,
                                hotline_replies: vec![(o.clone(), body)],
                                ..Default::default()
                            }),
                            Ok(true),
                        )
                    }
                    Err(refused) => (None, Err(refused)),
                },
            )
            .await
            .map_err(store_status)?
            .ok_or_else(|| super::not_found(&number))?;
        let closed = closed.map_err(super::cases::refused_status)?;
        store
            .record_operator_action(crate::store::OperatorAction {
                at_ms: now.timestamp_millis(),
                operator: operator.clone(),
                origin,
                action: "complaint-reply".into(),
                target: format!("{number} {order_no}"),
                message_ids: Vec::new(),
                note: if closed {
                    String::new()
                } else {
                    "asked again; already replied".into()
                },
            })
            .await
            .map_err(store_status)?;
        if closed {
            tracing::info!(case = %number, order_no = %order_no, operator = %operator, "a 12345 complaint was replied to");
        }
        access.read(number).await?;
        Ok(Response::new(crate::proto::v1::ReplyComplaintResponse {
            case: Some(case),
            queued: closed,
        }))
    }

    async fn close_rectification(
        &self,
        request: Request<crate::proto::v1::CloseRectificationRequest>,
    ) -> Result<Response<crate::proto::v1::CloseRectificationResponse>, Status> {
        let access = crate::auth::Access::of(
            &request,
            &self.gateway.guard.auditor,
            "AdminService/CloseRectification",
        )?;
        let origin = request
            .remote_addr()
            .map_or_else(|| "grpc".to_string(), |a| format!("grpc@{a}"));
        // Who closes it is the authenticated caller.
        let operator = request
            .extensions()
            .get::<crate::auth::Caller>()
            .map(|c| c.name.clone())
            .ok_or_else(|| Status::unauthenticated("no authenticated caller"))?;
        let r = request.into_inner();
        let number = r.case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument("caseNumber: is required"));
        }
        let store = &self.gateway.store;
        let (case, _) = store
            .get_case(&number)
            .await
            .map_err(store_status)?
            .ok_or_else(|| super::not_found(&number))?;
        let hall = case
            .submission
            .as_ref()
            .map_or("", |s| s.hall_code.as_str());
        access.case(&number, hall).await?;
        let clocks = &self.gateway.clocks;
        let (case, closed) = store
            .close_rectification(
                &number,
                r.response,
                operator.clone(),
                clocks.zone(),
                clocks.now(),
            )
            .await
            .map_err(store_status)?
            .ok_or_else(|| super::not_found(&number))?
            .map_err(super::cases::refused_status)?;
        // Recorded on the repeat too: a closing whose record failed (a crash between the two)
        // is recorded when the operator asks again, so no closing goes unaudited. The response
        // is free text about people: it stays in the case record only.
        store
            .record_operator_action(crate::store::OperatorAction {
                at_ms: clocks.now().timestamp_millis(),
                operator: operator.clone(),
                origin,
                action: "rectification-close".into(),
                target: number.clone(),
                message_ids: Vec::new(),
                note: if closed {
                    String::new()
                } else {
                    "asked again; already closed".into()
                },
            })
            .await
            .map_err(store_status)?;
        if closed {
            tracing::info!(case = %number, operator = %operator, "rectification closed");
        }
        access.read(number).await?;
        Ok(Response::new(
            crate::proto::v1::CloseRectificationResponse { case: Some(case) },
        ))
    }
}

impl AdminApi {
    /// The department (or `results`) whose dead queue is asked for, checked against the
    /// acceptance list.
    fn dead_queue_owner(&self, department: &str) -> Result<String, Status> {
        let department = department.trim();
        let known = department == "results"
            || self
                .gateway
                .intake
                .catalog()
                .departments
                .contains_key(department);
        if known {
            Ok(department.to_string())
        } else {
            Err(Status::invalid_argument(format!(
                "department {department:?} has no dead queue: give a department code of the acceptance list, or `results`"
            )))
        }
    }

    async fn dead_letter_action(
        &self,
        request: Request<crate::proto::v1::DeadLetterActionRequest>,
        action: crate::bus::dead::Action,
    ) -> Result<Response<crate::proto::v1::DeadLetterActionResponse>, Status> {
        let origin = request
            .remote_addr()
            .map_or_else(|| "grpc".to_string(), |a| format!("grpc@{a}"));
        // Who does it is the authenticated caller; a name in the body (a person at a shared
        // operators' console) is recorded beside it, never instead of it.
        let caller = request
            .extensions()
            .get::<crate::auth::Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no authenticated caller"))?;
        let r = request.into_inner();
        let department = self.dead_queue_owner(&r.department)?;
        let named = r.operator.trim();
        let operator = match named {
            "" if caller.role == crate::auth::DEVELOPMENT_ROLE => {
                return Err(Status::invalid_argument(
                    "operator is empty: name who does this (their account), for the audit of operators' actions",
                ));
            }
            "" => caller.name.clone(),
            n if n == caller.name => caller.name.clone(),
            n => format!("{} for {n}", caller.name),
        };
        let operator = operator.as_str();
        let selection = crate::dlq::selection(r.message_ids, &r.reason_contains, r.all)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if action == crate::bus::dead::Action::Purge && r.note.trim().is_empty() {
            return Err(Status::invalid_argument(
                "note is empty: say why these messages are discarded (`--note`); it is kept in the audit of operators' actions",
            ));
        }
        let moved = crate::dlq::act(
            &self.gateway.bus,
            &self.gateway.store,
            &department,
            selection,
            action,
            r.rate,
            crate::dlq::Actor {
                operator: operator.to_string(),
                origin,
                note: r.note.trim().to_string(),
            },
            std::sync::Arc::default(),
        )
        .await
        .map_err(dlq_status)?;
        Ok(Response::new(crate::proto::v1::DeadLetterActionResponse {
            moved: moved.into_iter().map(dead_letter).collect(),
        }))
    }
}

fn dead_letter(d: crate::bus::dead::DeadLetter) -> crate::proto::v1::DeadLetter {
    crate::proto::v1::DeadLetter {
        message_id: d.message_id,
        case_number: d.case_number,
        task_id: d.task_id,
        reason: d.reason,
        attempt: d.attempt.unwrap_or(0),
        trace_id: d.trace_id,
        dead_at: d.dead_at,
        bytes: d.bytes as i64,
    }
}

fn dlq_status(e: crate::dlq::DlqError) -> Status {
    match e {
        crate::dlq::DlqError::Selection(m) => Status::invalid_argument(m),
        crate::dlq::DlqError::Bus(e) => Status::unavailable(e.to_string()),
        e @ (crate::dlq::DlqError::Unrecorded { .. } | crate::dlq::DlqError::Stopped(_)) => {
            Status::internal(e.to_string())
        }
    }
}
