#!/usr/bin/env bash
# The demo, end to end: a government service hall's comprehensive window submits applications to
# the gateway; the gateway fans each case out over RabbitMQ to the departments; one adapter
# process connects the seven departments' legacy systems (simulated here, one of each kind the
# reform meets: HTTP/JSON, form-POST XML in GBK, SOAP, 前置库 exchange tables in PostgreSQL, and a
# clerk re-keying cases by hand); results come back to the gateway, and every status change is
# printed as it happens. The applicants evaluate their delivered cases (好差评), and the reporter
# reports every case's stages and evaluations to the province's one-network platform (simulated,
# strict about its exchange specification), then reconciles the day. Everything runs in a
# RabbitMQ vhost and a PostgreSQL database of the demo's own, removed at the end.
# Needs the binaries built and the services started (`make demo` does both: scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=demo
. scripts/lib.sh
need_python

bin="${CARGO_TARGET_DIR:-target}/debug"
if [ ! -f target/services.env ]; then
  echo "demo: target/services.env is missing: run \`make demo\` (scripts/services.sh starts PostgreSQL and RabbitMQ)" >&2
  exit 1
fi
. target/services.env
# The PostgreSQL cluster's port, as scripts/services.sh found it.
pg_port=${YICHUANG_TEST_PG_URL#*@127.0.0.1:}; pg_port=${pg_port%%/*}
work=$(mktemp -d)
vhost="yichuang-demo-$$"
# The adapter's own RabbitMQ user, made by `yichuang bus users` with only what it needs.
adapter_user="yichuang-demo-adapter-$$"
adapter_password="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# The reporter's, allowed only to consume its queue.
reporter_user="yichuang-demo-reporter-$$"
reporter_password="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
# The notifier's, allowed only to consume its queue.
notifier_user="yichuang-demo-notifier-$$"
notifier_password="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
pids=()
mapfile -t free < <(free_ports 9)
port=${free[0]}
adapter_port=${free[1]}
metrics_port=${free[2]}
platform_port=${free[3]}
reporter_port=${free[4]}
sms_port=${free[5]}
hotline_port=${free[6]}
notifier_port=${free[7]}
admin_port=${free[8]}
server="https://127.0.0.1:$port"
psql_() { sudo_ su postgres -c "PGOPTIONS='-c client_min_messages=warning' psql -p $pg_port -q -v ON_ERROR_STOP=1 -c \"$1\"" >/dev/null; }

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  sudo_ rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
  sudo_ rabbitmqctl -q delete_user "$adapter_user" >/dev/null 2>&1 || true
  sudo_ rabbitmqctl -q delete_user "$reporter_user" >/dev/null 2>&1 || true
  sudo_ rabbitmqctl -q delete_user "$notifier_user" >/dev/null 2>&1 || true
  psql_ "DROP DATABASE IF EXISTS yichuang_demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
start() { # start NAME COMMAND...: runs in the background, output to $work/NAME.log
  local name=$1; shift
  "$@" > "$work/$name.log" 2>&1 &
  pids+=($!)
}

bold "== the acceptance list (受理清单)"
"$bin/yichuang" catalog check config/catalog

bold "== a RabbitMQ vhost ($vhost) and a PostgreSQL database (yichuang_demo) of the demo's own"
sudo_ rabbitmqctl -q add_vhost "$vhost" >/dev/null
sudo_ rabbitmqctl -q set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
# AMQPS with the development CA scripts/services.sh installed for RabbitMQ (docs/tls.md).
if [ -n "${YICHUANG_TEST_AMQP_CA:-}" ]; then
  amqp="amqps://guest:guest@127.0.0.1:5671/$vhost" amqp_port=5671
else
  amqp="amqp://guest:guest@127.0.0.1:5672/$vhost" amqp_port=5672
fi
export YICHUANG_AMQP_CA="${YICHUANG_TEST_AMQP_CA:-}"
psql_ "DROP DATABASE IF EXISTS yichuang_demo"
psql_ "CREATE DATABASE yichuang_demo OWNER yichuang ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"
pg="postgres://yichuang:yichuang@127.0.0.1:$pg_port/yichuang_demo?sslmode=require"

bold "== the departments' legacy systems (simulated: they decide in a few seconds, ask for more materials now and then, and answer 502 or hang)"
behaviour() { # behaviour DEPT: no rejections, so every case can finish; a fifth ask for materials (补正) first; some faults
  echo "{\"department\": \"$1\", \"decision_delay_ms\": 2500, \"reject\": 0, \"supplement\": 0.2, \"server_error\": 0.05, \"hang\": 0.02, \"hang_ms\": 12000}"
}
echo "{\"behaviour\": $(behaviour scjg)}" > "$work/scjg.json"
echo "{\"behaviour\": $(behaviour sw), \"sign_key\": \"demo-sign-key\"}" > "$work/sw.json"
echo "{\"behaviour\": $(behaviour ga)}" > "$work/ga.json"
echo "{\"behaviour\": $(behaviour xf), \"namespace\": \"http://xf.yinchuan.gov.cn/approval\", \"document_name\": \"消防安全检查合格证\"}" > "$work/xf.json"
echo "{\"behaviour\": $(behaviour rs), \"schema\": \"qzk\", \"tick_ms\": 500}" > "$work/rs.json"
echo "{\"behaviour\": $(behaviour zrzy), \"schema\": \"bdc_qzk\", \"tick_ms\": 500, \"compact_dates\": true,
  \"inbound_table\": \"bdc_sqxx\", \"result_table\": \"bdc_bjxx\", \"supplement_table\": \"bdc_bzxx\",
  \"fields\": [\"tyslbh\", \"sxbm\", \"sxmc\", \"qlrmc\", \"qlrzjh\", \"lxdh\", \"slsj\"], \"required\": [\"qlrmc\"],
  \"licence_name\": \"不动产权证书\"}" > "$work/zrzy.json"
start sim-scjg "$bin/yichuang-sim" http-json --listen 127.0.0.1:18081 --settings "$work/scjg.json"
start sim-sw "$bin/yichuang-sim" form-xml --listen 127.0.0.1:18082 --settings "$work/sw.json"
start sim-ga "$bin/yichuang-sim" soap --listen 127.0.0.1:18083 --settings "$work/ga.json"
start sim-xf "$bin/yichuang-sim" soap --listen 127.0.0.1:18084 --settings "$work/xf.json"
start sim-rs "$bin/yichuang-sim" exchange-db --url "$pg" --settings "$work/rs.json"
start sim-zrzy "$bin/yichuang-sim" exchange-db --url "$pg" --settings "$work/zrzy.json"
# The province's one-network platform: its case-record exchange (EX_GDBS/EX_HCP), signed HTTP.
echo '{"regions": ["640100"], "item_code": "implementation_code"}' > "$work/platform.json"
start sim-platform "$bin/yichuang-sim" platform --listen "127.0.0.1:$platform_port" --settings "$work/platform.json"
# The province's SMS platform (短信平台): MD5-signed form POST, deduplicating by msgid.
start sim-sms "$bin/yichuang-sim" sms --listen "127.0.0.1:$sms_port"
# The 12345 hotline's reply interface (工单反馈): signed replies to complaints, 503 now and then.
start sim-hotline "$bin/yichuang-sim" hotline --listen "127.0.0.1:$hotline_port" --secret hotline-demo-secret
cat <<'EOF'
  scjg 市场监管   HTTP/JSON with an expiring token      127.0.0.1:18081
  sw   税务       form-POST XML, GBK answers, signed    127.0.0.1:18082
  ga   公安       SOAP 1.1                              127.0.0.1:18083
  xf   消防       SOAP 1.1                              127.0.0.1:18084
  rs   人社       前置库 tables qzk.*      in PostgreSQL yichuang_demo
  zrzy 自然资源   前置库 tables bdc_qzk.*  in PostgreSQL yichuang_demo
  gjj  公积金     a clerk's worklist (this script plays the clerk)
EOF
echo "  and the provincial one-network platform's case-record exchange   127.0.0.1:$platform_port"

bold "== the gateway (gRPC on $server, SQLite) and one adapter process for the seven departments"
mkdir -p "$work/departments"
for f in config/departments/*.yaml; do
  # The demo polls every 2 s instead of every minute or two, and has no maintenance windows.
  sed -e 's/interval_secs: [0-9]*/interval_secs: 2/' -e '/^  - { from:/d' -e 's/^maintenance:$/maintenance: []/' \
    "$f" > "$work/departments/$(basename "$f")"
done
cat > "$work/adapter.toml" <<EOF
departments_dir = "departments"
catalog_dir = "$PWD/config/catalog"
[http]
listen = "127.0.0.1:$adapter_port"
[bus]
url = "${amqp%%://*}://$adapter_user:$adapter_password@127.0.0.1:${amqp_port}/$vhost"
ca_file = "$YICHUANG_AMQP_CA"
[log]
format = "text"
level = "warn"
EOF
export SCJG_CLIENT_ID=yichuang SCJG_CLIENT_SECRET=sim-secret
export SW_APP_ID=yichuang SW_APP_SECRET=sim-secret SW_SIGN_KEY=demo-sign-key
export RS_DB_URL="postgres://yichuang@127.0.0.1:$pg_port/yichuang_demo?sslmode=require" RS_DB_PASSWORD=yichuang
export ZRZY_DB_URL="postgres://yichuang@127.0.0.1:$pg_port/yichuang_demo?sslmode=require" ZRZY_DB_PASSWORD=yichuang
export GJJ_WORKLIST="$work/gjj-worklist.db"
export YICHUANG_AMQP_URL="$amqp" YICHUANG_DATA="$work" YICHUANG_LISTEN="127.0.0.1:$port" YICHUANG_METRICS_LISTEN="127.0.0.1:$metrics_port" YICHUANG_LOG_FORMAT=text
export YICHUANG_CATALOG_DIR="$PWD/config/catalog" YICHUANG_CALENDAR_DIR="$PWD/config/calendar"
# The path users take is the secure one: development certificates from a throw-away CA (never
# for production; docs/security.md), the gateway on TLS checking client certificates, and
# the commands below calling it as the hall's window system.
"$bin/yichuang-dev-certs" "$work/tls" \
  --client window=urn:yichuang:window:640100-DT01 \
  --client operator=urn:yichuang:operator \
  --client reporter=urn:yichuang:platform \
  --client notifier=urn:yichuang:notifier \
  --client hotline=urn:yichuang:hotline >/dev/null
export YICHUANG_TLS_CERT="$work/tls/server.pem" YICHUANG_TLS_KEY="$work/tls/server-key.pem" YICHUANG_TLS_CLIENT_CA="$work/tls/ca.pem"
export YICHUANG_ADMIN_LISTEN="127.0.0.1:$admin_port"
export YICHUANG_CA="$work/tls/ca.pem" YICHUANG_CERT="$work/tls/window.pem" YICHUANG_KEY="$work/tls/window-key.pem"
cp config/gateway.toml "$work/gateway.toml"
# The reporter's queue on the events exchange, and its user (docs/reporting.md).
export YICHUANG_BUS_REPORT=true YICHUANG_BUS_REPORT_USER="$reporter_user"
# The notifier's queue and its user (docs/notifications.md).
export YICHUANG_BUS_NOTIFY=true YICHUANG_BUS_NOTIFY_USER="$notifier_user"
# Where complaints' replies go back to the 12345 hotline (docs/hotline.md).
export YICHUANG_HOTLINE_REPLY_URL="http://127.0.0.1:$hotline_port/reply" YICHUANG_HOTLINE_SECRET=hotline-demo-secret
# Results are taken only from each department's listed RabbitMQ user: the adapter's, which
# `yichuang bus users` makes (read its task queues, write results, configure nothing).
users=""; for d in scjg sw ga xf rs zrzy gjj; do users+="$d = \"$adapter_user\"\\n"; done
sed -i "s/^\[bus\.department_users\]\$/&\\n$users/" "$work/gateway.toml"
# The operations console (docs/console.md) on the internal listener: it asks the adapter for its
# circuit breakers and failed calls, and takes operators who sign in with a token of the demo's
# own issuer (a browser without the operator's client certificate).
sed -i "s|^adapters = \[\]\$|adapters = [\"http://127.0.0.1:$adapter_port/status\"]|" "$work/gateway.toml"
jwt_secret="demo-$(od -An -N16 -tx8 /dev/urandom | tr -d ' \n')"
printf '\n[auth.jwt]\nissuer = "yichuang-demo"\naudience = "yichuang"\n[[auth.jwt.keys]]\nalgorithm = "HS256"\nsecret = "%s"\n' \
  "$jwt_secret" >> "$work/gateway.toml"
# An operator's token for an hour (HS256, made here with Python's standard library).
"$python" -c '
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "demo-operator", "role": "operator", "iss": "yichuang-demo",
                       "aud": "yichuang", "exp": int(time.time()) + 3600}).encode())
