//! The `yichuang` command: the gateway server, operator checks and API client commands.
//!
//! Exit codes: 0 success; 1 failure (cannot connect, server error, invalid configuration);
//! 2 usage error; 3 the answer is no (the submission is not acceptable and the deficiency
//! notice is printed; the day is not a working day); 4 the input is invalid (the file cannot
//! be read, is not a valid submission, or the server refused it with INVALID_ARGUMENT);
//! 5 the submission id already created a case from other content (ALREADY_EXISTS).
//! `logs scan` exits with 3 when it finds personal data, and with 1 when it scanned no line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use yichuang::app::{Gateway, serve};
use yichuang::catalog::Catalog;
use yichuang::config::GatewayConfig;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, ListCasesRequest, PreCheckRequest, Submission, SubmitRequest,
    submit_response,
};
use yichuang::sla::Calendar;

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
        /// Gateway address.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            env = "YICHUANG_SERVER"
        )]
        server: String,
    },
    /// On-time rates (按时办结率) per department and item, from a running gateway.
    OnTime {
        /// Gateway address.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            env = "YICHUANG_SERVER"
        )]
        server: String,
        /// Only this department.
        #[arg(long, default_value = "")]
        department: String,
        /// Only this item.
        #[arg(long, default_value = "")]
        item: String,
    },
    /// Operates the RabbitMQ bus.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Dead letters: list, show, replay (moved back once, transactionally) or purge
    /// (docs/bus.md). Every replay and purge is logged with who did it.
    Dlq {
        /// Gateway address (its AdminService, which records replays and purges in the audit
        /// of operators' actions).
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            env = "YICHUANG_SERVER",
            global = true
        )]
        server: String,
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
        /// Gateway address.
        #[arg(
            long,
            default_value = "http://127.0.0.1:50051",
            env = "YICHUANG_SERVER",
            global = true
        )]
        server: String,
        #[command(subcommand)]
        command: CaseCommand,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Validates a catalog directory and reports every problem with file and line.
    Check {
        /// Catalog directory.
        #[arg(default_value = "config/catalog")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum LogsCommand {
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

#[derive(Subcommand)]
enum BusCommand {
    /// Declares the exchanges and queues for every department of the catalog (idempotent).
    Declare {
        /// Configuration file (its `[bus]` section and catalog).
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
    },
    /// Prints status events as they are published (a queue of its own, gone when it stops):
    /// one line each — time, case, event, task, detail.
    Watch {
        /// Configuration file (its `[bus]` section).
        #[arg(long, default_value = "config/gateway.toml", env = "YICHUANG_CONFIG")]
        config: PathBuf,
        /// Topic binding: `#` for everything, `case.*` for case events, `task.approved`…
        #[arg(long, default_value = "#")]
        binding: String,
    },
}

/// `yichuang dlq`: dead letters, by department (or `results`).
#[derive(Subcommand)]
enum DlqCommand {
    /// The messages of a dead queue, oldest first: id, case, task, reason, attempts, trace.
    List {
        department: String,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i32,
        /// Only those whose reason contains this text.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// One message of a dead queue, in full (personal data masked).
    Show {
        department: String,
        message_id: String,
    },
    /// Moves messages back (to the department's task queue with fresh attempts, or to the
    /// results queue), each once, transactionally.
    Replay {
        department: String,
        /// The messages to move (`message_id`s); or give --reason or --all.
        message_ids: Vec<String>,
        /// Every message whose reason contains this text.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        all: bool,
        /// At most this many a second (0: no limit).
        #[arg(long, default_value_t = 10)]
        rate: u32,
    },
    /// Discards messages of a dead queue.
    Purge {
        department: String,
        message_ids: Vec<String>,
        /// Every message whose reason contains this text.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum CalendarCommand {
    /// When a time limit counted from START runs out (the day START falls on is not counted).
    /// Day limits print their last day (the limit runs out at 24:00 of it); hour limits print
    /// the instant.
    Add {
        /// A date (2019-09-30) or an instant (2019-09-27T10:00, in the hall's offset, or
        /// 2019-09-27T02:00:00Z).
        #[arg(value_parser = calendar_cli::parse_when)]
        start: calendar_cli::When,
        /// Working days (3 or 3wd), calendar days (10d) or hours (24h; they elapse on working
        /// days only).
        #[arg(value_parser = calendar_cli::parse_limit)]
        limit: yichuang::sla::Limit,
        /// A pause (挂起) FROM/TO, dates or instants; it moves the deadline by the working days
        /// after FROM's day up to and including TO's day (hour limits: by the time paused).
        /// Repeatable.
        #[arg(long = "pause", value_parser = calendar_cli::parse_pause)]
        pauses: Vec<(calendar_cli::When, calendar_cli::When)>,
        /// The hall's UTC offset: its days are the ones counted.
        #[arg(long, default_value = "+08:00", value_parser = calendar_cli::parse_offset)]
        utc_offset: chrono::FixedOffset,
    },
    /// Whether DATE is a working day.
    IsWorkday { date: chrono::NaiveDate },
    /// Checks one year file (e.g. a new config/calendar/2027.toml) as the gateway would load it,
    /// against the other years of the calendar directory, without starting anything. Prints
    /// every problem with its file and line; exit code 1 when there is one.
    Check { file: PathBuf },
    /// Turns a holiday-cn year file (JSON: {"year", "papers", "days": [{"name", "date",
    /// "isOffDay"}]}) into the project's TOML, with the notice cited; prints it (or writes
    /// --out). Check it against the notice, then drop it into the calendar directory: the
    /// gateway loads it without a restart.
    Import {
        file: PathBuf,
        /// The notice's title with its document number (default: the usual title,
        /// 国务院办公厅关于YYYY年部分节假日安排的通知).
        #[arg(long)]
        notice: Option<String>,
        /// Write the TOML here instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The working days after FROM up to and including TO (the inverse of `add`).
    Between {
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    },
}

/// The `calendar` command's arguments: dates, instants, limits and pauses.
mod calendar_cli {
    use chrono::{DateTime, FixedOffset};
    use yichuang::sla::{Limit, LimitError};

    /// A date or an instant on the command line.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum When {
        Date(chrono::NaiveDate),
        Local(chrono::NaiveDateTime),
        Instant(DateTime<FixedOffset>),
    }

    impl When {
        /// The instant, a date's 00:00 and local times taken in the hall's offset.
        pub(crate) fn at(self, zone: FixedOffset) -> DateTime<FixedOffset> {
            let local = match self {
                When::Instant(t) => return t.with_timezone(&zone),
                When::Date(d) => d.and_time(chrono::NaiveTime::MIN),
                When::Local(t) => t,
            };
            DateTime::from_naive_utc_and_offset(
                local - chrono::TimeDelta::seconds(i64::from(zone.local_minus_utc())),
                zone,
            )
        }
    }

    pub(crate) fn parse_when(text: &str) -> Result<When, String> {
        if let Ok(d) = text.parse() {
            return Ok(When::Date(d));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(When::Instant(t));
        }
        ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .map(When::Local)
            .ok_or_else(|| {
                format!(
                    "{text:?} is not a date or an instant (2019-09-30, 2019-09-27T10:00, 2019-09-27T10:00:00+08:00)"
                )
            })
    }

    pub(crate) fn parse_limit(text: &str) -> Result<Limit, String> {
        match text.parse::<u32>() {
            Ok(days) => Ok(Limit::working_days(days)),
            Err(_) => text.parse().map_err(|e: LimitError| e.to_string()),
        }
    }

    pub(crate) fn parse_pause(text: &str) -> Result<(When, When), String> {
        let (from, to) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a pause (FROM/TO)"))?;
        Ok((parse_when(from)?, parse_when(to)?))
    }

    pub(crate) fn parse_offset(text: &str) -> Result<FixedOffset, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not a UTC offset (+08:00)"))
    }
}

#[derive(Subcommand)]
enum CaseCommand {
    /// 出件: hands a ready case over (--collector-name/--collector-id) or mails it
    /// (--carrier/--tracking-number); the case closes.
    Deliver {
        /// National case number.
        case_number: String,
        #[arg(long, requires = "collector_id", conflicts_with_all = ["carrier", "tracking_number"])]
        collector_name: Option<String>,
        /// The collector's resident ID number, as on the document checked.
        #[arg(long, requires = "collector_name")]
        collector_id: Option<String>,
        /// The clerk handing over.
        #[arg(long, default_value = "")]
        staff_no: String,
        #[arg(long, requires = "tracking_number")]
        carrier: Option<String>,
        #[arg(long, requires = "carrier")]
        tracking_number: Option<String>,
    },
    /// 补正: hands in materials a department asked for or owed under 容缺. Either a whole
    /// `SupplementRequest` in canonical JSON (--file), or the case and material codes, each
    /// handed in as a paper original checked at the window.
    Supplement {
        /// National case number (with --material).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        case_number: Option<String>,
        /// The supplement's idempotency key; a new one is made when not given.
        #[arg(long, conflicts_with = "file")]
        id: Option<String>,
        /// Material code handed in (`PMT`, `ZSZM`…); repeat for several.
        #[arg(long = "material", conflicts_with = "file")]
        materials: Vec<String>,
        /// The task the materials are for, when its department asked in its own words.
        #[arg(long = "task", conflicts_with = "file")]
        tasks: Vec<String>,
        /// The clerk taking the materials.
        #[arg(long, default_value = "", conflicts_with = "file")]
        staff_no: String,
        /// A `SupplementRequest` in canonical JSON.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// 资料预审: checks a submission; stores nothing.
    Precheck {
        /// Submission in canonical JSON.
        #[arg(long)]
        file: PathBuf,
    },
    /// Submits a submission: prints the receipt or the deficiency notice.
    Submit {
        /// Submission in canonical JSON.
        #[arg(long)]
        file: PathBuf,
    },
    /// Prints one case with its history.
    Get {
        /// National case number.
        case_number: String,
    },
    /// Lists cases, newest first.
    List {
        #[arg(long)]
        hall: Option<String>,
        #[arg(long)]
        window: Option<String>,
        /// Status name, e.g. CASE_STATUS_ACCEPTED.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: i32,
        #[arg(long)]
        page_token: Option<String>,
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
        Command::Serve { config } => serve_command(&config).await,
        Command::Catalog {
            command: CatalogCommand::Check { dir },
        } => match Catalog::load(&dir) {
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
        },
        Command::Calendar {
            dir,
            command: CalendarCommand::Check { file },
        } => calendar_check(&dir, &file),
        Command::Calendar {
            command: CalendarCommand::Import { file, notice, out },
            ..
        } => {
            let json = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let toml = yichuang::holidays::from_holiday_cn(&json, &file, notice.as_deref())
                .map_err(|e| Failure(1, anyhow::anyhow!("{e}")))?;
            match out {
                Some(out) => {
                    std::fs::write(&out, toml)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
                    eprintln!(
                        "wrote {}: check it against the notice, then put it in the calendar directory",
                        out.display()
                    );
                }
                None => print!("{toml}"),
            }
            Ok(0)
        }
        Command::Calendar { dir, command } => {
            let calendar = Calendar::load(&dir).map_err(|problems| {
                anyhow::anyhow!(
                    "{}",
                    problems
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?;
            match command {
                CalendarCommand::Add {
                    start,
                    limit,
                    pauses,
                    utc_offset,
                } => {
                    let hall = calendar.in_zone(utc_offset);
                    use yichuang::sla::{Pause, Unit};
                    if limit.unit == Unit::Hours && matches!(start, calendar_cli::When::Date(_)) {
                        return Err(Failure(
                            2,
                            anyhow::anyhow!(
                                "an hour limit needs a start time, like {}T09:00",
                                hall.date_of(start.at(utc_offset))
                            ),
                        ));
                    }
                    let pauses: Vec<Pause> = pauses
                        .iter()
                        .map(|(from, to)| Pause {
                            from: from.at(utc_offset),
                            to: to.at(utc_offset),
                        })
                        .collect();
                    let due = hall.deadline_with_pauses(start.at(utc_offset), limit, &pauses)?;
                    match limit.unit {
                        Unit::Hours => println!("{}", due.to_rfc3339()),
                        Unit::WorkingDays | Unit::CalendarDays => {
                            println!("{}", hall.last_day(due))
                        }
                    }
                }
                CalendarCommand::Between { from, to } => {
                    println!("{}", calendar.working_days_between(from, to)?)
                }
                CalendarCommand::IsWorkday { date } => {
                    let workday = calendar.is_workday(date)?;
                    println!(
                        "{date} {}",
                        if workday {
                            "is a working day"
                        } else {
                            "is not a working day"
                        }
                    );
                    return Ok(if workday { 0 } else { 3 });
                }
                CalendarCommand::Check { .. } | CalendarCommand::Import { .. } => {
                    unreachable!("answered above")
                }
            }
            Ok(0)
        }
        Command::Case { server, command } => case_command(&server, command).await,
        Command::Logs {
            command: LogsCommand::Scan { names, paths },
        } => logs_scan(names.as_deref(), &paths),
        Command::OnTime {
            server,
            department,
            item,
        } => {
            let mut client =
                yichuang::proto::v1::admin_service_client::AdminServiceClient::connect(
                    server.clone(),
                )
                .await
                .with_context(|| format!("cannot connect to {server}"))?;
            let rates = client
                .on_time_rates(yichuang::proto::v1::OnTimeRatesRequest {
                    department,
                    item_code: item,
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&rates)?;
            Ok(0)
        }
        Command::Status { server } => {
            let mut client =
                yichuang::proto::v1::admin_service_client::AdminServiceClient::connect(
                    server.clone(),
                )
                .await
                .with_context(|| format!("cannot connect to {server}"))?;
            let status = client
                .status(yichuang::proto::v1::StatusRequest {})
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&status)?;
            Ok(0)
        }
        Command::Bus {
            command: BusCommand::Declare { config },
        } => {
            let config = GatewayConfig::load(&config)?;
            let catalog = Catalog::load(&config.catalog_dir)?;
            let topology = yichuang::bus::Topology::for_catalog(&catalog, &config.bus);
            let connection = yichuang::bus::connect(&config.bus).await?;
            let channel = connection
                .create_channel()
                .await
                .context("cannot open a channel")?;
            topology
                .declare(
                    &channel,
                    std::time::Duration::from_secs(config.bus.timeout_secs),
                )
                .await?;
            println!(
                "{}: {} exchanges, {} queues, {} bindings declared",
                yichuang::bus::redact(&config.bus.url),
                topology.exchanges.len(),
                topology.queues.len(),
                topology.bindings.len()
            );
            if yichuang::bus::policy::apply(&config.bus).await? {
                println!(
                    "{} policies applied: dead-lettering at least once (docs/bus.md)",
                    yichuang::bus::policy::policies(&config.bus).len()
                );
            } else {
                println!(
                    "policies not applied ([bus] management_url = \"off\"): apply those of docs/bus.md"
                );
            }
            let _ = connection.close(200, "done".into()).await;
            Ok(0)
        }
        Command::Bus {
            command: BusCommand::Watch { config, binding },
        } => {
            let config = GatewayConfig::load(&config)?;
            watch_events(&config.bus, &binding).await
        }
        Command::Dlq { server, command } => dlq_command(&server, command).await,
    }
}

/// `yichuang dlq …`: the gateway's AdminService, as the operator at this terminal.
async fn dlq_command(server: &str, command: DlqCommand) -> Result<u8, Failure> {
    use yichuang::proto::v1::{DeadLetter, DeadLetterActionRequest, ListDeadLettersRequest};
    let mut client =
        yichuang::proto::v1::admin_service_client::AdminServiceClient::connect(server.to_string())
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
    let print = |d: &DeadLetter| {
        println!(
            "{}\tcase {}\ttask {}\tattempt {}\ttrace {}\tdead at {}\t{} bytes\t{}",
            d.message_id,
            d.case_number,
            d.task_id,
            if d.attempt > 0 {
                d.attempt.to_string()
            } else {
                "-".into()
            },
            d.trace_id,
            d.dead_at,
            d.bytes,
            d.reason
        )
    };
    // Until callers are authenticated, the operator is the account at this terminal.
    let operator = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let action = |department: String, message_ids: Vec<String>, reason: String, all, rate| {
        DeadLetterActionRequest {
            department,
            message_ids,
            reason_contains: reason,
            all,
            rate,
            operator: operator.clone(),
        }
    };
    match command {
        DlqCommand::List {
            department,
            limit,
            reason,
        } => {
            let listed = client
                .list_dead_letters(ListDeadLettersRequest {
                    department,
                    limit,
                    reason_contains: reason,
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            for d in &listed.dead_letters {
                print(d);
            }
            Ok(0)
        }
        DlqCommand::Show {
            department,
            message_id,
        } => {
            let listed = client
                .list_dead_letters(ListDeadLettersRequest {
                    department: department.clone(),
                    limit: 1000,
                    reason_contains: String::new(),
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            match listed
                .dead_letters
                .iter()
                .find(|d| d.message_id == message_id)
            {
                Some(d) => {
                    println!("queue:      dead queue of {department}");
                    println!("message_id: {}", d.message_id);
                    println!("case:       {}", d.case_number);
                    println!("task:       {}", d.task_id);
                    println!("reason:     {}", d.reason);
                    println!(
                        "attempt:    {}",
                        if d.attempt > 0 {
                            d.attempt.to_string()
                        } else {
                            "-".into()
                        }
                    );
                    println!("trace id:   {}", d.trace_id);
                    println!("dead at:    {}", d.dead_at);
                    println!("size:       {} bytes", d.bytes);
                    Ok(0)
                }
                None => Err(Failure(
                    3,
                    anyhow::anyhow!(
                        "no message {message_id} in the dead queue of {department} (among its first 1000)"
                    ),
                )),
            }
        }
        DlqCommand::Replay {
            department,
            message_ids,
            reason,
            all,
            rate,
        } => {
            let moved = client
                .replay_dead_letters(action(department, message_ids, reason, all, rate))
                .await
                .map_err(grpc_failure)?
                .into_inner()
                .moved;
            for d in &moved {
                print(d);
            }
            eprintln!(
                "replayed {} message(s) as {operator}: recorded in the audit of operators' actions",
                moved.len()
            );
            Ok(0)
        }
        DlqCommand::Purge {
            department,
            message_ids,
            reason,
            all,
        } => {
            let moved = client
                .purge_dead_letters(action(department, message_ids, reason, all, 0))
                .await
                .map_err(grpc_failure)?
                .into_inner()
                .moved;
            eprintln!(
                "purged {} message(s) as {operator}: recorded in the audit of operators' actions",
                moved.len()
            );
            Ok(0)
        }
    }
}

/// Binds an exclusive, auto-deleted queue to the events exchange and prints each event.
async fn watch_events(bus: &yichuang::config::BusConfig, binding: &str) -> Result<u8, Failure> {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use prost::Message;
    use tokio_stream::StreamExt;
    let connection = yichuang::bus::connect(bus).await?;
    let channel = connection
        .create_channel()
        .await
        .context("cannot open a channel")?;
    let names = yichuang::bus::Names::new(&bus.prefix);
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .context("cannot declare a queue to watch from")?;
    channel
        .queue_bind(
            queue.name().clone(),
            names.events_exchange().as_str().into(),
            binding.into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot bind to {} (declare the topology first)",
                names.events_exchange()
            )
        })?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "yichuang-watch".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .context("cannot consume")?;
    eprintln!(
        "watching {} ({binding}) on {}; Ctrl-C to stop",
        names.events_exchange(),
        yichuang::bus::redact(&bus.url)
    );
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("the broker ended the watch")?;
        let Ok(m) = yichuang::proto::v1::EventMessage::decode(delivery.data.as_slice()) else {
            continue;
        };
        let Some(e) = m.event else { continue };
        let at =
            e.at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                .map(|t| {
                    (t + chrono::Duration::hours(8))
                        .format("%H:%M:%S")
                        .to_string()
                })
                .unwrap_or_default();
        println!(
            "{at}  {}  {:<28} {:<46} {}",
            m.case_number,
            e.kind,
            e.task_id,
            yichuang::privacy::mask_free_text(&e.detail)
        );
    }
    Ok(0)
}

/// `logs scan`: every file under `paths`, line by line; findings on stdout, the count on stderr.
fn logs_scan(names: Option<&Path>, paths: &[PathBuf]) -> Result<u8, Failure> {
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

/// `calendar check FILE`: the file as the gateway would load it, beside the directory's other
/// years (a day two notices arrange differently is caught).
fn calendar_check(dir: &Path, file: &Path) -> Result<u8, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure(1, anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    // The directory's file of the same name is the one being replaced (a corrected file checked
    // from elsewhere), so it is left out too.
    let same = |p: &Path| {
        p.file_name() == file.file_name()
            || matches!((p.canonicalize(), file.canonicalize()), (Ok(a), Ok(b)) if a == b)
    };
    let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && !same(p))
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    let mut calendar = Calendar::default();
    let mut problems = Vec::new();
    for path in &others {
        match std::fs::read_to_string(path) {
            Ok(t) => {
                if let Err(mut more) = calendar.add_year(path, &t) {
                    problems.append(&mut more);
                }
            }
            Err(e) => problems.push(yichuang::config::ConfigProblem {
                file: path.display().to_string(),
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if let Err(mut more) = calendar.add_year(file, &text) {
        problems.append(&mut more);
    }
    if problems.is_empty() {
        let years: Vec<String> = calendar.years().map(|y| y.to_string()).collect();
        println!(
            "{}: OK (checked beside {}: {})",
            file.display(),
            dir.display(),
            years.join(", ")
        );
        Ok(0)
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        Err(Failure(
            1,
            anyhow::anyhow!("{} problem(s); the file would be refused", problems.len()),
        ))
    }
}

async fn serve_command(path: &Path) -> Result<u8, Failure> {
    let config = GatewayConfig::load(path)?;
    let telemetry = yichuang::telemetry::init(&config.log, &config.tracing, "yichuang-gateway")
        .map_err(|e| anyhow::anyhow!(e))?;
    let gateway = Gateway::from_config(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "gateway serving");
    serve(
        Arc::new(gateway),
        listener,
        yichuang::supervise::terminated(),
    )
    .await?;
    tracing::info!("gateway stopped");
    telemetry.flush();
    Ok(0)
}

fn read_submission(file: &Path) -> Result<Submission, Failure> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure(4, anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        Failure(
            4,
            anyhow::anyhow!(
                "{}:{}:{}: not a valid submission: {e}",
                file.display(),
                e.line(),
                e.column()
            ),
        )
    })
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

async fn case_command(server: &str, command: CaseCommand) -> Result<u8, Failure> {
    // The input is checked before the server is reached.
    let submission = match &command {
        CaseCommand::Precheck { file } | CaseCommand::Submit { file } => {
            Some(read_submission(file)?)
        }
        _ => None,
    };
    let mut client = CaseServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    match command {
        CaseCommand::Precheck { .. } => {
            let response = client
                .pre_check(PreCheckRequest { submission })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(if response.acceptable { 0 } else { 3 })
        }
        CaseCommand::Submit { .. } => {
            let response = client
                .submit(SubmitRequest { submission })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(match response.outcome {
                Some(submit_response::Outcome::Receipt(_)) => 0,
                _ => 3,
            })
        }
        CaseCommand::Deliver {
            case_number,
            collector_name,
            collector_id,
            staff_no,
            carrier,
            tracking_number,
        } => {
            use yichuang::proto::v1::deliver_request::How;
            let how = match (collector_name, collector_id, carrier, tracking_number) {
                (Some(name), Some(id), _, _) => How::Pickup(yichuang::proto::v1::Pickup {
                    collector_name: name,
                    collector_id_type: yichuang::proto::v1::IdType::ResidentId as i32,
                    collector_id_number: id,
                    staff_no,
                }),
                (_, _, Some(carrier), Some(tracking_number)) => {
                    How::Mail(yichuang::proto::v1::Mail {
                        carrier,
                        tracking_number,
                    })
                }
                _ => {
                    return Err(Failure(
                        2,
                        anyhow::anyhow!(
                            "give --collector-name and --collector-id (pickup) or --carrier and --tracking-number (mail)"
                        ),
                    ));
                }
            };
            let response = client
                .deliver(yichuang::proto::v1::DeliverRequest {
                    case_number,
                    how: Some(how),
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
        CaseCommand::Supplement {
            case_number,
            id,
            materials,
            tasks,
            staff_no,
            file,
        } => {
            let request = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    serde_json::from_str::<yichuang::proto::v1::SupplementRequest>(&text).map_err(
                        |e| {
                            Failure(
                                2,
                                anyhow::anyhow!(
                                    "{}: not a SupplementRequest in canonical JSON: {e}",
                                    path.display()
                                ),
                            )
                        },
                    )?
                }
                None => yichuang::proto::v1::SupplementRequest {
                    case_number: case_number.unwrap_or_default(),
                    supplement_id: id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    materials: materials
                        .into_iter()
                        .map(|code| yichuang::proto::v1::Material {
                            material_code: code,
                            form: yichuang::proto::v1::MaterialForm::Original as i32,
                            copies: 1,
                            file: None,
                        })
                        .collect(),
                    task_ids: tasks,
                    staff_no,
                },
            };
            let response = client
                .supplement(request)
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(if response.deficiencies.is_empty() {
                0
            } else {
                3
            })
        }
        CaseCommand::Get { case_number } => {
            let response = client
                .get_case(GetCaseRequest { case_number })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
        CaseCommand::List {
            hall,
            window,
            status,
            page_size,
            page_token,
        } => {
            let status = match status {
                None => 0,
                Some(name) => CaseStatus::from_str_name(&name).ok_or_else(|| {
                    Failure(
                        2,
                        anyhow::anyhow!("--status {name}: unknown; use e.g. CASE_STATUS_ACCEPTED"),
                    )
                })? as i32,
            };
            let request = ListCasesRequest {
                hall_code: hall.unwrap_or_default(),
                window_code: window.unwrap_or_default(),
                status,
                page_size,
                page_token: page_token.unwrap_or_default(),
                ..Default::default()
            };
            let response = client
                .list_cases(request)
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
    }
}
