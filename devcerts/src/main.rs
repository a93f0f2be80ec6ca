//! `yichuang-dev-certs DIR`: a development CA and the certificates the demo runs with, written
//! into DIR (private keys mode 0600). Nothing it writes is for production (docs/security.md).
//!
//! Writes `ca.pem` and, each with its `-key.pem`: `server` (localhost, 127.0.0.1 and every
//! `--name`), and one client certificate per `--client NAME=URI`. Existing files are kept unless
//! `--force` is given, so that running it again is harmless.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yichuang-dev-certs: {e}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str =
    "usage: yichuang-dev-certs DIR [--force] [--name DNS-OR-IP]... [--client NAME=URI]...";

fn run(args: Vec<String>) -> Result<(), String> {
    let mut dir: Option<PathBuf> = None;
    let (mut force, mut names, mut clients) = (false, vec![], vec![]);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--force" => force = true,
            "--name" => names.push(args.next().ok_or(USAGE)?),
            "--client" => {
                let spec = args.next().ok_or(USAGE)?;
                let (name, uri) = spec
                    .split_once('=')
                    .ok_or_else(|| format!("--client {spec}: expected NAME=URI"))?;
                clients.push((name.to_string(), uri.to_string()));
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(arg.into()),
            _ => return Err(format!("unexpected argument {arg}; {USAGE}")),
        }
    }
    let dir = dir.ok_or(USAGE)?;
    if dir.join("ca.pem").exists() && !force {
        println!(
            "{}: certificates exist (--force issues new ones)",
            dir.display()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let ca = yichuang_devcerts::Authority::new("yichuang development CA").map_err(|e| fail(&e))?;
    let mut server_names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    server_names.extend(names);
    let names: Vec<&str> = server_names.iter().map(String::as_str).collect();
    let write = |pair: yichuang_devcerts::Pair, name: &str| {
        pair.write(&dir, name)
            .map_err(|e| format!("{}: {e}", dir.display()))
    };
    write(ca.server(&names).map_err(|e| fail(&e))?, "server")?;
    for (name, uri) in &clients {
        write(ca.client(name, uri).map_err(|e| fail(&e))?, name)?;
    }
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).map_err(|e| fail(&e))?;
    println!(
        "{}: development CA, server certificate and {} client certificate(s)",
        dir.display(),
        clients.len()
    );
    Ok(())
}
