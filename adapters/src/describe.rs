//! The shape of a department description (`kind: http`, its `http:` section): each operation
//! the legacy system has, how its requests are written, how its answers are read and judged,
//! and how a decision is derived. Every field is typed and unknown fields are refused, so a
//! problem in a department file names its line. The field docs here are the user docs
//! (docs/adapters.md lists them).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::expr::{Expr, Template};

/// A description as a department's settings hold it: compiled once, shared.
#[derive(Debug, Clone)]
pub struct Described(pub std::sync::Arc<Description>);

impl<'de> Deserialize<'de> for Described {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Description::deserialize(d).map(|d| Described(std::sync::Arc::new(d)))
    }
}

impl Description {
    /// The credentials its templates use (`credentials.<name>`), with a template using each;
    /// a signature guarded by `when` is left out (it may be optional).
    pub fn credentials_used(&self) -> Vec<(String, String)> {
        let mut sources: Vec<&str> = Vec::new();
        fn operation<'a>(sources: &mut Vec<&'a str>, op: &'a Operation) {
            sources.push(op.path.source());
            sources.extend(op.query.values().map(|t| t.source()));
            sources.extend(op.headers.values().map(|t| t.source()));
            if let Some(body) = &op.body {
                sources.extend(
                    body.form
                        .iter()
                        .flat_map(|f| f.values().map(|t| t.source())),
                );
                sources.extend(body.text.iter().map(|t| t.template.source()));
            }
        }
        let ops = [Some(&self.submit), self.find.as_ref(), Some(&self.query)];
        for op in ops.into_iter().flatten() {
            operation(&mut sources, op);
        }
        if let Some(op) = &self.supplement {
            operation(&mut sources, op);
        }
        if let Some(t) = &self.token {
            operation(&mut sources, &t.call);
        }
        let c = &self.common;
        sources.extend(c.query.values().map(|t| t.source()));
        sources.extend(c.headers.values().map(|t| t.source()));
        sources.extend(c.form.values().map(|t| t.source()));
        if let Some(sign) = c.sign.as_ref().filter(|s| s.when.is_none()) {
            sources.push(sign.value.source());
        }
        let mut used = Vec::new();
        for source in sources {
            let mut rest = source;
            while let Some(at) = rest.find("credentials.") {
                let after = &rest[at + "credentials.".len()..];
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !used.iter().any(|(n, _)| *n == name) {
                    used.push((name, source.to_string()));
                }
                rest = after;
            }
        }
        used
    }
}

/// A legacy HTTP system, described.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    /// The character set requests are written in unless an operation says otherwise: `utf-8`
    /// (default), `gbk`, `gb18030`.
    #[serde(default)]
    pub charset: Charset,
    /// The character set of answers that name none in `Content-Type` or their XML declaration
    /// (default: `charset`).
    #[serde(default)]
    pub answer_charset: Option<Charset>,
    /// The token call, when the system hands out access tokens. Its value is `token` in every
    /// other operation's templates.
    #[serde(default)]
    pub token: Option<TokenCall>,
    /// What every business call (not the token call) carries, before the operation's own:
    /// query parameters, headers and form fields (templates), e.g. the token's place.
    #[serde(default)]
    pub common: Common,
    /// Hands a task over. Its answer carries the department's case number (see `outcome`).
    pub submit: Operation,
    /// Looks a task up by our serial (the task id), after a crash or a duplicate answer.
    /// Optional: a system without one must say `deduplicates_by_serial: true`.
    #[serde(default)]
    pub find: Option<Operation>,
    /// Asks about the department's case (`case_number`): its step and decision.
    pub query: Operation,
    /// Hands the materials of a supplement (补正) round to the department's case.
    #[serde(default)]
    pub supplement: Option<Operation>,
    /// The system answers a serial it already has with the case number it gave (a `duplicate`
    /// rule with `case_number`), and never opens a second case: tasks are submitted again
    /// instead of looked up.
    #[serde(default)]
    pub deduplicates_by_serial: bool,
    /// Rules every operation's answer is judged by, after the operation's own; first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// What an answer that no rule matched is: `permanent` (default: the system's own words
    /// are the reason) or any other verdict.
    #[serde(default = "permanent")]
    pub otherwise: Verdict,
    /// The reason given for a refusal or a failure (expression over `answer`, `status`,
    /// `text`); default: an excerpt of the answer.
    #[serde(default)]
    pub reason: Option<Expr>,
    /// How a decision is read from an answer.
    pub outcome: Outcome,
    /// How a callback from the system is read, when it sends them.
    #[serde(default)]
    pub callback: Option<Callback>,
}

fn permanent() -> Verdict {
    Verdict::Permanent
}

/// A character set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    Gbk,
    Gb18030,
}

