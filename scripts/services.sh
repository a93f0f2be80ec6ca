#!/usr/bin/env bash
# Installs (when missing) and starts what the tests and the demo need: protoc, PostgreSQL and
# RabbitMQ from Debian's packages. Idempotent: safe to run before every `make test`.
# Writes the connection settings for the test suite to target/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."

want_pg=1
want_mq=1
for arg in "$@"; do
  case "$arg" in
    --no-postgres) want_pg=0 ;;
    --no-rabbitmq) want_mq=0 ;;
    *) echo "usage: $0 [--no-postgres] [--no-rabbitmq]" >&2; exit 2 ;;
  esac
done

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
if [ "$want_pg" = 1 ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then missing+=(postgresql); fi
if [ "$want_mq" = 1 ] && ! command -v rabbitmq-server >/dev/null 2>&1; then missing+=(rabbitmq-server); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "services: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  sudo_ apt-get update -qq
  # Package scripts may try to start services through an init system that is not there; we start them below.
  sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
  read -r pg_version pg_cluster pg_port pg_status < <(pg_lsclusters --no-header | head -n 1 | awk '{print $1, $2, $3, $4}')
  if [ -z "${pg_version:-}" ]; then
    pg_version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
    sudo_ pg_createcluster "$pg_version" main >/dev/null
    read -r pg_version pg_cluster pg_port pg_status < <(pg_lsclusters --no-header | head -n 1 | awk '{print $1, $2, $3, $4}')
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
    psql_ "CREATE DATABASE yichuang_test OWNER yichuang"
  fi
  set_env YICHUANG_TEST_PG_URL "postgres://yichuang:yichuang@127.0.0.1:$pg_port/yichuang_test"
  echo "services: PostgreSQL $pg_version on port $pg_port"
fi

if [ "$want_mq" = 1 ]; then
  if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    sudo_ rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  # `ping` answers as soon as the Erlang node is up, before the broker has booted and opened
  # its AMQP listener; wait for both, or the first test to connect may find the port closed.
  wait_for 120 "RabbitMQ" rabbitmq-diagnostics -q ping
  sudo_ rabbitmqctl -q await_startup --timeout 120 >/dev/null
  wait_for 60 "RabbitMQ's AMQP listener" rabbitmq-diagnostics -q check_port_listener 5672
  set_env YICHUANG_TEST_AMQP_URL "amqp://guest:guest@127.0.0.1:5672/%2f"
  echo "services: RabbitMQ $(rabbitmq-diagnostics -q server_version 2>/dev/null || echo up)"
fi
