//! Test fixtures shared by the intake modules' unit tests: the engine over the repository's
//! catalog and calendar, the example submissions, a fixed clock, and the deficiencies of an
//! evaluation in a form tests compare. Test-only; never compiled into the gateway.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Intake, Outcome};
use crate::catalog::Catalog;
use crate::config::IntakeConfig;
use crate::proto::v1::{DeficiencyCode as Code, Submission};

/// The engine over `config/catalog` and `config/calendar`, with the default limits.
pub(super) fn intake() -> Intake {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let catalog = Arc::new(Catalog::load(&root.join("config/catalog")).unwrap());
    let calendar =
        Arc::new(crate::calendar::Calendar::load(&root.join("config/calendar")).unwrap());
    Intake::new(catalog, calendar, IntakeConfig::default()).unwrap()
}

/// The example submission `examples/cases/<name>.json`.
pub(super) fn example(name: &str) -> Submission {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/cases/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(super) fn now() -> DateTime<Utc> {
    "2019-10-21T12:00:00Z".parse().unwrap()
}

/// The deficiencies of a submission as (code, path, item) triples.
pub(super) fn deficiencies(s: Submission) -> Vec<(Code, String, String)> {
    match intake().evaluate(s, now()).unwrap() {
        Outcome::Acceptable(_) => Vec::new(),
        Outcome::Deficient { deficiencies, .. } => deficiencies
            .into_iter()
            .map(|d| (Code::try_from(d.code).unwrap(), d.path, d.item_code))
            .collect(),
    }
}
