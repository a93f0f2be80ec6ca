//! `yichuang-adapter`: serves one or several departments' legacy systems on the bus.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};
use yichuang_adapters::config::AdapterConfig;
use yichuang_adapters::runtime::{self, Callbacks, Readiness};

#[derive(Parser)]
#[command(
    name = "yichuang-adapter",
    version,
    about = "Connects department systems to the yichuang bus"
)]
struct Cli {
    /// The adapter's settings (bus, HTTP endpoint, departments directory).
    #[arg(
        long,
        default_value = "config/adapter.toml",
        env = "YICHUANG_ADAPTER_CONFIG"
    )]
    config: PathBuf,
    /// Department code to serve; repeat for several.
    #[arg(long = "department", required = true)]
    departments: Vec<String>,
    /// Check the settings and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match AdapterConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    yichuang::telemetry::init(&config.log);
    let departments =
        match yichuang_adapters::load_departments(&config.departments_dir, &cli.departments) {
            Ok(d) => d,
            Err(problems) => {
                for p in problems {
                    eprintln!("{p}");
                }
                return ExitCode::from(2);
            }
        };
    if cli.check {
        println!("ok: {} department(s)", departments.len());
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let readiness = std::sync::Arc::new(Readiness::default());
        let callbacks = Callbacks::new();
        let listener = match tokio::net::TcpListener::bind(&config.http.listen).await {
            Ok(l) => l,
            Err(e) => {
                error!(listen = %config.http.listen, error = %e, "cannot listen");
                return ExitCode::from(3);
            }
        };
        info!(listen = %config.http.listen, departments = ?cli.departments, "adapter starting");
        let app = yichuang_adapters::http::router(departments.clone(), readiness.clone(), callbacks.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::select! {
            _ = runtime::run(config.bus.clone(), departments, readiness, callbacks) => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => {
                info!("adapter stopping; unacknowledged tasks return to their queues");
                ExitCode::SUCCESS
            }
        }
    })
}
