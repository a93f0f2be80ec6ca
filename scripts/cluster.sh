#!/usr/bin/env bash
# Runs a three-node RabbitMQ cluster on this machine, for the chaos runs: nodes yichuang-c1@HOST,
# yichuang-c2@HOST and yichuang-c3@HOST (HOST as for the default node, scripts/services.sh), each
# with its data, logs, configuration and plugins (management) under target/cluster/<n>/, and its
# own ports on 127.0.0.1: AMQP CLUSTER_PORT_BASE+n-1 (default 5701..5703), management 10000 above
# (15701..15703); Erlang distribution 20000 above (25701..25703). The default node rabbit@HOST
# (5672) is left alone. Needs Debian's rabbitmq-server (scripts/services.sh) and root (or sudo).
#
#   start               starts the nodes that are not running and clusters 2 and 3 with 1;
#                       idempotent; writes target/cluster.env (CLUSTER_NODES, CLUSTER_AMQP_PORTS,
#                       CLUSTER_MGMT_PORTS: space-separated, in node order)
#   stop                stops the nodes and removes target/cluster/ and target/cluster.env
#   kill N              SIGKILLs node N's Erlang VM (1..3) and waits until it is gone
#   restart N           starts node N again (after a kill) and waits until it runs in the cluster
#   leader VHOST QUEUE  prints the number of the node leading quorum queue QUEUE in VHOST
#   running             prints the numbers of the nodes whose broker runs, on one line
#
# The nodes run as root with HOME set to the rabbitmq user's, so that they share its Erlang
# cookie with the default node and with rabbitmqctl (which Debian runs as rabbitmq).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=cluster
. scripts/lib.sh
# rabbitmq-server, rabbitmqctl and rabbitmq-diagnostics are in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

usage() {
  echo "usage: $0 start | stop | kill N | restart N | leader VHOST QUEUE | running" >&2
  exit 2
}
die() { echo "cluster: $*" >&2; exit 1; }
case "${1:-} $#" in
  "start 1" | "stop 1" | "running 1" | "kill 2" | "restart 2" | "leader 3") ;;
  *) usage ;;
esac
case $1 in kill | restart) [[ $2 =~ ^[123]$ ]] || usage ;; esac

root=$PWD/target/cluster
# The nodes keep the ports they were first started with (recorded in target/cluster/port-base).
base=${CLUSTER_PORT_BASE:-5701}
recorded=$(cat "$root/port-base" 2>/dev/null || true)
if [ -n "$recorded" ]; then
  if [[ $1 == @(start|restart) ]] && [ "${CLUSTER_PORT_BASE:-$recorded}" != "$recorded" ]; then
    die "the cluster was started with CLUSTER_PORT_BASE=$recorded: stop it first ($0 stop)"
  fi
  base=$recorded
fi
if ! [[ $base =~ ^[0-9]+$ ]] || [ "$base" -lt 1024 ] || [ "$base" -gt 45533 ]; then
  die "CLUSTER_PORT_BASE must be a port from 1024 to 45533 (the distribution ports are 20000 above), not '$base'"
fi
# The same host part as the default node's (scripts/services.sh): the short host name, or
# localhost when it does not resolve.
if getent hosts "$(hostname -s)" >/dev/null 2>&1; then host=$(hostname -s); else host=localhost; fi
env_file=target/cluster.env
server=/usr/lib/rabbitmq/bin/rabbitmq-server # the script itself: /usr/sbin's runs it as rabbitmq
nodes=(1 2 3)

name() { echo "yichuang-c$1@$host"; }
amqp_port() { echo $((base + $1 - 1)); }
mgmt_port() { echo $((base + 10000 + $1 - 1)); }
dist_port() { echo $((base + 20000 + $1 - 1)); }
ctl() { local n=$1; shift; sudo_ rabbitmqctl -q -n "$(name "$n")" "$@"; }
diag() { local n=$1; shift; sudo_ rabbitmq-diagnostics -q -n "$(name "$n")" "$@"; }

