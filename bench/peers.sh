#!/usr/bin/env bash
# Side-by-side benchmark: Kiln's Redis store vs BullMQ and Celery on one redis-server.
#
# Installs the peers into bench/.scratch (gitignored): BullMQ 6 + ioredis with npm, Celery 5
# with pip in a python3.11 venv. Starts ONE redis-server on a free loopback port in a temp dir,
# runs bench/run.py against it (which FLUSHALLs between systems), and stops that redis-server
# by its pid on exit. All traffic stays on 127.0.0.1.
#
# Usage: bench/peers.sh [run.py options]    e.g. bench/peers.sh --jobs 10000 --systems bullmq
# Environment: BENCH_SCRATCH (default bench/.scratch); KILN_* (see bench/README.md).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
scratch=${BENCH_SCRATCH:-$here/.scratch}
python=${BENCH_PYTHON:-python3.11}
mkdir -p "$scratch"

setup_node() {
  local dir=$scratch/node
  mkdir -p "$dir"
  cp "$here/bullmq/produce.mjs" "$here/bullmq/worker.mjs" "$dir/"
  if ! cmp -s "$here/bullmq/package.json" "$dir/package.json" || [ ! -d "$dir/node_modules/bullmq" ]; then
    cp "$here/bullmq/package.json" "$dir/package.json"
    echo "installing bullmq + ioredis into $dir" >&2
    (cd "$dir" && timeout 600 npm install --no-audit --no-fund --loglevel=error >&2)
  fi
}

setup_python() {
  local venv=$scratch/venv
  if [ ! -x "$venv/bin/celery" ]; then
    echo "installing celery[redis] into $venv" >&2
    "$python" -m venv "$venv"
    timeout 600 "$venv/bin/pip" install --quiet 'celery[redis]>=5,<6' >&2
  fi
}

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

setup_node
setup_python

rundir=$(mktemp -d "$scratch/run.XXXXXX")
port=$(free_port)
redis-server --save '' --appendonly no --port "$port" --bind 127.0.0.1 --dir "$rundir" \
  --logfile "$rundir/redis.log" &
redis_pid=$!
stop_redis() {
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
}
trap stop_redis EXIT

for _ in $(seq 1 100); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null

"$python" "$here/run.py" --port "$port" --scratch "$scratch" --rundir "$rundir" \
  --results "$here/results" "$@"
