//! `yichuang-sim`: runs one simulated department system, for the demo and for trying an adapter
//! by hand. `yichuang-sim http-json --listen 127.0.0.1:18081 --settings sim.json`; likewise
//! `form-xml` (default 127.0.0.1:18082), `soap` (127.0.0.1:18083), `json-header`
//! (127.0.0.1:18086) and `sm4-gateway` (127.0.0.1:18087), and
//! `yichuang-sim exchange-db --url postgres://… --settings rs.json [--stats-listen 127.0.0.1:18085]`,
//! and the provincial platform's case-record exchange,
//! `yichuang-sim platform [--listen 127.0.0.1:18088] [--catalog config/catalog] [--exchange-url postgres://…]`,
//! and the provincial SMS platform, `yichuang-sim sms [--listen 127.0.0.1:18089] [--settings sms.json]`,
//! and the 12345 hotline's reply interface, `yichuang-sim hotline [--listen 127.0.0.1:18090] [--secret S]`.

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
    /// JSON with a login token in `X-Access-Token`, deduplicating by serial itself (卫生健康-like).
    JsonHeader {
        #[arg(long, default_value = "127.0.0.1:18086")]
        listen: String,
        /// JSON settings (`yichuang_sim::json_header::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// Open-platform gateway with SM4-CBC payloads and SM3 signatures (交通运输-like).
    Sm4Gateway {
        #[arg(long, default_value = "127.0.0.1:18087")]
        listen: String,
        /// JSON settings (`yichuang_sim::sm4_gateway::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
    },
    /// 前置库: the department's sync job over exchange tables in a PostgreSQL database.
    ExchangeDb {
        /// The department database (with its password: this is the department's side).
        #[arg(long, env = "YICHUANG_SIM_PG_URL")]
        url: String,
        /// JSON settings (`yichuang_sim::exchange_db::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// Serve `GET /_sim/stats` (cases, duplicates, faults) here, as the HTTP kinds do.
        #[arg(long)]
        stats_listen: Option<String>,
    },
    /// The 12345 hotline's reply interface: signed replies at /reply (503 now and then, each
    /// order's reply kept once), the replies held at GET /control/replies.
    Hotline {
        #[arg(long, default_value = "127.0.0.1:18090")]
        listen: String,
        /// The secret shared with the gateway (`[hotline] secret`).
        #[arg(
            long,
            env = "YICHUANG_HOTLINE_SECRET",
            default_value = "hotline-secret"
        )]
        secret: String,
        /// Every n-th well-signed reply is answered 503 (0: never).
        #[arg(long, default_value_t = 3)]
        unavailable_every: u64,
    },
    /// The provincial one-network platform's case-record exchange (EX_GDBS_*, EX_HCP_*), strict:
    /// signed HTTP at /gdbs/api/record and /gdbs/api/query, controls at /sim/platform/…
    Platform {
        #[arg(long, default_value = "127.0.0.1:18088")]
        listen: String,
        /// JSON settings (`yichuang_sim::platform::Settings`); defaults otherwise.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// The acceptance list whose item codes are the known SXBM (instead of the settings').
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Also collect from exchange tables (前置库) in this database.
        #[arg(long, env = "YICHUANG_SIM_PLATFORM_PG_URL")]
        exchange_url: Option<String>,
        /// The exchange tables' schema.
        #[arg(long, default_value = "gdbs_qzk")]
        exchange_schema: String,
    },
    /// The provincial SMS platform: MD5-signed form POST at /sms/send, deduplicating by msgid;
    /// what it took at GET /control/messages (numbers masked).
    Sms {
        #[arg(long, default_value = "127.0.0.1:18089")]
        listen: String,
        /// JSON settings (`yichuang_sim::sms::Settings`); defaults otherwise.
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
            let mut settings: yichuang_sim::http_json::Settings = settings(&s)?;
            if let Ok(secret) = std::env::var("YICHUANG_SIM_CALLBACK_SECRET") {
                settings.callback_secret = Some(secret);
            }
            let sim = yichuang_sim::http_json::HttpJsonSim::new(settings);
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
        Kind::JsonHeader {
            listen,
            settings: s,
        } => {
            let sim = yichuang_sim::json_header::JsonHeaderSim::new(settings(&s)?);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!("yichuang-sim json-header on {listen}");
            sim.serve(listener).await;
        }
        Kind::Sm4Gateway {
            listen,
            settings: s,
        } => {
            let settings: yichuang_sim::sm4_gateway::Settings = settings(&s)?;
            settings.cipher_key().map_err(anyhow::Error::msg)?;
            let sim = yichuang_sim::sm4_gateway::Sm4GatewaySim::new(settings);
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            eprintln!("yichuang-sim sm4-gateway on {listen}");
            sim.serve(listener).await;
        }
        Kind::ExchangeDb {
            url,
            settings: s,
            stats_listen,
        } => {
            let mut s: yichuang_sim::exchange_db::Settings = settings(&s)?;
            s.url = url;
            let schema = format!("{}.{}/{}", s.schema, s.inbound_table, s.result_table);
            let sim = yichuang_sim::exchange_db::ExchangeDbSim::new(s)?;
            sim.create_tables().await?;
            eprintln!("yichuang-sim exchange-db on {schema}");
            if let Some(listen) = stats_listen {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                let stats = sim.clone();
                let app = axum::Router::new().route(
                    "/_sim/stats",
                    axum::routing::get(move || {
                        let stats = stats.clone();
                        async move { axum::Json(stats.stats()) }
                    }),
                );
                tokio::spawn(async move { axum::serve(listener, app).await });
            }
            tokio::select! {
                _ = sim.run() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Kind::Hotline {
            listen,
            secret,
            unavailable_every,
        } => {
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let settings = yichuang_sim::hotline::Settings {
                secret,
                unavailable_every,
                ..Default::default()
            };
            let _hotline = yichuang_sim::hotline::spawn_on(listener, settings).await?;
            eprintln!("yichuang-sim hotline on {listen}");
            tokio::signal::ctrl_c().await?;
        }
        Kind::Platform {
            listen,
            settings: s,
            catalog,
            exchange_url,
            exchange_schema,
        } => {
            let mut s: yichuang_sim::platform::Settings = settings(&s)?;
            if catalog.is_some() {
                s.catalog_dir = catalog;
            }
            if let Some(url) = exchange_url {
                s.exchange = Some(yichuang_sim::platform::ExchangeSettings {
                    url,
                    schema: exchange_schema,
                    ..Default::default()
                });
            }
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let _platform = yichuang_sim::platform::spawn_on(listener, s).await?;
            eprintln!("yichuang-sim platform on {listen}");
            tokio::signal::ctrl_c().await?;
        }
        Kind::Sms {
            listen,
            settings: s,
        } => {
            let mut s: yichuang_sim::sms::Settings = settings(&s)?;
            if let Ok(secret) = std::env::var("YICHUANG_SIM_SMS_SECRET") {
                s.secret = secret;
            }
            let listener = tokio::net::TcpListener::bind(&listen).await?;
            let _sms = yichuang_sim::sms::spawn_on(listener, s);
            eprintln!("yichuang-sim sms on {listen}");
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
