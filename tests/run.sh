#!/usr/bin/env bash
# Runs every Kiln test from a fresh clone that has only the Rust toolchain: installs what the
# tests need (the wasm32-wasip2 target, redis-server, openssl), builds the example handlers, runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update && $sudo apt-get install -y "${missing[@]}"
fi
bash guests/build.sh
cargo test --workspace "$@"