sig = b64(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")' "$jwt_secret" > "$work/operator.token"
password_var="YICHUANG_BUS_PASSWORD_$(printf %s "$adapter_user" | tr 'a-z-' 'A-Z_')"
reporter_password_var="YICHUANG_BUS_PASSWORD_$(printf %s "$reporter_user" | tr 'a-z-' 'A-Z_')"
notifier_password_var="YICHUANG_BUS_PASSWORD_$(printf %s "$notifier_user" | tr 'a-z-' 'A-Z_')"
env "$password_var=$adapter_password" "$reporter_password_var=$reporter_password" "$notifier_password_var=$notifier_password" \
  "$bin/yichuang" bus users --config "$work/gateway.toml" | sed 's/^/  /'
start gateway "$bin/yichuang" serve --config "$work/gateway.toml"
deadline=$((SECONDS + 30))
until "$bin/yichuang" case list --server "$server" --page-size 1 >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "the gateway did not start:" >&2; cat "$work/gateway.log" >&2; exit 1; fi
  sleep 0.2
done
deps=(); for d in scjg sw ga xf rs zrzy gjj; do deps+=(--department "$d"); done
start adapter "$bin/yichuang-adapter" --config "$work/adapter.toml" "${deps[@]}"
deadline=$((SECONDS + 30))
until "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$adapter_port/readyz')" 2>/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "the adapter did not become ready:" >&2; cat "$work/adapter.log" >&2; exit 1; fi
  sleep 0.2
done

# The reporter: every case's stage records, in order, to the platform (docs/reporting.md); it
# reads each changed case from the gateway as the platform role, over TLS.
sed -e "s|^ledger = .*|ledger = \"$work/reporter.db\"|" \
    -e "s|^specification = .*|specification = \"$PWD/config/report/gdbs.yaml\"|" \
    -e "s|^calendar_dir = .*|calendar_dir = \"$PWD/config/calendar\"|" \
    -e "s|^format = .*|format = \"text\"|" \
    config/reporter.toml > "$work/reporter.toml"
report_env() { # the reporter's settings, then a command
  env YICHUANG_SERVER="$server" YICHUANG_REPORTER_CERT="$work/tls/reporter.pem" YICHUANG_REPORTER_KEY="$work/tls/reporter-key.pem" \
    YICHUANG_PLATFORM_URL="http://127.0.0.1:$platform_port/gdbs/api/record" \
    YICHUANG_PLATFORM_QUERY_URL="http://127.0.0.1:$platform_port/gdbs/api/query" \
    YICHUANG_PLATFORM_SECRET=platform-secret YICHUANG_REPORTER_LISTEN="127.0.0.1:$reporter_port" \
    YICHUANG_AMQP_URL="${amqp%%://*}://$reporter_user:$reporter_password@127.0.0.1:${amqp_port}/$vhost" "$@"
}
start reporter report_env "$bin/yichuang-adapter" report run --config "$work/reporter.toml"
# The notifier: SMS notices to the applicants who consented (docs/notifications.md); it reads each
# changed case as the notifier role, over TLS. Hours open all day, so the demo shows them at any hour.
sed -e "s|^ledger = .*|ledger = \"$work/notifier.db\"|" config/notifier.toml > "$work/notifier.toml"
start notifier env YICHUANG_SERVER="$server" \
  YICHUANG_NOTIFIER_CERT="$work/tls/notifier.pem" YICHUANG_NOTIFIER_KEY="$work/tls/notifier-key.pem" \
  YICHUANG_SMS_URL="http://127.0.0.1:$sms_port/sms/send" YICHUANG_SMS_SECRET=sms-secret \
  YICHUANG_NOTIFY_HOURS=00:00-24:00 YICHUANG_NOTIFIER_LISTEN="127.0.0.1:$notifier_port" \
  YICHUANG_AMQP_URL="${amqp%%://*}://$notifier_user:$notifier_password@127.0.0.1:${amqp_port}/$vhost" \
  "$bin/yichuang-adapter" notify run --config "$work/notifier.toml"

console="https://${YICHUANG_ADMIN_LISTEN}/console"
bold "== the operations console: $console"
echo "   open it while the demo runs: the flows, each case's timeline, dead letters, deadlines."
echo "   Its certificate is from the demo's own CA ($work/tls/ca.pem): let the browser accept it once,"
echo "   then sign in with the operator token in $work/operator.token"
echo "   (YICHUANG_DEMO_KEEP=1 make demo keeps everything running at the end, until Enter)"

guide="https://127.0.0.1:$port/guide/BDC-ZY"
bold "== the item guide (办事指南, docs/guide.md), public on the windows' listener: $guide"
"$python" -c '
import re, ssl, sys, urllib.request
url, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)  # no client certificate: the guide is public
page = urllib.request.urlopen(url, context=ctx, timeout=10).read().decode()
materials = re.findall(r"<td class=\"name\">([^<]+)</td>", page)
assert materials, "the guide lists the materials"
print("  materials to bring:", "、".join(materials))
svg = urllib.request.urlopen(url + "/qr.svg", context=ctx, timeout=10).read().decode()
assert "<svg" in svg, "the guide has its QR code"
print("  its QR code, for the hall to print:", url + "/qr.svg")
' "$guide" "$work/tls/ca.pem"

