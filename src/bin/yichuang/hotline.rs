//! `yichuang hotline`: the gateway's `HotlineService` called as the 12345 hotline's system
//! (a certificate or token of the `hotline` role), answers printed as JSON.

use clap::Subcommand;
use yichuang::proto::v1::hotline_service_client::HotlineServiceClient;
use yichuang::proto::v1::{ComplainRequest, ConsultRequest, ProgressRequest};

use crate::{Failure, grpc_failure, print_json};

#[derive(Subcommand)]
pub enum HotlineCommand {
    /// A progress query work order: where a case is, answered for an applicant verified by the
    /// last four characters of the ID number or mobile on the case (docs/hotline.md).
    Progress {
        /// The hotline's work order number (工单编号).
        #[arg(long = "order")]
        order_no: String,
        /// National case number.
        #[arg(long = "case")]
        case_number: String,
        /// Last four characters of the applicant's ID number or mobile.
        #[arg(long)]
        digits: String,
        /// The work order's code in the hotline's classification table (GB/T 39666, six digits;
        /// `[hotline] classification` on the gateway).
        #[arg(long = "class")]
        classification_code: String,
    },
    /// A complaint work order about a case: opens a supervision (督办) assigned to a department
    /// with a reply deadline in working days (docs/hotline.md).
    Complain {
        /// The hotline's work order number (工单编号).
        #[arg(long = "order")]
        order_no: String,
        /// National case number.
        #[arg(long = "case")]
        case_number: String,
        /// `slow`, `refused`, `rude` or `other`.
        #[arg(long)]
        kind: String,
        /// What the citizen said.
        #[arg(long)]
        content: String,
        /// The department concerned (default: the department of the undecided task due first).
        #[arg(long, default_value = "")]
        department: String,
        /// The work order's code in the hotline's classification table (GB/T 39666, six digits;
        /// `[hotline] classification` on the gateway).
        #[arg(long = "class")]
        classification_code: String,
    },
    /// A consultation work order: what an item asks for, from the acceptance list.
    Consult {
        /// The hotline's work order number (工单编号).
        #[arg(long = "order")]
        order_no: String,
        /// The item's code (or give --query).
        #[arg(long = "item", default_value = "")]
        item_code: String,
        /// Words of the item's name.
        #[arg(long, default_value = "")]
        query: String,
        /// The work order's code in the hotline's classification table (GB/T 39666, six digits;
        /// `[hotline] classification` on the gateway).
        #[arg(long = "class")]
        classification_code: String,
    },
}

pub async fn run(server: &crate::CaseServer, command: HotlineCommand) -> Result<u8, Failure> {
    let mut client = HotlineServiceClient::new(server.credentials.connect(&server.server).await?);
    match command {
        HotlineCommand::Progress {
            order_no,
            case_number,
            digits,
            classification_code,
        } => {
            let response = client
                .progress(ProgressRequest {
                    order_no,
                    case_number,
                    verify_digits: digits,
                    classification_code,
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
        HotlineCommand::Complain {
            order_no,
            case_number,
            kind,
            content,
            department,
            classification_code,
        } => {
            let response = client
                .complain(ComplainRequest {
                    order_no,
                    case_number,
                    kind,
                    content,
                    department,
                    classification_code,
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
        HotlineCommand::Consult {
            order_no,
            item_code,
            query,
            classification_code,
        } => {
            let response = client
                .consult(ConsultRequest {
                    order_no,
                    item_code,
                    query,
                    classification_code,
                })
                .await
                .map_err(grpc_failure)?
                .into_inner();
            print_json(&response)?;
            Ok(0)
        }
    }
}
