#!/usr/bin/env bash
# Installs (when missing) and starts what the tests and the demo need: PostgreSQL and RabbitMQ,
# from Debian's packages (postgresql, rabbitmq-server). Needs root (or sudo) and apt-get.
# Idempotent: safe to run before every `make test`.
# Writes the connection settings for the test suite to target/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=services
. scripts/lib.sh
# rabbitmq-server, rabbitmqctl and rabbitmq-diagnostics are in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

want_pg=1
want_mq=1
for arg in "$@"; do
  case "$arg" in
    --no-postgres) want_pg=0 ;;
    --no-rabbitmq) want_mq=0 ;;
    *) echo "usage: $0 [--no-postgres] [--no-rabbitmq]" >&2; exit 2 ;;
  esac
done

# The server, not just the client: postgresql-client has psql and pg_isready but no server, and
# postgresql-common has pg_lsclusters, pg_createcluster and pg_ctlcluster.
missing=()
if [ "$want_pg" = 1 ] && { ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 ||
  ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; }; then
  missing+=(postgresql)
fi
if [ "$want_mq" = 1 ] && ! command -v rabbitmq-server >/dev/null 2>&1; then missing+=(rabbitmq-server); fi
if [ "${#missing[@]}" -gt 0 ]; then
  # Package scripts may try to start services through an init system that is not there; we start them below.
  apt_install "${missing[@]}"
fi

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)); local what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then echo "services: $what did not come up" >&2; return 1; fi
    sleep 0.5
  done
}

mkdir -p target
env_file=target/services.env
touch "$env_file"
# Replaces the line for one variable in the env file, keeping the others.
set_env() { grep -v "^export $1=" "$env_file" > "$env_file.tmp" || true; echo "export $1=$2" >> "$env_file.tmp"; mv "$env_file.tmp" "$env_file"; }

