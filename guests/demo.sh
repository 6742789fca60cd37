#!/usr/bin/env bash
# The demo: builds the example handlers and the `kiln` binary, runs the host in the
# foreground (it creates the embedded store named by the repo's config.toml) and enqueues
# one job for each example handler, so you can watch it work through them. Ctrl-C stops it
# gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
bash guests/build.sh
cargo build --release -p kiln
kiln=target/release/kiln

# Only `kiln run` creates a store: the jobs are enqueued from the background once the host
# in the foreground has created (or opened) target/kiln.db.
(
    while [ ! -e target/kiln.db ]; do sleep 0.1; done
    echo "enqueueing example jobs:"
    $kiln enqueue echo --payload '{"hello": "kiln"}'
    $kiln enqueue flaky --payload '{"fail_times": 2}'
    $kiln enqueue progress --payload '{"pause_ms": 100}'
    $kiln enqueue fanout --payload '{"handler": "echo", "count": 3, "payload": {"child": true}}'
    $kiln enqueue escape
    $kiln enqueue panic --payload '{"message": "a handler bug"}'
    $kiln enqueue spin
    $kiln enqueue hog
    $kiln enqueue fetch --payload '{"url": "https://example.com/"}'
    $kiln enqueue echo --payload '{"later": true}' --in 5s
) &
echo "starting the host (Ctrl-C to stop; then try: $kiln stats, $kiln jobs, $kiln status ID)"
exec $kiln run
