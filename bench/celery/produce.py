"""Celery producer for the side-by-side benchmark (see bench/README.md, "driver protocol").

BENCH_MODE=bulk:    send BENCH_JOBS no-op tasks with apply_async(producer=p), one shared
                    producer, as Celery's docs recommend for sending many tasks.
BENCH_MODE=latency: send BENCH_JOBS tasks one at a time, each carrying t = enqueue time in
                    epoch seconds, sleeping BENCH_GAP_MS between them so workers are idle.
BENCH_MODE=count:   send nothing; only report what is left.
Prints one JSON line: {"enqueued", "t0", "t1", "left"} (t0/t1 = epoch seconds around the
send loop; left = LLEN of the `celery` list afterwards, read outside the timed loop).
"""

import json
import os
import time

from benchtasks import app, noop


def main():
    mode = os.environ.get("BENCH_MODE", "bulk")
    jobs = int(os.environ.get("BENCH_JOBS", "100000"))
    gap = float(os.environ.get("BENCH_GAP_MS", "5")) / 1000.0
    if mode not in ("bulk", "latency", "count"):
        raise SystemExit(f"unknown BENCH_MODE `{mode}`")
    with app.producer_pool.acquire(block=True) as p:
        p.connection.ensure_connection(max_retries=3)
        t0 = time.time()
        if mode == "bulk":
            for _ in range(jobs):
                noop.apply_async(producer=p)
        elif mode == "latency":
            for _ in range(jobs):
                noop.apply_async(kwargs={"t": time.time()}, producer=p)
                time.sleep(gap)
        t1 = time.time()
    with app.connection_for_write() as conn:
        left = conn.default_channel.client.llen("celery")
    enqueued = 0 if mode == "count" else jobs
    print(json.dumps({"enqueued": enqueued, "t0": t0, "t1": t1, "left": left}))


if __name__ == "__main__":
    main()
