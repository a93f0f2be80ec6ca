//! The `yichuang` command: the gateway server, operator checks and API client commands.
//!
//! Exit codes: 0 success; 1 failure (cannot connect, server error, invalid configuration);
//! 2 usage error; 3 the answer is no (the submission is not acceptable and the deficiency
//! notice is printed; the day is not a working day); 4 the input is invalid (the file cannot
//! be read, is not a valid submission, or the server refused it with INVALID_ARGUMENT);
//! 5 the submission id already created a case from other content (ALREADY_EXISTS).
//! `logs scan` exits with 3 when it finds personal data, and with 1 when it scanned no line.
//!
//! One file per command group: `serve`, `catalog`, `calendar`, `case`, `hotline`, `admin` (status,
//! on-time, dlq), `bus`, `logs`; `client` reaches a gateway with the caller's credentials. This file holds the command line and the exit codes.

mod admin;
mod bus;
mod calendar;
mod case;
mod catalog;
mod client;
mod hotline;
mod logs;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use admin::DlqCommand;
use bus::BusCommand;
use calendar::CalendarCommand;
use case::CaseCommand;
use catalog::CatalogCommand;
use client::{AdminServer, CaseServer};
use hotline::HotlineCommand;
use logs::LogsCommand;

#[derive(Parser)]
#[command(
    name = "yichuang",
    version,
    about = "One-window acceptance gateway (一窗受理、集成服务)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
    },
    /// Checks the acceptance list (受理清单).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Answers working-day calendar questions.
    Calendar {
        /// Calendar directory.
        #[arg(long, default_value = "config/calendar", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        command: CalendarCommand,
    },
    /// Prints a gateway's state: store, broker connection, outbox backlog (JSON).
    Status {
        #[command(flatten)]
        server: AdminServer,
    },
    /// The access log (JSON), newest first: who read which case's personal data, and every
    /// refused call. Asking is itself recorded.
    AccessLog {
        #[command(flatten)]
        server: AdminServer,
        /// Only records about this case number.
        #[arg(long = "case", default_value = "")]
        case_number: String,
        /// Only records of this caller (certificate common name or token subject).
        #[arg(long, default_value = "")]
        caller: String,
        /// At most this many records (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// On-time rates (按时办结率) per department and item, from a running gateway.
    OnTime {
        #[command(flatten)]
        server: AdminServer,
        /// Only this department.
        #[arg(long, default_value = "")]
        department: String,
        /// Only this item.
        #[arg(long, default_value = "")]
        item: String,
    },
    /// Closes a case's open rectification (整改, opened by a 差评) with the assignee's
    /// response; the operator is recorded as its closer and in the audit of operators' actions.
    Rectify {
        #[command(flatten)]
        server: AdminServer,
        /// National case number.
        case_number: String,
        /// What was done about the 差评.
        #[arg(long)]
        response: String,
    },
    /// The 12345 hotline's work orders with their answers (JSON), newest first. Asking is
    /// recorded in the access log.
    HotlineOrders {
        #[command(flatten)]
        server: AdminServer,
        /// At most this many (1–1000).
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Closes a 12345 complaint with the department's reply, sent back to the hotline; the case
    /// as JSON (docs/hotline.md).
    ReplyComplaint {
        #[command(flatten)]
        server: AdminServer,
        /// National case number.
        case_number: String,
        /// The complaint's work order number.
        #[arg(long = "order")]
        order_no: String,
        /// The reply to the citizen.
        #[arg(long)]
        reply: String,
    },
    /// Reporting upward (办件汇聚, 好差评): `reconcile --date`, `refused`, `resend`, `run`, done by the
    /// reporter (`yichuang-adapter report …`, installed beside this command; docs/reporting.md).
    #[command(disable_help_flag = true)]
    Report {
        /// What the reporter is asked, as `yichuang-adapter report` takes it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Operates the RabbitMQ bus.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Dead letters: list, show, replay (moved back once, transactionally) or purge
    /// (docs/bus.md). Every replay and purge is logged with who did it.
    Dlq {
        /// The gateway's AdminService, which records replays and purges in the audit of
        /// operators' actions, with the operator's identity.
        #[command(flatten)]
        server: AdminServer,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Checks log files for personal data left unmasked.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Calls the gateway's CaseService and prints the answer as JSON.
    Case {
        #[command(flatten)]
        server: CaseServer,
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// Calls the gateway's HotlineService as the 12345 hotline and prints the answer as JSON.
    Hotline {
        #[command(flatten)]
        server: CaseServer,
        #[command(subcommand)]
        command: HotlineCommand,
    },
}

/// An error with the exit code it deserves.
struct Failure(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(1, e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Serve { config } => serve::run(&config).await,
        Command::Catalog {
            command: CatalogCommand::Check { dir },
        } => catalog::check(&dir),
        Command::Calendar { dir, command } => calendar::run(&dir, command),
        Command::Case { server, command } => case::run(&server, command).await,
        Command::Hotline { server, command } => hotline::run(&server, command).await,
        Command::Logs {
            command: LogsCommand::Scan { names, paths },
        } => logs::scan(names.as_deref(), &paths),
        Command::OnTime {
            server,
            department,
            item,
        } => admin::on_time(&server, department, item).await,
        Command::Status { server } => admin::status(&server).await,
        Command::AccessLog {
            server,
            case_number,
            caller,
            limit,
        } => admin::access_log(&server, case_number, caller, limit).await,
        Command::Rectify {
            server,
            case_number,
            response,
        } => admin::rectify(&server, case_number, response).await,
        Command::HotlineOrders { server, limit } => admin::hotline_orders(&server, limit).await,
        Command::ReplyComplaint {
            server,
            case_number,
            order_no,
            reply,
        } => admin::reply_complaint(&server, case_number, order_no, reply).await,
        Command::Bus { command } => bus::run(command).await,
        Command::Report { args } => report(&args),
        Command::Dlq { server, command } => admin::dlq(&server, command).await,
    }
}

/// `yichuang report …`: the reporter owns its ledger, so its commands run in its binary,
/// `yichuang-adapter`, found beside this one; its exit code is this command's.
fn report(args: &[String]) -> Result<u8, Failure> {
    let here = std::env::current_exe()?;
    let reporter = here.with_file_name(format!("yichuang-adapter{}", std::env::consts::EXE_SUFFIX));
    let status = std::process::Command::new(&reporter)
        .arg("report")
        .args(args)
        .status()
        .map_err(|e| {
            Failure(
                2,
                anyhow::anyhow!(
                    "{}: {e} (`yichuang report` runs the reporter's commands: install yichuang-adapter beside yichuang)",
                    reporter.display()
                ),
            )
        })?;
    Ok(status.code().map_or(1, |c| c.clamp(0, 255) as u8))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn grpc_failure(status: tonic::Status) -> Failure {
    let code = match status.code() {
        tonic::Code::InvalidArgument => 4,
        tonic::Code::AlreadyExists => 5,
        _ => 1,
    };
    Failure(
        code,
        anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
    )
}