# is_vm PID N: whether PID is the Erlang VM of node N (the node's name is in its environment).
is_vm() {
  [[ $(sudo_ readlink "/proc/$1/exe" 2>/dev/null) == */beam.smp ]] &&
    sudo_ cat "/proc/$1/environ" 2>/dev/null | tr '\0' '\n' | grep -qxF "RABBITMQ_NODENAME=$(name "$2")"
}
# pid_of N: the pid of node N's Erlang VM, or nothing when it is not running. From the pid file
# the node writes as it boots, else (no file yet, or target/ removed under it) from /proc.
pid_of() {
  local pid
  pid=$(cat "$root/$1/pid" 2>/dev/null || true)
  if [[ $pid =~ ^[0-9]+$ ]] && is_vm "$pid" "$1"; then echo "$pid"; return; fi
  for pid in $(pgrep -x beam.smp || true); do
    if is_vm "$pid" "$1"; then echo "$pid"; return; fi
  done
}
alive() { [ -n "$(pid_of "$1")" ]; }

# nodes_in N FIELD: the nodes in field FIELD (running_nodes, disk_nodes) of node N's cluster_status.
nodes_in() {
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    sed -n "s/.*\"$2\":\[\([^]]*\)\].*/\1/p" | tr -d '"' | tr ',' ' '
}
has() { [[ " $1 " == *" $2 "* ]]; } # has LIST WORD

clustered() { # all three nodes running in one cluster
  local running n
  running=$(nodes_in 1 running_nodes)
  for n in "${nodes[@]}"; do has "$running" "$(name "$n")" || return 1; done
}

write_env() {
  local n names="" amqp="" mgmt=""
  for n in "${nodes[@]}"; do
    names+=" $(name "$n")"; amqp+=" $(amqp_port "$n")"; mgmt+=" $(mgmt_port "$n")"
  done
  mkdir -p target
  {
    echo "export CLUSTER_NODES=\"${names# }\""
    echo "export CLUSTER_AMQP_PORTS=\"${amqp# }\""
    echo "export CLUSTER_MGMT_PORTS=\"${mgmt# }\""
  } > "$env_file.tmp"
  mv "$env_file.tmp" "$env_file"
}

