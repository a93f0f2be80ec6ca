#!/usr/bin/env bash
# Checks what building needs besides the crates: cargo (the Rust toolchain, from rustup: the one
# thing the scripts cannot install) and a C compiler as linker and for the crates that compile C
# (ring, the bundled SQLite): gcc, installed from Debian when missing. With --lint, also rustfmt
# and clippy, added with `rustup component add` when missing. No protoc: build.rs uses protox.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=toolchain
. scripts/lib.sh

cargo=${CARGO:-cargo}
if ! command -v "$cargo" >/dev/null 2>&1; then
  echo "toolchain: no $cargo: install the Rust toolchain with rustup, then open a new shell" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  apt_install gcc libc6-dev
fi
if [ "${1:-}" = --lint ]; then
  components=()
  "$cargo" fmt --version >/dev/null 2>&1 || components+=(rustfmt)
  "$cargo" clippy --version >/dev/null 2>&1 || components+=(clippy)
  if [ "${#components[@]}" -gt 0 ]; then
    if ! command -v rustup >/dev/null 2>&1; then
      echo "toolchain: \`make lint\` needs ${components[*]}: add them to your Rust toolchain" >&2
      exit 1
    fi
    echo "toolchain: adding ${components[*]}"
    if ! out=$(rustup component add "${components[@]}" 2>&1); then
      echo "$out" >&2
      echo "toolchain: \`rustup component add ${components[*]}\` failed (rustup downloads the components from the Rust project)" >&2
      exit 1
    fi
  fi
fi
