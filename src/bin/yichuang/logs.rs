//! `yichuang logs scan`: log files checked for personal data left unmasked (docs/logging.md).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::Failure;

#[derive(Subcommand)]
pub enum LogsCommand {
    /// Scans files, and directories recursively, for resident ID numbers and credit codes of
    /// individuals with a valid check character, mobile numbers and listed names that are not
    /// masked. Prints `path:line:column kind excerpt` for each (the excerpt masked), then how
    /// many lines and files it scanned; exits with 3 when it found any, 1 when it scanned no
    /// line at all.
    Scan {
        /// Personal names to look for, one per line (`#` comments); names cannot be recognised
        /// otherwise.
        #[arg(long)]
        names: Option<PathBuf>,
        /// Log files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// `logs scan`: every file under `paths`, line by line; findings on stdout, the count on stderr.
pub fn scan(names: Option<&Path>, paths: &[PathBuf]) -> Result<u8, Failure> {
    use std::io::BufRead;
    let names = match names {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            yichuang::privacy::parse_names(&text)
                .map_err(|e| Failure(2, anyhow::anyhow!("{}:{e}", path.display())))?
        }
    };
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    let (mut lines, mut found) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for file in &files {
        let reader = std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?,
        );
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            lines += 1;
            for f in yichuang::privacy::scan(&String::from_utf8_lossy(&line), &names) {
                found += 1;
                use std::io::Write;
                writeln!(
                    out,
                    "{}:{}:{} {} {}",
                    file.display(),
                    i + 1,
                    f.column,
                    f.kind,
                    f.excerpt
                )?;
            }
        }
    }
    eprintln!(
        "scanned {lines} lines in {} files ({} names listed): {found} unmasked",
        files.len(),
        names.len()
    );
    if lines == 0 {
        return Err(Failure(
            1,
            anyhow::anyhow!("no line to scan: a scan of nothing proves nothing"),
        ));
    }
    Ok(if found > 0 { 3 } else { 0 })
}

/// The files at `path`: itself, or every file under it, in name order.
fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries = std::fs::read_dir(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, files)?;
    }
    Ok(())
}
