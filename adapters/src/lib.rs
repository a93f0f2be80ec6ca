//! Department adapters: each connects one department's legacy approval system to the bus
//! without touching it. `runtime` owns everything every kind shares (queues, acks, retries,
//! rate limits, polling, results); `kinds` holds one module per kind of legacy system;
//! `mapping` turns the canonical task into legacy fields and legacy answers back, as each
//! department's file says; `config` reads those files; `http` serves health, readiness, metrics and
//! callbacks; `meters` keeps the process's metrics; `breaker` is each department's circuit breaker.

pub mod breaker;
pub mod cases;
pub mod config;
pub mod crypto;
pub mod describe;
pub mod dry_run;
pub mod expr;
pub mod http;
pub mod kinds;
pub mod mapping;
pub mod meters;
pub mod notify;
pub mod report;
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
            Err(e) => {
                let path = dir.join(format!("{code}.yaml"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                problems.push(match line_of_problem(&text, &e) {
                    Some(line) => format!("{}:{line}: {e}", path.display()),
                    None => format!("{}: {e}", path.display()),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The line of a department file a kind's problem is about, when its message names the setting
/// (`options.<key>`, `credentials.<name>`): the key's own line under its section.
pub fn line_of_problem(text: &str, message: &str) -> Option<usize> {
    for section in ["options", "credentials"] {
        let marker = format!("{section}.");
        let Some(at) = message.find(&marker) else {
            continue;
        };
        let key: String = message[at + marker.len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.trim_end() == format!("{section}:"))?;
        let found = lines[start + 1..]
            .iter()
            .take_while(|l| {
                l.starts_with(' ') || l.trim().is_empty() || l.trim_start().starts_with('#')
            })
            .position(|l| l.trim_start().starts_with(&format!("{key}:")));
        return Some(match found {
            Some(i) => start + 2 + i,
            // A key that is missing: the section's line.
            None => start + 1,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kinds_problem_with_a_setting_is_placed_at_its_line() {
        let text = "department: rs\nkind: exchange-db\noptions:\n  # the tables\n  result_table: \"bj; drop\"\ncredentials:\n  password: { env: X }\n";
        assert_eq!(
            super::line_of_problem(
                text,
                "options.result_table \"bj; drop\" is not a plain identifier"
            ),
            Some(5)
        );
        assert_eq!(
            super::line_of_problem(text, "kind manual needs options.worklist"),
            Some(3)
        );
        assert_eq!(
            super::line_of_problem(text, "credentials.password: not set"),
            Some(7)
        );
        assert_eq!(super::line_of_problem(text, "endpoint is not a URL"), None);
    }
}