bold "== status changes, as the events exchange carries them (time  case  event  task  detail)"
"$bin/yichuang" bus watch --config "$work/gateway.toml" &
pids+=($!)
sleep 0.5

# The clerk at 公积金: keys every task that reaches the worklist into the fund's system.
(
  n=0
  while true; do
    "$bin/yichuang-adapter" manual list --config "$work/adapter.toml" --department gjj 2>/dev/null |
      "$python" -c 'import json,sys; [print(json.loads(l)["task_id"]) for l in sys.stdin if l.strip()]' |
      while read -r task; do
        n=$((n + 1))
        "$bin/yichuang-adapter" manual complete --config "$work/adapter.toml" --department gjj --task "$task" \
          --case-number "GJJ2019$(printf %06d $((RANDOM)))" --outcome approved \
          --document-number "GJJDW$(printf %08d $((RANDOM * RANDOM)))" --document-name 住房公积金单位登记回执 --clerk 0815 >/dev/null &&
          echo "          (the clerk at 公积金 keyed $task into the fund's system)"
      done
    sleep 2
  done
) &
pids+=($!)

# The accepting window: when a department asks for materials (补正), the applicant brings them and
# the clerk hands them in with `yichuang case supplement`; the task resumes at the department.
(
  while true; do
    "$bin/yichuang" case list --server "$server" --status CASE_STATUS_AWAITING_SUPPLEMENT --page-size 100 2>/dev/null |
      "$python" -c 'import json,sys; [print(c["caseNumber"]) for c in json.load(sys.stdin).get("cases", [])]' |
      while read -r number; do
        # The materials each waiting task's department asked for, as codes of the acceptance list.
        codes=$("$bin/yichuang" case get --server "$server" "$number" | "$python" -c '
import json, sys, tomllib
names = {m["name"]: m["code"] for m in tomllib.load(open("config/catalog/materials.toml", "rb"))["material"]}
case = json.load(sys.stdin)["case"]
asked = [n for t in case.get("tasks", []) if t.get("status") == "TASK_STATUS_SUPPLEMENT_REQUIRED" for n in t.get("materialsRequested", [])]
print(" ".join(sorted({names[n] for n in asked if n in names})))')
        [ -n "$codes" ] || continue
        args=(); for c in $codes; do args+=(--material "$c"); done
        "$bin/yichuang" case supplement --server "$server" "$number" "${args[@]}" --staff-no 0342 >/dev/null &&
          echo "          (the window handed in $codes for $number: 补正)"
      done
    sleep 2
  done
) &
pids+=($!)

bold "== the window submits the three example cases"
echo "   (they are dated 21 October 2019: by the legal clock their deadlines passed long ago, so every"
echo "    task's clock starts with task-clock-started and at once raises its red alert, task-overdue)"
for name in kai-canguan qiye-kaiban bdc-deficient; do
  set +e
  out=$("$bin/yichuang" case submit --server "$server" --file "examples/cases/$name.json")
  code=$?
  set -e
  case "$code" in
    0) echo "-> $name: accepted as $(echo "$out" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["receipt"]["caseNumber"])')" ;;
    3) echo "-> $name: not accepted; the one-time notice lists every deficiency:"
       echo "$out" | "$python" -c 'import json,sys
