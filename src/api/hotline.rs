//! `HotlineService`: the 12345 hotline's work orders. Checks the order, asks the rules of
//! [`crate::hotline`] whether the applicant is verified, records the read of personal data in
//! the access log with the order number, and stores each order with its answer (the audit trail
//! of work orders, and its idempotency: a repeated order number gets the stored answer). Every
//! order carries a code of the hotline's classification table ([`crate::hotline_classes`]),
//! checked before anything is stored.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info;

use super::store_status;
use crate::auth::{Access, Refusal};
use crate::evaluation::Refused;
use crate::gateway::Gateway;
use crate::hotline::{self, COMPLAINT, CONSULTATION, PROGRESS};
use crate::proto::v1::hotline_service_server::HotlineService;
use crate::proto::v1::{
    ComplainRequest, ComplainResponse, ConsultRequest, ConsultResponse, ProgressRequest,
    ProgressResponse, Supervision,
};
use crate::store::{CaseChange, HotlineOrder};

const METHOD: &str = "HotlineService/Progress";
const COMPLAIN: &str = "HotlineService/Complain";

/// The `HotlineService` implementation.
pub struct HotlineApi {
    pub(super) gateway: Arc<Gateway>,
}

impl HotlineApi {
    /// The order's `classificationCode`, checked against the classification table: refused
    /// with INVALID_ARGUMENT (what is wrong, what to give) when missing or not listed.
    fn classification(&self, code: &str) -> Result<String, Status> {
        self.gateway
            .hotline_classes
            .check(code)
            .map(|c| c.code.clone())
            .map_err(Status::invalid_argument)
    }

    /// Records a refused progress query in the access log (and its metric) and answers `status`.
    async fn refuse(&self, access: &Access, case_number: &str, status: Status) -> Status {
        self.gateway
            .guard
            .auditor
            .refused(
                Some(&access.caller),
                METHOD,
                case_number,
                &Refusal::Denied(status.message().to_string()),
            )
            .await;
        status
    }

    /// A verification that failed (its try already counted for the lockout): stored with the
    /// order when it is a new one, audited, and refused saying nothing of the case.
    async fn failed(
        &self,
        access: &Access,
        order: Option<HotlineOrder>,
        number: &str,
        order_no: &str,
    ) -> Status {
        let store = &self.gateway.store;
        if let Some(order) = order
            && let Err(e) = store.record_hotline_order(order).await
        {
            return store_status(e);
        }
        info!(order_no = %order_no, case_number = %number, "a hotline progress query was not verified");
        self.refuse(
            access,
            number,
            Status::permission_denied(hotline::not_verified()),
        )
        .await
    }
}

#[tonic::async_trait]
impl HotlineService for HotlineApi {
    async fn consult(
        &self,
        request: Request<ConsultRequest>,
    ) -> Result<Response<ConsultResponse>, Status> {
        let access = Access::of(
            &request,
            &self.gateway.guard.auditor,
            "HotlineService/Consult",
        )?;
        let r = request.into_inner();
        let order_no = r.order_no.trim().to_string();
        hotline::check_order_no(&order_no).map_err(Status::invalid_argument)?;
        let class = self.classification(&r.classification_code)?;
        let catalog = self.gateway.intake.catalog();
        let item =
            hotline::find_item(catalog, r.item_code.trim(), r.query.trim()).map_err(|m| {
                if m.starts_with("itemCode or") || m.contains("items match") {
                    Status::invalid_argument(m)
                } else {
                    Status::not_found(m)
                }
            })?;
        let code = item.code.get_ref().clone();
        let store = &self.gateway.store;
        let answer = |text: String, repeated: bool| ConsultResponse {
            order_no: order_no.clone(),
            item_code: code.clone(),
            item_name: item.name.clone(),
            text,
            repeated,
        };
        // The item's code stands where a case number does for the other kinds.
        if let Some(s) = store.hotline_order(&order_no).await.map_err(store_status)? {
            if s.kind != CONSULTATION || s.case_number != code || s.classification != class {
                return Err(Status::already_exists(format!(
                    "orderNo: work order {order_no} was already received with other content (a {} order); give each work order its own number",
                    s.kind
                )));
            }
            return Ok(Response::new(answer(s.answer, true)));
        }
        let text = hotline::consultation_text(catalog, item);
        let now = self.gateway.clocks.now();
        store
            .record_hotline_order(HotlineOrder {
                order_no: order_no.clone(),
                kind: CONSULTATION.into(),
                case_number: code.clone(),
                caller: access.caller.name.clone(),
                at_ms: now.timestamp_millis(),
                day: hotline::day(now, self.gateway.clocks.zone()),
                outcome: "answered".into(),
                answer: text.clone(),
                classification: class,
            })
            .await
            .map_err(store_status)?;
        Ok(Response::new(answer(text, false)))
    }

