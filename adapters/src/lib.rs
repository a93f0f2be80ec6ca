//! Department adapters: each connects one department's legacy approval system to the bus
//! without touching it. `runtime` owns everything every kind shares (queues, acks, retries,
//! rate limits, polling, results); `kinds` holds one module per kind of legacy system;
//! `mapping` turns the canonical task into legacy fields and legacy answers back, as each
//! department's file says; `config` reads those files; `http` serves health, readiness, metrics and
//! callbacks; `meters` keeps the process's metrics; `breaker` is each department's circuit breaker.

pub mod breaker;
pub mod config;
pub mod crypto;
pub mod describe;
pub mod dry_run;
pub mod expr;
pub mod http;
pub mod kinds;
pub mod mapping;
pub mod meters;
pub mod runtime;
pub mod system;

use std::sync::Arc;

/// Loads and builds the departments a process serves, each told the material names of the
/// acceptance list (`material_names`, possibly empty); every problem is reported, not only the
/// first.
pub fn load_departments(
    dir: &std::path::Path,
    codes: &[String],
    material_names: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<Arc<runtime::Department>>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for code in codes {
        let mut c = match config::DepartmentConfig::load(dir, code, &kinds::names()) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        c.material_names = material_names.clone();
        match kinds::department(c) {
            Ok(d) => out.push(Arc::new(d)),
            Err(e) => problems.push(format!(
                "{}: {e}",
                dir.join(format!("{code}.yaml")).display()
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