n = json.load(sys.stdin)["notice"]
for d in n["deficiencies"]: print("     ", d["path"], "—", d["message"])
for g in n.get("guides", []): print("      what to bring for", g["itemName"] + ":", g["url"])' ;;
    *) echo "-> $name: unexpected exit code $code" >&2; echo "$out" >&2; exit 1 ;;
  esac
done

bold "== and a stream of eight more 开餐馆 cases from other applicants, dated today"
echo "   (late in the year, before next year's holiday notice is loaded, a deadline that reaches next"
echo "    year is counted Monday–Friday and marked provisional: the case is accepted all the same)"
"$python" - "$work" <<'PY'
import json, sys
base = json.load(open("examples/cases/kai-canguan.json"))
for i in range(8):
    s = dict(base)
    s["submissionId"] = f"640100-DT01-W03-today-{100 + i:04d}"
    s.pop("submittedAt", None)  # accepted now, by the gateway's clock
    s["applicant"] = dict(base["applicant"], contact=dict(base["applicant"]["contact"], smsConsent=True))  # agreed to SMS notices
    json.dump(s, open(f"{sys.argv[1]}/stream-{i}.json", "w"), ensure_ascii=False)
PY
for i in $(seq 0 7); do
  out=$("$bin/yichuang" case submit --server "$server" --file "$work/stream-$i.json")
  echo "$out" | "$python" -c 'import json,sys
