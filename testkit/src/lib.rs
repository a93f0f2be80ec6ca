//! What yichuang's test suites (`tests/`, `adapters/tests/`) and benchmarks (`benches/`) share.
//! A dev-only crate, never published and never a dependency of a deployed binary: `yichuang`
//! and `yichuang-adapters` take it as a dev-dependency, and it depends on them.
//!
//! # Layout
//!
//! - [`logfile`]: the suites' log files, one per process, scanned for personal data by `make
//!   test`; every entry point of the kit a test uses installs this process's on its first call.
//!
//! This crate owns test scaffolding only: it never holds a rule of the gateway or an adapter,
//! and what a test asserts stays in the test.

pub mod logfile;

use std::path::{Path, PathBuf};

pub use logfile::{child_log, keep, keep_stderr, logs};

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
