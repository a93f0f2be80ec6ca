//! `yichuang-adapter`: serves one or several departments' legacy systems on the bus (`run`, the
//! default), tries a department's description against its system for one task (`try`), and lets
//! a clerk work the worklist of a department reached by manual re-entry (`manual list`,
//! `manual complete`), and reports cases upward to the one-network platform (`report run`,
//! `report reconcile`, `report refused`, `report resend`), and sends the applicants' SMS notices
//! (`notify run`).
//!
//! Exit codes: 0 done; 2 bad input (arguments, settings, a record that is incomplete);
//! 3 cannot listen, or the worklist cannot be opened or written; 4 unknown task;
//! 5 the task's outcome is already recorded differently; 6 the task is at another supplement
//! round than the one named (or one must be named); 7 `try`: the system failed the task;
//! 8 `report reconcile`: the platform does not hold every record of the day as reported.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};
use yichuang_adapters::config::{AdapterConfig, DepartmentConfig};
use yichuang_adapters::kinds::manual::{self, CompleteError, Completed, Outcome, Record};
use yichuang_adapters::runtime::{self, Callbacks, Readiness};

/// How long the tasks in hand have to finish once the adapter is told to stop (SIGTERM or
/// Ctrl-C): a legacy call in flight, its result published and acknowledged. Below Kubernetes'
/// default 30 s before SIGKILL; a task still in hand after it is delivered again, and held.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Parser)]
#[command(
    name = "yichuang-adapter",
    version,
    about = "Connects department systems to the yichuang bus",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: `run`.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serves departments on the bus (the default).
    Run(RunArgs),
    /// Performs one task's operations against a department's real system (kind `http`): find,
    /// submit unless found, one query; shows each request and answer (personal data masked),
    /// the rules' verdicts and the outcome read. Publishes nothing.
    Try {
        /// The adapter's settings (departments directory, acceptance list).
        #[arg(
            long,
            default_value = "config/adapter.toml",
            env = "YICHUANG_ADAPTER_CONFIG"
        )]
        config: PathBuf,
        /// The department, described in the departments directory.
        #[arg(long, required_unless_present = "file")]
        department: Option<String>,
        /// A department file anywhere (a description being written), instead of `--department`.
        #[arg(long, conflicts_with = "department")]
        file: Option<PathBuf>,
        /// A task message, as the gateway publishes it (JSON; config/examples/task.json).
        #[arg(long)]
        task: PathBuf,
    },
    /// The clerk's side of departments reached by manual re-entry (kind `manual`).
    Manual {
        #[command(subcommand)]
        action: ManualAction,
    },
    /// Reports cases' stages upward to the one-network platform (办件汇聚, 好差评), and the
    /// operators' side of it (docs/reporting.md).
    Report {
        /// The reporter's settings.
        #[arg(
            long,
            default_value = "config/reporter.toml",
            env = "YICHUANG_REPORTER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: ReportAction,
    },
    /// Sends the applicants' SMS notices on their cases' events (docs/notifications.md).
    Notify {
        /// The notifier's settings.
        #[arg(
            long,
            default_value = "config/notifier.toml",
            env = "YICHUANG_NOTIFIER_CONFIG",
            global = true
        )]
        config: PathBuf,
        #[command(subcommand)]
        action: NotifyAction,
    },
}