# The nodes read the Erlang cookie of the rabbitmq user, which rabbitmqctl uses; when it is
# missing it is made here, as Erlang would (a node run by root would make one only root can read).
rabbitmq_home=$(getent passwd rabbitmq | cut -d: -f6)
cookie=$rabbitmq_home/.erlang.cookie
ensure_cookie() {
  [ -n "$rabbitmq_home" ] || die "no rabbitmq user: install rabbitmq-server (scripts/services.sh)"
  if ! sudo_ test -s "$cookie"; then
    sudo_ su rabbitmq -s /bin/sh -c "umask 077 && tr -dc A-Z < /dev/urandom | head -c 20 > '$cookie' && chmod 400 '$cookie'"
  fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# check_ports N: fails when one of node N's ports is taken (the node would not boot).
check_ports() {
  local port
  for port in "$(amqp_port "$1")" "$(mgmt_port "$1")" "$(dist_port "$1")"; do
    if port_busy "$port"; then
      die "port $port (node $1) is taken by another process: stop it, or set CLUSTER_PORT_BASE"
    fi
  done
}

# start_node N: starts node N detached (not waiting for it), with its settings written afresh.
start_node() {
  local n=$1 dir=$root/$1
  # Written by the caller (the node, run as root, writes in them all the same).
  mkdir -p "$dir/mnesia" "$dir/log"
  cat > "$dir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
EOF
  # A dead letter whose forward found no queue is sent again after 15 s, not RabbitMQ's 180 s.
  echo '[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 15000}]}].' > "$dir/advanced.config"
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
  # The nodes' own (empty) environment file: /etc/rabbitmq/rabbitmq-env.conf may name the default node.
  : > "$dir/rabbitmq-env.conf"
  (
    cd "$dir"
    sudo_ env HOME="$rabbitmq_home" \
      RABBITMQ_NODENAME="$(name "$n")" \
      RABBITMQ_USE_LONGNAME=false \
      RABBITMQ_DIST_PORT="$(dist_port "$n")" \
      RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
      RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
      RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$dir/mnesia" \
      RABBITMQ_LOG_BASE="$dir/log" \
      RABBITMQ_PID_FILE="$dir/pid" \
      ERL_CRASH_DUMP="$dir/erl_crash.dump" \
      "$server" -detached > "$dir/startup.log" 2>&1 9>&- # the node must not hold the lock (lock)
  ) || die "node $n did not start: see $dir/startup.log"
}

# await_node N [SECONDS]: waits until node N's broker has booted.
await_node() {
  local n=$1 timeout=${2:-120} deadline
  deadline=$((SECONDS + timeout))
  until diag "$n" ping >/dev/null 2>&1; do
    if ! alive "$n" && ! diag "$n" ping >/dev/null 2>&1; then
      tail -n 20 "$root/$n/log/$(name "$n").log" "$root/$n/startup.log" >&2 2>/dev/null || true
      die "node $n stopped while booting: see $root/$n/log/"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "node $n did not answer in ${timeout}s: see $root/$n/log/"
    sleep 0.5
  done
  ctl "$n" await_startup --timeout "$((deadline - SECONDS > 1 ? deadline - SECONDS : 1))" >/dev/null ||
    die "node $n did not boot in ${timeout}s: see $root/$n/log/"
}

# resume N: starts the broker of node N (running) again when it was stopped (rabbitmqctl stop_app).
resume() {
  if [ "$(ctl "$1" eval 'rabbit_boot_state:get().' 2>/dev/null)" = stopped ]; then quiet "$1" start_app; fi
}

# quiet N COMMAND...: rabbitmqctl COMMAND on node N, its output shown only when it fails (a
# join prints warnings that are part of its normal course).
quiet() {
  local out
  if ! out=$(ctl "$@" 2>&1); then echo "$out" >&2; die "\`rabbitmqctl -n $(name "$1") ${*:2}\` failed"; fi
}

# on_each COMMAND N...: runs `COMMAND N` for every N at once; fails when one does.
on_each() {
  local f=$1 n pids=() status=0; shift
  for n in "$@"; do "$f" "$n" & pids+=($!); done
  for n in "${pids[@]}"; do wait "$n" || status=1; done
  return $status
}

# join N...: makes nodes N (running) members of node 1's cluster, those that are not already.
# stop_app (some 5 s each) and start_app run on all of them at once; the joins themselves, which
# change the cluster's schema, one after the other.
join() {
  local n node1 pending=()
  node1=$(name 1)
  for n in "$@"; do has "$(nodes_in "$n" disk_nodes)" "$node1" || pending+=("$n"); done
  [ ${#pending[@]} -gt 0 ] || return 0
  stop_app() { quiet "$1" stop_app; }
  start_app() { quiet "$1" start_app; quiet "$1" await_startup --timeout 120; }
  on_each stop_app "${pending[@]}"
  for n in "${pending[@]}"; do
    # Node 1 may remember a former node N whose data is gone: forget it, or the join is refused.
    if has "$(nodes_in 1 disk_nodes)" "$(name "$n")"; then quiet 1 forget_cluster_node "$(name "$n")"; fi
    quiet "$n" reset
    quiet "$n" join_cluster "$node1"
  done
  on_each start_app "${pending[@]}"
}

# lock: one command at a time changes the nodes (start, stop, kill, restart). On descriptor 9,
# which the nodes must not inherit: they would hold the lock for as long as they run.
lock() { mkdir -p target; exec 9> target/cluster.lock; flock 9; }

cmd_start() {
  lock
  ensure_cookie
  mkdir -p "$root"
  echo "$base" > "$root/port-base"
  if clustered; then write_env; echo "cluster: already running: $(name 1) $(name 2) $(name 3)"; return; fi
  local n started=()
  for n in "${nodes[@]}"; do alive "$n" || started+=("$n"); done
  for n in "${started[@]}"; do check_ports "$n"; done
  # Every stopped node at once: a node that was clustered waits at boot for the others.
  for n in "${started[@]}"; do start_node "$n"; done
  for n in "${nodes[@]}"; do has "${started[*]:-}" "$n" || resume "$n"; done
  for n in "${nodes[@]}"; do await_node "$n" 180; done
  join 2 3
  local deadline=$((SECONDS + 30))
  until clustered; do
    [ "$SECONDS" -lt "$deadline" ] || die "the nodes did not form a cluster: running nodes are $(nodes_in 1 running_nodes)"
    sleep 1
  done
  write_env
  local alarms
  alarms=$(ctl 1 cluster_status --formatter json | sed -n 's/.*"alarms":\[\([^]]*\)\].*/\1/p')
  [ -z "$alarms" ] || echo "cluster: warning: alarms in effect: $alarms" >&2
  echo "cluster: running (started ${started[*]:-none}): $(name 1) $(name 2) $(name 3); AMQP on 127.0.0.1:$(amqp_port 1)..$(amqp_port 3), management on $(mgmt_port 1)..$(mgmt_port 3)"
}

# wait_gone PID SECONDS: waits until process PID has exited: a zombie counts (its parent, init,
# may take a second or more to reap it, and it holds no port nor file any more).
wait_gone() {
  local deadline=$((SECONDS + $2)) state
  while state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) && [ "${state%% *}" != Z ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

cmd_stop() {
  lock
  local n pid pids=()
  for n in "${nodes[@]}"; do
    pid=$(pid_of "$n")
    # SIGTERM: a graceful stop (the data is removed next, so the order does not matter).
    if [ -n "$pid" ]; then sudo_ kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for pid in "${pids[@]}"; do
    if ! wait_gone "$pid" 60; then sudo_ kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 10 || true; fi
  done
  sudo_ rm -rf "$root"
  rm -f "$env_file"
  echo "cluster: stopped"
}

cmd_kill() {
  lock
  local n=$1 pid
  pid=$(pid_of "$n")
  [ -n "$pid" ] || die "node $n is not running"
  sudo_ kill -KILL "$pid"
  wait_gone "$pid" 30 || die "node $n (pid $pid) did not exit"
  # The node's name leaves epmd as its connection closes; wait for that too, so that a restart
  # is not refused as a duplicate name.
  local deadline=$((SECONDS + 10))
  while epmd -names 2>/dev/null | grep -q "^name yichuang-c$n at port"; do
    [ "$SECONDS" -lt "$deadline" ] || die "epmd still has node $n registered"
    sleep 0.2
  done
  echo "cluster: killed node $n (pid $pid)"
}

cmd_restart() {
  lock
  local n=$1 other running
  [ -d "$root/$n/mnesia" ] || die "node $n has never run: use \`$0 start\`"
  ensure_cookie
  if alive "$n"; then resume "$n"; else check_ports "$n"; start_node "$n"; fi
  await_node "$n" 180
  # Running in the cluster again: as another running node sees it.
  for other in "${nodes[@]}"; do
    if [ "$other" = "$n" ] || ! diag "$other" check_running >/dev/null 2>&1; then continue; fi
    local deadline=$((SECONDS + 60))
    until running=$(nodes_in "$other" running_nodes) && has "$running" "$(name "$n")"; do
      [ "$SECONDS" -lt "$deadline" ] || die "node $n runs but node $other does not see it in the cluster"
      sleep 0.5
    done
    break
  done
  echo "cluster: node $n running"
}

# The nodes whose broker runs (check_running: the application, not only the Erlang VM).
running_nodes() {
  local n pids=() out=()
  for n in "${nodes[@]}"; do
    { alive "$n" && diag "$n" check_running >/dev/null 2>&1; } &
    pids[n]=$!
  done
  for n in "${nodes[@]}"; do if wait "${pids[n]}"; then out+=("$n"); fi; done
  echo "${out[*]:-}"
}

cmd_leader() {
  local vhost=$1 queue=$2 n out leader="" i answered="" deadline=$((SECONDS + 30))
  while :; do
    for n in "${nodes[@]}"; do
      alive "$n" || continue
      # Tab-separated: name, leader (names may hold spaces).
      if out=$(ctl "$n" list_queues -p "$vhost" name leader --no-table-headers 2>/dev/null); then
        answered=$n
        leader=$(awk -F'\t' -v q="$queue" '$1 == q { print "=" $2; exit }' <<<"$out")
        break
      fi
    done
    [ -n "$answered" ] || die "no running node answered"
    # list_queues leaves out a quorum queue whose members have lost their majority.
    [ -n "$leader" ] || die "node $answered lists no queue '$queue' in vhost '$vhost' (none, or a majority of its members is down)"
    leader=${leader#=}
    [ -n "$leader" ] || die "'$queue' in vhost '$vhost' has no leader: not a quorum queue?"
    for i in "${nodes[@]}"; do
      # Just after a kill the queue may still name the dead node, until its members elect another.
      if [ "$leader" = "$(name "$i")" ] && alive "$i"; then echo "$i"; return; fi
    done
    [ "$SECONDS" -lt "$deadline" ] || die "queue '$queue' has no running leader (it names $leader)"
    sleep 0.5
    answered=""
  done
}

case $1 in
  start) cmd_start ;;
  stop) cmd_stop ;;
  kill) cmd_kill "$2" ;;
  restart) cmd_restart "$2" ;;
  leader) cmd_leader "$2" "$3" ;;
  running) running_nodes ;;
esac