if [ "$want_pg" = 1 ]; then
  first_cluster() { pg_lsclusters --no-header | head -n 1; }
  read -r pg_version pg_cluster pg_port pg_status _ < <(first_cluster) || true
  if [ -z "${pg_version:-}" ]; then
    # The newest version whose server is installed (a client alone has no bin/postgres).
    pg_version=$(for p in /usr/lib/postgresql/*/bin/postgres; do p=${p#/usr/lib/postgresql/}; echo "${p%%/*}"; done | sort -n | tail -n 1)
    sudo_ pg_createcluster --locale C.UTF-8 "$pg_version" main >/dev/null
    read -r pg_version pg_cluster pg_port pg_status _ < <(first_cluster)
  fi
  if [ "$pg_status" != "online" ]; then
    sudo_ pg_ctlcluster "$pg_version" "$pg_cluster" start
  fi
  wait_for 60 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p "$pg_port"
  psql_() { sudo_ su postgres -c "psql -p $pg_port -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
  if [ "$(psql_ "SELECT 1 FROM pg_roles WHERE rolname = 'yichuang'")" != 1 ]; then
    psql_ "CREATE ROLE yichuang LOGIN PASSWORD 'yichuang' CREATEDB"
  fi
  if [ "$(psql_ "SELECT 1 FROM pg_database WHERE datname = 'yichuang_test'")" != 1 ]; then
    # UTF-8 whatever locale the cluster was created with (C.UTF-8 is in every Debian libc).
    psql_ "CREATE DATABASE yichuang_test OWNER yichuang ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0"
  fi
  # Every test connects over TLS: Debian's cluster has `ssl = on` with the snakeoil certificate,
  # which `sslmode=require` encrypts to without checking (docs/tls.md; verify-full needs a CA).
  if [ "$(psql_ "SHOW ssl")" = on ]; then
    pg_ssl=require
  else
    echo "services: warning: PostgreSQL has ssl = off; the tests connect without TLS (sslmode=prefer)" >&2
    pg_ssl=prefer
  fi
  set_env YICHUANG_TEST_PG_URL "postgres://yichuang:yichuang@127.0.0.1:$pg_port/yichuang_test?sslmode=$pg_ssl"
  echo "services: PostgreSQL $pg_version on port $pg_port"
fi

if [ "$want_mq" = 1 ]; then
  # RabbitMQ names its node rabbit@<short host name>, which must resolve; where it does not (no
  # line in /etc/hosts), the node is named rabbit@localhost instead, for the server and rabbitmqctl.
  if ! getent hosts "$(hostname -s)" >/dev/null 2>&1 &&
    ! grep -qs '^NODENAME=' /etc/rabbitmq/rabbitmq-env.conf; then
    echo "services: host name $(hostname -s) does not resolve: RabbitMQ's node is rabbit@localhost"
    echo "NODENAME=rabbit@localhost" | sudo_ tee -a /etc/rabbitmq/rabbitmq-env.conf >/dev/null
  fi
  # AMQPS on port 5671 with development certificates (docs/tls.md): yichuang-dev-certs writes a
  # CA and a server certificate (localhost, 127.0.0.1) into target/dev-certs; they are installed
  # where the rabbitmq user can read them, once: later runs (and other clones) use the installed
  # ones, so the broker is restarted only when its TLS settings are new.
  tls_dir=/etc/rabbitmq/yichuang-tls
  tls_conf=/etc/rabbitmq/conf.d/50-yichuang-tls.conf
  tls_settings="# Written by yichuang's scripts/services.sh: AMQPS for the tests and the demo.
listeners.ssl.default = 5671
ssl_options.cacertfile = $tls_dir/ca.pem
ssl_options.certfile = $tls_dir/server.pem
ssl_options.keyfile = $tls_dir/server-key.pem
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false"
  mq_restart=0
  if ! sudo_ test -s "$tls_dir/ca.pem" -a -s "$tls_dir/server.pem" -a -s "$tls_dir/server-key.pem"; then
    # Cargo as `make` runs it (scripts/toolchain.sh installs it in ~/.cargo/bin when missing).
    cargo_=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
    "$cargo_" run -q -p yichuang-devcerts --bin yichuang-dev-certs -- target/dev-certs >/dev/null
    sudo_ mkdir -p "$tls_dir"
    sudo_ cp target/dev-certs/ca.pem target/dev-certs/server.pem target/dev-certs/server-key.pem "$tls_dir/"
    sudo_ chown -R rabbitmq:rabbitmq "$tls_dir"
    sudo_ chmod 0644 "$tls_dir/ca.pem" "$tls_dir/server.pem"
    sudo_ chmod 0600 "$tls_dir/server-key.pem"
    mq_restart=1
  fi
  if [ "$(sudo_ cat "$tls_conf" 2>/dev/null)" != "$tls_settings" ]; then
    sudo_ mkdir -p "$(dirname "$tls_conf")"
    printf '%s\n' "$tls_settings" | sudo_ tee "$tls_conf" >/dev/null
    mq_restart=1
  fi
  # A message dead-lettered at least once whose forward found no queue (the target was still
  # recovering after a restart) is forwarded again after this many milliseconds: RabbitMQ's default,
  # 180 s, leaves a task parked over a broker restart idle for three minutes (docs/bus.md).
  advanced=/etc/rabbitmq/advanced.config
  advanced_settings="%% Written by yichuang's scripts/services.sh (docs/bus.md).
[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 15000}]}]."
  if [ "$(sudo_ cat "$advanced" 2>/dev/null)" != "$advanced_settings" ]; then
    printf '%s\n' "$advanced_settings" | sudo_ tee "$advanced" >/dev/null
    mq_restart=1
  fi
  if [ "$mq_restart" = 1 ] && sudo_ rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    echo "services: RabbitMQ's settings are new: restarting it"
    sudo_ rabbitmqctl -q stop >/dev/null 2>&1 || true
    wait_for 60 "RabbitMQ to stop" sudo_ bash -c '! PATH=$PATH:/usr/sbin rabbitmq-diagnostics -q ping'
  fi
  if ! sudo_ rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    sudo_ rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  # `ping` answers as soon as the Erlang node is up, before the broker has booted and opened
  # its AMQP listener; wait for both, or the first test to connect may find the port closed.
  wait_for 120 "RabbitMQ" sudo_ rabbitmq-diagnostics -q ping
  sudo_ rabbitmqctl -q await_startup --timeout 120 >/dev/null
  wait_for 60 "RabbitMQ's AMQP listener on port 5672" sudo_ rabbitmq-diagnostics -q check_port_listener 5672
  # The management API (port 15672): the gateway and `yichuang bus declare` apply the policies
  # that make dead-lettering at-least-once through it (docs/bus.md). The plugin ships with the
  # server package; enabling it is idempotent.
  sudo_ rabbitmq-plugins -q enable rabbitmq_management >/dev/null
  wait_for 60 "RabbitMQ's management listener on port 15672" sudo_ rabbitmq-diagnostics -q check_port_listener 15672
  wait_for 60 "RabbitMQ's AMQPS listener on port 5671" sudo_ rabbitmq-diagnostics -q check_port_listener 5671
  set_env YICHUANG_TEST_AMQP_URL "amqp://guest:guest@127.0.0.1:5672/%2f"
  set_env YICHUANG_TEST_AMQPS_URL "amqps://guest:guest@127.0.0.1:5671/%2f"
  set_env YICHUANG_TEST_AMQP_CA "$tls_dir/ca.pem"
  echo "services: RabbitMQ $(sudo_ rabbitmq-diagnostics -q server_version 2>/dev/null || echo up)"
  # tests/results.rs and tests/broker_outage.rs run rabbitmqctl themselves, without sudo; Debian's
  # rabbitmqctl runs only as root (or rabbitmq).
  if [ "$(id -u)" != 0 ]; then
    echo "services: warning: the tests run rabbitmqctl, which only root may: run \`make test\` as root" >&2
  fi
fi
