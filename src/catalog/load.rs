//! Reading the catalog's files: every `*.toml` file of a directory in name order, each parsed on
//! its own (a TOML problem is located by file and line), and their definitions gathered by code,
//! each with the file it came from; a code defined twice names both places.
//! It never judges whether definitions agree with one another (`check.rs` does), and it never
//! stops at the first problem: every one is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::model::{Bundle, Department, Item, MaterialKind};
use crate::config::{ConfigProblem, line_at, toml_problem};

/// What one catalog file may contain.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    department: Vec<Department>,
    #[serde(default)]
    material: Vec<MaterialKind>,
    #[serde(default)]
    item: Vec<Item>,
    #[serde(default)]
    bundle: Vec<Bundle>,
}

/// Where a definition came from, for error messages.
#[derive(Clone)]
pub(super) struct Origin {
    file: PathBuf,
    text: std::sync::Arc<str>,
}

impl Origin {
    pub(super) fn problem<T>(
        &self,
        spanned: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigProblem {
        ConfigProblem {
            file: self.file.display().to_string(),
            line: line_at(&self.text, spanned.span().start),
            message: message.into(),
        }
    }
}

/// A catalog file's path (only used in messages) and its text.
pub(super) type Source = (PathBuf, String);

/// Definitions by code, each with where it came from.
pub(super) type Defined<T> = BTreeMap<String, (T, Origin)>;

/// Every definition of every file, gathered by code; not yet checked against one another.
#[derive(Default)]
pub(super) struct Definitions {
    pub(super) departments: Defined<Department>,
    pub(super) materials: Defined<MaterialKind>,
    pub(super) items: Defined<Item>,
    pub(super) bundles: Defined<Bundle>,
}

/// The `(path, text)` of every `*.toml` file of `dir`, in name order, and the problems met
/// reading them (a directory without one is a problem). Err: the directory cannot be read.
pub(super) fn read_dir(dir: &Path) -> Result<(Vec<Source>, Vec<ConfigProblem>), ConfigProblem> {
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigProblem {
        file: dir.display().to_string(),
        line: 0,
        message: format!("cannot read the catalog directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => problems.push(ConfigProblem {
                file: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if sources.is_empty() && problems.is_empty() {
        problems.push(ConfigProblem {
            file: dir.display().to_string(),
            line: 0,
            message: "no *.toml files: the catalog is empty".into(),
        });
    }
    Ok((sources, problems))
}

/// Parses `(path, text)` pairs and gathers their definitions by code; a file that does not parse
/// is one problem and contributes nothing. Paths are only used in messages.
pub(super) fn parse(sources: &[Source]) -> (Definitions, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    let mut defs = Definitions::default();
    for (path, text) in sources {
        let file: CatalogFile = match toml::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                problems.push(toml_problem(path, text, &e));
                continue;
            }
        };
        let origin = Origin {
            file: path.clone(),
            text: text.as_str().into(),
        };
        insert_unique(
            &mut defs.departments,
            file.department,
            |d| &d.code,
            "department",
            &origin,
            &mut problems,
        );
        insert_unique(
            &mut defs.materials,
            file.material,
            |m| &m.code,
            "material",
            &origin,
            &mut problems,
        );
        insert_unique(
            &mut defs.items,
            file.item,
            |i| &i.code,
            "item",
            &origin,
            &mut problems,
        );
        insert_unique(
            &mut defs.bundles,
            file.bundle,
            |b| &b.code,
            "bundle",
            &origin,
            &mut problems,
        );
    }
    (defs, problems)
}

/// The definitions without where they came from: the catalog's indexes.
pub(super) fn without_origin<T>(defined: Defined<T>) -> BTreeMap<String, T> {
    defined.into_iter().map(|(k, (v, _))| (k, v)).collect()
}

/// Adds each definition under its code; an empty code, or one defined already (here or in an
/// earlier file), is a problem and the definition is left out.
fn insert_unique<T>(
    into: &mut Defined<T>,
    defs: Vec<T>,
    code: impl Fn(&T) -> &Spanned<String>,
    what: &str,
    origin: &Origin,
    problems: &mut Vec<ConfigProblem>,
) {
    for def in defs {
        let key = code(&def).get_ref().clone();
        if key.trim().is_empty() {
            problems.push(origin.problem(code(&def), format!("{what} has an empty code")));
            continue;
        }
        if let Some((_, first)) = into.get(&key) {
            let first_line = line_at(&first.text, code(&into[&key].0).span().start);
            problems.push(origin.problem(
                code(&def),
                format!(
                    "duplicate {what} code {key:?} (first defined at {}:{first_line})",
                    first.file.display()
                ),
            ));
            continue;
        }
        into.insert(key, (def, origin.clone()));
    }
}
