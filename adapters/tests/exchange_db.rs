//! The 前置库 kind (`exchange-db`) against its simulator (`yichuang_sim::exchange_db`) on a
//! real RabbitMQ and a real PostgreSQL (a schema of each test's own, dropped at the end): the
//! department's job is down for maintenance at first, picks rows up slowly, and the database
//! drops the adapter's connection; every task still ends with exactly one outcome, the
//! department's own, and every result row is acknowledged.

use testkit::tasks::task_ids as ids_of;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use testkit::adapter::{Adapter, department, secret_file};
use testkit::broker::{Broker, bus};
use testkit::conformance::{self, Kind, RoundTrip};
use testkit::db::{Schema, pg_url, split_password};
use testkit::tasks::{REQUESTED, assert_one_outcome_each, task};
use testkit::until;
use tokio_postgres::Client;
use yichuang::proto::v1::ResultKind;
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::mapping::parse_date;
use yichuang_adapters::system::{Failure, Task};
use yichuang_sim::core::{Behaviour, Outcome};
use yichuang_sim::exchange_db::{ExchangeDbSim, Settings};

/// The department's shipped file, pointed at the test database and schema, and its
/// simulator, tables created and job running.
async fn setup(
    code: &str,
    schema: &Schema,
    dir: &tempfile::TempDir,
    behaviour: Behaviour,
    tune: impl FnOnce(&mut Settings),
) -> (DepartmentConfig, Arc<ExchangeDbSim>) {
    let (endpoint, password) = split_password(&pg_url());
    let mut c = department(code, &endpoint);
    c.credentials.clear();
    if let Some(p) = password {
        c.credentials
            .insert("password".into(), secret_file(dir, "pg-password", &p));
    }
    c.options.insert("schema".into(), schema.name.clone());
    let mut settings = Settings {
        behaviour,
        url: pg_url(),
        schema: schema.name.clone(),
        inbound_table: c.options["inbound_table"].clone(),
        result_table: c.options["result_table"].clone(),
        supplement_table: c.options["supplement_table"].clone(),
        fields: c.mapping.request.keys().cloned().collect(),
        tick_ms: 100,
        ..Settings::default()
    };
    tune(&mut settings);
    let sim = ExchangeDbSim::new(settings).expect("sim settings");
    sim.create_tables().await.expect("exchange tables");
    tokio::spawn(sim.clone().run());
    (c, sim)
}

/// The hall date (UTC+8) of a result's `at`.
fn hall_date(at: &pbjson_types::Timestamp) -> chrono::NaiveDate {
    (chrono::DateTime::from_timestamp(at.seconds, 0).unwrap() + chrono::Duration::hours(8))
        .date_naive()
}

