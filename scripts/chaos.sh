#!/usr/bin/env bash
# The chaos run: the gateway, one adapter process and the seven simulated department systems, one
# of each kind (HTTP/JSON, form-POST XML, SOAP ×2, 前置库 exchange tables ×2, a clerk's worklist),
# none of which deduplicates by business serial, so a task submitted twice shows as a duplicate
# at the department instead of being refused. The bus is a three-node RabbitMQ cluster on
# loopback (scripts/cluster.sh) with the quorum queues replicated over it; the gateway and the
# adapter are given all three nodes. The hall (scripts/chaos_window.py) submits cases at a steady
# rate, hands in supplements and delivers what is ready, while each fault round
#   - kills the adapter and the gateway with SIGKILL and starts them again,
#   - kills the RabbitMQ node leading a department's task queue with SIGKILL, then restarts it,
#   - stops another node's RabbitMQ application for 8 s,
#   - every third round, restarts PostgreSQL (the gateway's store on STORE=postgres, and the
#     前置库 databases of two departments either way),
# and the simulated systems fail now and then (502s, hangs). The reporter reports every case's
# stage records to the simulated provincial platform (over its HTTP interface on SQLite runs,
# through its exchange tables in PostgreSQL on PostgreSQL runs) and is killed every round too;
# at the end each day's reconciliation must find the platform holding every record, each taken
# once (scripts/chaos_report.py). The notifier sends the SMS notices of the applicants who
# consented (every other one) to the simulated SMS platform, and is killed every round too; at
# the end every notice due must be there, and none for the others (scripts/chaos_notify.py).
# After the last fault, every case
# must reach delivery within SETTLE seconds; then scripts/chaos_ledger.py reconciles each case:
# accepted, decided, ready, delivered, stranded, duplicates at the departments, duplicate status
# events (history and platform push), unpushed events and lost (a stranded task with no message
# anywhere). It fails (exit 1) on anything stranded, duplicated, unpushed or lost.
#
# Short form (`make test`, about three minutes): CASES=90 ROUNDS=2. Long form (`make chaos`):
# CASES=2000 RATE=4 ROUNDS=10, on SQLite and on PostgreSQL.
# Needs the binaries built and the services started (scripts/services.sh), and root (rabbitmqctl).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=chaos
. scripts/lib.sh
# rabbitmqctl and pg_ctlcluster are in /usr/sbin and /usr/bin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
need_python

CASES=${CASES:-90}       # cases submitted
RATE=${RATE:-3}          # cases a second
ROUNDS=${ROUNDS:-2}      # fault rounds
SETTLE=${SETTLE:-240}    # seconds allowed after the last fault for every case to be delivered
STORE=${STORE:-sqlite}   # sqlite or postgres

bin="${CARGO_TARGET_DIR:-target}/debug"
for b in yichuang yichuang-adapter yichuang-sim yichuang-dev-certs; do
  [ -x "$bin/$b" ] || { echo "chaos: $bin/$b is missing: build the binaries first (cargo build --workspace --bins)" >&2; exit 1; }
