//! Scenarios every kind of department system passes, as one check run over every kind: each
//! kind's test file runs them with its simulated system ([`Kind`]), and keeps in its own hooks
//! only what is specific to that kind. What the runtime promises (a supplement handed to the
//! case once, its round numbered and ended once) is written here once, not once per kind.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use yichuang::proto::v1::{ResultKind, TaskMessage};
use yichuang_adapters::config::DepartmentConfig;
use yichuang_adapters::system::{DepartmentSystem, Failure, Gate, Task};
use yichuang_sim::core::{Behaviour, Sim, SimCase, Stats};

use crate::adapter::Adapter;
use crate::broker::{Broker, Got, bus};
use crate::tasks::{REQUESTED, resumed, task};

/// A simulated department system, whose core the scenarios read.
pub trait Simulated {
    fn core(&self) -> &Sim;
}

impl Simulated for yichuang_sim::http_json::HttpJsonSim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

impl Simulated for yichuang_sim::form_xml::FormXmlSim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

impl Simulated for yichuang_sim::soap::SoapSim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

impl Simulated for yichuang_sim::json_header::JsonHeaderSim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

impl Simulated for yichuang_sim::sm4_gateway::Sm4GatewaySim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

impl Simulated for yichuang_sim::exchange_db::ExchangeDbSim {
    fn core(&self) -> &Sim {
        &self.sim
    }
}

/// A kind under the scenarios: the department it runs at, its simulated system, and what is
/// specific to it.
// The scenarios await these in the test's own task: no `Send` bound is needed.
#[allow(async_fn_in_trait)]
pub trait Kind {
    type System: Simulated;

    /// The department the scenario runs at.
    fn department(&self) -> &str;

    /// An item of the department's, which the task is for.
    fn item(&self) -> &str;

    /// Starts the department's simulated system, deciding as `behaviour` says, and returns it
    /// with the department's settings pointed at it.
    async fn start(&mut self, behaviour: Behaviour) -> (Arc<Self::System>, DepartmentConfig);

    /// What is specific to the kind once its round ended approved, before the round is handed
    /// over again. Nothing, unless the kind says.
    async fn after_round(&mut self, trip: &RoundTrip<Self::System>) {
        let _ = trip;
    }

    /// What is specific to the kind after the round was handed over again. Unless the kind
    /// says otherwise: its system counted a duplicate and took no second round.
    async fn after_duplicate_round(&mut self, trip: &RoundTrip<Self::System>) {
        let after = trip.sim.core().stats();
        assert_eq!(after.supplements, 1, "{after:?}");
        assert_eq!(after.duplicates, trip.stats.duplicates + 1, "{after:?}");
    }

    /// A case number the system does not know, if the kind hears that from its system: a
    /// supplement for it is a permanent failure.
    fn unknown_case(&self) -> Option<&str>;

    /// Whether the system answers a repeated serial with its case (no lookup by serial): the
    /// kind then hands a task over again instead of looking it up.
    fn deduplicates_by_serial(&self) -> bool {
        false
    }

    /// The acceptance list's material code of the document an approval carries.
    fn document_code(&self) -> &str {
        ""
    }
}

/// One supplement round trip, run: what the kind's hooks may read and use.
pub struct RoundTrip<S> {
    /// The broker as the gateway sees it; the adapter is still running.
    pub harness: Broker,
    pub adapter: Adapter,
    /// The department's settings the adapter runs with.
    pub config: DepartmentConfig,
    pub sim: Arc<S>,
    /// The system, built from `config` as the adapter builds it, for calls made directly.
    pub system: Arc<dyn DepartmentSystem>,
    pub id: String,
    /// What was read in round 0, until the supplement request.
    pub first: Vec<Got>,
    /// What was read after the round-1 message.
    pub second: Vec<Got>,
    /// The round-1 message.
    pub again: TaskMessage,
    /// The round's approval.
    pub approved: Got,
    /// The case in the system.
    pub case: SimCase,
    /// The system's figures after the round.
    pub stats: Stats,
}

