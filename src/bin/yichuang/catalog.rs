//! `yichuang catalog`: the acceptance list (受理清单) checked as the gateway loads it.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use yichuang::catalog::Catalog;

use crate::Failure;

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Validates a catalog directory and reports every problem with file and line.
    Check {
        /// Catalog directory.
        #[arg(default_value = "config/catalog")]
        dir: PathBuf,
    },
}

/// `catalog check DIR`: every problem with its file and line.
pub fn check(dir: &Path) -> Result<u8, Failure> {
    match Catalog::load(dir) {
        Ok(c) => {
            println!(
                "{}: {} departments, {} materials, {} items, {} bundles: ok",
                dir.display(),
                c.departments.len(),
                c.materials.len(),
                c.items.len(),
                c.bundles.len()
            );
            Ok(0)
        }
        Err(e) => {
            for p in &e.0 {
                eprintln!("{p}");
            }
            Err(Failure(
                1,
                anyhow::anyhow!("{} problem(s) in {}", e.0.len(), dir.display()),
            ))
        }
    }
}
