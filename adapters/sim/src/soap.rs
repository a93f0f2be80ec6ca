//! A department system exposed as a SOAP 1.1 WebService (公安-, 消防-like). Awkward as the real
//! ones: refusals are `soap:Client` faults in Chinese (`缺少必填项 …`, `业务流水号 … 已存在`,
//! `无此办件`), failures and overload are `soap:Server` faults with HTTP 500 (no
//! `Retry-After`), maintenance is a bare 503 `系统维护中`, dates are `2019年06月20日`, and a
//! request whose `SOAPAction` does not match its operation, or that is not `text/xml`, is
//! refused. A submission whose answer hangs is recorded before the hang, as when a real answer
//! is lost on its way back.
//!
//! API: `POST <path>` with operations `SubmitCase` (fields, `ywlsh` = our task id),
//! `QueryCase` (`slbh`), `FindCaseBySerial` (`ywlsh`), `SupplementCase` (补正: `slbh`, `bzlsh`
//! the round's serial, `bzcs` the round, `<clqd><cl><clmc>…` the materials; a `Client` fault
//! `补正流水号 … 已存在` for a round it has, `办件不在补正状态` when the case is not waiting for
//! one) in the configured namespace, answered as
//! `<{op}Response><return>…</return></{op}Response>`; `SOAPAction: "<namespace>/<op>"`.
//! `GET /_sim/stats`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::core::{
    Behaviour, Fault, Outcome, REJECTION_REASONS, Resupply, SUPPLEMENT_MATERIALS, Sim, SimCase,
    date_cn, outcome_word,
};
use crate::xml;

const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// Settings of the simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub behaviour: Behaviour,
    /// The service's target namespace.
    pub namespace: String,
    /// Where the service is.
    pub path: String,
    /// Name of the document issued on approval.
    pub document_name: String,
    /// Fields a submission must carry, not blank.
    pub required: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            behaviour: Behaviour {
                department: "ga".into(),
                ..Behaviour::default()
            },
            namespace: "http://ga.yinchuan.gov.cn/approval".into(),
            path: "/ws/approval".into(),
            document_name: "公章刻制备案回执".into(),
            required: vec!["ywlsh".into(), "sqrmc".into()],
        }
    }
}

/// The running system.
pub struct SoapSim {
    pub sim: Sim,
    settings: Settings,
}