impl<S> RoundTrip<S> {
    /// The round-1 message as the kind is handed it.
    pub fn again_task(&self) -> Task {
        Task {
            message: self.again.clone(),
            fields: Default::default(),
        }
    }
}

/// A supplement handed to the case once, its round ending approved: a system that asks for a
/// supplement first and approves after it; the task through the adapter, the round-1 message
/// published as the gateway would (twice, as a copy may come). Round 0 is accepted once and asks
/// for the catalog's names; round 1 is numbered and ends once, approved with the same case
/// number; the system took the round once, named from the catalog. The same round handed over
/// again (after a crash) is the system's duplicate and a success for the kind; a case the system
/// does not know is a permanent failure.
pub async fn supplement_round_trip<K: Kind>(mut kind: K) {
    let bus = bus();
    let department = kind.department().to_string();
    let harness = Broker::for_departments(&bus, &[department.as_str()]).await;
    // The first decision asks for a supplement, the second approves.
    let (sim, config) = kind
        .start(Behaviour {
            department: department.clone(),
            decision_delay_ms: 300,
            reject: 0.0,
            supplement: 1.0,
            ..Behaviour::default()
        })
        .await;
    let adapter = Adapter::start(&bus, vec![config.clone()]).await;
    let t = task(&department, kind.item(), 1);
    let id = t.task.as_ref().unwrap().task_id.clone();

    let (first, second, again) = publish_round_trip(&harness, &t, Duration::from_secs(30)).await;
    let asked = first
        .iter()
        .find(|g| g.kind() == ResultKind::Supplement)
        .unwrap();
    assert_eq!(asked.result.materials, REQUESTED);
    let approved = assert_supplement_round_trip(&id, &first, &second);
    let case = sim.core().by_serial(&id).unwrap();
    assert_eq!(approved.result.documents[0].number, case.licence_number());
    let taken = case.supplement.as_deref().expect("the round taken");
    assert_eq!(taken.round, 1);
    assert_eq!(taken.serial, format!("{id}-S1"));
    assert_eq!(taken.supplied, REQUESTED, "named from the catalog");
    let stats = sim.core().stats();
    assert_eq!((stats.cases, stats.supplements), (1, 1), "{stats:?}");
    assert!(
        stats.duplicates <= 1,
        "the copy was dropped or recognised: {stats:?}"
    );
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let trip = RoundTrip {
        harness,
        adapter,
        config,
        sim,
        system,
        id,
        first,
        second,
        again,
        approved,
        case,
        stats,
    };
    kind.after_round(&trip).await;

    // The same round handed over again (after a crash) is the system's duplicate, and a
    // success for the kind; a case it does not know is a permanent failure.
    let again_task = trip.again_task();
    let supplement = trip.again.supplement.as_ref().unwrap();
    trip.system
        .resupply(&again_task, &trip.case.number, supplement)
        .await
        .expect("a duplicate round is a success");
    kind.after_duplicate_round(&trip).await;
    if let Some(unknown) = kind.unknown_case() {
        let e = trip
            .system
            .resupply(&again_task, unknown, supplement)
            .await
            .unwrap_err();
        assert!(matches!(&e, Failure::Permanent { .. }), "{e:?}");
    }
    trip.adapter.task.abort();
    trip.harness.remove().await;
}

