//! SOAP 1.1 WebService (公安-, 消防-like): each call POSTs an envelope
//! (`text/xml; charset=utf-8`, `SOAPAction: "<action>"`) whose body is one operation element
//! in the service's namespace with one unqualified child per parameter, text escaped. Four
//! operations: submit (the department's `mapping.request` fields), query (the department's
//! case number), find-by-serial (our task id) and supplement (补正: the department's case
//! number, our task id, the round's serial `<task id>-S<round>` as `supplement_serial_param`,
//! `bzcs` the round, `bzcl` what the department asked for joined with `、`, and `<clqd>` with one
//! `<cl>` per material handed in — `clbm` code, `clmc` name, `clxs` 原件|复印件|电子件, `fs`
//! copies, `wjdz` file URI, `wjzy` SHA-256; a `duplicate_texts` fault means the round is there
//! already: success). The answer envelope's leaf elements are flattened into the [`Answer`]
//! the department's result mapping reads.
//!
//! Faults, which SOAP 1.1 sends with HTTP 500 (some servers with 200), are read by their
//! `faultcode` and `faultstring`:
//!
//! | answer | meaning |
//! |---|---|
//! | fault whose string contains a `duplicate_texts` entry | the serial is there already: looked up with find |
//! | fault whose string contains a `not_found_texts` entry | find: not there; query: permanent |
//! | `Client` fault (any prefix, any `.subcode`), `VersionMismatch`, `MustUnderstand` | permanent; the fault string is the reason |
//! | `Server` fault, or any other code | transient |
//! | HTTP 429 | transient, with the `Retry-After` the system gave |
//! | HTTP 5xx without a fault (502 page, 503 `系统维护中`) | transient |
//! | other HTTP 4xx | permanent (the endpoint or options are wrong) |
//! | HTTP 200 that is not XML | transient |
//!
//! Options: `namespace` (required: the service's target namespace); `service_path` (appended
//! to `endpoint`, default empty); `soap_action` (template with `{namespace}` and
//! `{operation}`, default `{namespace}/{operation}`); `submit_operation` (default
//! `SubmitCase`), `query_operation` (`QueryCase`), `find_operation` (`FindCaseBySerial`),
//! `supplement_operation` (`SupplementCase`); `serial_param` (find's parameter, default
//! `ywlsh`); `case_number_param` (query's parameter, default `mapping.result.case_number`);
//! `supplement_serial_param` (the round's serial, default `bzlsh`); comma-separated fault texts `duplicate_texts`
//! (default `已存在`) and `not_found_texts` (default `无此办件,记录不存在`).

use std::sync::Arc;
use std::time::Duration;

use super::{Kind, xml};
use crate::config::DepartmentConfig;
use crate::system::{Answer, DepartmentSystem, Failure, Gate, Task, supplement_serial, supplied};
use yichuang::proto::v1::SupplementDelivery;

pub const KIND: Kind = Kind {
    name: "soap",
    about: "SOAP 1.1 WebService: submit, query, find-by-serial and supplement operations",
    build,
};

const OPTIONS: &[&str] = &[
    "namespace",
    "service_path",
    "soap_action",
    "submit_operation",
    "query_operation",
    "find_operation",
    "supplement_operation",
    "serial_param",
    "case_number_param",
    "supplement_serial_param",
    "duplicate_texts",
    "not_found_texts",
];

/// The SOAP 1.1 envelope namespace.
pub const ENVELOPE_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

