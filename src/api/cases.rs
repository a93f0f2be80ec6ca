//! `CaseService`: PreCheck, Submit, GetCase, ListCases, Supplement, Deliver, Evaluate,
//! ListNotAccepted, and the feeds (`WindowFeed`, `WatchCase`). Each handler checks the envelope,
//! hands the case to intake, lifecycle and the store, and maps the answer back to the wire; the
//! rules live there. The caller comes from the policy layer: each handler asks its [`Access`]
//! for the hall and window it acts in and whether it reaches a case, and records each read of a
//! case's personal data.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::info;

use super::streams::{FeedStream, feed_stream};
use super::{MAX_PAGE_SIZE, intake_status, not_found, store_status};
use crate::auth::Access;
use crate::case;
use crate::gateway::Gateway;
use crate::intake::normalise;
use crate::intake::{Outcome, content_hash};
use crate::proto::v1::case_service_server::CaseService;
use crate::proto::v1::{
    Case, CaseStatus, DeficiencyNotice, GetCaseRequest, GetCaseResponse, ListCasesRequest,
    ListCasesResponse, ListNotAcceptedRequest, ListNotAcceptedResponse, PreCheckRequest,
    PreCheckResponse, Submission, SubmitRequest, SubmitResponse,
};
use crate::store::{
    Attempt, Deficient, Evaluated, ListQuery, NotAcceptedQuery, SubmitCommand, SubmitResult,
};

/// The `CaseService` implementation.
pub struct CaseApi {
    pub(super) gateway: Arc<Gateway>,
}

impl CaseApi {
    /// Links to the public guides of a deficient submission's items (the ones the acceptance
    /// list knows), so the notice tells the applicant where to read what to bring.
    fn guides(
        &self,
        items: &[crate::proto::v1::NotAcceptedItem],
    ) -> Vec<crate::proto::v1::GuideLink> {
        self.gateway.guide.links(
            self.gateway.intake.catalog(),
            items.iter().map(|i| i.item_code.as_str()),
        )
    }

    /// What an answer to Submit tells operators: the span's case and tasks, the metrics of
    /// accepted items and deficiencies (not again for a replay), and one log line; and an
    /// accepted case wakes the relay.
    fn observe(&self, span: &tracing::Span, submission_id: &str, response: &SubmitResponse) {
        match &response.outcome {
            Some(crate::proto::v1::submit_response::Outcome::Receipt(r)) => {
                span.record("case.number", r.case_number.as_str());
                let task_ids: Vec<&str> = r.items.iter().map(|i| i.task_id.as_str()).collect();
                span.record("task.ids", task_ids.join(",").as_str());
                let m = crate::metrics::meters();
                if !response.replayed {
                    self.gateway.wake.notify_one();
                    for item in &r.items {
                        m.items_accepted
                            .get_or_create(&crate::metrics::ItemLabels {
                                department: item.department.clone(),
                                item: item.item_code.clone(),
                            })
                            .inc();
                    }
                }
                m.submissions
                    .get_or_create(&outcome_label(response.replayed, "accepted"))
                    .inc();
                info!(submission = %crate::privacy::mask_free_text(submission_id), case = %r.case_number, replayed = response.replayed, "case accepted");
            }
            Some(crate::proto::v1::submit_response::Outcome::Notice(n)) => {
                let m = crate::metrics::meters();
                if !response.replayed {
                    for d in &n.deficiencies {
                        let code = crate::proto::v1::DeficiencyCode::try_from(d.code)
                            .unwrap_or(crate::proto::v1::DeficiencyCode::Unspecified);
                        m.deficiencies
                            .get_or_create(&crate::metrics::CodeLabels {
                                code: code
                                    .as_str_name()
                                    .trim_start_matches("DEFICIENCY_CODE_")
                                    .to_lowercase(),
                            })
                            .inc();
                    }
                }
                m.submissions
                    .get_or_create(&outcome_label(response.replayed, "deficient"))
                    .inc();
                info!(submission = %crate::privacy::mask_free_text(submission_id), deficiencies = n.deficiencies.len(), replayed = response.replayed, "deficiency notice issued");
            }
            None => {}
        }
    }