/// One task through a supplement round trip at a department whose system asks for a
/// supplement first: publishes it, waits for the request, and publishes the round-1 message
/// the gateway would — twice, as a copy may come. Returns what was read before and after the
/// round-1 message (until its outcome, and a little more), and that message.
async fn publish_round_trip(
    harness: &Broker,
    task: &TaskMessage,
    within: Duration,
) -> (Vec<Got>, Vec<Got>, TaskMessage) {
    let id = task.task.as_ref().unwrap().task_id.clone();
    harness.publish(task).await;
    let first = harness
        .results_until(within, Duration::from_millis(300), |g| {
            g.result.task_id == id && g.kind() == ResultKind::Supplement
        })
        .await;
    let accepted = first
        .iter()
        .find(|g| g.kind() == ResultKind::Accepted)
        .expect("accepted before the supplement request");
    let asked = first
        .iter()
        .find(|g| g.kind() == ResultKind::Supplement)
        .unwrap();
    let again = resumed(
        task,
        &accepted.result.department_case_number,
        &asked.result.materials,
    );
    harness.publish(&again).await;
    harness.publish(&again).await;
    let second = harness
        .results_until(within, Duration::from_millis(1500), |g| {
            g.result.task_id == id && g.result.round == 1 && g.is_final()
        })
        .await;
    (first, second, again)
}

/// Checks a supplement round trip of one task: `first` (round 0) was accepted once and asked
/// for a supplement; `second` (everything read after the round-1 message) ends with one
/// approval of round 1 with the same case number, carries no second `ACCEPTED`, and every
/// result of round 1 has `round = 1` and a `message_id` ending in `:s1`. Returns the approval.
pub fn assert_supplement_round_trip(id: &str, first: &[Got], second: &[Got]) -> Got {
    let mine = |g: &&Got| g.result.task_id == id;
    let accepted: Vec<&Got> = first
        .iter()
        .filter(mine)
        .filter(|g| g.kind() == ResultKind::Accepted)
        .collect();
    assert!(
        !accepted.is_empty(),
        "{id}: accepted in round 0: {first:#?}"
    );
    let asked = first
        .iter()
        .filter(mine)
        .find(|g| g.kind() == ResultKind::Supplement)
        .expect("a supplement request in round 0");
    assert_eq!(asked.result.round, 0);
    assert_eq!(asked.message_id, format!("{id}:supplement"));
    let number = accepted[0].result.department_case_number.clone();
    let earlier: HashSet<&str> = first.iter().map(|g| g.message_id.as_str()).collect();
    for g in second.iter().filter(mine) {
        if g.result.round == 0 {
            // Only a late copy of something round 0 published already.
            assert!(
                earlier.contains(g.message_id.as_str()),
                "{id}: a round-0 result after the supplement: {g:#?}"
            );
            continue;
        }
        assert_eq!(g.result.round, 1, "{g:#?}");
        assert!(g.message_id.ends_with(":s1"), "{g:#?}");
        assert_ne!(
            g.kind(),
            ResultKind::Accepted,
            "{id}: accepted again: {g:#?}"
        );
        assert_ne!(g.kind(), ResultKind::Failed, "{id}: {g:#?}");
    }
    let finals: HashSet<&str> = second
        .iter()
        .filter(mine)
        .filter(|g| g.result.round == 1 && g.is_final())
        .map(|g| g.message_id.as_str())
        .collect();
    assert_eq!(
        finals,
        [format!("{id}:approved:s1").as_str()].into(),
        "{id}: one outcome of round 1: {second:#?}"
    );
    let approved = second
        .iter()
        .find(|g| g.message_id == format!("{id}:approved:s1"))
        .unwrap()
        .clone();
    assert_eq!(approved.result.department_case_number, number);
    assert_eq!(
        approved.routing_key,
        format!("{}.approved", approved.result.department)
    );
    approved
}

