//! `yichuang case`: the gateway's `CaseService` called from a terminal, answers printed as JSON
//! (exit codes in the binary's doc).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use yichuang::proto::v1::case_service_client::CaseServiceClient;
use yichuang::proto::v1::{
    CaseStatus, GetCaseRequest, ListCasesRequest, PreCheckRequest, Submission, SubmitRequest,
    submit_response,
};

use crate::{Failure, grpc_failure, print_json};

#[derive(Subcommand)]
pub enum CaseCommand {
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
    /// 好差评: records the applicant's evaluation of a delivered (or rejected) case, once. A
    /// 差评 (level 2 or less) opens a rectification (整改).
    Evaluate {
        /// National case number.
        case_number: String,
        /// Overall satisfaction (整体满意度): 5 非常满意 … 1 非常不满意.
        #[arg(long)]
        level: i32,
        /// Every other indicator of the channel, `name=level` (e.g. `服务效率=5`), repeated.
        #[arg(long = "score", value_parser = parse_score)]
        scores: Vec<(String, i32)>,
        /// `window`, `terminal` or `online`.
        #[arg(long, default_value = "window")]
        channel: String,
        /// The applicant's comment (at most 500 characters).
        #[arg(long, default_value = "")]
        comment: String,
        /// The department a 差评 concerns (default: the accepting window).
        #[arg(long, default_value = "")]
        department: String,
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

pub async fn run(server: &crate::CaseServer, command: CaseCommand) -> Result<u8, Failure> {
    // The input is checked before the server is reached.
    let submission = match &command {
        CaseCommand::Precheck { file } | CaseCommand::Submit { file } => {
            Some(read_submission(file)?)
        }
        _ => None,
    };
    let mut client = CaseServiceClient::new(server.credentials.connect(&server.server).await?);
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
            let how = deliver_how(
                collector_name,
                collector_id,
                staff_no,
                carrier,
                tracking_number,
            )?;
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
        CaseCommand::Evaluate {
            case_number,
            level,
            scores,
            channel,
            comment,
            department,
        } => {
            let evaluation = yichuang::proto::v1::Evaluation {
                channel,
                level,
                scores: scores
                    .into_iter()
                    .map(|(indicator, level)| yichuang::proto::v1::IndicatorScore {
                        indicator,
                        level,
                    })
                    .collect(),
                comment,
                ..Default::default()
            };
            let response = client
                .evaluate(yichuang::proto::v1::EvaluateRequest {
                    case_number,
                    evaluation: Some(evaluation),
                    department_code: department,
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
            let request = supplement_request(case_number, id, materials, tasks, staff_no, file)?;
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

/// `--score 服务效率=5`: an indicator and its level.
fn parse_score(text: &str) -> Result<(String, i32), String> {
    let (name, level) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: give indicator=level, e.g. 服务效率=5"))?;
    let level = level
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: the level after `=` is a number 1–5"))?;
    Ok((name.trim().to_string(), level))
}

/// How `case deliver` hands the case over: pickup by a named collector, or mail.
fn deliver_how(
    collector_name: Option<String>,
    collector_id: Option<String>,
    staff_no: String,
    carrier: Option<String>,
    tracking_number: Option<String>,
) -> Result<yichuang::proto::v1::deliver_request::How, Failure> {
    use yichuang::proto::v1::deliver_request::How;
    Ok(
        match (collector_name, collector_id, carrier, tracking_number) {
            (Some(name), Some(id), _, _) => How::Pickup(yichuang::proto::v1::Pickup {
                collector_name: name,
                collector_id_type: yichuang::proto::v1::IdType::ResidentId as i32,
                collector_id_number: id,
                staff_no,
            }),
            (_, _, Some(carrier), Some(tracking_number)) => How::Mail(yichuang::proto::v1::Mail {
                carrier,
                tracking_number,
            }),
            _ => {
                return Err(Failure(
                    2,
                    anyhow::anyhow!(
                        "give --collector-name and --collector-id (pickup) or --carrier and --tracking-number (mail)"
                    ),
                ));
            }
        },
    )
}

/// The `SupplementRequest` of `case supplement`: read from `file`, or made of the case number
/// and the material codes (each a paper original checked at the window).
fn supplement_request(
    case_number: Option<String>,
    id: Option<String>,
    materials: Vec<String>,
    tasks: Vec<String>,
    staff_no: String,
    file: Option<PathBuf>,
) -> Result<yichuang::proto::v1::SupplementRequest, Failure> {
    Ok(match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str::<yichuang::proto::v1::SupplementRequest>(&text).map_err(|e| {
                Failure(
                    2,
                    anyhow::anyhow!(
                        "{}: not a SupplementRequest in canonical JSON: {e}",
                        path.display()
                    ),
                )
            })?
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
    })
}