fn build(config: &DepartmentConfig, gate: Gate) -> Result<Arc<dyn DepartmentSystem>, String> {
    let o = super::options(config, OPTIONS, &["namespace"])?;
    if !config.endpoint.starts_with("http://") && !config.endpoint.starts_with("https://") {
        return Err(format!(
            "endpoint {:?} is not an http:// or https:// URL",
            config.endpoint
        ));
    }
    let text = |key: &str, default: &str| o.get(key).cloned().unwrap_or_else(|| default.into());
    let texts = |key: &str, default: &str| -> Vec<String> {
        text(key, default)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let case_number_param = o
        .get("case_number_param")
        .cloned()
        .or_else(|| config.mapping.result.case_number.clone())
        .ok_or("kind soap needs options.case_number_param or mapping.result.case_number")?;
    let operations = [
        text("submit_operation", "SubmitCase"),
        text("query_operation", "QueryCase"),
        text("find_operation", "FindCaseBySerial"),
        text("supplement_operation", "SupplementCase"),
    ];
    let serial_param = text("serial_param", "ywlsh");
    let supplement_serial_param = text("supplement_serial_param", "bzlsh");
    let names = [
        ("options.submit_operation", &operations[0]),
        ("options.query_operation", &operations[1]),
        ("options.find_operation", &operations[2]),
        ("options.supplement_operation", &operations[3]),
        ("options.serial_param", &serial_param),
        ("options.case_number_param", &case_number_param),
        ("options.supplement_serial_param", &supplement_serial_param),
    ];
    for (what, name) in names.into_iter().chain(
        config
            .mapping
            .request
            .keys()
            .map(|k| ("a field of mapping.request", k)),
    ) {
        if !xml::is_name(name) {
            return Err(format!("{what} {name:?} is not an XML element name"));
        }
    }
    let namespace = o["namespace"].clone();
    let action = text("soap_action", "{namespace}/{operation}").replace("{namespace}", &namespace);
    let [submit, query, find, supplement] = operations;
    Ok(Arc::new(Soap {
        client: super::http_client(config)?,
        url: format!(
            "{}{}",
            config.endpoint.trim_end_matches('/'),
            text("service_path", "")
        ),
        namespace,
        action,
        submit,
        query,
        find,
        supplement,
        serial_param,
        case_number_param,
        supplement_serial_param,
        duplicate: texts("duplicate_texts", "已存在"),
        not_found: texts("not_found_texts", "无此办件,记录不存在"),
        material_names: config.material_names.clone(),
        gate,
    }))
}

struct Soap {
    client: reqwest::Client,
    url: String,
    namespace: String,
    /// `SOAPAction` with `{operation}` still to fill in.
    action: String,
    submit: String,
    query: String,
    find: String,
    supplement: String,
    serial_param: String,
    case_number_param: String,
    supplement_serial_param: String,
    duplicate: Vec<String>,
    not_found: Vec<String>,
    /// Material code → name, for supplements.
    material_names: std::collections::BTreeMap<String, String>,
    gate: Gate,
}

/// What one call gave, when the service answered it.
#[derive(Debug, PartialEq)]
enum Reply {
    Ok(Answer),
    NotFound(String),
    Duplicate,
}

/// A SOAP 1.1 request envelope: `operation` in `namespace` (prefix `tns`), one unqualified
/// child element per parameter, every text and the namespace escaped.
pub fn envelope<'a>(
    namespace: &str,
    operation: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    envelope_with(namespace, operation, params, "")
}

/// An envelope as [`envelope`], with `more` (XML already written) after the parameters.
pub fn envelope_with<'a>(
    namespace: &str,
    operation: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    more: &str,
) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <soap:Envelope xmlns:soap=\"{ENVELOPE_NS}\" xmlns:tns=\"{}\"><soap:Body><tns:{operation}>",
        xml::escape(namespace)
    );
    for (name, value) in params {
        xml::element(&mut out, name, value);
    }
    out.push_str(more);
    out.push_str(&format!("</tns:{operation}></soap:Body></soap:Envelope>"));
    out
}

/// What a SOAP fault means (see the module's table).
fn fault(
    code: &str,
    string: &str,
    duplicate: &[String],
    not_found: &[String],
) -> Result<Reply, Failure> {
    let string = string.trim();
    if duplicate.iter().any(|t| string.contains(t.as_str())) {
        return Ok(Reply::Duplicate);
    }
    if not_found.iter().any(|t| string.contains(t.as_str())) {
        return Ok(Reply::NotFound(string.to_string()));
    }
    let local = code.trim().rsplit(':').next().unwrap_or_default();
    match local.split('.').next().unwrap_or_default() {
        // The system's own words, for the window: not masked (the runtime masks its logs).
        "Client" | "VersionMismatch" | "MustUnderstand" => {
            Err(Failure::permanent(if string.is_empty() {
                format!("SOAP fault {code}")
            } else {
                string.to_string()
            }))
        }
        _ => Err(Failure::transient(format!(
            "SOAP fault {code}: {}",
            xml::excerpt(string)
        ))),
    }
}

