#!/usr/bin/env bash
# The chaos run: the gateway, one adapter process and two simulated department systems (市场监管,
# HTTP/JSON; 消防, SOAP) that do NOT check business serials, so a task submitted twice shows as a
# duplicate at the department instead of being refused. Cases are submitted at a steady rate
# while the gateway and the adapter are killed with SIGKILL and restarted, and RabbitMQ's
# application is stopped and started. Then every accepted case is reconciled:
#
#   accepted   receipts held by the window (a submit that failed in a fault is sent again with
#              the same submission id, and must answer with the same case)
#   ready      cases ready for delivery (every task approved)
#   stranded   accepted cases not ready when the run ends (after the settling time)
#   duplicates serials submitted twice at a department system (from the simulators' counters)
#   lost       stranded cases with a task that has no message in any queue of the run
#
# It fails (exit 1) on any stranded case or duplicate. Short form (`make test`): about two
# minutes; long form (`make chaos`): CASES=600 ROUNDS=10.
# Needs the binaries built and the services started (scripts/services.sh), and root (rabbitmqctl).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=chaos
. scripts/lib.sh
# rabbitmqctl is in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin
need_python

CASES=${CASES:-60}       # cases submitted
RATE=${RATE:-2}          # cases a second
ROUNDS=${ROUNDS:-2}      # fault rounds: each kills the adapter, the gateway and stops the broker
SETTLE=${SETTLE:-180}    # seconds allowed after the last fault for every case to be ready
STORE=${STORE:-sqlite}   # sqlite or postgres

bin="${CARGO_TARGET_DIR:-target}/debug"
for b in yichuang yichuang-adapter yichuang-sim; do
  [ -x "$bin/$b" ] || { echo "chaos: $bin/$b is missing: build the binaries first (cargo build --workspace --bins)" >&2; exit 1; }
done
. target/services.env
work=$(mktemp -d)
vhost="yichuang-chaos-$$"
pids=()
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port); adapter_port=$(free_port); scjg_port=$(free_port); xf_port=$(free_port)
server="http://127.0.0.1:$port"
gateway_pid=""; adapter_pid=""
schema="chaos_$$"

