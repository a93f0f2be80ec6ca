//! The acceptance list (受理清单): departments, material kinds, items and 一件事 bundles, read
//! from every `*.toml` file of a directory and checked as a whole. Every problem is reported
//! with its file and line, all at once. The gateway refuses to start on an invalid catalog.
//! This module owns the catalog's shape and its consistency rules; it knows nothing of cases.
//!
//! Layout: this file holds the checked [`Catalog`] and what callers ask of it; the shapes a
//! catalog file may hold are in `model.rs`; reading the files and gathering definitions by code
//! (with where each came from) in `load.rs`; the rules across definitions in `check.rs`; a
//! bundle's order ([`BundleOrder`]) and its rules in `bundle.rs`. Only this file turns
//! definitions into a [`Catalog`], and only when no problem was found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::ConfigProblem;

mod bundle;
mod check;
mod load;
mod model;
#[cfg(test)]
mod tests;

pub use bundle::BundleOrder;
pub use model::{
    ApplicantKind, Bundle, BundleStep, CodePattern, Department, Fee, FieldKind, FieldRule, Form,
    Item, ItemMaterial, MaterialKind, Mode, OnRejection,
};

/// The whole acceptance list, checked and indexed.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub departments: BTreeMap<String, Department>,
    pub materials: BTreeMap<String, MaterialKind>,
    pub items: BTreeMap<String, Item>,
    pub bundles: BTreeMap<String, Bundle>,
}

/// Every problem found in a catalog directory.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the catalog:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
pub struct CatalogErrors(pub Vec<ConfigProblem>);

impl Catalog {
    /// Loads every `*.toml` file of `dir` and checks the catalog as a whole.
    pub fn load(dir: &Path) -> Result<Catalog, CatalogErrors> {
        let (sources, mut problems) =
            load::read_dir(dir).map_err(|problem| CatalogErrors(vec![problem]))?;
        match Self::from_sources(&sources) {
            Ok(catalog) if problems.is_empty() => Ok(catalog),
            Ok(_) => Err(CatalogErrors(problems)),
            Err(CatalogErrors(more)) => {
                problems.extend(more);
                Err(CatalogErrors(problems))
            }
        }
    }

    /// Builds a catalog from `(path, text)` pairs; paths are only used in messages.
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<Catalog, CatalogErrors> {
        let (defs, mut problems) = load::parse(sources);
        check::all(&defs, &mut problems);
        if !problems.is_empty() {
            return Err(CatalogErrors(problems));
        }
        Ok(Catalog {
            departments: load::without_origin(defs.departments),
            materials: load::without_origin(defs.materials),
            items: load::without_origin(defs.items),
            bundles: load::without_origin(defs.bundles),
        })
    }

    /// The 31-character implementation code (实施编码) of an item.
    pub fn implementation_code(&self, item: &Item) -> String {
        let body = self.departments[item.department.get_ref()]
            .body_code
            .get_ref();
        format!("{body}{}", item.implementation_suffix.get_ref())
    }

    /// Name of a material kind, or its code when unknown.
    pub fn material_name<'a>(&'a self, code: &'a str) -> &'a str {
        self.materials.get(code).map_or(code, |m| m.name.as_str())
    }

    /// The material kind a department means when it names a material: its code, or its name
    /// as the acceptance list spells it (half- or full-width brackets alike).
    pub fn material_code_of(&self, said: &str) -> Option<&str> {
        let plain = |s: &str| {
            s.trim()
                .replace('(', "（")
                .replace(')', "）")
                .replace(' ', "")
        };
        let said = plain(said);
        self.materials
            .values()
            .find(|m| *m.code.get_ref() == said || plain(&m.name) == said)
            .map(|m| m.code.get_ref().as_str())
    }
}
