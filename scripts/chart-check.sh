#!/usr/bin/env bash
# Checks the Helm chart (helm/check.py): lints and renders helm/yichuang with several value sets
# through Helm's own engine, validates every manifest against the Kubernetes schemas, and makes
# sure broken charts fail. Installs its Python packages (helm/requirements.txt) into
# target/chart-venv from PyPI the first time; after that it needs no network. Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "chart-check: needs Python 3.11 or later as $python (or set PYTHON)" >&2
  exit 1
fi
venv=target/chart-venv
stamp=$venv/requirements.txt
if ! cmp -s helm/requirements.txt "$stamp"; then
  echo "chart-check: installing helm/requirements.txt into $venv"
  if ! "$python" -m venv --clear "$venv" >/dev/null 2>&1; then
    # Debian's Python keeps venv in a package of its own.
    sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
    export DEBIAN_FRONTEND=noninteractive
    sudo_ apt-get update -qq
    sudo_ apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    "$python" -m venv --clear "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r helm/requirements.txt
  cp helm/requirements.txt "$stamp"
fi
exec "$venv/bin/python" helm/check.py
