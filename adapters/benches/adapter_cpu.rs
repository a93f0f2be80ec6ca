//! The adapter's own CPU time per task: the declarative kind (`kind: http`, the shipped
//! `config/departments/sw.yaml`) against the hand-written `form-xml` kind it replaced
//! (`baseline_form_xml.rs`), both talking to the same simulated tax system
//! (`yichuang_sim::form_xml`: requests signed with HMAC-SM3, answers in GBK, decided at once, no
//! faults). These machines are shared and noisy, so only the ratio measured in the same run
//! means something.
//!
//! A task is what the runtime does for a first delivery when the system answers at once:
//! `submit`, the answer read (`runtime::Department::read`: the description's `outcome`, or the
//! department's `mapping.result` for the hand-written kind) for the department's case number,
//! then one `poll` with it, read again. Each task is a distinct task message (`testkit::tasks`,
//! a new serial each), its fields rendered from the shipped `mapping.request` as the runtime
//! does, before the clock starts: only the kind's work is measured. Every call must succeed.
//!
//! The client runs on a `current_thread` runtime on this thread, and the simulator on its own
//! thread with a runtime of its own, so the simulator's CPU is not counted: the figure is this
//! thread's user + system time (`/proc/thread-self/stat`, utime and stime, in clock ticks of
//! `getconf CLK_TCK`; 100 a second when it cannot be asked). Both sides are warmed up, then
//! measured in alternated rounds (declarative, hand-written, declarative, …) so drift hits
//! both; the median round of each side is reported.
//!
//! Each side has a gate of the highest rate (`u32::MAX` a second): a gate's wait is sleep, not
//! CPU, and both sides wait the same number of times.
//!
//! `YICHUANG_BENCH_TASKS` tasks a round (default 5000; at ~0.2–0.3 ms of CPU a task a round then
//! holds 100–150 ticks of the clock), `YICHUANG_BENCH_ROUNDS` rounds a side
//! (default 3), `YICHUANG_BENCH_WARMUP` tasks a side first, unmeasured (default 100).

#[path = "baseline_form_xml.rs"]
mod baseline_form_xml;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use yichuang_adapters::config::{AdapterConfig, DepartmentConfig};
use yichuang_adapters::mapping::{Decision, ResultMapping};
use yichuang_adapters::runtime::Department;
use yichuang_adapters::system::{Gate, Task};
use yichuang_sim::core::Behaviour;
use yichuang_sim::form_xml::{Charset, FormXmlSim, Settings};

const APP_ID: &str = "yichuang";
const APP_SECRET: &str = "sim-secret";
const SIGN_KEY: &str = "sw-sign-key";