#[derive(Subcommand)]
enum NotifyAction {
    /// Runs the notifier: consumes the notify queue, sends the notices due within the hours.
    Run,
    /// Makes refused notices due again (the SMS platform's account, signature or template
    /// mended); the running notifier sends them within its hours, with their message ids.
    Resend {
        /// Only this case's refused notices.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        case: Option<String>,
        /// Every refused notice.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ReportAction {
    /// Runs the reporter: consumes the report queue, reports records in order, reconciles daily.
    Run,
    /// Reconciles one day now (hall time): what the platform holds against what the gateway's
    /// cases say; reports again what is missing and prints the completeness. Exit 8 unless the
    /// platform holds every record of the day as reported.
    Reconcile {
        /// The day, `YYYY-MM-DD` (default: yesterday).
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
    /// Lists the records the platform refused, with its words.
    Refused,
    /// Sends refused records again, once their cause is corrected.
    Resend {
        /// Only this 申办流水号 (default: every refused record).
        #[arg(long)]
        sblsh: Option<String>,
    },
}

#[derive(Args)]
struct RunArgs {
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

#[derive(Args)]
struct Where {
    /// The adapter's settings (bus, HTTP endpoint, departments directory).
    #[arg(
        long,
        default_value = "config/adapter.toml",
        env = "YICHUANG_ADAPTER_CONFIG"
    )]
    config: PathBuf,
    /// The department.
    #[arg(long)]
    department: String,
}

#[derive(Subcommand)]
enum ManualAction {
    /// Lists the tasks waiting to be keyed in, one JSON object a line, personal data masked.
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Records the department's case number and outcome of a task keyed in.
    Complete {
        #[command(flatten)]
        at: Where,
        /// The task id, as `manual list` shows it.
        #[arg(long)]
        task: String,
        /// The case number the department system gave.
        #[arg(long)]
        case_number: String,
        /// approved, rejected or supplement.
        #[arg(long, value_parser = ["approved", "rejected", "supplement"])]
        outcome: String,
        /// Approved: the number of the document issued.
        #[arg(long)]
        document_number: Option<String>,
        /// Approved: the name of the document issued.
        #[arg(long)]
        document_name: Option<String>,
        /// Rejected: a reason, as the department gave it; repeat for several.
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// Supplement: a material the department asks for; repeat for several.
        #[arg(long = "material")]
        materials: Vec<String>,
        /// Who records it (staff number), kept with the record.
        #[arg(long)]
        clerk: Option<String>,
        /// The supplement round completed, as `manual list` shows it; required once the task
        /// came back after a supplement (补正).
        #[arg(long)]
        round: Option<i32>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Manual { action }) => manual(action),
        Some(Command::Report { config, action }) => report(&config, action),
        Some(Command::Notify { config, action }) => notify(&config, action),
        Some(Command::Try {
            config,
            department,
            file,
            task,
        }) => try_task(&config, department, file, &task),
    }
}

/// The worklist of a department, from the settings; the error is printed and its exit code
/// returned.
fn worklist(at: &Where) -> Result<manual::Worklist, ExitCode> {
    let config = AdapterConfig::load(&at.config).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    let kinds = yichuang_adapters::kinds::names();
    let department = DepartmentConfig::load(&config.departments_dir, &at.department, &kinds)
        .map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        })?;
    manual::worklist_of(&department).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(if department.kind == manual::KIND.name {
            3
        } else {
            2
        })
    })
}

fn manual(action: ManualAction) -> ExitCode {
    match action {
        ManualAction::List { at } => {
            let w = match worklist(&at) {
                Ok(w) => w,
                Err(code) => return code,
            };
            match w.pending() {
                Ok(pending) => {
                    for p in pending {
                        println!("{}", serde_json::to_string(&p).expect("JSON"));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(3)
                }
            }
        }
        ManualAction::Complete {
            at,
            task,
            case_number,
            outcome,
            document_number,
            document_name,
            reasons,
            materials,
            clerk,
            round,
        } => {
            let record = Record {
                department_case_number: case_number,
                outcome: Outcome::parse(&outcome).expect("clap checks the values"),
                document_number,
                document_name,
                reasons,
                materials,
                clerk,
            };
            if let Err(e) = record.validate() {
                eprintln!("not recorded: {e}");
                return ExitCode::from(2);
            }
            let w = match worklist(&at) {
                Ok(w) => w,
                Err(code) => return code,
            };
            match w.complete(&task, round, &record) {
                Ok(Completed::Recorded) => {
                    println!("recorded: task {task} {}", record.outcome.as_str());
                    ExitCode::SUCCESS
                }
                Ok(Completed::AlreadyRecorded) => {
                    println!("already recorded: task {task} {}", record.outcome.as_str());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("not recorded: {e}");
                    ExitCode::from(match e {
                        CompleteError::UnknownTask(_) => 4,
                        CompleteError::AlreadyCompleted { .. } => 5,
                        CompleteError::WrongRound { .. } => 6,
                        CompleteError::Worklist(_) => 3,
                    })
                }
            }
        }
    }
}

/// `notify …`: the notifier and its operators' command.
fn notify(path: &std::path::Path, action: NotifyAction) -> ExitCode {
    use yichuang_adapters::notify::{self, NotifierConfig};
    let config = match NotifierConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let NotifyAction::Resend { case, .. } = action {
        let resent = notify::ledger::Ledger::open(&config.ledger)
            .and_then(|ledger| ledger.resend(case.as_deref()));
        return match resent {
            Ok(n) => {
                println!("{n} refused notice(s) due again");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.ledger.display());
                ExitCode::from(3)
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let _telemetry = {
        let _inside = runtime.enter();
        match yichuang::telemetry::init(&config.log, &config.tracing, "yichuang-notifier") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    let notifier = {
        let _inside = runtime.enter();
        match notify::Notifier::open(&config) {
            Ok(n) => std::sync::Arc::new(n),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    };
    runtime.block_on(async move {
        info!(listen = %config.http.listen, hours = %config.hours, events = ?notifier.templates.keys().collect::<Vec<_>>(), "notifier starting");
        let app = notify::router(notifier.clone());
        follow(
            "notifier",
            &config.http.listen,
            app,
            notify::run(notifier, config.bus.clone()),
        )
        .await
    })
}

/// Serves a follower's internal HTTP on `listen` and runs its `work` until the process is told
/// to stop (then waits out the grace for it).
async fn follow(
    who: &str,
    listen: &str,
    app: axum::Router,
    work: impl std::future::Future<Output = ()>,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            error!(listen = %listen, error = %e, "cannot listen");
            return ExitCode::from(3);
        }
    };
    let shutdown = yichuang::supervise::Shutdown::default();
    let stopped = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.stopped().await })
            .await
    });
    let mut running = std::pin::pin!(shutdown.scope(work));
    tokio::select! {
        _ = &mut running => ExitCode::SUCCESS,
        _ = yichuang::supervise::terminated() => {
            info!("{who} stopping");
            shutdown.stop();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await;
            ExitCode::SUCCESS
        }
    }
}