impl SoapSim {
    pub fn new(settings: Settings) -> Arc<SoapSim> {
        Arc::new(SoapSim {
            sim: Sim::new(settings.behaviour.clone()),
            settings,
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(&self.settings.path, post(service))
            .route("/_sim/stats", get(stats))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let _ = axum::serve(listener, self.router()).await;
    }

    fn envelope(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope xmlns:soap=\"{ENVELOPE_NS}\">\
             <soap:Body>{body}</soap:Body></soap:Envelope>"
        )
    }

    fn xml(status: StatusCode, doc: String) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            doc,
        )
            .into_response()
    }

    /// A fault, with HTTP 500 as SOAP 1.1 says.
    fn fault(code: &str, string: &str) -> Response {
        Self::xml(
            StatusCode::INTERNAL_SERVER_ERROR,
            Self::envelope(&format!(
                "<soap:Fault><faultcode>soap:{code}</faultcode><faultstring>{}</faultstring>\
                 </soap:Fault>",
                xml::escape(string)
            )),
        )
    }

    fn answer(&self, operation: &str, result: &str) -> Response {
        Self::xml(
            StatusCode::OK,
            Self::envelope(&format!(
                "<ns2:{operation}Response xmlns:ns2=\"{}\"><return>{result}</return>\
                 </ns2:{operation}Response>",
                xml::escape(&self.settings.namespace)
            )),
        )
    }

    fn data(&self, case: &SimCase) -> String {
        let (step, outcome) = case.state(self.sim.decision_delay());
        let mut fields: Vec<(&str, String)> = vec![
            ("slbh", case.number.clone()),
            ("ywlsh", case.serial.clone()),
            ("hjmc", step.into()),
            ("zt", outcome.map_or("办理中", outcome_word).into()),
            ("slsj", date_cn(case.received_at)),
        ];
        if let Some(taken) = &case.supplement {
            fields.push(("bzlsh", taken.serial.clone()));
            fields.push(("bzcs", taken.round.to_string()));
        }
        match outcome {
            Some(Outcome::Approved) => {
                fields.push(("zzbh", case.licence_number()));
                fields.push(("zzmc", self.settings.document_name.clone()));
                fields.push(("bjsj", date_cn(self.sim.now())));
            }
            Some(Outcome::Rejected) => fields.push(("spyj", REJECTION_REASONS.into())),
            Some(Outcome::Supplement) => fields.push(("bzcl", SUPPLEMENT_MATERIALS.into())),
            None => {}
        }
        xml::elements(fields.iter().map(|(k, v)| (*k, v.as_str())))
    }

    /// The request's operation and parameters, or the refusal.
    fn read(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(String, xml::Parsed), Box<Response>> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/xml") {
            return Err(Box::new(
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "SOAP 1.1 requests are text/xml",
                )
                    .into_response(),
            ));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| Box::new(Self::fault("Client", "报文不是UTF-8编码")))?;
        let parsed = xml::parse(text)
            .map_err(|e| Box::new(Self::fault("Client", &format!("报文格式错误：{e}"))))?;
        let operation = parsed
            .after("Body")
            .ok_or_else(|| Box::new(Self::fault("Client", "报文缺少soap:Body")))?
            .to_string();
        let action = headers
            .get("SOAPAction")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_matches('"');
        if action != format!("{}/{operation}", self.settings.namespace) {
            return Err(Box::new(Self::fault(
                "Client",
                &format!("SOAPAction {action:?} 与请求操作 {operation} 不符"),
            )));
        }
        Ok((operation, parsed))
    }

    fn dispatch(&self, operation: &str, request: xml::Parsed) -> Response {
        let params: BTreeMap<String, String> = request.leaves;
        match operation {
            "SubmitCase" => {
                for required in &self.settings.required {
                    if params.get(required).is_none_or(|v| v.trim().is_empty()) {
                        return Self::fault("Client", &format!("缺少必填项 {required}"));
                    }
                }
                if let Some(date) = params.get("slsj")
                    && chrono::NaiveDate::parse_from_str(date, "%Y年%m月%d日").is_err()
                {
                    return Self::fault("Client", "受理日期格式错误，应为yyyy年MM月dd日");
                }
                let serial = params.get("ywlsh").cloned().unwrap_or_default();
                match self.sim.submit(&serial, params) {
                    Ok(case) => self.answer(operation, &self.data(&case)),
                    Err(_) => Self::fault("Client", &format!("业务流水号 {serial} 已存在")),
                }
            }
            "QueryCase" => match params.get("slbh").and_then(|n| self.sim.by_number(n)) {
                Some(case) => self.answer(operation, &self.data(&case)),
                None => Self::fault("Client", "无此办件"),
            },
            "FindCaseBySerial" => match params.get("ywlsh").and_then(|n| self.sim.by_serial(n)) {
                Some(case) => self.answer(operation, &self.data(&case)),
                None => Self::fault("Client", "无此办件"),
            },
            "SupplementCase" => {
                let param = |k: &str| params.get(k).map_or("", |v| v.trim());
                for required in ["slbh", "bzlsh"] {
                    if param(required).is_empty() {
                        return Self::fault("Client", &format!("缺少必填项 {required}"));
                    }
                }
                let Some(round) = param("bzcs").parse::<u32>().ok().filter(|r| *r > 0) else {
                    return Self::fault("Client", "补正次数格式错误");
                };
                let supplied = request.lists.get("clmc").cloned().unwrap_or_default();
                let serial = param("bzlsh");
                match self.sim.resupply(param("slbh"), round, serial, supplied) {
                    Resupply::Taken(case) => self.answer(operation, &self.data(&case)),
                    Resupply::Duplicate(_) => {
                        Self::fault("Client", &format!("补正流水号 {serial} 已存在"))
                    }
                    Resupply::NotWaiting(_) => Self::fault("Client", "办件不在补正状态"),
                    Resupply::Unknown => Self::fault("Client", "无此办件"),
                }
            }
            other => Self::fault("Client", &format!("未知操作 {other}")),
        }
    }

    fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        match self.read(headers, body) {
            Ok((operation, request)) => self.dispatch(&operation, request),
            Err(refusal) => *refusal,
        }
    }
}

async fn service(State(s): State<Arc<SoapSim>>, headers: HeaderMap, body: Bytes) -> Response {
    match s.sim.request() {
        // The request is handled; its answer is what hangs.
        Some(Fault::Hang(d)) => {
            let answer = s.handle(&headers, &body);
            tokio::time::sleep(d).await;
            answer
        }
        Some(Fault::ServerError) => SoapSim::fault("Server", "数据库连接超时"),
        // Overload is a server fault here: no 429, no Retry-After.
        Some(Fault::TooMany(_)) => SoapSim::fault("Server", "服务繁忙，请稍后再试"),
        Some(Fault::Maintenance) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "系统维护中",
        )
            .into_response(),
        None => s.handle(&headers, &body),
    }
}

async fn stats(State(s): State<Arc<SoapSim>>) -> Json<crate::core::Stats> {
    Json(s.sim.stats())
}
