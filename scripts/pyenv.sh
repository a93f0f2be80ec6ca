#!/usr/bin/env bash
# Creates (when missing) the Python environment the test suite uses, target/pyenv, with the
# packages of scripts/requirements-test.txt from the Python registry (PyPI). Needs Python 3.11 or
# later (python3, installed from Debian when missing; or set PYTHON). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=pyenv
. scripts/lib.sh
env_dir=target/pyenv
stamp=$env_dir/.requirements
if [ -x "$env_dir/bin/python" ] && cmp -s scripts/requirements-test.txt "$stamp"; then
  exit 0
fi
need_python
make_venv "$env_dir"
"$env_dir/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
cp scripts/requirements-test.txt "$stamp"
echo "pyenv: $("$env_dir/bin/python" --version) with $(tr '\n' ' ' < scripts/requirements-test.txt)"