/// The whole life of a batch of tasks while the system misbehaves in every way the simulators
/// can: 5xx answers, hangs past the adapter's timeout (a request that did reach the system),
/// 429 with `Retry-After`, and tokens that expire within the run (where the system has them). Every
/// task ends with exactly one outcome, the system's own (its decision, case number, document,
/// reasons or materials); the system opened one case per task and counted no repeated serial
/// as a second case; and it never saw more requests in a second than its limit, which is the
/// department's `requests_per_second`.
pub async fn one_outcome_each_while_the_system_misbehaves<K: Kind>(mut kind: K) {
    const TASKS: usize = 24;
    const RATE: u32 = 20;
    let bus = bus();
    let department = kind.department().to_string();
    let harness = Broker::for_departments(&bus, &[department.as_str()]).await;
    let (sim, mut config) = kind
        .start(Behaviour {
            department: department.clone(),
            decision_delay_ms: 1500,
            server_error: 0.08,
            hang: 0.05,
            hang_ms: 2500, // past the adapter's 1 s timeout
            too_many: 0.05,
            retry_after_secs: 1,
            max_rps: RATE,
            ..Behaviour::default()
        })
        .await;
    config.limits.requests_per_second = RATE;
    let adapter = Adapter::start(&bus, vec![config]).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| task(&department, kind.item(), n))
        .collect();
    let ids: Vec<String> = crate::tasks::task_ids(&tasks);
    for t in &tasks {
        harness.publish(t).await;
    }
    let results = harness.results_for(&ids, Duration::from_secs(120)).await;
    crate::tasks::assert_one_outcome_each(&results, &ids);
    let stats = sim.core().stats();
    assert_eq!(
        stats.cases, TASKS as u64,
        "one case per task at the system: {stats:?}"
    );
    if !kind.deduplicates_by_serial() {
        // A kind that looks a task up before handing it over again never repeats a serial.
        assert_eq!(stats.duplicates, 0, "none submitted twice: {stats:?}");
    }
    assert!(stats.faults > 0, "faults were injected: {stats:?}");
    assert_eq!(
        stats.rate_violations, 0,
        "the department's rate limit held: {stats:?}"
    );
    for id in &ids {
        let case = sim.core().by_serial(id).expect("the system has the task");
        let outcome = results[id].iter().find(|g| g.is_final()).unwrap();
        let r = &outcome.result;
        assert_eq!(r.department_case_number, case.number, "{id}");
        match case.outcome {
            yichuang_sim::core::Outcome::Approved => {
                assert_eq!(outcome.kind(), ResultKind::Approved, "{id}: {outcome:#?}");
                assert_eq!(r.documents[0].number, case.licence_number(), "{id}");
                assert_eq!(r.documents[0].material_code, kind.document_code(), "{id}");
            }
            yichuang_sim::core::Outcome::Rejected => {
                assert_eq!(outcome.kind(), ResultKind::Rejected, "{id}: {outcome:#?}");
                assert!(!r.reasons.is_empty(), "{id}: the system's reasons");
            }
            yichuang_sim::core::Outcome::Supplement => {
                assert_eq!(outcome.kind(), ResultKind::Supplement, "{id}: {outcome:#?}");
                assert_eq!(r.materials, REQUESTED, "{id}");
            }
        }
    }
    adapter.task.abort();
    harness.remove().await;
}

/// A task handed over again after its answer was lost (a crash, a timeout that did reach the
/// system) does not open a second case: the kind looks it up, or its system answers the serial
/// it has with its case number. Both calls give the same case number.
pub async fn a_task_submitted_again_opens_no_second_case<K: Kind>(mut kind: K) {
    let department = kind.department().to_string();
    let (sim, config) = kind
        .start(Behaviour {
            department: department.clone(),
            decision_delay_ms: 60_000,
            ..Behaviour::default()
        })
        .await;
    let system = yichuang_adapters::kinds::build(&config, Gate::new(50)).unwrap();
    let message = task(&department, kind.item(), 1);
    let fields = yichuang_adapters::mapping::render_all(&config.mapping.request, &message).unwrap();
    let t = Task { message, fields };
    let read = |answer| {
        yichuang_adapters::runtime::Department::new(config.clone(), system.clone(), Gate::new(50))
            .read(&answer)
            .department_case_number
    };
    let first = read(system.submit(&t).await.expect("submitted"));
    // The kind's own lookup first (the runtime's order), then the submission again.
    if let Some(found) = system.find(&t).await.expect("looked up") {
        assert_eq!(read(found), first, "found with its case number");
    }
    let again = read(system.submit(&t).await.expect("submitted again"));
    assert!(first.is_some(), "the system gave a case number");
    assert_eq!(again, first, "the same case");
    let stats = sim.core().stats();
    assert_eq!(stats.cases, 1, "{stats:?}");
    assert_eq!(
        stats.repeated_serials, 1,
        "the system saw the serial twice: {stats:?}"
    );
}

