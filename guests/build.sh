#!/usr/bin/env bash
# Builds every guest handler to a WebAssembly component and copies the results:
#   target/guests/    every guest (what the tests load)
#   target/handlers/  the example handlers (the demo's handlers directory)
# Runs from anywhere. A file is only replaced when its contents changed, and then by a rename,
# so a running host that watches target/handlers never sees a half-written file or a
# needless reload.
set -euo pipefail
cd "$(dirname "$0")/.."

# Handlers the demo serves; the others exist only for tests and benchmarks: `wrongworld`,
# `nextcontract` and `alien` (components Kiln must refuse), `big` and `bigmem` (large files and
# large memories), `oversize` (values over the caps), `chatter` (log floods), and the hostile
# network guests `hoard`, `follow`, `flood`, `forge`, `sockets`.
EXAMPLES=(echo flaky spin hog panic progress fanout escape fetch webhook)

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "error: the wasm32-wasip2 target is missing; run: rustup target add wasm32-wasip2" >&2
  exit 1
fi

cargo build --release --target wasm32-wasip2 --manifest-path guests/Cargo.toml

built="${CARGO_TARGET_DIR:-guests/target}/wasm32-wasip2/release"
mkdir -p target/guests target/handlers

# copy_if_changed SRC DIR: copy SRC into DIR unless an identical file is already there.
copy_if_changed() {
  local dest="$2/$(basename "$1")"
  if ! cmp -s "$1" "$dest"; then
    cp "$1" "$2/.$(basename "$1").tmp"
    mv -f "$2/.$(basename "$1").tmp" "$dest"
    echo "  updated $dest"
  fi
}

guests=()
for wasm in "$built"/*.wasm; do
  copy_if_changed "$wasm" target/guests
  guests+=("$(basename "$wasm" .wasm)")
done
for name in "${EXAMPLES[@]}"; do
  copy_if_changed "$built/$name.wasm" target/handlers
done

echo "guests (${#guests[@]}): ${guests[*]} -> $(pwd)/target/guests/"
echo "example handlers: ${EXAMPLES[*]} -> $(pwd)/target/handlers/"
