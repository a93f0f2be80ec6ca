//! The template and expression language of department descriptions: MiniJinja (Jinja2 syntax,
//! a kept engine with few dependencies), with the filters legacy systems need registered once.
//!
//! A [`Template`] renders text (`"{{ task.taskId }}"`, `"{{ now | datetime_compact }}"`); an
//! [`Expr`] evaluates to a value (`answer.code == '0'`, `answer.yj | split_list`,
//! `{"lsh": serial, "clqd": supplement.materials}`). Both are compiled when the department file
//! is read, so a bad one is refused at start with its file and line (they deserialize from
//! the YAML string and fail there), and are only evaluated afterwards.
//!
//! Templates are strict about what they write: a missing field written out is an error naming
//! the template (write `{{ x | default('') }}` for an optional one; the default is reached
//! through missing parents too). Expressions are lenient: an answer field that is
//! missing is undefined, which compares unequal to everything and is false, because a legacy
//! answer carries different fields on success and on failure.
//!
//! This module owns the engine's two environments and the filters. Compiled templates and
//! expressions live for the process: a department is described once, at start.

use std::sync::LazyLock;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

/// The strict environment of templates.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = environment(UndefinedBehavior::Chainable);
    // Chainable, so `a.b.c | default('')` reaches its default through a missing `a.b`; but a
    // missing field written out is an error, not empty text. A field that is there but null
    // (`none`) writes nothing, not the word "none".
    env.set_formatter(|out, state, value| {
        if value.is_undefined() {
            Err(Error::new(
                ErrorKind::UndefinedError,
                "a field the task does not have (write `| default('')` for an optional one)",
            ))
        } else if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env
});
/// The lenient environment of expressions.
static EXPRESSIONS: LazyLock<Environment<'static>> =
    LazyLock::new(|| environment(UndefinedBehavior::Chainable));

fn environment(undefined: UndefinedBehavior) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(undefined);
    // Text for legacy systems is never HTML: nothing is escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("date", |v: &str| date_filter(v, "%Y-%m-%d"));
    env.add_filter("date_compact", |v: &str| date_filter(v, "%Y%m%d"));
    env.add_filter("date_cn", |v: &str| date_filter(v, "%Y年%m月%d日"));
    env.add_filter("datetime", |v: &str| time_filter(v, "%Y-%m-%d %H:%M:%S"));
    env.add_filter("datetime_compact", |v: &str| time_filter(v, "%Y%m%d%H%M%S"));
    env.add_filter("datetime_cn", |v: &str| {
        time_filter(v, "%Y年%m月%d日 %H时%M分")
    });
    env.add_filter("split_list", split_list);
    env.add_filter("gbk_truncate", gbk_truncate);
    env.add_filter("canonical", canonical);
    env.add_filter("from_json", from_json);
    env.add_filter("sm3", |v: &str| {
        crate::crypto::encode(
            &crate::crypto::sm3(v.as_bytes()),
            crate::crypto::Encoding::Hex,
        )
    });
    env.add_filter("hmac_sm3", hmac_sm3);
    env.add_filter("sm4_encrypt", sm4_encrypt);
    env.add_filter("sm4_decrypt", sm4_decrypt);
    env.add_filter("sm2_sign", sm2_sign);
    env
}

/// A compiled template (text with `{{ … }}`), as written in a department file.
pub struct Template {
    source: String,
    compiled: minijinja::Template<'static, 'static>,
}

impl Template {
    /// Compiles `source`; the error says what is wrong.
    pub fn compile(source: &str) -> Result<Template, String> {
        // Compiled once per department at start and kept for the process (see the module docs).
        check_filters(source, true)?;
        let leaked: &'static str = Box::leak(source.to_string().into_boxed_str());
        let compiled = TEMPLATES
            .template_from_str(leaked)
            .map_err(|e| described(&e))?;
        Ok(Template {
            source: source.to_string(),
            compiled,
        })
    }