    /// The caller of a request and its hall scope (see [`crate::auth::Access`]).
    fn access<T>(&self, request: &Request<T>, method: &str) -> Result<Access, Status> {
        Access::of(request, &self.gateway.guard.auditor, method)
    }

    /// A submission's hall and window, from the caller's identity: a body naming no hall is
    /// taken as the caller's; one naming another hall (or window) is refused.
    async fn scope_submission(&self, access: &Access, s: &mut Submission) -> Result<(), Status> {
        if let Some(hall) = access.hall(&s.hall_code).await? {
            s.hall_code = hall;
        }
        if let Some(window) = access.window(&s.window_code).await? {
            s.window_code = window;
        }
        Ok(())
    }

    /// The case `number`, when the caller reaches it.
    async fn reachable_case(
        &self,
        access: &Access,
        number: &str,
    ) -> Result<(Case, Vec<crate::proto::v1::CaseEvent>), Status> {
        let (case, events) = self
            .gateway
            .store
            .get_case(number)
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(number))?;
        let hall = case
            .submission
            .as_ref()
            .map_or("", |s| s.hall_code.as_str());
        access.case(number, hall).await?;
        Ok((case, events))
    }

    fn submission(&self, s: Option<Submission>) -> Result<Submission, Status> {
        let s = s.ok_or_else(|| Status::invalid_argument("submission: is required"))?;
        self.gateway
            .intake
            .check_envelope(&s)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(s)
    }
}