/// CPU time in a `/proc/.../stat` file (a thread's or the process's), in seconds.
#[derive(Clone, Copy)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    fn read(stat: &Path, ticks_per_sec: f64) -> Cpu {
        let text =
            std::fs::read_to_string(stat).unwrap_or_else(|e| panic!("{}: {e}", stat.display()));
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let secs = |i: usize| -> f64 {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .expect("utime and stime in /proc stat")
                / ticks_per_sec
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
        Cpu {
            user: secs(11),
            system: secs(12),
        }
    }

    fn total(self) -> f64 {
        self.user + self.system
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

/// Clock ticks a second (`getconf CLK_TCK`), 100 when it cannot be asked.
fn ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The simulated system, served on a thread of its own.
struct Sim {
    system: Arc<FormXmlSim>,
    endpoint: String,
    /// The `/proc` stat file of the simulator's thread.
    stat: PathBuf,
}

fn start_sim() -> Sim {
    let sim = FormXmlSim::new(Settings {
        behaviour: Behaviour {
            department: "sw".into(),
            decision_delay_ms: 0,
            // Every case approved: every poll answer is the same size on both sides.
            reject: 0.0,
            supplement: 0.0,
            ..Behaviour::default()
        },
        app_id: APP_ID.into(),
        app_secret: APP_SECRET.into(),
        sign_key: Some(SIGN_KEY.into()),
        charset: Charset::Gbk,
        ..Settings::default()
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free local port");
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = sim.clone();
    std::thread::Builder::new()
        .name("sim".into())
        .spawn(move || {
            // `/proc/thread-self` links to `<pid>/task/<tid>`: this thread's own entry.
            let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
            tx.send(Path::new("/proc").join(me).join("stat")).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serving.serve(listener).await;
            });
        })
        .unwrap();
    let stat = rx.recv().expect("the simulator's thread starts");
    Sim {
        system: sim,
        endpoint,
        stat,
    }
}

/// One side: a kind's system for `sw`, as the runtime holds it.
struct Side {
    name: &'static str,
    department: Department,
}

impl Side {
    fn new(
        name: &'static str,
        config: DepartmentConfig,
        build: yichuang_adapters::kinds::Build,
    ) -> Side {
        // The highest rate: the gate lets every request through at once.
        let gate = Gate::new(u32::MAX);
        let system = build(&config, gate.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        Side {
            name,
            department: Department::new(config, system, gate),
        }
    }

    /// Submits `task`, reads the case number from the answer, polls once with it: the
    /// department's case number.
    async fn run(&self, task: &Task) -> String {
        let d = &self.department;
        let answer = d
            .system
            .submit(task)
            .await
            .unwrap_or_else(|e| panic!("{}: submit {}: {e}", self.name, task.id()));
        let number = d
            .read(&answer)
            .department_case_number
            .unwrap_or_else(|| panic!("{}: no case number in {answer:?}", self.name));
        let answer = d
            .system
            .poll(task, &number)
            .await
            .unwrap_or_else(|e| panic!("{}: poll {number}: {e}", self.name));
        let reading = d.read(&answer);
        assert_eq!(
            reading.department_case_number.as_deref(),
            Some(number.as_str()),
            "{}: {answer:?}",
            self.name
        );
        number
    }
}

/// The shipped `sw` file, pointed at the simulator with its credentials (in files under `dir`)
/// and the catalog's material names, as the adapter loads it. (`testkit::adapter::department`
/// would also send this process's logs to a file at `debug`, which a measurement must not.)
fn declarative(endpoint: &str, dir: &tempfile::TempDir) -> DepartmentConfig {
    let root = testkit::root();
    let mut c = DepartmentConfig::load(
        &root.join("config/departments"),
        "sw",
        &yichuang_adapters::kinds::names(),
    )
    .expect("the shipped sw.yaml");
    c.endpoint = endpoint.to_string();
    c.material_names = AdapterConfig::load(&root.join("config/adapter.toml"))
        .expect("the shipped adapter.toml")
        .material_names()
        .expect("the shipped catalog");
    for (name, value) in [
        ("app_id", APP_ID),
        ("app_secret", APP_SECRET),
        ("sign_key", SIGN_KEY),
    ] {
        c.credentials
            .insert(name.into(), testkit::adapter::secret_file(dir, name, value));
    }
    c
}

/// The same department for the hand-written kind: its options and result mapping as `sw.yaml`
/// had them for `kind: form-xml`; everything else (endpoint, credentials, limits,
/// `mapping.request`) the declarative side's.
fn hand_written(declarative: &DepartmentConfig) -> DepartmentConfig {
    let mut c = declarative.clone();
    c.kind = baseline_form_xml::KIND.name.into();
    c.http = None;
    c.options = [
        ("token_path", "/api/token"),
        ("submit_path", "/api/submit"),
        ("query_path", "/api/query"),
        ("find_path", "/api/find"),
        ("supplement_path", "/api/supplement"),
        ("supplement_serial_field", "bzlsh"),
        ("request_root", "Request"),
        ("serial_field", "ywlsh"),
        ("message_field", "rtnMsg"),
        ("ok_texts", "请求成功"),
        ("token_invalid_texts", "接口令牌不存在,接口令牌已过期"),
        ("duplicate_texts", "业务流水号重复"),
        ("not_found_texts", "记录不存在"),
        ("transient_texts", "系统繁忙,时间戳无效"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let some = |s: &str| Some(s.to_string());
    c.mapping.result = ResultMapping {
        case_number: some("slbh"),
        status: some("blzt"),
        approved: vec!["办结".into()],
        rejected: vec!["不予许可".into()],
        supplement: vec!["补正".into()],
        step: some("hjmc"),
        reasons: some("spyj"),
        materials: some("bzcl"),
        document_name: some("wsmc"),
        document_number: some("wsbh"),
        document_material_code: some("SWSXTZS"),
        decided_on: None,
    };
    c
}

/// `count` distinct tasks as the runtime hands them to a kind, numbered from `*next` on.
fn tasks(config: &DepartmentConfig, next: &mut usize, count: u64) -> Vec<Task> {
    (0..count)
        .map(|_| {
            *next += 1;
            let message = testkit::tasks::task("sw", "SW-XB", *next);
            let fields = yichuang_adapters::mapping::render_all(&config.mapping.request, &message)
                .expect("sw's mapping.request renders");
            Task { message, fields }
        })
        .collect()
}

/// What one round of one side cost, per task.
struct Round {
    /// CPU of this (the client's) thread, µs.
    client: Cpu,
    /// CPU of the simulator's thread, µs (not counted; shown for scale).
    sim_us: f64,
    /// CPU of the process's other threads, µs: the gate's timer thread (governor's
    /// futures-timer), little else.
    elsewhere_us: f64,
    wall_secs: f64,
}

/// Runs `tasks` on `side`, one after the other, measuring this thread's CPU.
fn measure(
    runtime: &tokio::runtime::Runtime,
    side: &Side,
    sim: &Sim,
    tasks: Vec<Task>,
    tps: f64,
) -> Round {
    let (process, me) = (
        Path::new("/proc/self/stat"),
        Path::new("/proc/thread-self/stat"),
    );
    let n = tasks.len() as f64;
    let requests = sim.system.sim.stats().requests;
    let (p0, s0) = (Cpu::read(process, tps), Cpu::read(&sim.stat, tps));
    let wall = Instant::now();
    let c0 = Cpu::read(me, tps);
    runtime.block_on(async {
        for t in &tasks {
            side.run(t).await;
        }
    });
    let client = Cpu::read(me, tps).since(c0);
    let wall_secs = wall.elapsed().as_secs_f64();
    let process = Cpu::read(process, tps).since(p0).total();
    let sim_cpu = Cpu::read(&sim.stat, tps).since(s0).total();
    // The same work on both sides: a submit and a query per task (the token is kept).
    let requests = sim.system.sim.stats().requests - requests;
    assert!(
        (2 * tasks.len() as u64..=2 * tasks.len() as u64 + 2).contains(&requests),
        "{}: {requests} requests for {n} tasks",
        side.name
    );
    drop(tasks);
    let us = |secs: f64| secs * 1e6 / n;
    Round {
        client: Cpu {
            user: us(client.user),
            system: us(client.system),
        },
        sim_us: us(sim_cpu),
        // Each reading is whole ticks: a difference may come out a tick below zero.
        elsewhere_us: us(process - client.total() - sim_cpu).max(0.0),
        wall_secs,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a quick smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (per_round, rounds, warmup) = if smoke {
        (5, 1, 2)
    } else {
        (
            testkit::env_or("YICHUANG_BENCH_TASKS", 5000).max(1),
            testkit::env_or("YICHUANG_BENCH_ROUNDS", 3).max(1),
            testkit::env_or("YICHUANG_BENCH_WARMUP", 100).max(1),
        )
    };
    let tps = ticks_per_sec();
    let sim = start_sim();
    let dir = tempfile::tempdir().unwrap();
    // The client: this thread only.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let declarative_config = declarative(&sim.endpoint, &dir);
    let hand_written_config = hand_written(&declarative_config);
    let sides = [
        Side::new(
            "declarative (kind http, sw.yaml)",
            declarative_config,
            yichuang_adapters::kinds::build,
        ),
        Side::new(
            "hand-written form-xml",
            hand_written_config,
            baseline_form_xml::KIND.build,
        ),
    ];
    let mut next = 0;

    // Warm-up (token, connection, code paths), and the check that both sides really reached
    // the system: the case number each read is the one the simulator gave the task, and the
    // poll's answer read as the approval it decided.
    for side in &sides {
        let config = &side.department.config;
        let warm = tasks(config, &mut next, warmup);
        let number = runtime.block_on(side.run(&warm[0]));
        let case = sim
            .system
            .sim
            .by_serial(warm[0].id())
            .expect("the system has the task");
        assert_eq!(number, case.number, "{}", side.name);
        let answer = runtime
            .block_on(side.department.system.poll(&warm[0], &number))
            .unwrap();
        assert!(
            matches!(side.department.read(&answer).decision, Some(Decision::Approved(ref d)) if d.len() == 1 && d[0].number == case.licence_number()),
            "{}: {answer:?}",
            side.name
        );
        runtime.block_on(async {
            for t in &warm[1..] {
                side.run(t).await;
            }
        });
    }

    println!(
        "adapter CPU per task (submit + poll of the sw form-XML simulator: signed HMAC-SM3, GBK answers; {rounds} x {per_round} tasks a side, rounds alternated; the client's thread only, /proc/thread-self/stat at {tps} ticks/s: 1 tick = {:.1} us per task)",
        1e6 / tps / per_round as f64
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        for (i, side) in sides.iter().enumerate() {
            let batch = tasks(&side.department.config, &mut next, per_round);
            let r = measure(&runtime, side, &sim, batch, tps);
            println!(
                "round {round}  {:<34} {:>7.1} us CPU/task (user {:>6.1}, sys {:>6.1})   sim {:>6.1} us   elsewhere {:>5.1} us   wall {:>5.1} s",
                side.name,
                r.client.total(),
                r.client.user,
                r.client.system,
                r.sim_us,
                r.elsewhere_us,
                r.wall_secs
            );
            results[i].push(r.client.total());
        }
    }

    let stats = sim.system.sim.stats();
    let expected = next as u64;
    assert_eq!(stats.cases, expected, "every task made one case: {stats:?}");
    assert_eq!(stats.duplicates, 0, "none submitted twice: {stats:?}");
    assert_eq!(
        sim.system.refused_signatures(),
        0,
        "every request was signed right"
    );
    if smoke {
        println!("bench smoke test: ok");
        return;
    }
    let (declarative, hand_written) = (median(&results[0]), median(&results[1]));
    println!(
        "{:<42} {declarative:>8.1} us CPU/task (median)",
        sides[0].name
    );
    println!(
        "{:<42} {hand_written:>8.1} us CPU/task (median)",
        sides[1].name
    );
    let ratio = declarative / hand_written;
    println!(
        "goal: declarative <= 1.2x hand-written CPU per task: {ratio:.2} ({})",
        if ratio <= 1.2 { "met" } else { "not met" }
    );
}