    async fn complain(
        &self,
        request: Request<ComplainRequest>,
    ) -> Result<Response<ComplainResponse>, Status> {
        let access = Access::of(&request, &self.gateway.guard.auditor, COMPLAIN)?;
        let r = request.into_inner();
        let order_no = r.order_no.trim().to_string();
        hotline::check_order_no(&order_no).map_err(Status::invalid_argument)?;
        let number = r.case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument(
                "caseNumber: is required; give the case number the complaint is about",
            ));
        }
        let kind = r.kind.trim().to_string();
        let content = r.content.trim().to_string();
        let department = r.department.trim().to_string();
        hotline::check_complaint(&kind, &content).map_err(Status::invalid_argument)?;
        let class = self.classification(&r.classification_code)?;
        let store = &self.gateway.store;
        if let Some(s) = store.hotline_order(&order_no).await.map_err(store_status)?
            && (s.kind != COMPLAINT || s.case_number != number || s.classification != class)
        {
            return Err(Status::already_exists(format!(
                "orderNo: work order {order_no} was already received with other content (a {} order); give each work order its own number",
                s.kind
            )));
        }
        // The case's hall, for a hotline role limited to one.
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

        let clocks = self.gateway.clocks.clone();
        let now = clocks.now();
        let rules = self.gateway.evaluation.clone();
        let days = self.gateway.hotline.reply_working_days;
        let (o, k, c, d) = (order_no.clone(), kind, content, department);
        let edited = store
            .edit_case(
                &number,
                now,
                move |case, last_seq, _| match hotline::complain(
                    &rules, &clocks, case, &o, &k, &c, &d, days, last_seq, now,
                ) {
                    Ok((s, Some(events))) => (
                        Some(CaseChange {
                            events,
                            ..Default::default()
                        }),
                        Ok((s, false)),
                    ),
                    Ok((s, None)) => (None, Ok((s, true))),
                    Err(refused) => (None, Err(refused)),
                },
            )
            .await
            .map_err(store_status)?
            .ok_or_else(|| super::not_found(&number))?;
        let (supervision, repeated): (Supervision, bool) =
            edited.1.map_err(|refused| match refused {
                Refused::Invalid(m) => Status::invalid_argument(m),
                Refused::Precondition(m) if m.starts_with("orderNo") => Status::already_exists(m),
                Refused::Precondition(m) => Status::failed_precondition(m),
            })?;
        let watch = supervision.watch.clone().unwrap_or_default();
        {
            // Written again for a repeat too (nothing changes when it is there): a first call
            // that ended between the case and this row leaves no order unrecorded.
            let text =
                hotline::complaint_text(self.gateway.intake.catalog(), &number, &supervision);
            store
                .record_hotline_order(HotlineOrder {
                    order_no: order_no.clone(),
                    kind: COMPLAINT.into(),
                    case_number: number.clone(),
                    caller: access.caller.name.clone(),
                    at_ms: now.timestamp_millis(),
                    day: hotline::day(now, self.gateway.clocks.zone()),
                    outcome: "opened".into(),
                    answer: text,
                    classification: class,
                })
                .await
                .map_err(store_status)?;
        }
        if !repeated {
            info!(order_no = %order_no, case_number = %number, department = %watch.assignee, deadline = %watch.deadline, "a hotline complaint opened a supervision");
        }
        Ok(Response::new(ComplainResponse {
            order_no,
            case_number: number,
            department: watch.assignee,
            deadline: watch.deadline,
            deadline_provisional: watch.deadline_provisional,
            repeated,
        }))
    }

    async fn progress(
        &self,
        request: Request<ProgressRequest>,
    ) -> Result<Response<ProgressResponse>, Status> {
        let access = Access::of(&request, &self.gateway.guard.auditor, METHOD)?;
        let r = request.into_inner();
        let order_no = r.order_no.trim().to_string();
        hotline::check_order_no(&order_no).map_err(Status::invalid_argument)?;
        let number = r.case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument(
                "caseNumber: is required; give the case number the applicant reads from the receipt",
            ));
        }
        let class = self.classification(&r.classification_code)?;
        let store = &self.gateway.store;
        let clocks = &self.gateway.clocks;
        let now = clocks.now();
        let now_ms = now.timestamp_millis();
        let day = hotline::day(now, clocks.zone());
        let digits = hotline::normalise_digits(&r.verify_digits);
        let max = self.gateway.hotline.max_failed_verifications;

        let stored = store.hotline_order(&order_no).await.map_err(store_status)?;
        if let Some(s) = &stored {
            if s.kind != PROGRESS || s.case_number != number || s.classification != class {
                return Err(Status::already_exists(format!(
                    "orderNo: work order {order_no} was already received with other content (a {} order); give each work order its own number",
                    s.kind
                )));
            }
            match s.outcome.as_str() {
                // The same refusal again, audited like the first: a repeat is no new try, and no
                // oracle either.
                "refused" => {
                    return Err(self
                        .refuse(
                            &access,
                            &number,
                            Status::permission_denied(hotline::not_verified()),
                        )
                        .await);
                }
                "locked" => {
                    return Err(self
                        .refuse(
                            &access,
                            &number,
                            Status::resource_exhausted(s.answer.clone()),
                        )
                        .await);
                }
                _ => {}
            }
        }
        // The hall scope first, before any try is counted or digits checked: a caller limited to
        // one hall learns nothing of the digits of another hall's case, nor locks it.
        let case = store.get_case(&number).await.map_err(store_status)?;
        if let Some((c, _)) = &case {
            let hall = c.submission.as_ref().map_or("", |s| s.hall_code.as_str());
            access.case(&number, hall).await?;
        }
        // The try is counted before the digits are checked, in one step with the day's count:
        // concurrent queries cannot all see the count from before theirs. A try whose digits
        // verify is taken back below.
        let counted = store
            .hotline_try(
                &number,
                &day,
                &order_no,
                &access.caller.name,
                now_ms,
                i64::from(max),
            )
            .await
            .map_err(store_status)?;
        let Some(try_id) = counted else {
            let message = hotline::locked(max, &day);
            if stored.is_none() {
                store
                    .record_hotline_order(HotlineOrder {
                        order_no: order_no.clone(),
                        kind: PROGRESS.into(),
                        case_number: number.clone(),
                        caller: access.caller.name.clone(),
                        at_ms: now_ms,
                        day: day.clone(),
                        outcome: "locked".into(),
                        answer: message.clone(),
                        classification: class.clone(),
                    })
                    .await
                    .map_err(store_status)?;
            }
            return Err(self
                .refuse(&access, &number, Status::resource_exhausted(message))
                .await);
        };

        let ok = match (&case, &digits) {
            (Some((case, _)), Some(d)) => hotline::verified(case, d),
            _ => false,
        };
        let Some((case, _)) = case.filter(|_| ok) else {
            let order = stored.is_none().then(|| HotlineOrder {
                order_no: order_no.clone(),
                kind: PROGRESS.into(),
                case_number: number.clone(),
                caller: access.caller.name.clone(),
                at_ms: now_ms,
                day: day.clone(),
                outcome: "refused".into(),
                answer: hotline::not_verified(),
                classification: class.clone(),
            });
            return Err(self.failed(&access, order, &number, &order_no).await);
        };
        // Verified: no failure. Not taken back (a store error) stays counted: fail closed.
        store
            .hotline_try_verified(try_id)
            .await
            .map_err(store_status)?;

        // A read of the case's personal data, audited before anything is answered.
        self.gateway
            .guard
            .auditor
            .read_noting(
                &access.caller,
                METHOD,
                number.clone(),
                &format!("12345 work order {order_no}"),
            )
            .await?;
        if let Some(s) = stored {
            return Ok(Response::new(ProgressResponse {
                order_no,
                case_number: number,
                text: s.answer,
                repeated: true,
            }));
        }
        let text = hotline::progress_text(self.gateway.intake.catalog(), &case);
        let inserted = store
            .record_hotline_order(HotlineOrder {
                order_no: order_no.clone(),
                kind: PROGRESS.into(),
                case_number: number.clone(),
                caller: access.caller.name.clone(),
                at_ms: now_ms,
                day,
                outcome: "answered".into(),
                answer: text.clone(),
                classification: class.clone(),
            })
            .await
            .map_err(store_status)?;
        if !inserted {
            // A concurrent repeat (or another replica) stored its answer first: that one stands.
            let first = store
                .hotline_order(&order_no)
                .await
                .map_err(store_status)?
                .filter(|s| {
                    s.kind == PROGRESS
                        && s.case_number == number
                        && s.classification == class
                        && s.outcome == "answered"
                })
                .ok_or_else(|| {
                    Status::already_exists(format!(
                        "orderNo: work order {order_no} was received at the same time with another answer; give each work order its own number"
                    ))
                })?;
            return Ok(Response::new(ProgressResponse {
                order_no,
                case_number: number,
                text: first.answer,
                repeated: true,
            }));
        }
        info!(order_no = %order_no, case_number = %number, "a hotline progress query was answered");
        Ok(Response::new(ProgressResponse {
            order_no,
            case_number: number,
            text,
            repeated: false,
        }))
    }
}
