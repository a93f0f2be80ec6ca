//! PostgreSQL's own limit for the work of one acceptance, measured beside the gateway: `pgbench`
//! (Debian's `postgresql` package, which `make bench` installs) runs a script that writes, as one
//! transaction, the rows one accepted case writes — the case record, its tasks, its history
//! entries (with their feed positions), the idempotency record and the audit line — with the
//! sizes and counts read from the cases the gateway itself just accepted in the same schema, so
//! the indexes, constraints and values are the same. Only the inserts: not the repeat check,
//! the advisory lock, the case-number transaction, gRPC or intake, which are the gateway's
//! overhead to measure.

use std::process::Command;

/// What one acceptance wrote: the rows of one case the gateway accepted.
struct Shape {
    case: (String, String, String, Vec<u8>),
    tasks: Vec<(String, String, Vec<u8>)>,
    events: Vec<(String, String)>,
    response: Vec<u8>,
}

/// A real accepted case of the schema (the first one), with its rows: copied into the script as
/// literals, so the bytes (and how well they compress) are those of real cases.
async fn shape(client: &tokio_postgres::Client, schema: &str) -> Shape {
    let case = client
        .query_one(
            &format!(
                "SELECT case_number, promised_deadline, item_codes, body FROM {schema}.cases ORDER BY accepted_at_ms LIMIT 1"
            ),
            &[],
        )
        .await
        .expect("the Submit run accepted cases");
    let number: String = case.get(0);
    let tasks = client
        .query(
            &format!(
                "SELECT department, item_code, body FROM {schema}.tasks WHERE case_number = $1"
            ),
            &[&number],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // The history an acceptance writes: the entries at its acceptance time.
    let events = client
        .query(
            &format!(
                "SELECT kind, detail FROM {schema}.case_events e WHERE case_number = $1
                   AND at_ms = (SELECT accepted_at_ms FROM {schema}.cases c WHERE c.case_number = e.case_number)
                 ORDER BY seq"
            ),
            &[&number],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let response = client
        .query_one(
            &format!("SELECT response FROM {schema}.submissions WHERE case_number = $1"),
            &[&number],
        )
        .await
        .unwrap()
        .get(0);
    Shape {
        case: (number, case.get(1), case.get(2), case.get(3)),
        tasks,
        events,
        response,
    }
}

fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn bytes(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("'\\x{hex}'::bytea")
}

/// The pgbench script: one transaction with the acceptance's inserts, keyed by a sequence of
/// the bench's own so every transaction writes new rows.
fn script(schema: &str, s: &Shape) -> String {
    let key = format!("'pgbench-' || currval('{schema}.pgbench_key')");
    let (_, deadline, items, body) = &s.case;
    let mut out = String::from("BEGIN;\n");
    out += &format!("SELECT nextval('{schema}.pgbench_key');\n");
    out += &format!(
        "INSERT INTO {schema}.cases (case_number, submission_id, hall_code, window_code, status, accepted_at_ms, promised_deadline, item_codes, body, trace_id) VALUES ({key}, {key}, '640100-DT01', 'W03', 1, 1764979200000, {}, {}, {}, '4bf92f3577b34da6a3ce929d0e0e4736');\n",
        text(deadline),
        text(items),
        bytes(body)
    );
    for (n, (department, item, body)) in s.tasks.iter().enumerate() {
        out += &format!(
            "INSERT INTO {schema}.tasks (task_id, case_number, department, item_code, status, depends_on, body) VALUES ({key} || '-{n}', {key}, {}, {}, 2, '', {});\n",
            text(department),
            text(item),
            bytes(body)
        );
    }
    for (n, (kind, detail)) in s.events.iter().enumerate() {
        out += &format!(
            "INSERT INTO {schema}.case_events (case_number, seq, at_ms, kind, task_id, detail, feed_pos) VALUES ({key}, {}, 1764979200000, {}, '', {}, (pg_current_xact_id()::text::bigint << 20) | {n});\n",
            n + 1,
            text(kind),
            text(detail)
        );
    }
    out += &format!(
        "INSERT INTO {schema}.submissions (submission_id, content_hash, outcome, case_number, response, first_at_ms, last_at_ms) VALUES ({key}, sha256(({key})::bytea), 'accepted', {key}, {}, 1764979200000, 1764979200000);\n",
        bytes(&s.response)
    );
    out += &format!(
        "INSERT INTO {schema}.attempts (submission_id, at_ms, hall_code, window_code, clerk_staff_no, outcome, case_number, detail) VALUES ({key}, 1764979200000, '640100-DT01', 'W03', 'S0001', 'accepted', {key}, '');\n"
    );
    out += "END;\n";
    out
}

/// The pgbench binary: on PATH (Debian's wrapper) or the newest in /usr/lib/postgresql.
fn binary() -> Option<std::path::PathBuf> {
    if Command::new("pgbench").arg("--version").output().is_ok() {
        return Some("pgbench".into());
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|d| d.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// Transactions per second of the acceptance's inserts, `clients` connections for `secs`
/// seconds, in `schema` (migrated by the gateway, holding the cases it accepted). `None` when
/// pgbench is missing or fails, with the reason printed.
pub async fn same_work(url: &str, schema: &str, clients: usize, secs: u64) -> Option<f64> {
    let Some(pgbench) = binary() else {
        println!(
            "pgbench: not found (Debian's postgresql package has it; `make bench` installs it)"
        );
        return None;
    };
    let client = testkit::db::connect().await;
    let shape = shape(&client, schema).await;
    client
        .batch_execute(&format!(
            "CREATE SEQUENCE IF NOT EXISTS {schema}.pgbench_key"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acceptance.sql");
    std::fs::write(&file, script(schema, &shape)).unwrap();
    let (url, password) = testkit::db::split_password(url);
    let mut command = Command::new(pgbench);
    command
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg("-c")
        .arg(clients.to_string())
        .arg("-T")
        .arg(secs.to_string())
        .arg("-f")
        .arg(&file)
        .arg(&url);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    if tps.is_none() {
        println!(
            "pgbench failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "pgbench, the same inserts as one acceptance ({} tasks, {} history entries), {clients} clients: {:.0} tx/s",
        shape.tasks.len(),
        shape.events.len(),
        tps.unwrap_or(0.0)
    );
    tps
}