r = json.load(sys.stdin)["receipt"]
note = " (provisional: " + r["deadlineNotice"] + ")" if r.get("deadlineProvisional") else ""
print("-> stream case '"$i"' accepted as", r["caseNumber"] + ", promised by", r["promisedDeadline"] + note)'
  sleep 0.3
done

bold "== the 12345 hotline: applicants call about their cases (docs/hotline.md)"
hot() { YICHUANG_CERT="$work/tls/hotline.pem" YICHUANG_KEY="$work/tls/hotline-key.pem" "$bin/yichuang" hotline "$@" --server "$server"; }
op() { YICHUANG_CERT="$work/tls/operator.pem" YICHUANG_KEY="$work/tls/operator-key.pem" "$bin/yichuang" "$@" --server "https://$YICHUANG_ADMIN_LISTEN"; }
number=$("$bin/yichuang" case list --server "$server" --page-size 100 | "$python" -c 'import json,sys; print(json.load(sys.stdin)["cases"][-1]["caseNumber"])')
digits=$("$bin/yichuang" case get --server "$server" "$number" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["case"]["submission"]["applicant"]["contact"]["mobile"][-4:])')
echo "-> progress query about $number, with the wrong last four digits: refused, and nothing said of the case"
hot progress --order 12345-DEMO-1 --case "$number" --digits 1234 --class 010101 2>&1 | sed 's/^/     /' || true
echo "-> the same with the right digits (the last four of the mobile on the case), masked for the agent to read out"
hot progress --order 12345-DEMO-2 --case "$number" --digits "$digits" --class 010101 | "$python" -c 'import json,sys; print("    ", json.load(sys.stdin)["text"])'
echo "-> a complaint: the case is slow (a supervision 督办 with its reply deadline in working days)"
hot complain --order 12345-DEMO-3 --case "$number" --kind slow --content "办理太慢了" --class 010102 | "$python" -c 'import json,sys
r = json.load(sys.stdin); print("     to", r["department"] + ", reply due", r["deadline"])'
echo "-> a consultation: what to bring for 食品经营许可"
hot consult --order 12345-DEMO-4 --query 食品经营 --class 010103 | "$python" -c 'import json,sys; print("    ", json.load(sys.stdin)["text"].replace("\n", "\n     "))'
op reply-complaint "$number" --order 12345-DEMO-3 --reply "经核实，已督促部门加快办理，预计三个工作日内办结。" >/dev/null
echo "-> an operator answers the complaint; the reply goes back to the hotline (signed, retried until taken):"
"$python" - "http://127.0.0.1:$hotline_port/control/replies" <<'PY'
import json, sys, time, urllib.request
deadline = time.time() + 30
while not (replies := json.load(urllib.request.urlopen(sys.argv[1], timeout=5))) and time.time() < deadline:
    time.sleep(0.2)