/// Reads an answer: its status, its faults, its leaves.
fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    text: &str,
    duplicate: &[String],
    not_found: &[String],
) -> Result<Reply, Failure> {
    if status.as_u16() == 429 {
        return Err(Failure::Transient {
            reason: "HTTP 429 Too Many Requests".into(),
            retry_after,
        });
    }
    let parsed = xml::flatten(text);
    if let Ok(answer) = &parsed
        && let Some(code) = answer.get("faultcode")
    {
        let string = answer.get("faultstring").map_or("", String::as_str);
        return fault(code, string, duplicate, not_found);
    }
    if status.is_server_error() {
        return Err(Failure::Transient {
            reason: format!("HTTP {status}: {}", xml::excerpt(text)),
            retry_after,
        });
    }
    if !status.is_success() {
        return Err(Failure::permanent(format!(
            "HTTP {status} from the WebService (check the endpoint and options.service_path): {}",
            xml::excerpt(text)
        )));
    }
    parsed
        .map(Reply::Ok)
        .map_err(|e| Failure::transient(format!("unreadable answer ({e}): {}", xml::excerpt(text))))
}

impl Soap {
    async fn call<'a>(
        &self,
        operation: &str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Reply, Failure> {
        self.call_with(operation, params, "").await
    }

    /// A call with `more` (XML already written) after the parameters.
    async fn call_with<'a>(
        &self,
        operation: &str,
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        more: &str,
    ) -> Result<Reply, Failure> {
        let body = envelope_with(&self.namespace, operation, params, more);
        let action = self.action.replace("{operation}", operation);
        self.gate.permit().await;
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{action}\""))
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::transient(format!("{operation}: HTTP: {e}")))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Failure::transient(format!("{operation}: HTTP: {e}")))?;
        let text = xml::decode(&bytes, content_type.as_deref(), encoding_rs::UTF_8);
        classify(status, retry_after, &text, &self.duplicate, &self.not_found).map_err(
            |f| match f {
                Failure::Transient {
                    reason,
                    retry_after,
                } => Failure::Transient {
                    reason: format!("{operation}: {reason}"),
                    retry_after,
                },
                permanent => permanent,
            },
        )
    }
}

#[async_trait::async_trait]
impl DepartmentSystem for Soap {
    async fn submit(&self, task: &Task) -> Result<Answer, Failure> {
        let params = task.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match self.call(&self.submit, params).await? {
            Reply::Ok(answer) => Ok(answer),
            // Submitted before (the answer was lost): the system tells us what it has.
            Reply::Duplicate => self
                .find(task)
                .await?
                .ok_or_else(|| Failure::transient("a duplicate that cannot be found yet")),
            Reply::NotFound(string) => Err(Failure::permanent(string)),
        }
    }