impl Charset {
    pub fn encoding(self) -> &'static encoding_rs::Encoding {
        match self {
            Charset::Utf8 => encoding_rs::UTF_8,
            Charset::Gbk => encoding_rs::GBK,
            Charset::Gb18030 => encoding_rs::GB18030,
        }
    }
}

/// The token call, and how its answer gives the token and its lifetime.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCall {
    /// The request (the `common` fields are not added to it).
    pub call: Operation,
    /// The token, from the answer (expression): `answer.token`, `answer["data.token"]`.
    pub value: Expr,
    /// Its lifetime in seconds (expression), e.g. `answer.expires_in`,
    /// `answer.expireMinutes | int * 60`. Default: `lifetime_secs`.
    #[serde(default)]
    pub lifetime: Option<Expr>,
    /// The lifetime when the answer does not say (default 300 s). A token is renewed at 90 % of
    /// its life, and at once when an answer is judged `token_invalid`.
    #[serde(default = "default_lifetime")]
    pub lifetime_secs: u64,
}

fn default_lifetime() -> u64 {
    300
}

/// What every business call carries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    #[serde(default)]
    pub query: BTreeMap<String, Template>,
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    /// Form fields, added to operations whose body is a form.
    #[serde(default)]
    pub form: BTreeMap<String, Template>,
    /// A signature, computed last over what the call carries.
    #[serde(default)]
    pub sign: Option<Sign>,
}

/// A signature over a call: its template sees `form` (every form field but itself), `query`
/// and `body` (the body's text), and the usual variables; e.g.
/// `{{ form | canonical | hmac_sm3(credentials.sign_key) }}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sign {
    /// `form` (default), `header` or `query`.
    #[serde(default)]
    pub place: Place,
    /// The field, header or parameter name.
    pub name: String,
    pub value: Template,
    /// Signs only when this holds (expression), e.g. `credentials.sign_key is defined`.
    #[serde(default)]
    pub when: Option<Expr>,
}

/// Where a signature goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    #[default]
    Form,
    Header,
    Query,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    #[default]
    Post,
    Put,
}

/// One call to the system.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// `GET`, `POST` (default) or `PUT`.
    #[serde(default)]
    pub method: Method,
    /// Appended to the endpoint (template): `/api/v1/cases/{{ case_number }}`.
    pub path: Template,
    /// Query parameters (templates), URL-encoded in UTF-8.
    #[serde(default)]
    pub query: BTreeMap<String, Template>,
    /// Headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    /// A payload written first (JSON or XML, optionally encrypted), then available to the
    /// body's templates as `document` (an XML document inside a form field, an SM4-sealed
    /// JSON text…).
    #[serde(default)]
    pub document: Option<Document>,
    /// The request body; none for a `GET`.
    #[serde(default)]
    pub body: Option<Body>,
    /// The request's character set, when not the description's `charset` (form fields and
    /// text bodies are encoded in it).
    #[serde(default)]
    pub charset: Option<Charset>,
    /// How the answer is read.
    #[serde(default)]
    pub answer: AnswerFormat,
    /// Rules for this operation's answers, before the description's `rules`.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A payload written before the body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// JSON of an expression's value.
    #[serde(default)]
    pub json: Option<Expr>,
    /// XML of an expression's value.
    #[serde(default)]
    pub xml: Option<XmlBody>,
    /// Sealed with SM4 afterwards (keys from `credentials`).
    #[serde(default)]
    pub encrypt: Option<Seal>,
}

/// SM4 sealing of a payload or an answer field: PKCS#7 padding, hex or Base64 text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// `sm4-cbc` (default) or `sm4-ecb`.
    #[serde(default = "default_cipher")]
    pub cipher: crate::crypto::Cipher,
    /// The `credentials` entry holding the 16-byte key (32 hex digits or 16 characters).
    pub key: String,
    /// The `credentials` entry holding the IV (CBC only).
    #[serde(default)]
    pub iv: Option<String>,
    /// `base64` (default) or `hex`.
    #[serde(default = "default_seal_encoding")]
    pub encoding: crate::crypto::Encoding,
}

fn default_cipher() -> crate::crypto::Cipher {
    crate::crypto::Cipher::Sm4Cbc
}

fn default_seal_encoding() -> crate::crypto::Encoding {
    crate::crypto::Encoding::Base64
}

/// An XML document: a root element and an expression whose map becomes its children (a list
/// value repeats its element: `{'clqd': {'cl': materials}}` writes `<clqd><cl>…</cl><cl>…</cl></clqd>`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlBody {
    pub root: String,
    pub value: Expr,
}

