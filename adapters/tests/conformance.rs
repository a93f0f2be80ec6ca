//! The conformance kit: one scenario suite (`testkit::conformance`) run against every HTTP
//! department description and its simulator, on a real RabbitMQ. Each description is a
//! [`Kind`] below, started against its simulator; [`conformance!`] gives it the whole suite:
//! the life of a batch of tasks under every fault the simulators inject with the rate limit
//! held, a task handed over again without a second case, a poison message, the dry run (`yichuang-adapter try`)
//! with personal data masked, and the supplement round trip with its duplicate. A new description gets the suite with one `conformance!` line.

use std::sync::Arc;

use testkit::adapter::{department, example, secret_file};
use testkit::conformance::{self, Kind};
use testkit::server::listener;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_sim::core::Behaviour;

/// Runs the suite for one description.
macro_rules! conformance {
    ($name:ident, $kind:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn every_task_ends_with_one_outcome_while_the_system_misbehaves() {
                conformance::one_outcome_each_while_the_system_misbehaves($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_task_submitted_again_opens_no_second_case() {
                conformance::a_task_submitted_again_opens_no_second_case($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_poison_message_is_dead_lettered_and_the_next_task_served() {
                conformance::a_poison_message_is_dead_lettered_and_the_next_task_served($kind)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_dry_run_shows_each_exchange_with_personal_data_masked() {
                conformance::the_dry_run_shows_each_exchange_with_personal_data_masked($kind).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_supplement_is_handed_to_the_case_once_and_its_round_ends_approved() {
                conformance::supplement_round_trip($kind).await;
            }
        }
    };
}

conformance!(scjg, Scjg::default());
conformance!(sw, Sw::default());
conformance!(ga, Soap("ga"));
conformance!(xf, Soap("xf"));
conformance!(wjw, Wjw::default());
conformance!(jt, Jt::default());

/// `config` with each credential in a file of its own under a fresh directory kept in `dir`.
fn with_secrets(
    mut config: DepartmentConfig,
    dir: &mut Option<tempfile::TempDir>,
    secrets: &[(&str, &str)],
) -> DepartmentConfig {
    let dir = dir.insert(tempfile::tempdir().unwrap());
    for (name, value) in secrets {
        config
            .credentials
            .insert((*name).into(), secret_file(dir, name, value));
    }
    config
}

/// Serves `sim` on a port of its own; its endpoint.
async fn serve<S>(sim: &Arc<S>, serve: impl FnOnce(Arc<S>, tokio::net::TcpListener)) -> String {
    let (listener, endpoint) = listener().await;
    serve(sim.clone(), listener);
    endpoint
}

/// 市场监管: JSON with a bearer token (`config/departments/scjg.yaml`), tokens living 1 s.
#[derive(Default)]
struct Scjg {
    dir: Option<tempfile::TempDir>,
}

impl Kind for Scjg {
    type System = yichuang_sim::http_json::HttpJsonSim;

    fn department(&self) -> &str {
        "scjg"
    }

    fn item(&self) -> &str {
        "SP-JY"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig) {
        let sim = yichuang_sim::http_json::HttpJsonSim::new(yichuang_sim::http_json::Settings {
            behaviour,
            token_ttl_secs: 1,
            ..Default::default()
        });
        let endpoint = serve(&sim, |s, l| drop(tokio::spawn(s.serve(l)))).await;
        let dir = self.dir.insert(tempfile::tempdir().unwrap());
        let mut c = department("scjg", &endpoint);
        c.credentials
            .insert("client_id".into(), secret_file(dir, "id", "yichuang"));
        c.credentials.insert(
            "client_secret".into(),
            secret_file(dir, "secret", "sim-secret"),
        );
        (sim, c)
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("SCJG0")
    }

    fn document_code(&self) -> &str {
        "SPJYXKZ"
    }
}

/// 税务: form-POSTed XML, GBK answers, HMAC-SM3 signatures (`config/departments/sw.yaml`),
/// tokens living 2 s.
#[derive(Default)]
struct Sw {
    dir: Option<tempfile::TempDir>,
}

impl Kind for Sw {
    type System = yichuang_sim::form_xml::FormXmlSim;

    fn department(&self) -> &str {
        "sw"
    }

    fn item(&self) -> &str {
        "SW-XB"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig) {
        let sim = yichuang_sim::form_xml::FormXmlSim::new(yichuang_sim::form_xml::Settings {
            behaviour,
            sign_key: Some("sw-sign-key".into()),
            token_ttl_secs: 2,
            ..Default::default()
        });
        let endpoint = serve(&sim, |s, l| drop(tokio::spawn(s.serve(l)))).await;
        let dir = self.dir.insert(tempfile::tempdir().unwrap());
        let mut c = department("sw", &endpoint);
        c.credentials
            .insert("app_id".into(), secret_file(dir, "id", "yichuang"));
        c.credentials.insert(
            "app_secret".into(),
            secret_file(dir, "secret", "sim-secret"),
        );
        c.credentials
            .insert("sign_key".into(), secret_file(dir, "sign", "sw-sign-key"));
        (sim, c)
    }

    async fn after_round(&mut self, trip: &conformance::RoundTrip<Self::System>) {
        assert_eq!(
            trip.sim.refused_signatures(),
            0,
            "every call was signed right"
        );
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("X0")
    }

    fn document_code(&self) -> &str {
        "SWSXTZS"
    }
}

/// 公安 and 消防: SOAP 1.1 (`config/departments/ga.yaml`, `xf.yaml`).
struct Soap(&'static str);

impl Kind for Soap {
    type System = yichuang_sim::soap::SoapSim;

    fn department(&self) -> &str {
        self.0
    }

    fn item(&self) -> &str {
        if self.0 == "ga" { "GZ-KZ" } else { "XF-JC" }
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig) {
        let (namespace, document_name) = match self.0 {
            "ga" => ("http://ga.yinchuan.gov.cn/approval", "公章刻制备案回执"),
            _ => (
                "http://xf.yinchuan.gov.cn/approval",
                "公众聚集场所投入使用、营业前消防安全检查合格证",
            ),
        };
        let sim = yichuang_sim::soap::SoapSim::new(yichuang_sim::soap::Settings {
            behaviour,
            namespace: namespace.into(),
            document_name: document_name.into(),
            ..Default::default()
        });
        let endpoint = serve(&sim, |s, l| drop(tokio::spawn(s.serve(l)))).await;
        (sim, department(self.0, &endpoint))
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("X0")
    }

    fn document_code(&self) -> &str {
        if self.0 == "ga" {
            "GZKZBA"
        } else {
            "XFAQJCHGZ"
        }
    }
}

/// A 卫生健康-like system described in `config/examples/wjw.yaml`: a login token in a header,
/// no lookup by serial, decisions split over two fields. Tokens live 2 s.
#[derive(Default)]
struct Wjw {
    dir: Option<tempfile::TempDir>,
}

impl Kind for Wjw {
    type System = yichuang_sim::json_header::JsonHeaderSim;

    fn department(&self) -> &str {
        "wjw"
    }

    fn item(&self) -> &str {
        "WJ-YL"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig) {
        let sim =
            yichuang_sim::json_header::JsonHeaderSim::new(yichuang_sim::json_header::Settings {
                behaviour,
                token_ttl_secs: 2,
                ..Default::default()
            });
        let endpoint = serve(&sim, |s, l| drop(tokio::spawn(s.serve(l)))).await;
        let dir = self.dir.insert(tempfile::tempdir().unwrap());
        let mut c = example("wjw", &endpoint);
        c.credentials
            .insert("username".into(), secret_file(dir, "user", "yichuang"));
        c.credentials.insert(
            "password".into(),
            secret_file(dir, "password", "sim-secret"),
        );
        (sim, c)
    }

    fn deduplicates_by_serial(&self) -> bool {
        true
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("WJW0")
    }

    fn document_code(&self) -> &str {
        "YLJGZYXKZ"
    }
}

/// A 交通运输-like gateway described in `config/examples/jt.yaml`: SM4-sealed payloads, an SM3
/// sign, the token in the query string. Tokens live 2 s.
#[derive(Default)]
struct Jt {
    dir: Option<tempfile::TempDir>,
}

impl Kind for Jt {
    type System = yichuang_sim::sm4_gateway::Sm4GatewaySim;

    fn department(&self) -> &str {
        "jt"
    }

    fn item(&self) -> &str {
        "JT-YS"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig) {
        let settings = yichuang_sim::sm4_gateway::Settings {
            behaviour,
            token_ttl_secs: 2,
            ..Default::default()
        };
        let (key, iv) = (settings.sm4_key.clone(), settings.sm4_iv.clone());
        let sim = yichuang_sim::sm4_gateway::Sm4GatewaySim::new(settings);
        let endpoint = serve(&sim, |s, l| drop(tokio::spawn(s.serve(l)))).await;
        let c = with_secrets(
            example("jt", &endpoint),
            &mut self.dir,
            &[
                ("app_key", "yichuang"),
                ("app_secret", "sim-secret"),
                ("sign_secret", "sim-sign-secret"),
                ("sm4_key", key.as_str()),
                ("sm4_iv", iv.as_str()),
            ],
        );
        (sim, c)
    }

    async fn after_round(&mut self, trip: &conformance::RoundTrip<Self::System>) {
        assert_eq!(
            trip.sim.refused_signatures(),
            0,
            "every call was signed right"
        );
    }

    fn unknown_case(&self) -> Option<&str> {
        Some("JT0")
    }

    fn document_code(&self) -> &str {
        "DLYSJYXKZ"
    }
}