cleanup() {
  sudo_ rabbitmqctl -q start_app >/dev/null 2>&1 || true
  for pid in "${pids[@]}" $gateway_pid $adapter_pid; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  sudo_ rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  if [ "$STORE" = postgres ]; then
    pg_port=${YICHUANG_TEST_PG_URL#*@127.0.0.1:}; pg_port=${pg_port%%/*}
    sudo_ su postgres -c "psql -p $pg_port -d ${YICHUANG_TEST_PG_URL##*/} -q -c 'DROP SCHEMA IF EXISTS $schema CASCADE'" >/dev/null 2>&1 || true
  fi
  # The processes' logs join the suite's, which `make test` scans for personal data.
  if [ -n "${YICHUANG_TEST_LOGS:-}" ]; then
    mkdir -p "$YICHUANG_TEST_LOGS"
    for f in "$work"/*.log; do [ -f "$f" ] && cp "$f" "$YICHUANG_TEST_LOGS/chaos-$STORE-$(basename "$f")"; done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "chaos: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
say() { printf 'chaos: %s\n' "$*"; }

sudo_ rabbitmqctl -q add_vhost "$vhost" >/dev/null
sudo_ rabbitmqctl -q set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"

# Departments that do not check serials, decide in a second, never reject or ask for materials
# (so every case can finish), and fail now and then.
behaviour() { echo "{\"department\": \"$1\", \"decision_delay_ms\": 1000, \"reject\": 0, \"supplement\": 0, \"server_error\": 0.03, \"hang\": 0.01, \"hang_ms\": 3000, \"accept_duplicate_serials\": true}"; }
echo "{\"behaviour\": $(behaviour scjg)}" > "$work/scjg.json"
echo "{\"behaviour\": $(behaviour xf), \"namespace\": \"http://xf.yinchuan.gov.cn/approval\", \"document_name\": \"消防安全检查合格证\"}" > "$work/xf.json"
"$bin/yichuang-sim" http-json --listen "127.0.0.1:$scjg_port" --settings "$work/scjg.json" > "$work/sim-scjg.log" 2>&1 &
pids+=($!)
"$bin/yichuang-sim" soap --listen "127.0.0.1:$xf_port" --settings "$work/xf.json" > "$work/sim-xf.log" 2>&1 &
pids+=($!)
for p in "$scjg_port" "$xf_port"; do # the simulators answer before anything is sent to them
  deadline=$((SECONDS + 30))
  until "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$p/_sim/stats')" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "chaos: the simulator on port $p did not start" >&2; cat "$work"/sim-*.log >&2; exit 1; }
    sleep 0.2
  done
done

mkdir -p "$work/departments"
for d in scjg xf; do
  # Polls every second, short backoff, no maintenance windows; the endpoint is this run's.
  sed -e 's/interval_secs: [0-9]*/interval_secs: 1/' -e '/^  - { from:/d' -e 's/^maintenance:$/maintenance: []/' \
    -e 's/initial_backoff_secs: [0-9]*/initial_backoff_secs: 1/' -e 's/max_backoff_secs: [0-9]*/max_backoff_secs: 4/' \
    -e 's/max_attempts: [0-9]*/max_attempts: 50/' -e 's/requests_per_second: [0-9]*/requests_per_second: 50/' \
    "config/departments/$d.yaml" > "$work/departments/$d.yaml"
done
export SCJG_ENDPOINT="http://127.0.0.1:$scjg_port" XF_ENDPOINT="http://127.0.0.1:$xf_port"
cat > "$work/adapter.toml" <<EOF
departments_dir = "departments"
catalog_dir = "$PWD/config/catalog"
[http]
listen = "127.0.0.1:$adapter_port"
[bus]
url = "$amqp"
retry_delays_secs = [1, 2, 4]
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
cat > "$work/gateway.toml" <<EOF
catalog_dir = "$PWD/config/catalog"
calendar_dir = "$PWD/config/calendar"
[server]
listen = "127.0.0.1:$port"
$store
[log]
format = "text"
level = "warn"
[bus]
url = "$amqp"
retry_delays_secs = [1, 2, 4]
[stall]
after_secs = 30
check_secs = 2
EOF
export SCJG_CLIENT_ID=yichuang SCJG_CLIENT_SECRET=sim-secret YICHUANG_LOG_FORMAT=text

start_gateway() {
  "$bin/yichuang" serve --config "$work/gateway.toml" >> "$work/gateway.log" 2>&1 &
  gateway_pid=$!
  local deadline=$((SECONDS + 60))
  until "$bin/yichuang" case list --server "$server" --page-size 1 >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "chaos: the gateway did not start" >&2; tail -20 "$work/gateway.log" >&2; exit 1; }
    sleep 0.2
  done
}
start_adapter() {
  "$bin/yichuang-adapter" --config "$work/adapter.toml" --department scjg --department xf >> "$work/adapter.log" 2>&1 &
  adapter_pid=$!
}
start_gateway
start_adapter

# The window: CASES kai-canguan cases (SP-JY at 市场监管, XF-JC at 消防), each submitted until it
# has a receipt; its case number is kept.
"$python" - "$work" "$CASES" <<'PY'
import json, sys
base = json.load(open("examples/cases/kai-canguan.json"))
for i in range(int(sys.argv[2])):
    s = dict(base)
    s["submissionId"] = f"chaos-{i:05d}"
    s.pop("submittedAt", None)
    json.dump(s, open(f"{sys.argv[1]}/case-{i}.json", "w"), ensure_ascii=False)
PY
(
  for i in $(seq 0 $((CASES - 1))); do
    for _ in $(seq 1 120); do
      if out=$("$bin/yichuang" case submit --server "$server" --file "$work/case-$i.json" 2>/dev/null); then
        echo "$out" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["receipt"]["caseNumber"])' >> "$work/accepted"
        break
      fi
      sleep 1
    done
    sleep "$("$python" -c "print(1 / $RATE)")"
  done
) &
window=$!

kills=0; restarts=0
for round in $(seq 1 "$ROUNDS"); do
  sleep 5
  kill -9 "$adapter_pid" 2>/dev/null || true; wait "$adapter_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: adapter killed (SIGKILL)"
  sleep 2; start_adapter
  sleep 5
  kill -9 "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; kills=$((kills + 1))
  say "round $round: gateway killed (SIGKILL)"
  sleep 2; start_gateway
  sleep 5
  sudo_ rabbitmqctl -q stop_app >/dev/null; restarts=$((restarts + 1))
  say "round $round: RabbitMQ stopped for 10 s"
  sleep 10
  sudo_ rabbitmqctl -q start_app >/dev/null
  sudo_ rabbitmqctl -q await_startup --timeout 120 >/dev/null
done
wait "$window"
say "all $CASES cases submitted; $kills kills, $restarts broker restarts; settling (up to $SETTLE s)"

ready_count() { # every page of the ready cases
  local n=0 token="" page
  while true; do
    page=$("$bin/yichuang" case list --server "$server" --status CASE_STATUS_READY_FOR_DELIVERY --page-size 500 \
      ${token:+--page-token "$token"} 2>/dev/null) || { echo 0; return; }
    n=$((n + $(echo "$page" | "$python" -c 'import json,sys; print(len(json.load(sys.stdin).get("cases", [])))')))
    token=$(echo "$page" | "$python" -c 'import json,sys; print(json.load(sys.stdin).get("nextPageToken", ""))')
    [ -n "$token" ] || break
  done
  echo "$n"
}
accepted=$(sort -u "$work/accepted" | wc -l)
deadline=$((SECONDS + SETTLE))
while [ "$(ready_count)" -lt "$accepted" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 2; done
ready=$(ready_count)
stranded=$((accepted - ready))
dups() { "$python" -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$1/_sim/stats'))['duplicates'])"; }
duplicates=$(( $(dups "$scjg_port") + $(dups "$xf_port") ))
lost=0
if [ "$stranded" -gt 0 ]; then
  queued=$(sudo_ rabbitmqctl -q list_queues -p "$vhost" messages 2>/dev/null | awk 'NR>1 {s += $1} END {print s + 0}')
  [ "$queued" -eq 0 ] && lost=$stranded
  say "stranded cases (and their tasks):"
  for n in $(sort -u "$work/accepted"); do
    "$bin/yichuang" case get --server "$server" "$n" | "$python" -c '
import json, sys
c = json.load(sys.stdin)["case"]
if c["status"] != "CASE_STATUS_READY_FOR_DELIVERY":
    print("   ", c["caseNumber"], c["status"], [(t["taskId"][-2:], t["status"]) for t in c["tasks"]])'
  done
fi
printf 'chaos ledger (%s): accepted %d, ready %d, stranded %d, duplicates at departments %d, lost %d; %d kills, %d broker restarts\n' \
  "$STORE" "$accepted" "$ready" "$stranded" "$duplicates" "$lost" "$kills" "$restarts"
if [ "$accepted" -lt "$CASES" ] || [ "$stranded" -gt 0 ] || [ "$duplicates" -gt 0 ]; then
  KEEP=1
  exit 1
fi