assert replies, "the reply reached the hotline"
for r in replies:
    print("    ", json.dumps(r, ensure_ascii=False))
PY
echo "-> the work orders as the audit trail holds them"
op hotline-orders --limit 10 | "$python" -c 'import json,sys; [print("    ", o["orderNo"], o["kind"], o["outcome"]) for o in json.load(sys.stdin)["orders"]]'

# Until every accepted case is ready for delivery (出件), or two minutes.
accepted=10
deadline=$((SECONDS + 120))
while true; do
  ready=$("$bin/yichuang" case list --server "$server" --status CASE_STATUS_READY_FOR_DELIVERY --page-size 100 2>/dev/null |
    "$python" -c 'import json,sys; print(len(json.load(sys.stdin).get("cases", [])))' 2>/dev/null || echo 0)
  if [ "$ready" -ge "$accepted" ]; then break; fi
  if [ "$SECONDS" -ge "$deadline" ]; then echo "only $ready of $accepted cases ready after two minutes" >&2; break; fi
  sleep 1
done

bold "== $ready of $accepted accepted cases are ready; the window hands them over (出件)"
n=0
for number in $("$bin/yichuang" case list --server "$server" --status CASE_STATUS_READY_FOR_DELIVERY --page-size 100 |
    "$python" -c 'import json,sys; [print(c["caseNumber"]) for c in json.load(sys.stdin).get("cases", [])]'); do
  n=$((n + 1))
  # Collected at the window by the legal representative (or the applicant in person), whose
  # identity document the clerk checks; every third case is mailed, as its applicant chose.
  who=$("$bin/yichuang" case get --server "$server" "$number" | "$python" -c "$(cat <<'PY'
import json, sys
a = json.load(sys.stdin)["case"]["submission"]["applicant"]
p = a.get("legalRepresentative") or (a if a.get("idType") == "ID_TYPE_RESIDENT_ID" else None)
print(f'{p["name"]} {p["idNumber"]}' if p else "")
PY
)")
  if [ $((n % 3)) = 0 ] || [ -z "$who" ]; then
    "$bin/yichuang" case deliver --server "$server" "$number" --carrier EMS --tracking-number "EMS$(printf %010d $((RANDOM * 1000 + n)))" >/dev/null
  else
    read -r name id <<< "$who"
    "$bin/yichuang" case deliver --server "$server" "$number" --collector-name "$name" --collector-id "$id" --staff-no 0342 >/dev/null
  fi
