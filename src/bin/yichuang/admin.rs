//! The operators' commands against a gateway's `AdminService`: `status`, `on-time`, `rectify`, `reply-complaint` and `dlq`
//! (dead letters listed, shown, replayed or purged, each replay and purge audited).

use clap::Subcommand;
use yichuang::proto::v1::admin_service_client::AdminServiceClient;

use crate::client::{AdminServer, Authed};
use crate::{Failure, grpc_failure, print_json};

/// `yichuang dlq`: dead letters, by department (or `results`).
#[derive(Subcommand)]
pub enum DlqCommand {
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
    /// Discards messages of a dead queue, with the operator's reason (`--note`, required).
    Purge {
        department: String,
        message_ids: Vec<String>,
        /// Every message whose reason contains this text.
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        all: bool,
        /// Why they are discarded, kept in the audit of operators' actions.
        #[arg(long, default_value = "")]
        note: String,
    },
}

async fn connect(server: &AdminServer) -> Result<AdminServiceClient<Authed>, Failure> {
    Ok(AdminServiceClient::new(
        server.credentials.connect(&server.server).await?,
    ))
}

/// `status`: the gateway's state as JSON.
pub async fn status(server: &AdminServer) -> Result<u8, Failure> {
    let status = connect(server)
        .await?
        .status(yichuang::proto::v1::StatusRequest {})
        .await
        .map_err(grpc_failure)?
        .into_inner();
    print_json(&status)?;
    Ok(0)
}

/// `on-time`: on-time rates per department and item as JSON.
pub async fn on_time(
    server: &AdminServer,
    department: String,
    item: String,
) -> Result<u8, Failure> {
    let rates = connect(server)
        .await?
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

/// `access-log`: who read which case's personal data, and the refused calls, as JSON.
pub async fn access_log(
    server: &AdminServer,
    case_number: String,
    caller: String,
    limit: i32,
) -> Result<u8, Failure> {
    let log = connect(server)
        .await?
        .access_log(yichuang::proto::v1::AccessLogRequest {
            case_number,
            caller,
            limit,
        })
        .await
        .map_err(grpc_failure)?
        .into_inner();
    print_json(&log)?;
    Ok(0)
}

/// `rectify`: closes a case's open rectification with the response; the case as JSON.
pub async fn rectify(
    server: &AdminServer,
    case_number: String,
    response: String,
) -> Result<u8, Failure> {
    let answer = connect(server)
        .await?
        .close_rectification(yichuang::proto::v1::CloseRectificationRequest {
            case_number,
            response,
        })
        .await
        .map_err(grpc_failure)?
        .into_inner();
    print_json(&answer)?;
    Ok(0)
}

/// `hotline-orders`: the 12345 work orders with their answers, newest first, as JSON.
pub async fn hotline_orders(server: &AdminServer, limit: i32) -> Result<u8, Failure> {
    let answer = connect(server)
        .await?
        .hotline_orders(yichuang::proto::v1::HotlineOrdersRequest { limit })
        .await
        .map_err(grpc_failure)?
        .into_inner();
    print_json(&answer)?;
    Ok(0)
}

/// `reply-complaint`: closes a 12345 complaint with the reply, which goes back to the hotline;
/// the answer as JSON.
pub async fn reply_complaint(
    server: &AdminServer,
    case_number: String,
    order_no: String,
    reply: String,
) -> Result<u8, Failure> {
    let answer = connect(server)
        .await?
        .reply_complaint(yichuang::proto::v1::ReplyComplaintRequest {
            case_number,
            order_no,
            reply,
        })
        .await
        .map_err(grpc_failure)?
        .into_inner();
    print_json(&answer)?;
    Ok(0)
}

/// `yichuang dlq …`: the gateway's AdminService, as the operator at this terminal.
pub async fn dlq(server: &AdminServer, command: DlqCommand) -> Result<u8, Failure> {
    use yichuang::proto::v1::{DeadLetter, DeadLetterActionRequest, ListDeadLettersRequest};
    let mut client = connect(server).await?;
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
    // The gateway records the authenticated caller (its certificate or token) as the
    // operator, and the account at this terminal beside it.
    let operator = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let action =
        |department: String, message_ids: Vec<String>, reason: String, all, rate, note: String| {
            DeadLetterActionRequest {
                department,
                message_ids,
                reason_contains: reason,
                all,
                rate,
                operator: operator.clone(),
                note,
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
        } => show(&mut client, department, message_id).await,
        DlqCommand::Replay {
            department,
            message_ids,
            reason,
            all,
            rate,
        } => {
            let moved = client
                .replay_dead_letters(action(
                    department,
                    message_ids,
                    reason,
                    all,
                    rate,
                    String::new(),
                ))
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
            note,
        } => {
            let moved = client
                .purge_dead_letters(action(department, message_ids, reason, all, 0, note))
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

/// `dlq show`: one message of a dead queue, in full (personal data masked by the gateway).
async fn show(
    client: &mut AdminServiceClient<Authed>,
    department: String,
    message_id: String,
) -> Result<u8, Failure> {
    use yichuang::proto::v1::ShowDeadLetterRequest;
    let shown = client
        .show_dead_letter(ShowDeadLetterRequest {
            department: department.clone(),
            message_id,
        })
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::NotFound {
                Failure(3, anyhow::anyhow!("{}", s.message()))
            } else {
                grpc_failure(s)
            }
        })?
        .into_inner();
    let d = shown.dead_letter.unwrap_or_default();
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
    for death in &shown.deaths {
        println!("died:       {death}");
    }
    for h in &shown.headers {
        println!("header:     {} = {}", h.name, h.value);
    }
    println!("body:\n{}", shown.body);
    Ok(0)
}
