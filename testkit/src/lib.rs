//! What yichuang's test suites (`tests/`, `adapters/tests/`) and benchmarks (`benches/`) share.
//! A dev-only crate, never published and never a dependency of a deployed binary: `yichuang`
//! and `yichuang-adapters` take it as a dev-dependency, and it depends on them (Cargo allows
//! that cycle for a dev-dependency; the tests link the same library the kit does).
//!
//! # Layout
//!
//! - [`logfile`]: the suites' log files, one per process, scanned for personal data by `make
//!   test`. The kit's entry points for tests ([`repo`], [`broker::bus`], [`gateway`]'s, the
//!   adapter's) install this process's on their first call; those benchmarks use do not.
//! - [`wait`]: the "eventually" wait, with a deadline.
//! - [`server`]: real servers on port 0.
//! - [`gateway`]: the real gateway in the test's process, on SQLite or a PostgreSQL schema of
//!   its own, with a client; [`on_both_stores!`].
//! - [`pki`]: the tests' development CA, the gateway's certificate and callers' client
//!   certificates; every gateway of the kit serves over TLS and checks them.
//! - [`db`]: PostgreSQL schemas of each test's own, dropped even when the test fails.
//! - [`broker`]: RabbitMQ under a prefix of each test's own, as the gateway sees it, removed
//!   even when the test fails.
//! - [`tasks`]: tasks as the relay publishes them, and what every task's results must show.
//! - [`browser`]: a headless Chromium of the test's own, driven over the DevTools protocol, for
//!   tests of the pages the gateway serves.
//! - `adapter` (feature `adapters`): an adapter runtime in the test's process and the shipped
//!   department files with test timings.
//! - `conformance` (feature `adapters`): scenarios every kind of department system passes.
//!
//! This crate owns test scaffolding and the checks several suites share; it never holds a rule
//! of the gateway or an adapter, and a check one suite makes stays in that suite.

#[cfg(feature = "adapters")]
pub mod adapter;
pub mod broker;
pub mod browser;
#[cfg(feature = "adapters")]
pub mod conformance;
pub mod console;
pub mod db;
pub mod gateway;
pub mod logfile;
pub mod pki;
pub mod server;
pub mod tasks;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::Output;

pub use logfile::{child_log, keep, keep_stderr, logs};
pub use wait::{eventually, until};

/// The workspace's root: the shipped `config/`, `examples/` and `scripts/` are found from here.
/// Installs nothing, for benchmarks; tests use [`repo`].
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is in the workspace")
}

/// The workspace's root, for a test: also sends this process's logs to the suite's log
/// directory ([`logs`]).
pub fn repo() -> PathBuf {
    logs();
    root().to_path_buf()
}

/// The n-th distinct copy of `base` for a load run named `run`: a new id, and a new day every
/// 5,000 so the 4-digit daily sequence never runs out (the benchmarks).
pub fn nth(
    base: &yichuang::proto::v1::Submission,
    run: &str,
    n: u64,
) -> yichuang::proto::v1::Submission {
    let mut s = base.clone();
    s.submission_id = format!("{run}-{n}");
    if let Some(ts) = &mut s.submitted_at {
        ts.seconds += (n / 5000) as i64 * 86_400;
    }
    s
}

/// A number from the environment variable `name`, or `default` (the benchmarks' settings).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One of the example submissions in `examples/cases/`, parsed from its canonical JSON.
pub fn example(name: &str) -> yichuang::proto::v1::Submission {
    let path = root().join("examples/cases").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An electronic material of kind `code` as a supplement (补正) brings it: one copy, a file
/// reference in the hall's store.
pub fn electronic(code: &str) -> yichuang::proto::v1::Material {
    use yichuang::proto::v1::{FileRef, Material, MaterialForm};
    Material {
        material_code: code.into(),
        form: MaterialForm::Electronic as i32,
        copies: 1,
        file: Some(FileRef {
            uri: format!(
                "s3://yichuang-materials/supplements/{}.pdf",
                code.to_lowercase()
            ),
            sha256: "5".repeat(64),
            size_bytes: 120_000,
            media_type: "application/pdf".into(),
        }),
    }
}

/// Runs `program` (a binary of the workspace: `env!("CARGO_BIN_EXE_<name>")` in the test) from
/// the workspace's root; what it wrote on stderr is kept in the suite's log directory, under
/// the program's name.
///
/// The `yichuang` command reaches the kit's gateways as a deployed one does, over TLS with a
/// client certificate of the kit's CA: the examples' hall for `case`, an operator otherwise.
pub fn run(program: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(program);
    command.args(args).current_dir(repo());
    if program.ends_with("/yichuang") {
        let who = match args.first() {
            Some(&"case") => pki::Who::examples_hall(),
            _ => pki::Who::Operator,
        };
        let (cert, key) = pki::client_files(&who);
        command
            .env("YICHUANG_CA", pki::ca_file())
            .env("YICHUANG_CERT", cert)
            .env("YICHUANG_KEY", key);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("runs {program}: {e}"));
    let name = Path::new(program)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("child");
    keep_stderr(name, &out);
    out
}

/// Runs `cleanup` to its end on a thread and runtime of its own, for a guard's `Drop`: that may
/// run inside a test's runtime (which must not block) or after it, and while a test unwinds.
/// What fails is ignored: the guard does its best for a test that already failed.
pub(crate) fn clean_up_on_a_thread<F, Fut>(cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(cleanup());
    })
    .join();
}

/// A child's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the `yichuang` binary with these arguments, as [`run`] does: for `yichuang`'s own tests,
/// where Cargo sets `CARGO_BIN_EXE_yichuang`.
#[macro_export]
macro_rules! yichuang {
    ($args:expr) => {
        $crate::run(env!("CARGO_BIN_EXE_yichuang"), $args)
    };
}