/// `report …`: the reporter and its operators' commands.
fn report(path: &std::path::Path, action: ReportAction) -> ExitCode {
    use yichuang_adapters::report::{self, ReporterConfig};
    let config = match ReporterConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let telemetry = match &action {
        ReportAction::Run => {
            let _inside = runtime.enter();
            match yichuang::telemetry::init(&config.log, &config.tracing, "yichuang-reporter") {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let reporter = {
        let _inside = runtime.enter();
        match report::Reporter::open(&config) {
            Ok(r) => std::sync::Arc::new(r),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    let code = runtime.block_on(async move {
        match action {
            ReportAction::Run => {
                info!(listen = %config.http.listen, specification = %reporter.spec.name, transport = reporter.transport.kind(), "reporter starting");
                let app = report::router(reporter.clone());
                follow(
                    "reporter",
                    &config.http.listen,
                    app,
                    report::run(reporter, config.bus.clone()),
                )
                .await
            }
            ReportAction::Reconcile { date } => {
                let day = date.unwrap_or_else(|| {
                    (chrono::Utc::now().with_timezone(&reporter.offset) - chrono::Duration::days(1))
                        .date_naive()
                });
                match report::reconcile::run(&reporter, day).await {
                    Ok(r) => {
                        println!(
                            "{}: {} case(s) and {} submission(s) not accepted, {} record(s) of the day, {} held by the platform ({:.1}%), {} within one working day ({:.1}%)",
                            r.date,
                            r.cases,
                            r.not_accepted,
                            r.records,
                            r.confirmed,
                            r.completeness() * 100.0,
                            r.on_time,
                            r.on_time_share() * 100.0
                        );
                        println!(
                            "missing from the ledger: {}, missing at the platform (reported again): {}, held differently: {}, refused: {}",
                            r.missing_ledger, r.missing_platform, r.mismatched, r.refused
                        );
                        for line in &r.detail {
                            println!("  {line}");
                        }
                        if r.missing_ledger + r.missing_platform + r.mismatched + r.refused > 0
                            || r.confirmed < r.records
                        {
                            ExitCode::from(8)
                        } else {
                            ExitCode::SUCCESS
                        }
                    }
                    Err(e) => {
                        eprintln!("not reconciled: {e}");
                        ExitCode::from(3)
                    }
                }
            }
            ReportAction::Refused => match reporter.ledger.refused() {
                Ok(list) => {
                    for r in list {
                        println!(
                            "{}",
                            serde_json::json!({"sblsh": r.sblsh, "table": r.table, "seq": r.seq, "case": r.case_number, "attempts": r.attempts, "message": r.message})
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(3)
                }
            },
            ReportAction::Resend { sblsh } => match reporter.ledger.resend(sblsh.as_deref()) {
                Ok(n) => {
                    println!("{n} refused record(s) will be sent again");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(3)
                }
            },
        }
    });
    if let Some(t) = telemetry {
        t.flush();
    }
    code
}

/// `try`: the dry run of a department's description (`yichuang_adapters::dry_run`).
fn try_task(
    config: &std::path::Path,
    department: Option<String>,
    file: Option<PathBuf>,
    task: &std::path::Path,
) -> ExitCode {
    let config = match AdapterConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // A file anywhere is read as the departments directory would hold it: named for its code.
    let (dir, code) = match (&file, department) {
        (Some(f), _) => (
            f.parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
            f.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ),
        (None, Some(d)) => (config.departments_dir.clone(), d),
        (None, None) => unreachable!("clap requires --department or --file"),
    };
    let mut department =
        match DepartmentConfig::load(&dir, &code, &yichuang_adapters::kinds::names()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    department.material_names = config.material_names().unwrap_or_default();
    let message: yichuang::proto::v1::TaskMessage = match std::fs::read_to_string(task)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{}: not a task message: {e}", task.display());
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out: std::sync::Arc<dyn Fn(&str) + Send + Sync> =
        std::sync::Arc::new(|s: &str| print!("{s}"));
    match runtime.block_on(yichuang_adapters::dry_run::run(&department, &message, out)) {
        Ok(yichuang_adapters::dry_run::Ended::Read(_)) => ExitCode::SUCCESS,
        Ok(yichuang_adapters::dry_run::Ended::Failed(f)) => {
            let masks = yichuang_adapters::dry_run::personal_values(&message);
            println!(
                "── failed: {}",
                yichuang_adapters::dry_run::mask(&f.to_string(), &masks)
            );
            ExitCode::from(7)
        }
        Err(e) => {
            eprintln!("{code}: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: RunArgs) -> ExitCode {
    let config = match AdapterConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let telemetry = {
        let _inside = runtime.enter(); // the span exporter's gRPC client lives on the runtime
        match yichuang::telemetry::init(&config.log, &config.tracing, "yichuang-adapter") {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
    };
    let names = match config.material_names() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let departments = match yichuang_adapters::load_departments(
        &config.departments_dir,
        &cli.departments,
        &names,
    ) {
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
    let code = runtime.block_on(async move {
        let readiness = std::sync::Arc::new(Readiness::default());
        let callbacks = Callbacks::new();
        let listener = match tokio::net::TcpListener::bind(&config.http.listen).await {
            Ok(l) => l,
            Err(e) => {
                error!(listen = %config.http.listen, error = %e, "cannot listen");
                return ExitCode::from(3);
            }
        };
        // Callbacks on a listener of their own, only when configured.
        let callbacks_listener = if config.http.callbacks_listen.is_empty() {
            None
        } else {
            match tokio::net::TcpListener::bind(&config.http.callbacks_listen).await {
                Ok(l) => Some(l),
                Err(e) => {
                    error!(listen = %config.http.callbacks_listen, error = %e, "cannot listen for callbacks");
                    return ExitCode::from(3);
                }
            }
        };
        info!(listen = %config.http.listen, callbacks_listen = %config.http.callbacks_listen, departments = ?cli.departments, "adapter starting");
        let app = yichuang_adapters::http::router(departments.clone(), readiness.clone());
        let shutdown = yichuang::supervise::Shutdown::default();
        let stopped = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.stopped().await })
                .await
        });
        if let Some(l) = callbacks_listener {
            let app = yichuang_adapters::http::callbacks_router(departments.clone(), callbacks.clone())
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            let stopped = shutdown.clone();
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { stopped.stopped().await })
                    .await
            });
        }
        let mut running = std::pin::pin!(shutdown.scope(runtime::run(
            config.bus.clone(),
            departments,
            readiness,
            callbacks
        )));
        tokio::select! {
            _ = &mut running => ExitCode::SUCCESS,
            _ = yichuang::supervise::terminated() => {
                info!(grace_secs = SHUTDOWN_GRACE.as_secs(), "adapter stopping: no new tasks; the ones in hand are finished, the rest return to their queues");
                shutdown.stop();
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await.is_err() {
                    warn!("tasks still in hand at the end of the grace period; the broker delivers them again");
                }
                ExitCode::SUCCESS
            }
        }
    });
    telemetry.flush();
    drop(telemetry);
    code
}
