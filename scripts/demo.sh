#!/usr/bin/env bash
# The demo: starts the gateway on a fresh SQLite database (its outbox relay publishing to the
# local RabbitMQ under the prefix `yichuang-demo`), runs the three example submissions through
# it with the `yichuang` client commands, and prints the receipts, the notice and how the
# accepted tasks left for the departments' queues.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/debug/yichuang
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="http://127.0.0.1:$port"

cleanup() {
  if [ -n "${gateway_pid:-}" ]; then kill "$gateway_pid" 2>/dev/null || true; wait "$gateway_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }

bold "== catalog check"
"$bin" catalog check config/catalog

bold "== starting the gateway on 127.0.0.1:$port (SQLite in $work)"
sed 's/^prefix = "yichuang"$/prefix = "yichuang-demo"/' config/gateway.toml > "$work/gateway.toml"
YICHUANG_DATA="$work" YICHUANG_LISTEN="127.0.0.1:$port" YICHUANG_LOG_FORMAT=text \
  YICHUANG_CATALOG_DIR="$PWD/config/catalog" YICHUANG_CALENDAR_DIR="$PWD/config/calendar" \
  "$bin" serve --config "$work/gateway.toml" 2> "$work/gateway.log" &
gateway_pid=$!
deadline=$((SECONDS + 30))
until "$bin" case list --server "$server" --page-size 1 >/dev/null 2>&1; do
  if ! kill -0 "$gateway_pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
    echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 1
  fi
  sleep 0.2
done

status=0
for name in kai-canguan qiye-kaiban bdc-deficient; do
  bold "== submit examples/cases/$name.json"
  set +e
  "$bin" case submit --server "$server" --file "examples/cases/$name.json"
  code=$?
  set -e
  case "$name:$code" in
    kai-canguan:0|qiye-kaiban:0) echo "-> accepted (exit 0)" ;;
    bdc-deficient:3) echo "-> not accepted: one-time deficiency notice (exit 3)" ;;
    *) echo "-> unexpected exit code $code" >&2; status=1 ;;
  esac
done

bold "== submit examples/cases/kai-canguan.json again (idempotent: the first answer, replayed)"
"$bin" case submit --server "$server" --file examples/cases/kai-canguan.json | grep -E '"caseNumber"|"replayed"'

bold "== cases accepted at window W05, with the history of the newest"
list=$("$bin" case list --server "$server" --window W05)
echo "$list"
number=$(echo "$list" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cases"][0]["caseNumber"])')
# The outbox relay publishes QY-SL to scjg's queue; the other four wait for its approval.
deadline=$((SECONDS + 15))
until "$bin" case get --server "$server" "$number" | grep -q task-dispatched; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "QY-SL was not published within 15 s (is RabbitMQ up?)" >&2; status=1; break; fi
  sleep 0.2
done
"$bin" case get --server "$server" "$number" | python3 -c "$(cat <<'PY'
import json, sys
answer = json.load(sys.stdin)
for t in answer["case"]["tasks"]:
    waits = ", after " + ", ".join(t["dependsOn"]) if t.get("dependsOn") else ""
    print(f'  task {t["taskId"]} {t["itemCode"]:7} -> {t["department"]:5} {t["status"]:22} due {t["promisedDeadline"]}{waits}')
for e in answer["events"]:
    print(f'  event {e["seq"]:>2} {e["kind"]:20} {e.get("detail", "")}')
PY
)"

bold "== gateway log"
cat "$work/gateway.log"
exit "$status"