#[tonic::async_trait]
impl CaseService for CaseApi {
    async fn pre_check(
        &self,
        request: Request<PreCheckRequest>,
    ) -> Result<Response<PreCheckResponse>, Status> {
        let access = self.access(&request, "CaseService/PreCheck")?;
        let mut s = self.submission(request.into_inner().submission)?;
        self.scope_submission(&access, &mut s).await?;
        let outcome = self
            .gateway
            .intake
            .evaluate(s, self.gateway.clocks.now())
            .map_err(intake_status)?;
        let response = match outcome {
            Outcome::Acceptable(plan) => PreCheckResponse {
                acceptable: true,
                deficiencies: Vec::new(),
                normalisations: plan.changes.iter().map(|c| c.to_masked_proto()).collect(),
                obligations: plan.obligations,
                guides: Vec::new(),
            },
            Outcome::Deficient {
                changes,
                deficiencies,
                items,
                ..
            } => PreCheckResponse {
                acceptable: false,
                deficiencies,
                normalisations: changes.iter().map(|c| c.to_masked_proto()).collect(),
                obligations: Vec::new(),
                guides: self.guides(&items),
            },
        };
        Ok(Response::new(response))
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        // The call's span (crate::observe) continues the window's trace when spans are
        // exported; the case keeps its trace and span ids, so every hop after joins them.
        let span = tracing::Span::current();
        let (trace_id, trace_span_id) = match crate::trace::ids_of(&span) {
            // Children only of a sampled span: an unsampled one is never exported.
            Some((trace, id, sampled)) => (trace, if sampled { id } else { String::new() }),
            None => (
                request
                    .metadata()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::trace::trace_id_of)
                    .map_or_else(crate::trace::new_trace_id, str::to_string),
                String::new(),
            ),
        };
        let access = self.access(&request, "CaseService/Submit")?;
        let mut s = self.submission(request.into_inner().submission)?;
        self.scope_submission(&access, &mut s).await?;
        span.record(
            "submission.id",
            crate::privacy::mask_free_text(&s.submission_id).as_str(),
        );
        let now = self.gateway.clocks.now();
        // Identifiers as normalisation writes them on the case, so that lists and the audit
        // trail find them by their clean value.
        let code = |v: &str| normalise::to_half_width(v).trim().to_string();
        let attempt = Attempt {
            submission_id: code(&s.submission_id),
            content_hash: content_hash(&s),
            hall_code: code(&s.hall_code),
            window_code: code(&s.window_code),
            clerk_staff_no: s
                .clerk
                .as_ref()
                .map(|c| code(&c.staff_no))
                .unwrap_or_default(),
            trace_id,
            trace_span_id,
            at: now,
        };
        let submission_id = attempt.submission_id.clone();
        // A repeat gets the first answer without being evaluated again: the catalog, the
        // calendar or the limits may have changed since.
        let recorded = match self
            .gateway
            .store
            .replay(&attempt)
            .await
            .map_err(store_status)?
        {
            Some(result) => result,
            None => {
                let evaluated = match self
                    .gateway
                    .intake
                    .evaluate(s, now)
                    .map_err(intake_status)?
                {
                    Outcome::Acceptable(plan) => Evaluated::Accept(plan),
                    Outcome::Deficient {
                        submission_id,
                        changes,
                        deficiencies,
                        submission,
                        items,
                    } => Evaluated::Deficient(Box::new(Deficient {
                        notice: DeficiencyNotice {
                            guides: self.guides(&items),
                            ..case::notice(&submission_id, &changes, deficiencies, now)
                        },
                        submission: *submission,
                        items,
                    })),
                };
                self.gateway
                    .store
                    .submit(SubmitCommand { attempt, evaluated })
                    .await
                    .map_err(store_status)?
            }
        };
        match recorded {
            SubmitResult::Answer(response) => {
                self.observe(&span, &submission_id, &response);
                Ok(Response::new(*response))
            }
            SubmitResult::Conflict { case_number } => Err(Status::already_exists(format!(
                "submissionId: {} already created case {case_number} from different content; use a new submissionId for a new application",
                crate::privacy::mask_free_text(&submission_id)
            ))),
        }
    }

    async fn get_case(
        &self,
        request: Request<GetCaseRequest>,
    ) -> Result<Response<GetCaseResponse>, Status> {
        let access = self.access(&request, "CaseService/GetCase")?;
        let number = request.into_inner().case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument("caseNumber: is required"));
        }
        let (case, events) = self.reachable_case(&access, &number).await?;
        access.read(number).await?;
        Ok(Response::new(GetCaseResponse {
            case: Some(case),
            events,
        }))
    }

    type WindowFeedStream = FeedStream;
    type WatchCaseStream = FeedStream;

    async fn window_feed(
        &self,
        request: Request<crate::proto::v1::WindowFeedRequest>,
    ) -> Result<Response<FeedStream>, Status> {
        let access = self.access(&request, "CaseService/WindowFeed")?;
        let mut r = request.into_inner();
        r.hall_code = access.hall(&r.hall_code).await?.unwrap_or_default();
        r.window_code = access.window(&r.window_code).await?.unwrap_or_default();
        if r.hall_code.is_empty() && !r.window_code.is_empty() {
            return Err(Status::invalid_argument(
                "windowCode: a window is named within its hall; give hallCode too",
            ));
        }
        if r.cursor < 0 {
            return Err(Status::invalid_argument(
                "cursor: a cursor from a previous event, or 0 from the beginning",
            ));
        }
        Ok(Response::new(feed_stream(
            &self.gateway,
            crate::store::FeedQuery {
                hall_code: r.hall_code,
                window_code: r.window_code,
                after: r.cursor,
                ..Default::default()
            },
        )))
    }

    async fn watch_case(
        &self,
        request: Request<crate::proto::v1::WatchCaseRequest>,
    ) -> Result<Response<FeedStream>, Status> {
        let access = self.access(&request, "CaseService/WatchCase")?;
        let r = request.into_inner();
        if r.case_number.is_empty() || r.cursor < 0 {
            return Err(Status::invalid_argument(
                "caseNumber is required, and cursor is 0 or a cursor from a previous event",
            ));
        }
        self.reachable_case(&access, &r.case_number).await?;
        Ok(Response::new(feed_stream(
            &self.gateway,
            crate::store::FeedQuery {
                case_number: r.case_number,
                after: r.cursor,
                ..Default::default()
            },
        )))
    }

    async fn supplement(
        &self,
        request: Request<crate::proto::v1::SupplementRequest>,
    ) -> Result<Response<crate::proto::v1::SupplementResponse>, Status> {
        use crate::intake::SupplementAnswer;
        use crate::proto::v1::SupplementResponse;
        let access = self.access(&request, "CaseService/Supplement")?;
        let mut r = request.into_inner();
        r.case_number = r.case_number.trim().to_string();
        self.gateway
            .intake
            .check_supplement_envelope(&r)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The case's hall does not change, so the check before the edit holds for it.
        self.reachable_case(&access, &r.case_number).await?;
        let intake = self.gateway.intake.clone();
        let number = r.case_number.clone();
        let now = self.gateway.clocks.now();
        let (case, answer) = self
            .gateway
            .store
            .edit_case(&number, now, move |case, last_seq, _at| {
                intake.supplement(case, &r, last_seq, now)
            })
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(&number))?;
        access.read(number.clone()).await?;
        let mut response = SupplementResponse {
            case: Some(case),
            ..Default::default()
        };
        match answer {
            SupplementAnswer::Recorded(record) => {
                info!(case = %number, resumed = record.resumed_task_ids.len(), fulfilled = record.fulfilled_obligations.len(), "supplement recorded");
                if !record.resumed_task_ids.is_empty() {
                    self.gateway.wake.notify_one();
                }
                response.record = Some(record);
            }
            SupplementAnswer::Replayed(record) => {
                response.record = Some(record);
                response.replayed = true;
            }
            SupplementAnswer::Deficient(deficiencies) => {
                info!(case = %number, deficiencies = deficiencies.len(), "supplement deficient; nothing recorded");
                response.deficiencies = deficiencies;
            }
            SupplementAnswer::Conflict(message) => return Err(Status::already_exists(message)),
        }
        Ok(Response::new(response))
    }

    async fn deliver(
        &self,
        request: Request<crate::proto::v1::DeliverRequest>,
    ) -> Result<Response<crate::proto::v1::DeliverResponse>, Status> {
        use crate::privacy::{mask_id, mask_name};
        use crate::proto::v1::deliver_request::How;
        let access = self.access(&request, "CaseService/Deliver")?;
        let r = request.into_inner();
        let clean = |v: &str| normalise::to_half_width(v).trim().to_uppercase();
        let Some(how) = r.how else {
            return Err(Status::invalid_argument(
                "how: give pickup (who collected) or mail (carrier and tracking number)",
            ));
        };
        let case = self.reachable_case(&access, &r.case_number).await?.0;
        let detail = match how {
            How::Pickup(p) => {
                let id = clean(&p.collector_id_number);
                if id.is_empty() || p.collector_name.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "pickup: collectorName and collectorIdNumber are required (from the identity document checked)",
                    ));
                }
                if !crate::lifecycle::may_collect(&case, &id) {
                    return Err(Status::failed_precondition(format!(
                        "pickup: {} ({}) is not the applicant, its legal representative or the agent named on the case; results are handed only to them",
                        mask_name(p.collector_name.trim()),
                        mask_id(&id)
                    )));
                }
                format!(
                    "picked up at window {} by {} ({}), handed over by {}",
                    case.submission
                        .as_ref()
                        .map_or("", |s| s.window_code.as_str()),
                    mask_name(p.collector_name.trim()),
                    mask_id(&id),
                    p.staff_no.trim()
                )
            }
            How::Mail(m) => {
                if m.carrier.trim().is_empty() || m.tracking_number.trim().is_empty() {
                    return Err(Status::invalid_argument(
                        "mail: carrier and trackingNumber are required",
                    ));
                }
                format!(
                    "mailed by {} with tracking number {}",
                    m.carrier.trim(),
                    m.tracking_number.trim()
                )
            }
        };
        match self
            .gateway
            .store
            .deliver(&r.case_number, detail, self.gateway.clocks.now())
            .await
            .map_err(store_status)?
        {
            None => Err(not_found(&r.case_number)),
            Some(Err(refused)) => Err(Status::failed_precondition(refused.to_string())),
            Some(Ok(case)) => {
                access.read(r.case_number.clone()).await?;
                Ok(Response::new(crate::proto::v1::DeliverResponse {
                    case: Some(case),
                }))
            }
        }
    }

    async fn evaluate(
        &self,
        request: Request<crate::proto::v1::EvaluateRequest>,
    ) -> Result<Response<crate::proto::v1::EvaluateResponse>, Status> {
        let access = self.access(&request, "CaseService/Evaluate")?;
        let r = request.into_inner();
        let number = r.case_number.trim().to_string();
        if number.is_empty() {
            return Err(Status::invalid_argument("caseNumber: is required"));
        }
        let Some(mut evaluation) = r.evaluation else {
            return Err(Status::invalid_argument(
                "evaluation: is required (channel, level, the channel's indicator scores)",
            ));
        };
        let rules = self.gateway.evaluation.clone();
        rules.check(&evaluation).map_err(refused_status)?;
        // A window evaluates only its hall's cases; the case's hall does not change.
        let case = self.reachable_case(&access, &number).await?.0;
        let (case_hall, case_window) = case
            .submission
            .as_ref()
            .map_or((String::new(), String::new()), |s| {
                (s.hall_code.clone(), s.window_code.clone())
            });
        // Where it was given never comes from the body: the case's hall (a caller of another
        // hall was refused above), and the caller's window when it is one window's system, else
        // the accepting window for an evaluation at a window.
        evaluation.hall_code = case_hall;
        evaluation.window_code = match access.window("").await? {
            Some(window) => window,
            None if evaluation.channel.trim() == "window" => case_window,
            None => String::new(),
        };
        let (channel, level) = (evaluation.channel.trim().to_string(), evaluation.level);
        let answer = self
            .gateway
            .store
            .evaluate(
                &number,
                rules,
                self.gateway.clocks.clone(),
                evaluation,
                r.department_code,
                self.gateway.clocks.now(),
            )
            .await
            .map_err(store_status)?
            .ok_or_else(|| not_found(&number))?;
        let (case, recorded) = answer.map_err(refused_status)?;
        access.read(number.clone()).await?;
        if recorded {
            // Never the comment: it is the applicant's own words.
            info!(case = %number, channel = %channel, level, rectification = case.rectification.is_some(), "evaluation recorded");
        }
        Ok(Response::new(crate::proto::v1::EvaluateResponse {
            case: Some(case),
        }))
    }

    async fn list_cases(
        &self,
        request: Request<ListCasesRequest>,
    ) -> Result<Response<ListCasesResponse>, Status> {
        let access = self.access(&request, "CaseService/ListCases")?;
        let mut r = request.into_inner();
        r.hall_code = access.hall(&r.hall_code).await?.unwrap_or_default();
        r.window_code = access.window(&r.window_code).await?.unwrap_or_default();
        let limit = match r.page_size {
            0 => 50,
            n if !(1..=MAX_PAGE_SIZE).contains(&n) => {
                return Err(Status::invalid_argument(format!(
                    "pageSize: {n} is outside 1–{MAX_PAGE_SIZE}"
                )));
            }
            n => n as usize,
        };
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(parse_page_token(&r.page_token).ok_or_else(|| {
                Status::invalid_argument(
                    "pageToken: not a token from a previous page; start again without it",
                )
            })?)
        };
        let status = match CaseStatus::try_from(r.status) {
            Ok(CaseStatus::Unspecified) => None,
            Ok(s) => Some(s),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "status: unknown value {}",
                    r.status
                )));
            }
        };
        let query = ListQuery {
            hall_code: Some(r.hall_code).filter(|s| !s.is_empty()),
            window_code: Some(r.window_code).filter(|s| !s.is_empty()),
            status,
            from_ms: timestamp_ms(r.accepted_from),
            to_ms: timestamp_ms(r.accepted_to),
            limit: limit + 1,
            after,
        };
        let mut rows = self
            .gateway
            .store
            .list_cases(query)
            .await
            .map_err(store_status)?;
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|(ms, c)| format!("{ms}.{}", c.case_number))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListCasesResponse {
            cases: rows.into_iter().map(|(_, c)| c).collect(),
            next_page_token,
        }))
    }

    async fn list_not_accepted(
        &self,
        request: Request<ListNotAcceptedRequest>,
    ) -> Result<Response<ListNotAcceptedResponse>, Status> {
        let access = self.access(&request, "CaseService/ListNotAccepted")?;
        let r = request.into_inner();
        // The caller's scope as ListCases applies it: a window reaches only its own hall (a
        // request naming another is refused) and, when it is one window's system, its window.
        let hall_code = access.hall(&r.hall_code).await?;
        let window_code = access.window("").await?;
        let limit = match r.page_size {
            0 => 100,
            n if !(1..=MAX_PAGE_SIZE).contains(&n) => {
                return Err(Status::invalid_argument(format!(
                    "pageSize: {n} is outside 1–{MAX_PAGE_SIZE}"
                )));
            }
            n => n as usize,
        };
        if r.after < 0 {
            return Err(Status::invalid_argument(
                "after: the id of an entry from a previous page, or 0 from the first",
            ));
        }
        let items = self
            .gateway
            .store
            .not_accepted(NotAcceptedQuery {
                after: r.after,
                from_ms: timestamp_ms(r.from),
                to_ms: timestamp_ms(r.to),
                hall_code,
                window_code,
                limit,
            })
            .await
            .map_err(store_status)?;
        // The submissions hold the applicants' personal data: each page read is audited (an
        // empty one read nothing). Fails closed, like every read.
        if !items.is_empty() {
            access.read(not_accepted_target(&items)).await?;
        }
        Ok(Response::new(ListNotAcceptedResponse { items }))
    }
}