done
. target/services.env
pg_port=${YICHUANG_TEST_PG_URL#*@127.0.0.1:}; pg_port=${pg_port%%/*}
read -r pg_version pg_cluster _ < <(pg_lsclusters --no-header | head -n 1)
work=$(mktemp -d)
vhost="yichuang-chaos-$$"
dept_db="yichuang_chaos_$$"
schema="chaos_$$"
pids=()
mapfile -t free < <(free_ports 13)
port=${free[0]}; adapter_port=${free[1]}; platform_port=${free[2]}
records_port=${free[3]}; reporter_port=${free[4]}
sms_port=${free[5]}; notifier_port=${free[6]}
server="https://127.0.0.1:$port"
gateway_pid=""; adapter_pid=""; window_pid=""; reporter_pid=""; notifier_pid=""
psql_() { sudo_ su postgres -c "PGOPTIONS='-c client_min_messages=warning' psql -p $pg_port -q -v ON_ERROR_STOP=1 ${2:+-d $2} -c \"$1\"" >/dev/null; }
say() { printf 'chaos: %s\n' "$*"; }

# rabbitmqctl against the first node that is running (any node answers for the cluster).
nodes=()
ctl() { sudo_ rabbitmqctl -q -n "${nodes[$(( $(bash scripts/cluster.sh running | awk '{print $1}') - 1 ))]}" "$@"; }

cleanup() {
  for pid in "${pids[@]}" $gateway_pid $adapter_pid $window_pid $reporter_pid $notifier_pid; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${#nodes[@]}" -gt 0 ]; then
    for n in 1 2 3; do bash scripts/cluster.sh restart "$n" >/dev/null 2>&1 || true; done
    ctl delete_vhost "$vhost" >/dev/null 2>&1 || true
  fi
  sudo_ pg_ctlcluster "$pg_version" "$pg_cluster" start >/dev/null 2>&1 || true
  psql_ "DROP DATABASE IF EXISTS $dept_db" 2>/dev/null || true
  if [ "$STORE" = postgres ]; then
    pg_db=${YICHUANG_TEST_PG_URL##*/}
    psql_ "DROP SCHEMA IF EXISTS $schema CASCADE" "${pg_db%%\?*}" 2>/dev/null || true
  fi
  [ "${CLUSTER_KEEP:-0}" = 1 ] || bash scripts/cluster.sh stop >/dev/null 2>&1 || true
  # The processes' logs join the suite's, which `make test` scans for personal data.
  if [ -n "${YICHUANG_TEST_LOGS:-}" ]; then
    mkdir -p "$YICHUANG_TEST_LOGS"
    for f in "$work"/*.log; do [ -f "$f" ] && cp "$f" "$YICHUANG_TEST_LOGS/chaos-$STORE-$(basename "$f")"; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "chaos: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
bash scripts/cluster.sh start
. target/cluster.env
read -r -a nodes <<< "$CLUSTER_NODES"
read -r -a amqp_ports <<< "$CLUSTER_AMQP_PORTS"
read -r -a mgmt_ports <<< "$CLUSTER_MGMT_PORTS"

ctl add_vhost "$vhost" >/dev/null
ctl set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp() { echo "amqp://guest:guest@127.0.0.1:${amqp_ports[$1]}/$vhost"; }
psql_ "DROP DATABASE IF EXISTS $dept_db"
psql_ "CREATE DATABASE $dept_db OWNER yichuang ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"
dept_pg="postgres://yichuang:yichuang@127.0.0.1:$pg_port/$dept_db"

# Departments that do not check serials, decide in a second, never reject, ask for materials
# now and then, and fail now and then.
behaviour() { echo "{\"department\": \"$1\", \"decision_delay_ms\": 1000, \"reject\": 0, \"supplement\": 0.1, \"server_error\": 0.03, \"hang\": 0.01, \"hang_ms\": 3000, \"accept_duplicate_serials\": true}"; }
echo "{\"behaviour\": $(behaviour scjg)}" > "$work/scjg.json"
echo "{\"behaviour\": $(behaviour sw), \"sign_key\": \"chaos-sign-key\"}" > "$work/sw.json"
echo "{\"behaviour\": $(behaviour ga)}" > "$work/ga.json"
echo "{\"behaviour\": $(behaviour xf), \"namespace\": \"http://xf.yinchuan.gov.cn/approval\", \"document_name\": \"消防安全检查合格证\"}" > "$work/xf.json"
echo "{\"behaviour\": $(behaviour rs), \"schema\": \"qzk\", \"tick_ms\": 500}" > "$work/rs.json"
echo "{\"behaviour\": $(behaviour zrzy), \"schema\": \"bdc_qzk\", \"tick_ms\": 500, \"compact_dates\": true,
  \"inbound_table\": \"bdc_sqxx\", \"result_table\": \"bdc_bjxx\", \"supplement_table\": \"bdc_bzxx\",
  \"fields\": [\"tyslbh\", \"sxbm\", \"sxmc\", \"qlrmc\", \"qlrzjh\", \"lxdh\", \"slsj\"], \"required\": [\"qlrmc\"],
  \"licence_name\": \"不动产权证书\"}" > "$work/zrzy.json"
declare -A sim_port
n=7; for d in scjg sw ga xf rs zrzy; do sim_port[$d]=${free[$n]}; n=$((n + 1)); done
sim() { # sim DEPT KIND ARGS...
  local d=$1 kind=$2; shift 2
  "$bin/yichuang-sim" "$kind" "$@" --settings "$work/$d.json" > "$work/sim-$d.log" 2>&1 &
  pids+=($!)
}
sim scjg http-json --listen "127.0.0.1:${sim_port[scjg]}"
sim sw form-xml --listen "127.0.0.1:${sim_port[sw]}"
sim ga soap --listen "127.0.0.1:${sim_port[ga]}"
sim xf soap --listen "127.0.0.1:${sim_port[xf]}"
sim rs exchange-db --url "$dept_pg" --stats-listen "127.0.0.1:${sim_port[rs]}"
sim zrzy exchange-db --url "$dept_pg" --stats-listen "127.0.0.1:${sim_port[zrzy]}"
stats_urls=()
for d in scjg sw ga xf rs zrzy; do # the simulators answer before anything is sent to them
  url="http://127.0.0.1:${sim_port[$d]}/_sim/stats"; stats_urls+=("$d=$url")
  deadline=$((SECONDS + 30))
  until "$python" -c "import urllib.request; urllib.request.urlopen('$url')" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "chaos: the $d simulator did not start" >&2; cat "$work/sim-$d.log" >&2; exit 1; }
    sleep 0.2
  done
done
"$python" scripts/chaos_platform.py "$platform_port" "$work/platform" chaos-platform-secret &
pids+=($!)
# The provincial platform's case-record exchange, for the reporter.
if [ "$STORE" = postgres ]; then
  exchange=", \"exchange\": {\"url\": \"$dept_pg\", \"schema\": \"gdbs_qzk\", \"poll_ms\": 300}"
  transport="kind = \"tables\"
url = \"$dept_pg\"
schema = \"gdbs_qzk\""
else
  exchange=""
  transport="kind = \"http\"
record_url = \"http://127.0.0.1:$records_port/gdbs/api/record\"
query_url = \"http://127.0.0.1:$records_port/gdbs/api/query\"
app_id = \"yichuang\"
secret = { env = \"CHAOS_PLATFORM_SECRET\" }"
fi
echo "{\"regions\": [\"640100\"], \"item_code\": \"implementation_code\"$exchange}" > "$work/records-platform.json"
"$bin/yichuang-sim" platform --listen "127.0.0.1:$records_port" --settings "$work/records-platform.json" > "$work/sim-platform.log" 2>&1 &
pids+=($!)
export CHAOS_PLATFORM_SECRET=platform-secret
# The province's SMS platform: busy now and then, throttling above its rate.
echo '{"busy_share": 0.05, "per_second": 30}' > "$work/sms.json"
"$bin/yichuang-sim" sms --listen "127.0.0.1:$sms_port" --settings "$work/sms.json" > "$work/sim-sms.log" 2>&1 &
pids+=($!)

mkdir -p "$work/departments"
for f in config/departments/*.yaml; do
  # Polls every second, short backoff, no maintenance windows; the endpoints are this run's.
  sed -e 's/interval_secs: [0-9]*/interval_secs: 1/' -e '/^  - { from:/d' -e 's/^maintenance:$/maintenance: []/' \
    -e 's/initial_backoff_secs: [0-9]*/initial_backoff_secs: 1/' -e 's/max_backoff_secs: [0-9]*/max_backoff_secs: 4/' \
    -e 's/max_attempts: [0-9]*/max_attempts: 50/' -e 's/requests_per_second: [0-9]*/requests_per_second: 50/' \
    "$f" > "$work/departments/$(basename "$f")"
done
export SCJG_ENDPOINT="http://127.0.0.1:${sim_port[scjg]}" SW_ENDPOINT="http://127.0.0.1:${sim_port[sw]}"
export GA_ENDPOINT="http://127.0.0.1:${sim_port[ga]}" XF_ENDPOINT="http://127.0.0.1:${sim_port[xf]}"
export SCJG_CLIENT_ID=yichuang SCJG_CLIENT_SECRET=sim-secret
export SW_APP_ID=yichuang SW_APP_SECRET=sim-secret SW_SIGN_KEY=chaos-sign-key
export RS_DB_URL="postgres://yichuang@127.0.0.1:$pg_port/$dept_db" RS_DB_PASSWORD=yichuang
export ZRZY_DB_URL="postgres://yichuang@127.0.0.1:$pg_port/$dept_db" ZRZY_DB_PASSWORD=yichuang
export GJJ_WORKLIST="$work/gjj-worklist.db" YICHUANG_LOG_FORMAT=text
# Every process is given the three nodes; each starts at a different one.
bus() { # bus FIRST-NODE-INDEX
  local a=$1 b=$(( ($1 + 1) % 3 )) c=$(( ($1 + 2) % 3 ))
  cat <<EOF
[bus]
url = "$(amqp "$a")"
nodes = ["$(amqp "$b")", "$(amqp "$c")"]
management_url = "http://127.0.0.1:${mgmt_ports[0]}"
retry_delays_secs = [1, 2, 4]
EOF
}
cat > "$work/adapter.toml" <<EOF
departments_dir = "departments"
catalog_dir = "$PWD/config/catalog"
[http]
listen = "127.0.0.1:$adapter_port"
$(bus 1)
[log]
format = "text"
level = "warn"
EOF
if [ "$STORE" = postgres ]; then
  store="[store]
kind = \"postgres\"
url = \"$YICHUANG_TEST_PG_URL\"
schema = \"$schema\"
pool_size = 8"
else
  store="[store]
kind = \"sqlite\"
path = \"$work/yichuang.db\""
fi
# The gateway serves TLS with client certificates, as deployed; the hall's commands call it as
# the hall's window system.
"$bin/yichuang-dev-certs" "$work/tls" --client window=urn:yichuang:window:640100-DT01 \
  --client reporter=urn:yichuang:platform --client notifier=urn:yichuang:notifier >/dev/null
export YICHUANG_CA="$work/tls/ca.pem" YICHUANG_CERT="$work/tls/window.pem" YICHUANG_KEY="$work/tls/window-key.pem"
cat > "$work/gateway.toml" <<EOF
catalog_dir = "$PWD/config/catalog"
calendar_dir = "$PWD/config/calendar"
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:0"
[server.tls]
cert = "$work/tls/server.pem"
key = "$work/tls/server-key.pem"
client_ca = "$work/tls/ca.pem"
$store
[log]
format = "text"
level = "warn"
$(bus 0)
report = true
notify = true
# Results are taken only from each department's listed RabbitMQ user: the adapter's (guest here).
[bus.department_users]
$(for d in scjg sw ga xf rs zrzy gjj; do echo "$d = \"guest\""; done)
[platform]
push_url = "http://127.0.0.1:$platform_port/events"
secret = "chaos-platform-secret"
timeout_secs = 5
[stall]
after_secs = 30
check_secs = 2
EOF
cat > "$work/reporter.toml" <<EOF
specification = "$PWD/config/report/gdbs.yaml"
ledger = "$work/reporter.db"
calendar_dir = "$PWD/config/calendar"
[gateway]
url = "$server"
ca_file = "$work/tls/ca.pem"
client_cert = "$work/tls/reporter.pem"
client_key = "$work/tls/reporter-key.pem"
$(bus 2)
[transport]
$transport
[http]
listen = "127.0.0.1:$reporter_port"
[log]
format = "text"
level = "warn"
EOF
sed -e "s|^ledger = .*|ledger = \"$work/notifier.db\"|" -e 's|^hours = .*|hours = "00:00-24:00"|' \
    -e "s|^url = \"\${YICHUANG_SERVER.*|url = \"$server\"|" -e "s|^ca_file = \"\${YICHUANG_CA:.*|ca_file = \"$work/tls/ca.pem\"|" \
    -e "s|^client_cert = .*|client_cert = \"$work/tls/notifier.pem\"|" -e "s|^client_key = .*|client_key = \"$work/tls/notifier-key.pem\"|" \
    -e "s|^url = \"\${YICHUANG_SMS_URL.*|url = \"http://127.0.0.1:$sms_port/sms/send\"|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$notifier_port\"|" -e 's|^format = "\${YICHUANG_LOG_FORMAT.*|format = "text"|' \
    -e '/^\[bus\]$/,/^prefix = /d' config/notifier.toml > "$work/notifier.toml"
bus 1 >> "$work/notifier.toml"
export YICHUANG_SMS_SECRET=sms-secret
# The topology and its policies, before any fault.
"$bin/yichuang" bus declare --config "$work/gateway.toml" > /dev/null

start_gateway() {
  "$bin/yichuang" serve --config "$work/gateway.toml" >> "$work/gateway.log" 2>&1 &
  gateway_pid=$!
  local deadline=$((SECONDS + 90))
  until "$bin/yichuang" case list --server "$server" --page-size 1 >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "chaos: the gateway did not start" >&2; tail -20 "$work/gateway.log" >&2; exit 1; }
    sleep 0.2
  done
}
start_adapter() {
  local deps=(); for d in scjg sw ga xf rs zrzy gjj; do deps+=(--department "$d"); done
  "$bin/yichuang-adapter" --config "$work/adapter.toml" "${deps[@]}" >> "$work/adapter.log" 2>&1 &
  adapter_pid=$!
}
start_reporter() {
  "$bin/yichuang-adapter" report run --config "$work/reporter.toml" >> "$work/reporter.log" 2>&1 &
  reporter_pid=$!
}
start_notifier() {
  "$bin/yichuang-adapter" notify run --config "$work/notifier.toml" >> "$work/notifier.log" 2>&1 &
  notifier_pid=$!
}
start_gateway
start_adapter
start_reporter
start_notifier
day_first=$(TZ=Asia/Shanghai date +%F)

"$python" scripts/chaos_window.py "$work" "$bin" "$server" "$CASES" "$RATE" 2> "$work/window.log" &
window_pid=$!

kills=0; node_kills=0; node_stops=0; pg_restarts=0
queues=(scjg sw ga xf rs zrzy gjj)
for round in $(seq 1 "$ROUNDS"); do
  sleep 4
  kill -9 "$adapter_pid" 2>/dev/null || true; wait "$adapter_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: adapter killed (SIGKILL)"
  sleep 2; start_adapter
  sleep 4
  kill -9 "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: gateway killed (SIGKILL)"
  sleep 2; start_gateway
  kill -9 "$reporter_pid" 2>/dev/null || true; wait "$reporter_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: reporter killed (SIGKILL)"
  sleep 2; start_reporter
  kill -9 "$notifier_pid" 2>/dev/null || true; wait "$notifier_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: notifier killed (SIGKILL)"
  sleep 1; start_notifier
  sleep 2
  # The node leading a department's task queue (a different department each round).
  queue="yichuang.tasks.${queues[$(( (round - 1) % ${#queues[@]} ))]}"
  if leader=$(bash scripts/cluster.sh leader "$vhost" "$queue"); then
    what="leader of $queue"
  else
    leader=$(( (round - 1) % 3 + 1 )); what="its leader could not be told"
  fi
  bash scripts/cluster.sh kill "$leader"; node_kills=$((node_kills + 1))
  say "round $round: RabbitMQ node $leader ($what) killed (SIGKILL)"
  sleep 8
  bash scripts/cluster.sh restart "$leader"
  sleep 4
  other=$(( leader % 3 + 1 ))
  sudo_ rabbitmqctl -q -n "${nodes[$((other - 1))]}" stop_app >/dev/null; node_stops=$((node_stops + 1))
  say "round $round: RabbitMQ node $other stopped for 8 s"
  sleep 8
  sudo_ rabbitmqctl -q -n "${nodes[$((other - 1))]}" start_app >/dev/null
  sudo_ rabbitmqctl -q -n "${nodes[$((other - 1))]}" await_startup --timeout 120 >/dev/null
  if [ $((round % 3)) = 1 ]; then
    sudo_ pg_ctlcluster "$pg_version" "$pg_cluster" restart -m fast; pg_restarts=$((pg_restarts + 1))
    say "round $round: PostgreSQL restarted"
  fi
done
say "faults done: $kills process kills, $node_kills node kills and $node_stops node stops, $pg_restarts PostgreSQL restarts; waiting for the window"
until [ -f "$work/submitted" ]; do
  kill -0 "$window_pid" 2>/dev/null || { echo "chaos: the window ended early" >&2; cat "$work/window.log" >&2; exit 1; }
  sleep 1
done
say "all $CASES cases submitted; settling (up to $SETTLE s)"

delivered_count() {
  "$python" - "$bin" "$server" <<'PY'
import json, subprocess, sys
n, token = 0, ""
while True:
    args = [sys.argv[1] + "/yichuang", "case", "list", "--server", sys.argv[2], "--status",
            "CASE_STATUS_DELIVERED", "--page-size", "500"] + (["--page-token", token] if token else [])
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode:
        print(0); sys.exit()
    page = json.loads(p.stdout)
    n += len(page.get("cases", []))
    token = page.get("nextPageToken", "")
    if not token:
        print(n); sys.exit()
PY
}
accepted=$(awk '{print $2}' "$work/accepted" | sort -u | wc -l)
deadline=$((SECONDS + SETTLE))
while [ "$(delivered_count)" -lt "$accepted" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 3; done
touch "$work/stop"
wait "$window_pid" || true
window_pid=""
ctl list_queues -p "$vhost" messages 2>/dev/null | awk '{s += $1} END {print s + 0}' > "$work/queued"
say "$kills process kills (SIGKILL), $node_kills RabbitMQ node kills (SIGKILL), $node_stops node stops, $pg_restarts PostgreSQL restarts"
failed=0
"$python" scripts/chaos_ledger.py "$work" "$bin" "$server" "$STORE" "$CASES" "${stats_urls[@]}" || failed=1
days=("$day_first"); day_last=$(TZ=Asia/Shanghai date +%F)
[ "$day_last" = "$day_first" ] || days+=("$day_last")
"$python" scripts/chaos_report.py "$bin" "$work/reporter.toml" "http://127.0.0.1:$records_port" "$STORE" "${days[@]}" || failed=1
"$python" scripts/chaos_notify.py "$work" "http://127.0.0.1:$sms_port" "http://127.0.0.1:$notifier_port/status" "$STORE" || failed=1
if [ "$failed" = 1 ]; then
  KEEP=1
  exit 1
fi
