//! Log files of the test suites: every test process, and every process a test starts, writes
//! its log to a file of its own in one directory, so that `yichuang logs scan` can check what a
//! whole run logged for personal data afterwards (`make test` does; see `docs/logging.md`).
//! Deployed processes log to stderr through `yichuang::telemetry`; this module decides neither
//! what is logged nor how a deployed process logs.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// What the suites log: the project's crates down to `debug`, everything else from `info`.
pub const SUITE_FILTER: &str = "yichuang=debug,yichuang_adapters=debug,yichuang_sim=debug,info";

/// The directory of the suites' logs: `YICHUANG_TEST_LOGS` when set (`make test` sets it to an
/// absolute path), otherwise `test-logs` in the target directory the running program was built
/// into (the nearest ancestor of the executable holding cargo's `CACHEDIR.TAG`, wherever
/// `CARGO_TARGET_DIR` put it), otherwise `target/test-logs` in the workspace.
pub fn suite_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("YICHUANG_TEST_LOGS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let built_into = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    let target = built_into.unwrap_or_else(|| crate::root().join("target"));
    target.join("test-logs")
}

/// The running program's name, without the hash cargo gives test executables
/// (`intake-0123456789abcdef` → `intake`).
pub fn program_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .and_then(|s| s.to_str())
        .unwrap_or("process");
    without_hash(stem).to_string()
}

fn without_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    }
}

/// Installs, once per process, the global subscriber of a test process: JSON lines filtered by
/// [`SUITE_FILTER`] into `<suite_dir>/<program>-<pid>.jsonl`, one per event and one per span
/// as it closes (with the span's fields), written as each happens (a test that panics or a
/// process that is killed loses nothing). Returns the file. Returns `None`
/// and changes nothing when a subscriber was installed first (a test of the log output itself)
/// or the file cannot be made (said on stderr); later calls return what the first one did.
pub fn init_suite() -> Option<&'static Path> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = suite_dir();
        let path = dir.join(format!("{}-{}.jsonl", program_name(), std::process::id()));
        let file = std::fs::create_dir_all(&dir).and_then(|()| append(&path));
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                eprintln!("test logs: cannot write {}: {e}", path.display());
                return None;
            }
        };
        let installed = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(SUITE_FILTER))
            .with_writer(Arc::new(file))
            .with_ansi(false)
            // A line when each span closes, with its fields: span attributes are scanned too,
            // also those of spans no event was logged in.
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .json()
            .flatten_event(true)
            .try_init();
        match installed {
            Ok(()) => Some(path),
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    })
    .as_deref()
}

/// A file for what a child process of a test writes (`Stdio::from(file)`), or for a copy of it:
/// `<suite_dir>/<program>-<pid>-<what>.log`, appended to.
pub fn child_log(what: &str) -> File {
    let dir = suite_dir();
    std::fs::create_dir_all(&dir)
        .and_then(|()| {
            append(&dir.join(format!(
                "{}-{}-{what}.log",
                program_name(),
                std::process::id()
            )))
        })
        .expect("a file in the suite's log directory")
}

/// Sends this test process's logs to the suite's log directory, once ([`init_suite`]). The kit's
/// entry points for tests call it; those a benchmark uses do not, so that a measured process
/// does not log at `debug` to a file.
pub fn logs() {
    init_suite();
}

/// Keeps `bytes` a child process wrote in the suite's log directory.
pub fn keep(what: &str, bytes: &[u8]) {
    use std::io::Write;
    child_log(what)
        .write_all(bytes)
        .expect("writes to the suite's log directory");
}

/// Keeps what a finished child process wrote on stderr in the suite's log directory.
pub fn keep_stderr(what: &str, output: &std::process::Output) {
    keep(what, &output.stderr);
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_names_lose_cargo_s_hash_only() {
        assert_eq!(without_hash("end_to_end-0123456789abcdef"), "end_to_end");
        assert_eq!(without_hash("yichuang-adapter"), "yichuang-adapter");
        // The unit tests of this crate run as `testkit-<hash>`.
        assert_eq!(program_name(), "testkit");
    }
}
