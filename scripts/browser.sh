#!/usr/bin/env bash
# Installs (when missing) the browser the browser tests drive (testkit's `browser` module):
# Debian's headless-capable `chromium`, and a Chinese font (fonts-wqy-microhei, 1.6 MB) so that
# Chinese text shows as text, not boxes, in what the tests see and photograph. Needs root (or
# sudo) and apt-get. Idempotent: safe to run before every `make test`.
# Writes the browser's path to target/services.env as YICHUANG_CHROMIUM.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=browser
. scripts/lib.sh

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Any font with Chinese will do (fc-list is in fontconfig, which a bare machine may lack).
if [ -z "$(fc-list :lang=zh family 2>/dev/null)" ] &&
  ! dpkg-query -W -f='${Status}' fonts-wqy-microhei 2>/dev/null | grep -q 'ok installed'; then
  missing+=(fonts-wqy-microhei)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
chromium=$(command -v chromium)

mkdir -p target
env_file=target/services.env
touch "$env_file"
# Replaces the line for one variable in the env file, keeping the others (as services.sh does).
set_env() { grep -v "^export $1=" "$env_file" > "$env_file.tmp" || true; echo "export $1=$2" >> "$env_file.tmp"; mv "$env_file.tmp" "$env_file"; }
set_env YICHUANG_CHROMIUM "$chromium"
# The Debian launcher prints a shell warning on some machines; the version is its last line.
echo "browser: $("$chromium" --version 2>/dev/null | tail -n 1)"