/// The request body: one of `form`, `json`, `xml`, `soap`, `text`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// `application/x-www-form-urlencoded`: field → template (the `common` form fields first).
    #[serde(default)]
    pub form: Option<BTreeMap<String, Template>>,
    /// `application/json`: the JSON of an expression's value.
    #[serde(default)]
    pub json: Option<Expr>,
    /// `text/xml`: an XML document.
    #[serde(default)]
    pub xml: Option<XmlBody>,
    /// A SOAP 1.1 envelope: `text/xml` with a `SOAPAction` header.
    #[serde(default)]
    pub soap: Option<SoapBody>,
    /// Any text, with its content type.
    #[serde(default)]
    pub text: Option<TextBody>,
}

impl Body {
    /// How many of the kinds of body are given (exactly one is right).
    pub fn given(&self) -> usize {
        [
            self.form.is_some(),
            self.json.is_some(),
            self.xml.is_some(),
            self.soap.is_some(),
            self.text.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// A text body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextBody {
    pub content_type: String,
    pub template: Template,
}

/// A SOAP 1.1 call: the body is one operation element in the service's namespace, with one
/// unqualified child per entry of `value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapBody {
    pub namespace: String,
    pub operation: String,
    /// The `SOAPAction` (template over `namespace` and `operation`); default
    /// `{{ namespace }}/{{ operation }}`.
    #[serde(default)]
    pub action: Option<Template>,
    pub value: Expr,
}

/// How an answer is read into `answer` (a flat map: every leaf by its own name and by its
/// dotted path).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerFormat {
    /// `json` (default), `xml` (also SOAP envelopes and faults) or `text`.
    #[serde(default)]
    pub format: Format,
    /// A field of the answer sealed with SM4, opened and read (in `format` of its own) into
    /// the answer in its place.
    #[serde(default)]
    pub decrypt: Option<Opened>,
}

/// What an answer or a sealed field is written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Xml,
    Text,
}

/// An answer field sealed with SM4.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opened {
    /// The field (its dotted path), e.g. `data`.
    pub field: String,
    /// `sm4-cbc` (default) or `sm4-ecb`.
    #[serde(default = "default_cipher")]
    pub cipher: crate::crypto::Cipher,
    /// The `credentials` entry holding the key.
    pub key: String,
    /// The `credentials` entry holding the IV (CBC only).
    #[serde(default)]
    pub iv: Option<String>,
    /// `base64` (default) or `hex`.
    #[serde(default = "default_seal_encoding")]
    pub encoding: crate::crypto::Encoding,
    /// What the opened text is written in (default `json`).
    #[serde(default)]
    pub format: Format,
}

/// A judgement of an answer: when `when` holds, the answer is `then`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Expression over `answer`, `status` (the HTTP status) and `text` (the answer's text).
    pub when: Expr,
    pub then: Verdict,
    /// For `duplicate`: where the case number the system already gave is (expression).
    #[serde(default)]
    pub case_number: Option<Expr>,
    /// The reason given when this rule matched (expression), instead of the description's.
    #[serde(default)]
    pub reason: Option<Expr>,
}

/// What an answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The call did what was asked.
    Success,
    /// The token is no longer good: it is fetched again and the call made once more.
    TokenInvalid,
    /// The serial is there already (a submit or supplement made before).
    Duplicate,
    /// The thing asked about does not exist.
    NotFound,
    /// Worth trying again later (overload, maintenance, a clock out of step).
    Transient,
    /// The system refused the task itself: the window must act.
    Permanent,
}

/// How a decision is derived from an answer (expressions over `answer`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The department's own case number.
    pub case_number: Expr,
    /// The step the case is at (承办, 审核…).
    #[serde(default)]
    pub step: Option<Expr>,
    /// True when the answer says approved. Checked first, then `rejected`, then `supplement`.
    pub approved: Expr,
    pub rejected: Expr,
    #[serde(default)]
    pub supplement: Option<Expr>,
    /// Why it was rejected: a list, or a text split on `,，、;；`.
    #[serde(default)]
    pub reasons: Option<Expr>,
    /// What a supplement request asks for: a list, or a text split likewise.
    #[serde(default)]
    pub materials: Option<Expr>,
    /// The document issued on approval.
    #[serde(default)]
    pub document: Option<DocumentOut>,
    /// The date of the decision (any legacy date form).
    #[serde(default)]
    pub decided_on: Option<Expr>,
}

/// The document issued on approval (expressions).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentOut {
    /// The acceptance list's material code of the document (text).
    #[serde(default)]
    pub material_code: String,
    #[serde(default)]
    pub name: Option<Expr>,
    #[serde(default)]
    pub number: Option<Expr>,
}

/// A callback the system sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Callback {
    #[serde(default)]
    pub answer: AnswerFormat,
    /// Our serial (the task id) in it (expression over `answer`).
    pub serial: Expr,
}