done
sleep 1.5 # the last events reach the watcher

bold "== the applicants evaluate their cases at the window (好差评, one each); one is a 差评"
n=0
for number in $("$bin/yichuang" case list --server "$server" --status CASE_STATUS_DELIVERED --page-size 100 |
    "$python" -c 'import json,sys; [print(c["caseNumber"]) for c in json.load(sys.stdin).get("cases", [])]'); do
  n=$((n + 1))
  # Not every applicant evaluates: nothing is recorded for those who do not (never a default score).
  if [ $((n % 4)) = 0 ]; then echo "  $number: not evaluated"; continue; fi
  if [ "$n" = 2 ]; then level=2; else level=$((4 + n % 2)); fi
  comment=(); if [ "$level" -le 2 ]; then comment=(--comment "等候时间过长"); fi
  "$bin/yichuang" case evaluate --server "$server" "$number" --level "$level" \
    --score "服务效率=$level" --score "服务水平=$level" --score "服务态度=$level" "${comment[@]}" |
    "$python" -c 'import json,sys
c = json.load(sys.stdin)["case"]; e = c["evaluation"]; r = c.get("rectification")
line = "  " + c["caseNumber"] + ": " + str(e["level"]) + " of 5"
if r: line += " — 差评: a rectification by " + r["assignee"] + ", due " + r["deadline"]
print(line)'
  if [ "$level" -le 2 ]; then
    YICHUANG_CERT="$work/tls/operator.pem" YICHUANG_KEY="$work/tls/operator-key.pem" \
      "$bin/yichuang" rectify --server "https://$YICHUANG_ADMIN_LISTEN" "$number" \
      --response "已约谈窗口工作人员，午间增开综合窗口" >/dev/null
    echo "  $number: the rectification is answered and closed (整改反馈)"
  fi
done