/// An optional instant of a request, in ms since the epoch.
fn timestamp_ms(t: Option<pbjson_types::Timestamp>) -> Option<i64> {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
}

/// What the access log records of a read of not-accepted submissions: how many, and which
/// submissions (their ids, never their contents), so `access-log` tells who read a given one.
fn not_accepted_target(items: &[crate::proto::v1::NotAccepted]) -> String {
    let ids: Vec<&str> = items.iter().map(|n| n.submission_id.as_str()).collect();
    format!("not-accepted: {} notices: {}", items.len(), ids.join(" "))
}

/// The status of a refused evaluation or closing.
pub(super) fn refused_status(refused: crate::evaluation::Refused) -> Status {
    match refused {
        crate::evaluation::Refused::Invalid(m) => Status::invalid_argument(m),
        crate::evaluation::Refused::Precondition(m) => Status::failed_precondition(m),
    }
}

fn parse_page_token(token: &str) -> Option<(i64, String)> {
    let (ms, number) = token.split_once('.')?;
    Some((ms.parse().ok()?, number.to_string()))
}

/// The `outcome` label of a Submit answer.
fn outcome_label(replayed: bool, outcome: &str) -> crate::metrics::OutcomeLabels {
    crate::metrics::OutcomeLabels {
        outcome: if replayed { "replayed" } else { outcome }.to_string(),
    }
}