/// The dry run (`yichuang-adapter try`) of one task against the system: each exchange shown,
/// the outcome read with the system's case number, and none of the task's personal data in what
/// is shown.
pub async fn the_dry_run_shows_each_exchange_with_personal_data_masked<K: Kind>(mut kind: K) {
    let department = kind.department().to_string();
    let (sim, config) = kind
        .start(Behaviour {
            department: department.clone(),
            decision_delay_ms: 0,
            reject: 1.0,
            ..Behaviour::default()
        })
        .await;
    let message = task(&department, kind.item(), 7);
    let shown = Arc::new(std::sync::Mutex::new(String::new()));
    let out: Arc<dyn Fn(&str) + Send + Sync> = {
        let shown = shown.clone();
        Arc::new(move |s: &str| shown.lock().unwrap().push_str(s))
    };
    let ended = yichuang_adapters::dry_run::run(&config, &message, out)
        .await
        .expect("the description runs");
    let shown = shown.lock().unwrap().clone();
    let id = message.task.as_ref().unwrap().task_id.clone();
    let case = sim.core().by_serial(&id).expect("the system has the task");
    match ended {
        yichuang_adapters::dry_run::Ended::Read(r) => {
            assert_eq!(
                r.department_case_number.as_deref(),
                Some(case.number.as_str())
            );
            assert!(
                matches!(
                    r.decision,
                    Some(yichuang_adapters::mapping::Decision::Rejected(_))
                ),
                "{r:?}"
            );
        }
        other => panic!("{other:?}\n{shown}"),
    }
    assert!(shown.contains("── submit"), "{shown}");
    assert!(shown.contains("── query"), "{shown}");
    assert!(
        shown.contains(&format!("case number {:?}", case.number)),
        "{shown}"
    );
    for (plain, _) in yichuang_adapters::dry_run::personal_values(&message) {
        assert!(
            !shown.contains(&plain),
            "{plain:?} shown unmasked:\n{shown}"
        );
    }
}

/// A message nobody can read (not a task message) is dead-lettered with its reason, and the
/// task after it is served as usual.
pub async fn a_poison_message_is_dead_lettered_and_the_next_task_served<K: Kind>(mut kind: K) {
    let bus = bus();
    let department = kind.department().to_string();
    let harness = Broker::for_departments(&bus, &[department.as_str()]).await;
    let (_sim, config) = kind
        .start(Behaviour {
            department: department.clone(),
            decision_delay_ms: 300,
            ..Behaviour::default()
        })
        .await;
    let adapter = Adapter::start(&bus, vec![config]).await;
    harness
        .raw(
            &department,
            b"\xff\xfe not protobuf",
            lapin::BasicProperties::default()
                .with_message_id("garbage-1".into())
                .with_content_type(yichuang::outbox::TASK_CONTENT_TYPE.into()),
        )
        .await;
    let next = task(&department, kind.item(), 2);
    let id = next.task.as_ref().unwrap().task_id.clone();
    harness.publish(&next).await;
    let (headers, body) = harness
        .dead_letter(&department, Duration::from_secs(20))
        .await
        .expect("the poison message in the dead queue");
    assert_eq!(body, b"\xff\xfe not protobuf");
    assert!(
        headers[yichuang::bus::headers::REASON].contains("cannot decode"),
        "{headers:?}"
    );
    let results = harness
        .results_for(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    crate::tasks::assert_one_outcome_each(&results, std::slice::from_ref(&id));
    adapter.task.abort();
    harness.remove().await;
}
