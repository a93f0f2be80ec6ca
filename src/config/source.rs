//! The text of a TOML file around its parsing, shared by every loader of the gateway and the
//! adapters (the gateway file, the catalog, the calendar, the departments' files): `${VAR}` /
//! `${VAR:-default}` interpolated from the environment, and problems located by file and line
//! ([`ConfigProblem`]). It knows no section of any file, and it never reads a file or the process
//! environment itself: the caller hands it the text and the lookup.

use std::path::Path;

/// A problem found in a configuration file, located by file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// The line (from 1) where `key = …` is set, skipping comments that mention it; 1 when it is not.
pub fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// 1-based line number of a byte offset in `text`.
pub fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML parse error into a located problem, dropping toml's own multi-line rendering.
pub fn toml_problem(file: &Path, text: &str, err: &toml::de::Error) -> ConfigProblem {
    ConfigProblem {
        file: file.display().to_string(),
        line: err.span().map_or(1, |s| line_at(text, s.start)),
        message: err.message().trim().to_string(),
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` with the environment's value (or the default).
/// Comments are left alone. An unset variable without a default is an error naming the
/// variable and its line.
pub fn interpolate(
    file: &Path,
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigProblem> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let problem = |message: String| ConfigProblem {
            file: file.display().to_string(),
            line: index + 1,
            message,
        };
        let (code, comment) = line.split_at(comment_start(line));
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(problem("unterminated `${`: close it with `}`".into()));
            };
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match env(name)
                .filter(|v| !v.is_empty())
                .or(default.map(str::to_string))
            {
                // Escaped so a value can hold quotes or backslashes without breaking its string.
                Some(value) => out.push_str(&escape_toml(&value)),
                None => {
                    return Err(problem(format!(
                        "environment variable {name} is not set: set it or write ${{{name}:-default}}"
                    )));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Escapes a value for a TOML basic string.
fn escape_toml(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// Byte offset where a TOML line's comment starts (the line's length when there is none).
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => return i,
            _ => {}
        }
        escaped = false;
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_uses_environment_then_default() {
        let env = |n: &str| (n == "SET").then(|| "value".to_string());
        let out = interpolate(
            Path::new("x.toml"),
            "a = \"${SET}\"\nb = \"${UNSET:-fallback}\"",
            env,
        )
        .unwrap();
        assert_eq!(out, "a = \"value\"\nb = \"fallback\"");
    }

    #[test]
    fn comments_are_not_interpolated() {
        let out = interpolate(
            Path::new("x.toml"),
            "a = \"#${UNSET:-x}\" # ${NOPE}\n",
            |_| None,
        )
        .unwrap();
        assert_eq!(out, "a = \"#x\" # ${NOPE}\n");
    }

    #[test]
    fn unset_variable_without_default_names_variable_and_line() {
        let err = interpolate(Path::new("g.toml"), "a = 1\nb = \"${NOPE}\"", |_| None).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("NOPE"), "{}", err.message);
    }
}
