//! The 12345 hotline's classification table (GB/T 39666, 政府热线服务分类与代码), carried as
//! data: read from the TOML file `[hotline] classification` names, checked as it is read, and
//! asked for the code every work order carries. It owns the file's format (`[[class]] code =
//! "AABBCC" name = "…"`), its checks — six ASCII digits, each code once, a 中类 (`AABB00`) under
//! its listed 大类 (`AA0000`), a 小类 (`AABBCC`) under its listed 中类, a name — each problem
//! located by file and line, and the lookup of a code with its path of names (大类 › 中类 ›
//! 小类). It holds no code of its own: which codes exist is the file's to say (the shipped one
//! has example entries only; a deployment gives the standard's table, docs/hotline.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigProblem, line_at, toml_problem};

/// What the file may contain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassFile {
    #[serde(default)]
    class: Vec<Entry>,
}

/// One `[[class]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    code: Spanned<String>,
    name: Spanned<String>,
}

/// One class of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// Six digits: 大类, 中类 and 小类, two each (`AA0000`, `AABB00`, `AABBCC`).
    pub code: String,
    pub name: String,
}

impl Class {
    /// 1 for a 大类, 2 for a 中类, 3 for a 小类.
    pub fn level(&self) -> u8 {
        level(&self.code)
    }
}

fn level(code: &str) -> u8 {
    if &code[2..] == "0000" {
        1
    } else if &code[4..] == "00" {
        2
    } else {
        3
    }
}

/// The code of the class `code` lies under (`None` for a 大类). `code` is six digits.
fn parent(code: &str) -> Option<String> {
    match level(code) {
        1 => None,
        2 => Some(format!("{}0000", &code[..2])),
        _ => Some(format!("{}00", &code[..4])),
    }
}

