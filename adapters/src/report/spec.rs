//! A reporting specification: the file (`config/report/*.yaml`) that says which stage records
//! a province's platform wants for each fact of a case, with which fields and code tables.
//! It is read and compiled once at start, so a bad template or expression is refused with its
//! file and what is wrong; this module owns the file's shape and nothing else (the facts are
//! [`super::facts`], the records [`super::derive`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::expr::{Expr, Template};

/// The kinds of fact a record may be made from, in the order they are reported when they
/// happen at the same instant.
pub const FACTS: &[&str] = &[
    "not_accepted",
    "accepted",
    "supplement_received",
    "special_ended",
    "supplement_asked",
    "special_started",
    "step",
    "decided",
    "withdrawn",
    "delivered",
    "evaluated",
    "rectified",
];

/// A specification, compiled.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// What the specification is, for logs and the status page.
    pub name: String,
    /// The 申办流水号 of a task's records.
    pub sblsh: Template,
    /// The field that carries a record's sequence number (1, 2, … per table and 申办流水号).
    pub sequence_field: String,
    /// The field that carries the 申办流水号 (in `common`, rendered as `sblsh` is).
    #[serde(default = "default_sblsh_field")]
    pub sblsh_field: String,
    /// Fields every record carries.
    #[serde(default)]
    pub common: BTreeMap<String, Template>,
    /// Code tables, seen by templates as `codes`.
    #[serde(default)]
    pub codes: BTreeMap<String, BTreeMap<String, String>>,
    /// The records, each made from one kind of fact.
    pub records: Vec<Rule>,
    /// How the platform's HTTP interface answers (transport `http`).
    #[serde(default)]
    pub http: HttpAnswers,
}

/// One kind of record: made from every fact of the kinds `on` for which `when` holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The platform's name of the table (`EX_GDBS_SL`).
    pub table: String,
    /// The fact kind(s) it is made from.
    pub on: OneOrMany,
    /// Made only when this holds (default: always).
    #[serde(default)]
    pub when: Option<Expr>,
    /// The fields, in the order written.
    #[serde(default)]
    pub fields: indexmap_lite::Ordered<Template>,
    /// Fields left out when they render empty (optional in the specification).
    #[serde(default)]
    pub omit_empty: Vec<String>,
    /// Fields that are lists of objects (`ZBPJ`: one entry per indicator).
    #[serde(default)]
    pub lists: BTreeMap<String, ListField>,
    /// Fields written as JSON integers, not text.
    #[serde(default)]
    pub integers: Vec<String>,
}

/// A field holding a list of objects, one per element of `each`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListField {
    /// The elements (seen as `item`).
    pub each: Expr,
    pub fields: indexmap_lite::Ordered<Template>,
    #[serde(default)]
    pub integers: Vec<String>,
}

/// One value or a list of values.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn contains(&self, kind: &str) -> bool {
        match self {
            OneOrMany::One(k) => k == kind,
            OneOrMany::Many(ks) => ks.iter().any(|k| k == kind),
        }
    }
    fn all(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(k) => vec![k.as_str()],
            OneOrMany::Many(ks) => ks.iter().map(String::as_str).collect(),
        }
    }
}

/// How the platform's HTTP interface says a record was taken, refused for good, or not taken
/// for now (anything else: tried again later). Expressions over `answer` (its JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAnswers {
    pub ok: Expr,
    pub refused: Expr,
    /// The platform's words.
    pub message: Expr,
}

impl Default for HttpAnswers {
    fn default() -> Self {
        HttpAnswers {
            ok: Expr::compile("answer.code == '0'").expect("default"),
            refused: Expr::compile("answer.code in ['1001', '1002', '1003']").expect("default"),
            message: Expr::compile("answer.msg").expect("default"),
        }
    }
}

fn default_sblsh_field() -> String {
    "SBLSH".into()
}

impl Spec {
    /// Reads and compiles a specification; the error names the file and what is wrong.
    pub fn load(path: &Path) -> Result<Spec, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Spec::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Spec, String> {
        let spec: Spec = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        for (i, rule) in spec.records.iter().enumerate() {
            for kind in rule.on.all() {
                if !FACTS.contains(&kind) {
                    return Err(format!(
                        "records[{i}] ({}): on: {kind:?} is not a fact; the facts are {}",
                        rule.table,
                        FACTS.join(", ")
                    ));
                }
            }
            if rule.fields.is_empty() {
                return Err(format!("records[{i}] ({}): no fields", rule.table));
            }
        }
        if spec.sequence_field.trim().is_empty() {
            return Err("sequence_field: give the field the sequence number goes in".into());
        }
        match spec.common.iter().find(|(k, _)| **k == spec.sblsh_field) {
            Some((_, t)) if t.source() == spec.sblsh.source() => {}
            _ => {
                return Err(format!(
                    "common: {} must be there, written as sblsh is ({:?}): records are found at the platform by it",
                    spec.sblsh_field,
                    spec.sblsh.source()
                ));
            }
        }
        // Tables and fields become table and column names on the exchange-tables transport.
        let names = spec
            .records
            .iter()
            .flat_map(|r| std::iter::once(&r.table).chain(r.fields.iter().map(|(k, _)| k)))
            .chain(spec.common.keys())
            .chain([&spec.sequence_field, &spec.sblsh_field]);
        for name in names {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "{name:?}: table and field names are letters, digits and _"
                ));
            }
        }
        Ok(spec)
    }

    /// The tables of the specification, in the order written.
    pub fn tables(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for r in &self.records {
            if !out.contains(&r.table.as_str()) {
                out.push(&r.table);
            }
        }
        out
    }
}

/// A map that keeps the order its keys were written in (a record's fields go out in that
/// order, as a platform's documentation lists them).
pub mod indexmap_lite {
    use serde::Deserialize;
    use serde::de::{Deserializer, MapAccess, Visitor};

    #[derive(Debug)]
    pub struct Ordered<T>(pub Vec<(String, T)>);

    impl<T> Default for Ordered<T> {
        fn default() -> Self {
            Ordered(Vec::new())
        }
    }

    impl<T> Ordered<T> {
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
        pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
            self.0.iter().map(|(k, v)| (k, v))
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Ordered<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a map of field names to templates")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, T>()? {
                        out.push((k, v));
                    }
                    Ok(Ordered(out))
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_specification_compiles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/report/gdbs.yaml");
        let spec = Spec::load(&path).unwrap();
        assert!(spec.tables().contains(&"EX_GDBS_BJ"));
        assert_eq!(spec.sequence_field, "XH");
    }

    #[test]
    fn an_unknown_fact_is_refused_naming_the_facts() {
        let e = Spec::parse(
            "name: x\nsblsh: '{{ task.taskId }}'\nsequence_field: XH\nrecords:\n  - table: T\n    on: approved\n    fields: {A: 'a'}\n",
        )
        .unwrap_err();
        assert!(
            e.contains("\"approved\" is not a fact") && e.contains("decided"),
            "{e}"
        );
    }
}
