"""Celery app for the side-by-side benchmark (see bench/README.md, "driver protocol").

Configured the way Celery's docs recommend for many tiny tasks: no result backend and
ignore_result, rate limits disabled, a high prefetch multiplier (64) for the solo pool. The
worker is started by bench/run.py with `-P solo --without-gossip --without-mingle
--without-heartbeat`, two instances.

The no-op task only records its start: a clock read, then either a counter plus first/last
start (throughput jobs) or start - t (latency jobs). Nothing touches I/O on the job path; a
thread writes the totals to BENCH_STATS_FILE every 100 ms (write temp, rename) and once more
at worker shutdown.
"""

import json
import os
import threading
import time

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

app = Celery("benchtasks", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    result_backend=None,
    task_ignore_result=True,
    worker_disable_rate_limits=True,
    worker_prefetch_multiplier=64,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

STATS = {"pid": os.getpid(), "ready": 0.0, "count": 0, "first": 0.0, "last": 0.0, "lat_ms": []}
_stop = threading.Event()


@app.task(name="noop", ignore_result=True)
def noop(t=None):
    start = time.time()
    if t is not None:
        STATS["lat_ms"].append((start - t) * 1000.0)
        return
    STATS["count"] += 1
    if STATS["first"] == 0.0:
        STATS["first"] = start
    STATS["last"] = start


def _flush():
    path = os.environ["BENCH_STATS_FILE"]
    with open(path + ".tmp", "w") as f:
        json.dump(STATS, f)
    os.replace(path + ".tmp", path)


def _flush_loop():
    while not _stop.wait(0.1):
        _flush()


@worker_ready.connect
def _on_ready(**_):
    STATS["pid"] = os.getpid()
    STATS["ready"] = time.time()
    _flush()
    threading.Thread(target=_flush_loop, daemon=True).start()


@worker_shutdown.connect
def _on_shutdown(**_):
    _stop.set()
    _flush()
