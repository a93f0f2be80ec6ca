//! `yichuang-sim`: runs one simulated department system, for the demo and for trying an adapter
//! by hand. `yichuang-sim http-json --listen 127.0.0.1:18081 --settings sim.json`; likewise
//! `form-xml` (default 127.0.0.1:18082) and `soap` (127.0.0.1:18083).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "yichuang-sim",
    version,
    about = "Simulated legacy department systems"
)]
struct Cli {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// HTTP/JSON API with an expiring access token.
    HttpJson {
        #[arg(long, default_value = "127.0.0.1:18081")]
        listen: String,
        /// JSON settings (`yichuang_sim::http_json::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// HTTP form-POST carrying XML, answering in GBK (or GB18030).
    FormXml {
        #[arg(long, default_value = "127.0.0.1:18082")]
        listen: String,
        /// JSON settings (`yichuang_sim::form_xml::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// SOAP 1.1 WebService.
    Soap {
        #[arg(long, default_value = "127.0.0.1:18083")]
        listen: String,
        /// JSON settings (`yichuang_sim::soap::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
}

fn settings<T: serde::de::DeserializeOwned + Default>(path: &Option<PathBuf>) -> anyhow::Result<T> {
    Ok(match path {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => T::default(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().kind {
        Kind::HttpJson {
            listen,
            settings: s,
        } => {
            let sim = yichuang_sim::http_json::HttpJsonSim::new(settings(&s)?);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!("yichuang-sim http-json on {listen}");
            sim.serve(listener).await;
        }
        Kind::FormXml {
            listen,
            settings: s,
        } => {
            let sim = yichuang_sim::form_xml::FormXmlSim::new(settings(&s)?);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!("yichuang-sim form-xml on {listen}");
            sim.serve(listener).await;
        }
        Kind::Soap {
            listen,
            settings: s,
        } => {
            let sim = yichuang_sim::soap::SoapSim::new(settings(&s)?);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!("yichuang-sim soap on {listen}");
            sim.serve(listener).await;
        }
    }
    Ok(())
}