    /// Renders over `context`; the error names what was missing or wrong.
    pub fn render(&self, context: &Value) -> Result<String, String> {
        self.compiled
            .render(context)
            .map_err(|e| format!("template {:?}: {}", self.source, described(&e)))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(source: String) -> Result<Self, String> {
        Template::compile(&source)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Template::compile(&source)
            .map_err(|e| serde::de::Error::custom(format!("template {source:?}: {e}")))
    }
}

/// A compiled expression, as written in a department file.
pub struct Expr {
    source: String,
    compiled: minijinja::Expression<'static, 'static>,
}

impl Expr {
    /// Compiles `source`; the error says what is wrong.
    pub fn compile(source: &str) -> Result<Expr, String> {
        check_filters(source, false)?;
        let compiled = EXPRESSIONS
            .compile_expression_owned(source.to_string())
            .map_err(|e| described(&e))?;
        Ok(Expr {
            source: source.to_string(),
            compiled,
        })
    }

    /// Evaluates over `context`.
    pub fn eval(&self, context: &Value) -> Result<Value, String> {
        self.compiled
            .eval(context)
            .map_err(|e| format!("expression {:?}: {}", self.source, described(&e)))
    }

    /// Evaluates to true or false (undefined and empty are false).
    pub fn test(&self, context: &Value) -> Result<bool, String> {
        Ok(self.eval(context)?.is_true())
    }

    /// Evaluates to text: empty for undefined and none.
    pub fn text(&self, context: &Value) -> Result<String, String> {
        Ok(text_of(&self.eval(context)?))
    }

