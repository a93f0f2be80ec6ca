#!/usr/bin/env bash
# Checks the Helm chart (helm/check.py): lints and renders helm/yichuang with several value sets
# through Helm's own engine, validates every manifest against the Kubernetes schemas, and makes
# sure broken charts fail. No helm binary: Helm's engine comes inside the helm-python-sdk wheel.
# Installs its Python packages (helm/requirements.txt) into target/chart-venv from PyPI the first
# time; after that it needs no network. Needs Python 3.11 or later (python3, installed from Debian
# when missing; or set PYTHON). Part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=chart-check
. scripts/lib.sh

venv=target/chart-venv
stamp=$venv/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s helm/requirements.txt "$stamp"; then
  echo "chart-check: installing helm/requirements.txt into $venv"
  need_python
  make_venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r helm/requirements.txt
  cp helm/requirements.txt "$stamp"
fi
exec "$venv/bin/python" helm/check.py