# Until the platform holds every record of the day (the last evaluations may still be on their
# way), or a minute.
deadline=$((SECONDS + 60))
while true; do
  set +e
  out=$(report_env "$bin/yichuang" report reconcile --config "$work/reporter.toml" --date "$(TZ=Asia/Shanghai date +%F)" 2>&1)
  code=$?
  set -e
  if [ "$code" = 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
  sleep 1
done
reconciled=$code

bold "== the stage records reported to the one-network platform (办件汇聚), in order, once each"
"$python" - "http://127.0.0.1:$platform_port/sim/platform/records" "http://127.0.0.1:$reporter_port/status" <<'PY'
import collections, json, sys, urllib.request
held = json.load(urllib.request.urlopen(sys.argv[1], timeout=5))
names = {"EX_GDBS_SB": "申办", "EX_GDBS_SL": "受理", "EX_GDBS_BJGZ": "补交告知", "EX_GDBS_BJSL": "补交受理",
         "EX_GDBS_TBCXSQ": "特别程序申请", "EX_GDBS_TBCXJG": "特别程序结果", "EX_GDBS_SPCL": "审批处理",
         "EX_GDBS_BJ": "办结", "EX_GDBS_LQDJ": "领证登记", "EX_HCP_PJ": "好差评", "EX_HCP_ZGFK": "整改反馈"}
by = collections.Counter(h["table"] for h in held)
for table in names:
    if by[table]:
        print(f"  {table:16} {names[table]:8} {by[table]:>4} record(s)")
once = sum(1 for h in held if h["accepted"] == 1)
print(f"  {len(held)} records held by the platform, {once} of them accepted the first time they were sent")
for r in [h["record"] for h in held if h["table"] == "EX_HCP_PJ"][:6]:
    print(f'  好差评 {r["SBLSH"]}: 满意度 {r["MYD"]}, ' + ", ".join(f'{z["ZBMC"]} {z["DJ"]}' for z in r["ZBPJ"]))
status = json.load(urllib.request.urlopen(sys.argv[2], timeout=5))
print("  the reporter's ledger:", ", ".join(f"{k} {v}" for k, v in sorted(status["records"].items())))
PY
bold "== the day's reconciliation: what the platform holds against what the gateway's cases say"
echo "$out" | sed 's/^/  /'

bold "== the cases at the end"
"$bin/yichuang" case list --server "$server" --page-size 100 | "$python" -c "$(cat <<'PY'
import json, sys
for c in json.load(sys.stdin).get("cases", []):
    items = " ".join(c.get("itemCodes", []))
    print(f'  {c["caseNumber"]}  {c["status"]:24} {items}')
PY
)"
delivered=$("$bin/yichuang" case list --server "$server" --status CASE_STATUS_DELIVERED --page-size 100 |
  "$python" -c 'import json,sys; print(len(json.load(sys.stdin).get("cases", [])))')
echo "  $delivered of $accepted accepted cases delivered"
bold "== what the console showed: each department over the last 10 minutes ($console)"
"$python" -c '
import re, ssl, sys, urllib.request
url, tls = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=f"{tls}/ca.pem")
ctx.load_cert_chain(f"{tls}/operator.pem", f"{tls}/operator-key.pem")
page = urllib.request.urlopen(url, context=ctx, timeout=10).read().decode()
rows = re.findall(r"id=\"dept-(\w+)\"[^>]*data-dispatched=\"(\d+)\" data-decided=\"(\d+)\" data-failed=\"(\d+)\"", page)
assert rows, "the console lists the departments"
for code, dispatched, decided, failed in rows:
    print(f"  {code:5} dispatched {dispatched:>3}   decided {decided:>3}   failed {failed:>3}")
assert sum(int(r[1]) for r in rows) > 0, "the console counted the demo dispatches"
' "$console/flows" "$work/tls"
if [ "${YICHUANG_DEMO_KEEP:-0}" = 1 ]; then
  bold "== still running: $console (operator token in $work/operator.token); press Enter to stop"
  read -r _ || true
fi
bold "== the SMS notices sent to the applicants who consented (短信提示), once each, in order per case"
echo "   (the three example cases' applicants did not consent: their notices are recorded as skipped)"
"$python" - "http://127.0.0.1:$sms_port/control/messages" "http://127.0.0.1:$notifier_port/status" <<'PY'
import json, sys, time, urllib.request
get = lambda url: json.load(urllib.request.urlopen(url, timeout=10))
deadline = time.time() + 60
while get(sys.argv[2])["notices"].get("pending", 0) and time.time() < deadline:
    time.sleep(0.5)
msgs, status = get(sys.argv[1]), get(sys.argv[2])
for m in msgs:
    print(f"  {m['at'][11:19]}Z  {m['mobile']}  {m['content']}")
print(f"  {len(msgs)} messages at the SMS platform, {len({m['msgid'] for m in msgs})} distinct;",
      "the notifier's ledger:", ", ".join(f"{k} {v}" for k, v in sorted(status["notices"].items())))
assert msgs and len({m["msgid"] for m in msgs}) == len(msgs), "every notice once"
PY
bold "== the logs of the gateway, the adapter and the simulators, scanned for personal data left unmasked"
"$bin/yichuang" logs scan --names tests/fixtures/personal-names.txt "$work"/*.log
bold "== stopping everything (the demo's vhost and database are removed)"
[ "$delivered" -ge "$accepted" ] && [ "$reconciled" = 0 ]