    /// Evaluates to a list of texts: a list as it is, a text split with [`split_list`], nothing
    /// for undefined.
    pub fn list(&self, context: &Value) -> Result<Vec<String>, String> {
        let v = self.eval(context)?;
        Ok(match v.kind() {
            ValueKind::Seq => v
                .try_iter()
                .map(|items| {
                    items
                        .map(|i| text_of(&i))
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            _ => split(&text_of(&v)),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Expr::compile(&source)
            .map_err(|e| serde::de::Error::custom(format!("expression {source:?}: {e}")))
    }
}

/// Our filters.
const OURS: &[&str] = &[
    "date",
    "date_compact",
    "date_cn",
    "datetime",
    "datetime_compact",
    "datetime_cn",
    "split_list",
    "gbk_truncate",
    "canonical",
    "from_json",
    "sm3",
    "hmac_sm3",
    "sm4_encrypt",
    "sm4_decrypt",
    "sm2_sign",
];

/// MiniJinja's own filters.
const BUILTIN: &[&str] = &[
    "abs",
    "attr",
    "batch",
    "bool",
    "capitalize",
    "chain",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "indent",
    "int",
    "items",
    "join",
    "last",
    "length",
    "lines",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "pprint",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "safe",
    "select",
    "selectattr",
    "slice",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "unique",
    "upper",
    "zip",
];

/// Refuses a filter name the engine would only find missing when the template first renders:
/// a department file with a misspelt filter is refused at start, not on its first task. Scans
/// the expression parts (all of an expression; `{{ }}` and `{% %}` of a template), outside
/// string literals, for `| name`.
fn check_filters(source: &str, template: bool) -> Result<(), String> {
    let chars: Vec<char> = source.chars().collect();
    let mut inside = !template;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if template && !inside {
            if c == '{' && matches!(next, Some('{') | Some('%')) {
                inside = true;
                i += 2;
                continue;
            }
            i += 1;
            continue;
        }
        if let Some(q) = quote {
            if c == '\\' {
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '}' | '%' if template && next == Some('}') => {
                inside = false;
                i += 2;
                continue;
            }
            '|' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let start = j;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if !name.is_empty()
                    && !OURS.contains(&name.as_str())
                    && !BUILTIN.contains(&name.as_str())
                {
                    return Err(format!(
                        "unknown filter `{name}` (ours: {}; and MiniJinja's own)",
                        OURS.join(", ")
                    ));
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A value as text: empty for undefined and none, numbers and text as they print.
pub fn text_of(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        _ => v.to_string().trim().to_string(),
    }
}

/// An engine error in one line: its kind's words and its detail, without the engine's source
/// excerpt (the file and line are the configuration's).
fn described(e: &Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn bad(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// A date or time as legacy systems and our own messages write it: RFC 3339 (taken to hall time,
/// UTC+8), `2019-10-22 10:30:00`, `20191022103000`, `2019年10月22日 10时30分`, or a date alone
/// (`2019-10-22`, `20191022`, `2019年10月22日`, `2019/10/22`) at midnight.
pub fn parse_time(value: &str) -> Option<chrono::NaiveDateTime> {
    let v = value.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some((t.with_timezone(&chrono::Utc) + chrono::Duration::hours(8)).naive_utc());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y%m%d%H%M%S",
        "%Y年%m月%d日 %H时%M分",
        "%Y年%m月%d日%H时%M分",
        "%Y/%m/%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(v, format) {
            return Some(t);
        }
    }
    crate::mapping::parse_date(v).and_then(|d| d.and_hms_opt(0, 0, 0))
}

fn date_filter(value: &str, format: &str) -> Result<String, Error> {
    crate::mapping::parse_date(value)
        .map(|d| d.format(format).to_string())
        .ok_or_else(|| bad(format!("{value:?} is not a date")))
}

fn time_filter(value: &str, format: &str) -> Result<String, Error> {
    parse_time(value)
        .map(|t| t.format(format).to_string())
        .ok_or_else(|| bad(format!("{value:?} is not a date and time")))
}

/// Splits a list written as text on any of `,，、;；` (legacy systems use them all), trimmed,
/// without empty items.
pub fn split(text: &str) -> Vec<String> {
    text.split([',', '，', '、', ';', '；'])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn split_list(value: &Value) -> Vec<String> {
    split(&text_of(value))
}

/// The longest prefix of `value` whose GBK encoding is at most `bytes` long, never cutting a
/// character in two (legacy columns are sized in GBK bytes).
pub fn gbk_truncate(value: &str, bytes: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in value.chars() {
        let mut buf = [0u8; 4];
        let (encoded, _, _) = encoding_rs::GBK.encode(c.encode_utf8(&mut buf));
        if used + encoded.len() > bytes {
            break;
        }
        used += encoded.len();
        out.push(c);
    }
    out
}

/// `name=value` of a map's entries but `sign`, sorted by name, joined by `&`: the string many
/// systems sign.
fn canonical(map: &Value) -> Result<String, Error> {
    if map.kind() != ValueKind::Map {
        return Err(bad(format!("canonical needs a map, not {}", map.kind())));
    }
    let mut pairs: Vec<(String, String)> = map
        .try_iter()?
        .filter_map(|k| {
            let key = k.as_str()?.to_string();
            let value = map.get_item(&k).ok()?;
            (key != "sign").then(|| (key, text_of(&value)))
        })
        .collect();
    pairs.sort();
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

fn from_json(value: &str) -> Result<Value, Error> {
    let parsed: serde_json::Value =
        serde_json::from_str(value).map_err(|e| bad(format!("not JSON ({e})")))?;
    Ok(Value::from_serialize(&parsed))
}

fn hmac_sm3(value: &str, key: &str) -> String {
    crate::crypto::encode(
        &crate::crypto::hmac_sm3(key.as_bytes(), value.as_bytes()),
        crate::crypto::Encoding::Hex,
    )
}

/// What an `sm4_*` filter's keyword arguments say: cipher, key, IV and encoding.
type Sm4Args = (
    crate::crypto::Cipher,
    [u8; 16],
    Option<[u8; 16]>,
    crate::crypto::Encoding,
);

/// The cipher, key, IV and encoding of an `sm4_*` filter's keyword arguments.
fn sm4_args(kwargs: &Kwargs) -> Result<Sm4Args, Error> {
    let mode: Option<&str> = kwargs.get("mode")?;
    let cipher = match mode.unwrap_or("cbc") {
        "cbc" => crate::crypto::Cipher::Sm4Cbc,
        "ecb" => crate::crypto::Cipher::Sm4Ecb,
        other => return Err(bad(format!("mode {other:?}: cbc or ecb"))),
    };
    let key: &str = kwargs.get("key")?;
    let key = crate::crypto::key16(key).map_err(|e| bad(format!("key: {e}")))?;
    let iv: Option<&str> = kwargs.get("iv")?;
    let iv = iv
        .map(crate::crypto::key16)
        .transpose()
        .map_err(|e| bad(format!("iv: {e}")))?;
    let encoding: Option<&str> = kwargs.get("encoding")?;
    let encoding = match encoding.unwrap_or("base64") {
        "base64" => crate::crypto::Encoding::Base64,
        "hex" => crate::crypto::Encoding::Hex,
        other => return Err(bad(format!("encoding {other:?}: base64 or hex"))),
    };
    kwargs.assert_all_used()?;
    Ok((cipher, key, iv, encoding))
}

/// `text | sm4_encrypt(key=…, iv=…, mode='cbc', encoding='base64')`: SM4 with PKCS#7 padding
/// over the UTF-8 text.
fn sm4_encrypt(value: &str, kwargs: Kwargs) -> Result<String, Error> {
    let (cipher, key, iv, encoding) = sm4_args(&kwargs)?;
    let sealed = crate::crypto::sm4_encrypt(cipher, &key, iv.as_ref(), value.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    Ok(crate::crypto::encode(&sealed, encoding))
}

/// `text | sm4_decrypt(key=…, iv=…, mode='cbc', encoding='base64')`: the UTF-8 text back.
fn sm4_decrypt(value: &str, kwargs: Kwargs) -> Result<String, Error> {
    let (cipher, key, iv, encoding) = sm4_args(&kwargs)?;
    let sealed = crate::crypto::decode(value, encoding).map_err(|e| bad(e.to_string()))?;
    let plain = crate::crypto::sm4_decrypt(cipher, &key, iv.as_ref(), &sealed)
        .map_err(|e| bad(e.to_string()))?;
    String::from_utf8(plain).map_err(|_| bad("the decrypted text is not UTF-8".into()))
}

/// `text | sm2_sign(key=<private key hex>, encoding='hex')`: an SM2 signature (r‖s).
fn sm2_sign(value: &str, kwargs: Kwargs) -> Result<String, Error> {
    let key: &str = kwargs.get("key")?;
    let user_id: Option<&str> = kwargs.get("user_id")?;
    let encoding: Option<&str> = kwargs.get("encoding")?;
    let encoding = match encoding.unwrap_or("hex") {
        "base64" => crate::crypto::Encoding::Base64,
        "hex" => crate::crypto::Encoding::Hex,
        other => return Err(bad(format!("encoding {other:?}: base64 or hex"))),
    };
    kwargs.assert_all_used()?;
    let signature =
        crate::crypto::sm2_sign(key, user_id, value.as_bytes()).map_err(|e| bad(e.to_string()))?;
    Ok(crate::crypto::encode(&signature, encoding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn render(source: &str, ctx: Value) -> Result<String, String> {
        Template::compile(source)?.render(&ctx)
    }

    #[test]
    fn dates_render_in_every_legacy_form() {
        let ctx = context!(t => "2019-10-22T02:30:00Z");
        for (filter, expected) in [
            ("date", "2019-10-22"),
            ("date_compact", "20191022"),
            ("date_cn", "2019年10月22日"),
            ("datetime", "2019-10-22 10:30:00"),
            ("datetime_compact", "20191022103000"),
            ("datetime_cn", "2019年10月22日 10时30分"),
        ] {
            assert_eq!(
                render(&format!("{{{{ t | {filter} }}}}"), ctx.clone()).unwrap(),
                expected,
                "{filter}"
            );
        }
        // Legacy forms are read back, with hours.
        let back = render("{{ '2019年10月22日 10时30分' | datetime }}", context!()).unwrap();
        assert_eq!(back, "2019-10-22 10:30:00");
        let e = render("{{ 'soon' | date_cn }}", context!()).unwrap_err();
        assert!(e.contains("\"soon\" is not a date"), "{e}");
    }

    #[test]
    fn lists_split_on_every_separator_legacy_systems_use() {
        let e = Expr::compile("v | split_list").unwrap();
        assert_eq!(
            e.list(&context!(v => "营业执照，身份证、租赁合同;平面图； "))
                .unwrap(),
            ["营业执照", "身份证", "租赁合同", "平面图"]
        );
        assert!(e.list(&context!()).unwrap().is_empty());
    }

    #[test]
    fn gbk_truncation_never_cuts_a_character() {
        // Each Chinese character is two bytes in GBK.
        assert_eq!(gbk_truncate("银川市兴庆区", 5), "银川");
        assert_eq!(gbk_truncate("ab银川", 3), "ab");
        assert_eq!(gbk_truncate("ab银川", 4), "ab银");
        assert_eq!(
            render("{{ v | gbk_truncate(6) }}", context!(v => "宁夏回族自治区")).unwrap(),
            "宁夏回"
        );
    }

    #[test]
    fn canonical_sorts_fields_and_leaves_out_sign() {
        let form = context!(xml => "<a>1&2</a>", token => "t", sign => "x", appid => "yc");
        assert_eq!(
            render("{{ f | canonical }}", context!(f => form)).unwrap(),
            "appid=yc&token=t&xml=<a>1&2</a>"
        );
    }

    #[test]
    fn templates_are_strict_and_expressions_lenient() {
        let e = render("{{ task.missing }}", context!(task => context!(id => "1"))).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        assert_eq!(
            render(
                "[{{ task.missing | default('') }}]",
                context!(task => context!(id => "1"))
            )
            .unwrap(),
            "[]"
        );
        let answer = context!(answer => context!(code => "0"));
        assert!(
            Expr::compile("answer.code == '0'")
                .unwrap()
                .test(&answer)
                .unwrap()
        );
        assert!(
            !Expr::compile("answer.msg == 'x'")
                .unwrap()
                .test(&answer)
                .unwrap()
        );
        assert!(
            !Expr::compile("'重复' in answer.msg")
                .unwrap()
                .test(&answer)
                .unwrap(),
            "a containment test on a missing field is false, not an error"
        );
    }

    #[test]
    fn a_bad_expression_or_template_says_what_is_wrong() {
        let e = Expr::compile("answer.code ==").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = Template::compile("{{ task.id | nosuch }}").unwrap_err();
        assert!(e.contains("unknown filter `nosuch`"), "{e}");
        let e = Expr::compile("answer.bjsj | date_us").unwrap_err();
        assert!(e.contains("unknown filter `date_us`"), "{e}");
        // A bar in literal text or in a string is not a filter.
        Template::compile("a|b {{ 'x|y' | upper }} c|d").unwrap();
        Expr::compile("answer.msg == 'a|b' or answer.code | int > 0").unwrap();
    }

    #[test]
    fn expressions_build_maps_and_lists_for_json_bodies() {
        let e = Expr::compile("{'lsh': serial, 'n': items | length}").unwrap();
        let v = e
            .eval(&context!(serial => "T-01", items => vec![1, 2]))
            .unwrap();
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"lsh": "T-01", "n": 2})
        );
    }
}