/// The department's final result row of a serial: (slbh, blzt, zzbh, bjrq).
async fn final_row(
    c: &Client,
    table: &str,
    serial: &str,
) -> (String, String, Option<String>, String) {
    let r = c
        .query_one(
            &format!(
                "SELECT slbh, blzt, zzbh, bjrq FROM {table} WHERE ywlsh = $1 AND blzt <> '办理中' ORDER BY id DESC LIMIT 1"
            ),
            &[&serial],
        )
        .await
        .expect("the department's decision row");
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_ends_with_the_departments_own_outcome_through_maintenance_and_a_dropped_connection()
 {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["rs"]).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new("xrs");
    let maintenance = Duration::from_millis(3000);
    let (config, sim) = setup(
        "rs",
        &schema,
        &dir,
        Behaviour {
            department: "rs".into(),
            decision_delay_ms: 1500,
            reject: 0.2,
            supplement: 0.2,
            maintenance_ms: maintenance.as_millis() as u64,
            ..Behaviour::default()
        },
        |s| s.pickup_delay_ms = 300,
    )
    .await;
    let adapter = Adapter::start(&bus, vec![config]).await;
    let c = testkit::db::connect().await;
    let inbound = format!("{}.yc_sqxx", schema.name);
    let results_table = format!("{}.yc_bjxx", schema.name);

    let tasks: Vec<_> = (0..20).map(|n| task("rs", "SB-DJ", n)).collect();
    let ids = ids_of(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    // While the department's job is down, the rows wait in the inbound table…
    until(
        "every task in the inbound table",
        Duration::from_secs(20),
        || async {
            let n: i64 = c
                .query_one(&format!("SELECT count(*) FROM {inbound}"), &[])
                .await
                .unwrap()
                .get(0);
            n == 20
        },
    )
    .await;
    // …and the database drops the adapter's connection: it must connect again.
    let dropped: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'yichuang-adapter-rs' AND datname = current_database()) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dropped >= 1, "the adapter's connection was there to drop");

    let results = harness.results_for(&ids, Duration::from_secs(90)).await;
    assert_one_outcome_each(&results, &ids);

    let stats = sim.stats();
    assert_eq!(
        stats.cases, 20,
        "every task reached the department: {stats:?}"
    );
    assert_eq!(stats.duplicates, 0, "none handed over twice: {stats:?}");
    assert!(
        stats.faults > 0,
        "the maintenance window was hit: {stats:?}"
    );

    // One inbound row per task, taken by the department, and none during maintenance.
    let window_end = sim.started_at + chrono::Duration::from_std(maintenance).unwrap();
    let rows = c
        .query(
            &format!(
                "SELECT ywlsh, count(*), min(sfjs), min(tbzt), min(bbh), extract(epoch FROM min(jssj))::float8 FROM {inbound} GROUP BY ywlsh"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    for r in &rows {
        let serial: String = r.get(0);
        assert_eq!(r.get::<_, i64>(1), 1, "{serial}: one row");
        assert_eq!(r.get::<_, String>(2), "1", "{serial}: received");
        assert_eq!(r.get::<_, String>(3), "1", "{serial}: synced");
        assert_eq!(r.get::<_, i32>(4), 1, "{serial}: version 1");
        let taken: f64 = r.get(5);
        let taken = chrono::DateTime::from_timestamp_millis((taken * 1000.0) as i64).unwrap();
        assert!(
            taken >= window_end,
            "{serial}: taken at {taken}, inside the maintenance window ending {window_end}"
        );
    }

    // The outcomes are the department's own rows.
    let mut progress = 0;
    for id in &ids {
        let case = sim.sim.by_serial(id).expect("the department has the task");
        let got = &results[id];
        progress += got
            .iter()
            .filter(|g| g.kind() == ResultKind::Progress)
            .count();
        let outcome = got.iter().find(|g| g.is_final()).unwrap();
        let (slbh, blzt, zzbh, bjrq) = final_row(&c, &results_table, id).await;
        assert_eq!(outcome.result.department_case_number, case.number, "{id}");
        assert_eq!(slbh, case.number, "{id}");
        let expected = match case.outcome {
            Outcome::Approved => ResultKind::Approved,
            Outcome::Rejected => ResultKind::Rejected,
            Outcome::Supplement => ResultKind::Supplement,
        };
        assert_eq!(outcome.kind(), expected, "{id}: {blzt}");
        assert!(bjrq.contains('年') && bjrq.ends_with('日'), "{id}: {bjrq}");
        assert_eq!(
            Some(hall_date(outcome.result.at.as_ref().unwrap())),
            parse_date(&bjrq),
            "{id}: the outcome is dated by the department's {bjrq}"
        );
        match expected {
            ResultKind::Approved => {
                let doc = &outcome.result.documents[0];
                assert_eq!(Some(doc.number.clone()), zzbh, "{id}");
                assert_eq!(doc.number, case.licence_number(), "{id}");
                assert_eq!(doc.name, "社会保险登记证", "{id}");
            }
            ResultKind::Rejected => {
                assert_eq!(outcome.result.reasons, ["经营场所与申报不符"], "{id}")
            }
            _ => assert_eq!(outcome.result.materials, REQUESTED, "{id}"),
        }
    }
    assert!(progress >= 20, "steps were published: {progress}");

    // Every result row the adapter published is acknowledged.
    until(
        "every result row acknowledged",
        Duration::from_secs(15),
        || async {
            let n: i64 = c
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {results_table} WHERE sfjs <> '1' OR jssj IS NULL"
                    ),
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            n == 0
        },
    )
    .await;

    adapter.task.abort();
    harness.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_dates_a_refused_row_and_a_second_version_counted_as_a_duplicate() {
    let bus = bus();
    let harness = Broker::for_departments(&bus, &["zrzy"]).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = Schema::new("xzrzy");
    let (config, sim) = setup(
        "zrzy",
        &schema,
        &dir,
        Behaviour {
            department: "zrzy".into(),
            decision_delay_ms: 900,
            reject: 0.0,
            supplement: 0.0,
            ..Behaviour::default()
        },
        |s| {
            s.compact_dates = true;
            s.required = vec!["qlrmc".into()];
            s.licence_name = "不动产权证书".into();
        },
    )
    .await;
    let adapter = Adapter::start(&bus, vec![config]).await;
    let c = testkit::db::connect().await;
    let inbound = format!("{}.bdc_sqxx", schema.name);
    let results_table = format!("{}.bdc_bjxx", schema.name);

    let mut tasks: Vec<_> = (0..6).map(|n| task("zrzy", "BDC-ZY", n)).collect();
    // The registration centre requires the right holder's name; this task has none.
    let refused = tasks[5].task.as_ref().unwrap().task_id.clone();
    tasks[5]
        .submission
        .as_mut()
        .unwrap()
        .applicant
        .as_mut()
        .unwrap()
        .name = " ".into();
    let ids = ids_of(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(60)).await;
    assert_one_outcome_each(&results, &ids);

    let failed = results[&refused].iter().find(|g| g.is_final()).unwrap();
    assert_eq!(failed.kind(), ResultKind::Failed);
    assert!(
        failed.result.reasons[0].contains("缺少必填项 qlrmc"),
        "the department's own words: {:?}",
        failed.result.reasons
    );
    let mut by_id: HashMap<&str, _> = HashMap::new();
    for id in ids.iter().filter(|id| **id != refused) {
        let outcome = results[id].iter().find(|g| g.is_final()).unwrap();
        assert_eq!(outcome.kind(), ResultKind::Approved, "{id}");
        let (slbh, _, zzbh, bjrq) = final_row(&c, &results_table, id).await;
        assert_eq!(outcome.result.department_case_number, slbh);
        assert_eq!(bjrq.len(), 8, "compact date: {bjrq}");
        assert_eq!(
            Some(hall_date(outcome.result.at.as_ref().unwrap())),
            parse_date(&bjrq)
        );
        let doc = &outcome.result.documents[0];
        assert_eq!(
            (Some(doc.number.clone()), doc.material_code.as_str()),
            (zzbh, "BDCQZ")
        );
        by_id.insert(id.as_str(), slbh);
    }

    // Someone on the window side hands a case over again as version 2: the department sees
    // a duplicate, counts it, and does not open a second case.
    let again = &ids[0];
    c.execute(
        &format!("INSERT INTO {inbound} (ywlsh, hjdm, bbh, pch) VALUES ($1, 'SL', 2, 'manual')"),
        &[again],
    )
    .await
    .unwrap();
    until(
        "the second version is seen",
        Duration::from_secs(15),
        || async { sim.stats().duplicates == 1 },
    )
    .await;
    let note: String = c
        .query_one(
            &format!("SELECT tbsm FROM {inbound} WHERE ywlsh = $1 AND bbh = 2 AND sfjs = '1'"),
            &[again],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        note.contains("重复申报") && note.contains(&by_id[again.as_str()]),
        "{note}"
    );
    let stats = sim.stats();
    assert_eq!(stats.cases, 5, "{stats:?}");
    adapter.task.abort();
    harness.remove().await;
}

/// 人社's exchange tables in the kinds' conformance scenarios: the department takes a row
/// slower than a poll, so the round is polled before it takes its row, when the newest row is
/// still the old request.
struct Rs {
    schema: Schema,
    dir: tempfile::TempDir,
}

impl Kind for Rs {
    type System = ExchangeDbSim;

    fn department(&self) -> &str {
        "rs"
    }

    fn item(&self) -> &str {
        "SB-DJ"
    }

    async fn start(&mut self, behaviour: Behaviour) -> (Arc<ExchangeDbSim>, DepartmentConfig) {
        let (config, sim) = setup("rs", &self.schema, &self.dir, behaviour, |s| {
            s.pickup_delay_ms = 1500
        })
        .await;
        (sim, config)
    }

    /// The old 补正 row was not read as the round's decision: the round's own rows were. One row
    /// for the round, taken by the department, with what was handed in; every result row, the
    /// round's too, acknowledged.
    async fn after_round(&mut self, trip: &RoundTrip<ExchangeDbSim>) {
        let (id, case, stats) = (&trip.id, &trip.case, &trip.stats);
        assert_eq!(trip.approved.result.documents[0].name, "社会保险登记证");
        assert_eq!(
            (stats.cases, stats.supplements, stats.duplicates),
            (1, 1, 0),
            "one row per round, whatever the copies: {stats:?}"
        );
        let c = testkit::db::connect().await;
        let rows = c
            .query(
                &format!(
                    "SELECT ywlsh, bzlsh, bzcs, slbh, sfjs, tbzt, bzcl, clqd FROM {}.yc_bzxx",
                    self.schema.name
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.get::<_, String>(0), *id);
        assert_eq!(r.get::<_, String>(1), format!("{id}-S1"));
        assert_eq!(r.get::<_, i32>(2), 1);
        assert_eq!(r.get::<_, String>(3), case.number);
        assert_eq!(
            (r.get::<_, String>(4), r.get::<_, String>(5)),
            ("1".into(), "1".into())
        );
        assert_eq!(r.get::<_, String>(6), REQUESTED.join("、"));
        let materials: serde_json::Value = serde_json::from_str(&r.get::<_, String>(7)).unwrap();
        assert_eq!(materials[0]["clbm"], "PMT");
        assert_eq!(materials[1]["clmc"], "住所（经营场所）使用证明");
        assert_eq!(
            materials[1]["wjdz"],
            "s3://yichuang-materials/2019/10/28/zszm-8.pdf"
        );
        assert_eq!(materials[1]["clxs"], "电子件");

        let results_table = format!("{}.yc_bjxx", self.schema.name);
        until(
            "every result row acknowledged",
            Duration::from_secs(15),
            || async {
                let n: i64 = c
                    .query_one(
                        &format!("SELECT count(*) FROM {results_table} WHERE sfjs <> '1'"),
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                n == 0
            },
        )
        .await;
    }

    /// The same round handed over again is the same row. A round the department refuses (the
    /// case waits for nothing) ends FAILED in that round, in the department's words.
    async fn after_duplicate_round(&mut self, trip: &RoundTrip<ExchangeDbSim>) {
        let n: i64 = testkit::db::connect()
            .await
            .query_one(
                &format!("SELECT count(*) FROM {}.yc_bzxx", self.schema.name),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1);

        let mut third = trip.again.clone();
        third.task.as_mut().unwrap().supplement_round = 2;
        third.supplement.as_mut().unwrap().round = 2;
        trip.harness.publish(&third).await;
        let got = trip
            .harness
            .results_until(Duration::from_secs(30), Duration::from_millis(200), |g| {
                g.result.round == 2 && g.is_final()
            })
            .await;
        let failed = got
            .iter()
            .find(|g| g.result.round == 2 && g.is_final())
            .unwrap();
        assert_eq!(failed.kind(), ResultKind::Failed);
        assert_eq!(failed.message_id, format!("{}:failed:s2", trip.id));
        assert!(
            failed.result.reasons[0].contains("办件不在补正状态"),
            "{:?}",
            failed.result.reasons
        );
        let e = trip
            .system
            .poll(
                &Task {
                    message: third,
                    fields: Default::default(),
                },
                &trip.case.number,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, Failure::Permanent { .. }), "{e:?}");
    }

    /// The department's tables cannot tell a case it does not know.
    fn unknown_case(&self) -> Option<&str> {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_row_is_taken_once_and_its_round_is_read_from_its_own_rows() {
    conformance::supplement_round_trip(Rs {
        schema: Schema::new("xrsbz"),
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
}