fn six_digits(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The classification table, checked.
#[derive(Debug, Clone)]
pub struct Classes {
    file: PathBuf,
    by_code: BTreeMap<String, Class>,
}

impl Classes {
    /// Reads and checks the table at `file`; every problem found, each with file and line.
    pub fn load(file: &Path) -> Result<Classes, Vec<ConfigProblem>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![ConfigProblem {
                file: file.display().to_string(),
                line: 0,
                message: format!(
                    "cannot read the hotline's classification table: {e}; give its path in [hotline] classification"
                ),
            }]
        })?;
        Self::parse(file, &text)
    }

    /// Checks the table's `text` (`file` only names it in problems).
    pub fn parse(file: &Path, text: &str) -> Result<Classes, Vec<ConfigProblem>> {
        let parsed: ClassFile =
            toml::from_str(text).map_err(|e| vec![toml_problem(file, text, &e)])?;
        let at = |span: std::ops::Range<usize>, message: String| ConfigProblem {
            file: file.display().to_string(),
            line: line_at(text, span.start),
            message,
        };
        let mut problems = Vec::new();
        if parsed.class.is_empty() {
            problems.push(ConfigProblem {
                file: file.display().to_string(),
                line: 1,
                message: "no [[class]]: the hotline's classification table lists no code; give the table's entries ([[class]] code = \"010000\" name = \"…\")".into(),
            });
        }
        // Each code once, with the line it was first given on.
        let mut by_code: BTreeMap<String, (Class, usize)> = BTreeMap::new();
        for e in &parsed.class {
            let code = e.code.get_ref().trim();
            let name = e.name.get_ref().trim();
            if !six_digits(code) {
                problems.push(at(
                    e.code.span(),
                    format!(
                        "class code {code:?} is not six digits (大类, 中类, 小类: two each, e.g. 010101)"
                    ),
                ));
                continue;
            }
            if name.is_empty() {
                problems.push(at(
                    e.name.span(),
                    format!("class {code}: the name is empty; give the class's name"),
                ));
            }
            let line = line_at(text, e.code.span().start);
            if let Some((_, first)) = by_code.get(code) {
                problems.push(at(
                    e.code.span(),
                    format!(
                        "class {code} is listed twice (first at line {first}); give each code once"
                    ),
                ));
                continue;
            }
            by_code.insert(
                code.to_string(),
                (
                    Class {
                        code: code.to_string(),
                        name: name.to_string(),
                    },
                    line,
                ),
            );
        }
        for (code, (class, line)) in &by_code {
            if let Some(up) = parent(code)
                && !by_code.contains_key(&up)
            {
                let (what, above) = if class.level() == 2 {
                    ("中类", "大类")
                } else {
                    ("小类", "中类")
                };
                problems.push(ConfigProblem {
                    file: file.display().to_string(),
                    line: *line,
                    message: format!(
                        "class {code} is a {what} whose {above} {up} is not listed; add [[class]] code = \"{up}\" with its name"
                    ),
                });
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| p.line);
            return Err(problems);
        }
        Ok(Classes {
            file: file.to_path_buf(),
            by_code: by_code.into_iter().map(|(k, (c, _))| (k, c)).collect(),
        })
    }

    /// The file the table was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many classes it lists.
    pub fn len(&self) -> usize {
        self.by_code.len()
    }

    /// Whether it lists none (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }

    /// The class `code`, if listed.
    pub fn get(&self, code: &str) -> Option<&Class> {
        self.by_code.get(code)
    }

    /// The classes from the 大类 down to `code` (one to three), if `code` is listed.
    pub fn path(&self, code: &str) -> Option<Vec<&Class>> {
        let class = self.get(code)?;
        let mut path = vec![class];
        let mut up = parent(code);
        while let Some(c) = up {
            // Every parent is listed: the load checked it.
            let p = self.get(&c)?;
            path.push(p);
            up = parent(&c);
        }
        path.reverse();
        Some(path)
    }

    /// The path of names of `code`, `大类 › 中类 › 小类`, if listed.
    pub fn names(&self, code: &str) -> Option<String> {
        Some(
            self.path(code)?
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(" › "),
        )
    }

    /// The class a work order names in `classificationCode`, or the refusal saying what is
    /// wrong and what to give.
    pub fn check(&self, code: &str) -> Result<&Class, String> {
        let code = code.trim();
        if code.is_empty() {
            return Err(format!(
                "classificationCode: is required; give the work order's code from the hotline's classification table ([hotline] classification = {})",
                self.file.display()
            ));
        }
        self.get(code).ok_or_else(|| {
            format!(
                "classificationCode: {code:?} is not in the hotline's classification table ([hotline] classification = {}); give a code the table lists, or add the class to the table and restart the gateway",
                self.file.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Classes, Vec<ConfigProblem>> {
        Classes::parse(Path::new("classes.toml"), text)
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        parse(text).unwrap_err()
    }

    const GOOD: &str = r#"
[[class]]
code = "010000"
name = "大"

[[class]]
code = "010100"
name = "中"

[[class]]
code = "010101"
name = "小"
"#;

    #[test]
    fn a_code_is_found_with_its_path_of_names() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("010101").unwrap().name, "小");
        assert_eq!(c.get("010101").unwrap().level(), 3);
        assert_eq!(c.names("010101").unwrap(), "大 › 中 › 小");
        assert_eq!(c.names("010100").unwrap(), "大 › 中");
        assert_eq!(c.names("010000").unwrap(), "大");
        assert!(c.get("010102").is_none() && c.names("010102").is_none());
        assert!(c.check(" 010101 ").is_ok());
        let m = c.check("999999").unwrap_err();
        assert!(
            m.starts_with("classificationCode: \"999999\" is not in")
                && m.contains("[hotline] classification = classes.toml"),
            "{m}"
        );
        assert!(c.check("").unwrap_err().contains("is required"));
    }

    #[test]
    fn a_code_not_six_digits_is_refused_at_its_line() {
        for bad in ["01000", "0100000", "01O000", "０１００００", "01-000"] {
            let p = problems(&format!("[[class]]\ncode = \"{bad}\"\nname = \"x\"\n"));
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!((p[0].file.as_str(), p[0].line), ("classes.toml", 2));
            assert!(p[0].message.contains("not six digits"), "{}", p[0].message);
        }
    }

    #[test]
    fn a_class_without_its_parent_is_refused_naming_the_parent() {
        let p = problems(
            "[[class]]\ncode = \"010000\"\nname = \"大\"\n\n[[class]]\ncode = \"010201\"\nname = \"小\"\n\n[[class]]\ncode = \"020300\"\nname = \"中\"\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].line, 6);
        assert!(
            p[0].message
                .contains("010201 is a 小类 whose 中类 010200 is not listed"),
            "{}",
            p[0].message
        );
        assert_eq!(p[1].line, 10);
        assert!(
            p[1].message
                .contains("020300 is a 中类 whose 大类 020000 is not listed"),
            "{}",
            p[1].message
        );
    }

    #[test]
    fn a_code_listed_twice_names_both_lines() {
        let p = problems(&format!(
            "{GOOD}\n[[class]]\ncode = \"010100\"\nname = \"again\"\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 15);
        assert!(
            p[0].message
                .contains("010100 is listed twice (first at line 7)"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn an_empty_name_an_unknown_key_and_an_empty_table_are_refused() {
        let p = problems("[[class]]\ncode = \"010000\"\nname = \"  \"\n");
        assert_eq!((p.len(), p[0].line), (1, 3), "{p:?}");
        assert!(p[0].message.contains("name is empty"));
        let p = problems("[[class]]\ncode = \"010000\"\nname = \"大\"\nlevel = 1\n");
        assert!(p[0].message.contains("unknown field"), "{p:?}");
        assert_eq!(p[0].line, 4);
        let p = problems("# nothing\n");
        assert!(p[0].message.contains("no [[class]]"), "{p:?}");
        let p = Classes::load(Path::new("/nonexistent/classes.toml")).unwrap_err();
        assert!(p[0].message.contains("cannot read"), "{p:?}");
    }

    #[test]
    fn the_shipped_table_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hotline/classification.toml");
        let c = Classes::load(&file).unwrap_or_else(|p| panic!("{p:?}"));
        for code in ["010000", "010100", "010101", "010102", "010103"] {
            assert!(c.get(code).is_some(), "{code}");
        }
        assert_eq!(
            c.names("010101").unwrap(),
            "政务服务 › 办事服务 › 办事进度查询"
        );
    }
}