    async fn poll(&self, _task: &Task, department_case_number: &str) -> Result<Answer, Failure> {
        let params = [(self.case_number_param.as_str(), department_case_number)];
        match self.call(&self.query, params).await? {
            Reply::Ok(answer) => Ok(answer),
            Reply::NotFound(string) => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {string}"
            ))),
            Reply::Duplicate => Err(Failure::transient(
                "a query answered as a duplicate submission",
            )),
        }
    }

    async fn resupply(
        &self,
        task: &Task,
        department_case_number: &str,
        supplement: &SupplementDelivery,
    ) -> Result<Answer, Failure> {
        let serial = supplement_serial(task.id(), supplement.round);
        let round = supplement.round.to_string();
        let requested = supplement.requested.join("、");
        let params = [
            (self.case_number_param.as_str(), department_case_number),
            (self.serial_param.as_str(), task.id()),
            (self.supplement_serial_param.as_str(), serial.as_str()),
            ("bzcs", round.as_str()),
            ("bzcl", requested.as_str()),
        ];
        let materials = xml::materials(&supplied(supplement, &self.material_names));
        match self.call_with(&self.supplement, params, &materials).await? {
            Reply::Ok(answer) => Ok(answer),
            // Handed over before (the answer was lost): the case goes on, polling reads it.
            Reply::Duplicate => Ok(Answer::new()),
            Reply::NotFound(string) => Err(Failure::permanent(format!(
                "the department system does not know its case {department_case_number}: {string}"
            ))),
        }
    }

    async fn find(&self, task: &Task) -> Result<Option<Answer>, Failure> {
        let params = [(self.serial_param.as_str(), task.id())];
        match self.call(&self.find, params).await? {
            Reply::Ok(answer)
                if answer
                    .get(&self.case_number_param)
                    .is_some_and(|n| !n.trim().is_empty()) =>
            {
                Ok(Some(answer))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn fault_envelope(code: &str, string: &str) -> String {
        format!(
            "<soap:Envelope xmlns:soap=\"{ENVELOPE_NS}\"><soap:Body><soap:Fault>\
             <faultcode>{code}</faultcode><faultstring>{string}</faultstring>\
             </soap:Fault></soap:Body></soap:Envelope>"
        )
    }

    fn read(status: u16, body: &str) -> Result<Reply, Failure> {
        classify(
            StatusCode::from_u16(status).unwrap(),
            None,
            body,
            &["已存在".into()],
            &["无此办件".into()],
        )
    }

    #[test]
    fn an_envelope_escapes_every_text_and_reads_back() {
        let e = envelope(
            "urn:ga&yc",
            "SubmitCase",
            [
                ("ywlsh", "T-1"),
                ("sqrmc", "马强 <老马家> & \"餐饮\""),
                ("bz", "a]]>b"),
            ],
        );
        assert!(e.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope"));
        assert!(e.contains("xmlns:tns=\"urn:ga&amp;yc\""), "{e}");
        assert!(e.contains("<tns:SubmitCase><ywlsh>T-1</ywlsh>"), "{e}");
        assert!(!e.contains("<老马家>"), "{e}");
        let back = xml::flatten(&e).unwrap();
        assert_eq!(back["sqrmc"], "马强 <老马家> & \"餐饮\"");
        assert_eq!(back["bz"], "a]]>b");
    }

    #[test]
    fn client_faults_are_permanent_in_the_systems_words_and_server_faults_transient() {
        assert_eq!(
            read(500, &fault_envelope("soap:Client", "缺少必填项 sqrmc")),
            Err(Failure::permanent("缺少必填项 sqrmc"))
        );
        assert_eq!(
            read(
                500,
                &fault_envelope("SOAP-ENV:Client.Validation", "身份证号有误")
            ),
            Err(Failure::permanent("身份证号有误"))
        );
        let Err(Failure::Transient { reason, .. }) =
            read(500, &fault_envelope("soap:Server", "数据库连接超时"))
        else {
            panic!("a server fault is transient")
        };
        assert!(
            reason.contains("soap:Server") && reason.contains("数据库连接超时"),
            "{reason}"
        );
        // Some servers send faults with 200.
        assert!(matches!(
            read(200, &fault_envelope("Server", "x")),
            Err(Failure::Transient { .. })
        ));
        // A server fault's string is logged: personal data in it is masked.
        let Err(Failure::Transient { reason, .. }) = read(
            500,
            &fault_envelope("soap:Server", "身份证号64010419800315001X校验超时"),
        ) else {
            panic!()
        };
        assert!(!reason.contains("64010419800315001X"), "{reason}");
    }

    #[test]
    fn duplicate_and_missing_serials_are_recognised_by_their_text() {
        assert_eq!(
            read(500, &fault_envelope("soap:Client", "业务流水号 T-1 已存在")),
            Ok(Reply::Duplicate)
        );
        assert_eq!(
            read(500, &fault_envelope("soap:Client", "无此办件")),
            Ok(Reply::NotFound("无此办件".into()))
        );
    }

    #[test]
    fn http_failures_without_a_fault_are_classified_by_status() {
        assert!(matches!(
            read(503, "系统维护中"),
            Err(Failure::Transient { .. })
        ));
        assert!(matches!(
            read(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            Err(Failure::Transient { .. })
        ));
        assert!(matches!(
            read(404, "Not Found"),
            Err(Failure::Permanent { .. })
        ));
        assert!(matches!(
            read(200, "<html><body>"),
            Err(Failure::Transient { .. })
        ));
        let r = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "",
            &[],
            &[],
        );
        assert_eq!(
            r,
            Err(Failure::Transient {
                reason: "HTTP 429 Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(3)),
            })
        );
    }
}
