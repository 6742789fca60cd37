"""Drive the side-by-side benchmark against one running redis-server (see bench/README.md).

bench/peers.sh installs the peers, starts redis-server and calls this file. For each system
this file runs the same phases, with the same measuring method, and prints a markdown table:

  1. FLUSHALL, sample CPU idle.
  2. bulk:    the producer enqueues --jobs no-op jobs with no worker running -> enqueue rate.
  3. drain:   the workers are spawned; each records start-up (spawn -> ready) and, in memory,
              the count and first/last start time of the jobs it runs -> processing rate.
  4. latency: on the now idle workers the producer enqueues --lat-jobs jobs one at a time,
              --gap-ms apart, each carrying its enqueue time -> enqueue -> start p50/p99.
  5. workers stopped (SIGTERM to the process group we started), queue checked empty,
     CPU idle sampled again.

Only the standard library is used, so any python3 runs it. Every wait has a timeout.
"""

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
POLL_S = 0.05


class BenchError(Exception):
    """A system could not be measured; the row shows the message instead of numbers."""


@dataclass
class System:
    """How to run one system: a producer command and one command per worker instance."""

    name: str
    config: str
    produce: list
    workers: list
    cwd: Path
    env: dict = field(default_factory=dict)


def cpu_idle(seconds=2.0):
    """Percent of CPU time idle (idle + iowait) across all cores over `seconds`."""

    def sample():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return vals[3] + vals[4], sum(vals)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 100.0 * (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(min_idle, max_wait):
    """Sample CPU idle until it reaches min_idle percent or max_wait seconds pass; return the last."""
    deadline = time.time() + max_wait
    idle = cpu_idle()
    while idle < min_idle and time.time() < deadline:
        idle = cpu_idle()
    return idle


def machine_info():
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "redis": redis.stdout.strip(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
    }


def redis_cli(port, *args):
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip()


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


class Runner:
    """Runs the phases of one system; owns the worker processes it started."""

    def __init__(self, args, system, rep):
        self.args = args
        self.sys = system
        self.dir = Path(args.rundir) / f"{system.name.replace(' ', '_')}-{rep}"
        self.dir.mkdir(parents=True, exist_ok=False)
        self.procs = []

    def env(self, **extra):
        env = dict(os.environ)
        env.update(
            BENCH_REDIS_PORT=str(self.args.port),
            BENCH_REDIS_URL=f"redis://127.0.0.1:{self.args.port}/0",
            BENCH_BROKER=f"redis://127.0.0.1:{self.args.port}/0",
            BENCH_GAP_MS=str(self.args.gap_ms),
        )
        env.update(self.sys.env)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def produce(self, mode, jobs, timeout):
        log = self.dir / f"produce-{mode}.log"
        with open(log, "w") as err:
            try:
                out = subprocess.run(
                    self.sys.produce, cwd=self.sys.cwd, stdout=subprocess.PIPE, stderr=err,
                    text=True, timeout=timeout, env=self.env(BENCH_MODE=mode, BENCH_JOBS=jobs),
                )
            except subprocess.TimeoutExpired:
                raise BenchError(f"producer ({mode}) timed out after {timeout}s, see {log}")
        if out.returncode != 0:
            raise BenchError(f"producer ({mode}) exited {out.returncode}: {tail(log)}")
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if not lines:
            raise BenchError(f"producer ({mode}) printed no JSON line: {out.stdout[-300:]}")
        return json.loads(lines[-1])

    def stats_files(self):
        return [self.dir / f"worker{i}.json" for i in range(len(self.sys.workers))]

    def spawn_workers(self):
        for i, cmd in enumerate(self.sys.workers):
            env = self.env(BENCH_STATS_FILE=self.stats_files()[i])
            with open(self.dir / f"worker{i}.log", "w") as log:
                p = subprocess.Popen(cmd, cwd=self.sys.cwd, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
            self.procs.append(p)

    def read_stats(self):
        out = []
        for path in self.stats_files():
            try:
                out.append(json.loads(path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError):
                out.append(None)
        return out

    def wait_for(self, what, done, timeout):
        """Poll the stats files until done(stats) holds; fail if a worker dies or time runs out."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            stats = self.read_stats()
            if all(s is not None for s in stats) and done(stats):
                return stats
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise BenchError(f"worker {i} exited {p.returncode} while waiting for {what}: "
                                     f"{tail(self.dir / f'worker{i}.log')}")
            time.sleep(POLL_S)
        stats = [s or {} for s in self.read_stats()]
        raise BenchError(f"timed out after {timeout}s waiting for {what} "
                         f"(counts {[s.get('count') for s in stats]}, "
                         f"latency {[len(s.get('lat_ms', [])) for s in stats]})")

    def stop_workers(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def run(self):
        a = self.args
        redis_cli(a.port, "FLUSHALL")
        idle = wait_for_idle(a.min_idle, a.idle_wait)
        row = {"system": self.sys.name, "config": self.sys.config, "cpu_idle_before": idle}
        try:
            self.measure(row)
        finally:
            self.stop_workers()
        final = self.read_stats()
        row["processed"] = sum(s["count"] for s in final)
        row["lat_processed"] = sum(len(s["lat_ms"]) for s in final)
        lat = sorted(x for s in final for x in s["lat_ms"])
        row["lat_p50_ms"], row["lat_p99_ms"] = percentile(lat, 50), percentile(lat, 99)
        row["left"] = self.produce("count", 0, a.timeout)["left"]
        row["cpu_idle_after"] = cpu_idle()
        return row

    def measure(self, row):
        a = self.args
        bulk = self.produce("bulk", a.jobs, a.timeout)
        row["enqueued"] = bulk["enqueued"]
        row["enqueue_s"] = bulk["t1"] - bulk["t0"]
        if bulk["left"] != a.jobs:
            raise BenchError(f"{bulk['left']} jobs waiting after enqueueing {a.jobs}")
        spawned = time.time()
        self.spawn_workers()
        ready = self.wait_for("worker start-up", lambda st: all(s["ready"] for s in st), 120)
        row["startup_s"] = max(s["ready"] for s in ready) - spawned
        drained = self.wait_for("the drain", lambda st: sum(s["count"] for s in st) >= a.jobs,
                                a.timeout)
        first = min(s["first"] for s in drained if s["count"])
        last = max(s["last"] for s in drained if s["count"])
        row["first_start_after_spawn_s"] = first - spawned
        row["drain_s"] = last - first
        row["drain_count"] = sum(s["count"] for s in drained)
        time.sleep(1.0)  # workers idle again before the latency phase
        self.produce("latency", a.lat_jobs, a.timeout)
        self.wait_for("the latency jobs",
                      lambda st: sum(len(s["lat_ms"]) for s in st) >= a.lat_jobs, 60)


def tail(path, n=600):
    try:
        return Path(path).read_text()[-n:].strip()
    except FileNotFoundError:
        return f"(no {path})"


def peers(args):
    node = Path(args.scratch) / "node"
    venv = Path(args.scratch) / "venv"
    out = []
    for c in args.bullmq_concurrency:
        out.append(System(
            name=f"BullMQ c={c}", config=f"1 worker process, concurrency {c}, addBulk x1000",
            produce=["node", "produce.mjs"], workers=[["node", "worker.mjs"]], cwd=node,
            env={"BENCH_CONCURRENCY": str(c), "BENCH_CHUNK": "1000"},
        ))
    celery_worker = [
        str(venv / "bin" / "celery"), "-A", "benchtasks", "worker", "-P", "solo", "-Q", "celery",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
    ]
    out.append(System(
        name="Celery", config="2 solo workers, prefetch x64, apply_async(producer=p)",
        produce=[str(venv / "bin" / "python"), "produce.py"],
        workers=[celery_worker + ["-n", f"bench{i}@localhost"] for i in range(2)],
        cwd=HERE / "celery",
    ))
    return out


# ---------------------------------------------------------------------------------------------
# KILN HOOK — to be filled in by the lead once Kiln's Redis store exists.
#
# Two ways, both documented in bench/README.md ("The Kiln hook"):
#   A. KILN_BENCH_PRODUCE_CMD and KILN_BENCH_WORKER_CMD (+ optional KILN_BENCH_WORKERS, default 1): shell
#      commands that follow the same driver protocol as the peers, so Kiln is measured by the
#      very same phases above. Preferred.
#   B. KILN_BENCH_CMD: one shell command that runs all phases itself and writes the result JSON
#      (same keys as a row) to $BENCH_OUT.
# With neither set, the Kiln row fails with "kiln redis benchmark not wired".
# ---------------------------------------------------------------------------------------------
def run_kiln(args, rep, name, concurrency, threads):
    """One Kiln run as `name`; its commands get KILN_BENCH_CONCURRENCY=`concurrency` and
    KILN_BENCH_THREADS=`threads`."""
    produce, worker = os.environ.get("KILN_BENCH_PRODUCE_CMD"), os.environ.get("KILN_BENCH_WORKER_CMD")
    if produce and worker:
        n = int(os.environ.get("KILN_BENCH_WORKERS", "1"))
        system = System(
            name=name, config=os.environ.get("KILN_BENCH_CONFIG_NOTE", "redis store"),
            produce=["bash", "-c", produce], workers=[["bash", "-c", worker]] * n,
            cwd=Path(os.environ.get("KILN_BENCH_CWD", HERE.parent)),
            env={"KILN_BENCH_CONCURRENCY": str(concurrency), "KILN_BENCH_THREADS": str(threads)},
        )
        return Runner(args, system, rep).run()
    if os.environ.get("KILN_BENCH_CMD"):
        return run_kiln_whole(args, os.environ["KILN_BENCH_CMD"], rep, name, concurrency, threads)
    raise BenchError("kiln redis benchmark not wired")


def run_kiln_whole(args, cmd, rep, name, concurrency, threads):
    redis_cli(args.port, "FLUSHALL")
    out = Path(args.rundir) / f"kiln-result-{rep}-{threads}-{concurrency}.json"
    env = dict(os.environ, BENCH_REDIS_PORT=str(args.port),
               BENCH_REDIS_URL=f"redis://127.0.0.1:{args.port}/0", BENCH_JOBS=str(args.jobs),
               BENCH_LAT_JOBS=str(args.lat_jobs), BENCH_GAP_MS=str(args.gap_ms),
               BENCH_OUT=str(out), BENCH_TIMEOUT_S=str(args.timeout),
               KILN_BENCH_CONCURRENCY=str(concurrency), KILN_BENCH_THREADS=str(threads))
    before = wait_for_idle(args.min_idle, args.idle_wait)
    try:
        proc = subprocess.run(["bash", "-c", cmd], cwd=HERE.parent, env=env,
                              timeout=args.timeout * 2 + 120)
    except subprocess.TimeoutExpired:
        raise BenchError("KILN_BENCH_CMD timed out")
    if proc.returncode != 0:
        raise BenchError(f"KILN_BENCH_CMD exited {proc.returncode}")
    row = json.loads(out.read_text())
    row["system"] = name
    row.setdefault("config", os.environ.get("KILN_BENCH_CONFIG_NOTE", "redis store"))
    row["cpu_idle_before"], row["cpu_idle_after"] = before, cpu_idle()
    return row


def fmt(v, digits=0):
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def rates(row):
    row["enqueue_rate"] = row["enqueued"] / row["enqueue_s"] if row.get("enqueue_s") else None
    row["drain_rate"] = row["drain_count"] / row["drain_s"] if row.get("drain_s") else None
    return row


def table(rows, jobs):
    head = ("| system | config | enqueue jobs/s | worker start-up s | processing jobs/s "
            "| processed / expected | left in queue | latency p50 ms | latency p99 ms "
            "| CPU idle before / after |\n|" + "---|" * 10)
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | {r.get('config', '')} | {r['error']} |" + " |" * 7)
            continue
        lines.append(
            f"| {r['system']} | {r['config']} | {fmt(r['enqueue_rate'])} | {fmt(r['startup_s'], 2)} "
            f"| {fmt(r['drain_rate'])} | {r['processed']:,} / {jobs:,} | {r['left']} "
            f"| {fmt(r['lat_p50_ms'], 2)} | {fmt(r['lat_p99_ms'], 2)} "
            f"| {fmt(r['cpu_idle_before'])}% / {fmt(r['cpu_idle_after'])}% |")
    return "\n".join(lines)


def ratios(rows):
    ok = [r for r in rows if "error" not in r]

    def fastest(system):
        cands = [r for r in ok if r["system"].startswith(system)]
        return max(cands, key=lambda r: r["drain_rate"] or 0) if cands else None

    kiln = fastest("Kiln")
    if kiln is None:
        return "Kiln/BullMQ and Kiln/Celery: not computed (no Kiln numbers in this run)."
    out = ["| ratio | enqueue | processing | p50 latency (lower is better) | p99 latency |",
           "|---|---|---|---|---|"]
    for peer in ("BullMQ", "Celery"):
        best = fastest(peer)
        if best is None:
            continue
        out.append(
            f"| {kiln['system']}/{best['system']} "
            f"| {kiln['enqueue_rate'] / best['enqueue_rate']:.2f}x "
            f"| {kiln['drain_rate'] / best['drain_rate']:.2f}x "
            f"| {kiln['lat_p50_ms'] / best['lat_p50_ms']:.2f}x "
            f"| {kiln['lat_p99_ms'] / best['lat_p99_ms']:.2f}x |")
    return "\n".join(out)


def report(args, info, rows, started):
    cmd = "bench/peers.sh " + " ".join(sys.argv[sys.argv.index("--results") + 2:])
    summary = median_rows(rows) if args.repeat > 1 else rows
    all_runs = ""
    if args.repeat > 1:
        all_runs = "All runs, in the order they ran:\n\n" + table(
            [dict(r, system=f"{r['system']} #{r['rep']}") for r in rows], args.jobs) + "\n"
    details = "\n".join(
        f"- {r['system']} #{r['rep']}: enqueue {fmt(r.get('enqueue_s'), 2)} s, first start "
        f"{fmt(r.get('first_start_after_spawn_s'), 2)} s after spawn, first->last start "
        f"{fmt(r.get('drain_s'), 2)} s, latency jobs {r.get('lat_processed', '-')}/{args.lat_jobs}"
        for r in rows if "error" not in r)
    return f"""# Kiln vs peers on one redis-server — {started}

Command: `{cmd.strip()}`

Machine: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}; {info['redis']}
(`--save '' --appendonly no`, loopback). Load average at start: {' '.join(info['loadavg'])}.

{args.jobs:,} no-op jobs enqueued with no worker running, then drained. Processing jobs/s =
processed / (last job start - first job start); worker start-up (spawn -> ready) is apart.
Latency = handler start - enqueue call, {args.lat_jobs:,} jobs sent one at a time
{args.gap_ms:g} ms apart to idle workers. Each handler keeps its count and first/last start in
memory; a 100 ms timer writes them to a per-worker file (no I/O on the job path).

{table(summary, args.jobs)}

{ratios(summary)}

{all_runs}
{details}
"""


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("--rundir", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--lat-jobs", type=int, default=1_000)
    p.add_argument("--gap-ms", type=float, default=5.0)
    p.add_argument("--timeout", type=int, default=900, help="seconds per enqueue or drain phase")
    p.add_argument("--systems", default="bullmq,celery,kiln")
    p.add_argument("--bullmq-concurrency", default="50,100",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--kiln-concurrency", default="64,128",
                   type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--kiln-threads", default="1,2",
                   type=lambda s: [int(x) for x in s.split(",")],
                   help="Kiln runs with each host.threads at each --kiln-concurrency")
    p.add_argument("--repeat", type=int, default=1,
                   help="run all systems this many times, interleaved; the summary is the median")
    p.add_argument("--min-idle", type=float, default=0.0,
                   help="before each system, wait until CPU idle reaches this percent...")
    p.add_argument("--idle-wait", type=float, default=120.0,
                   help="...but at most this many seconds")
    p.add_argument("--no-save", action="store_true", help="print only, no results file")
    return p.parse_args()


def run_once(args, rep):
    wanted = args.systems.split(",")
    rows = []
    for system in [s for s in peers(args) if s.name.split()[0].lower() in wanted]:
        print(f"== [{rep}] {system.name}: {system.config}", file=sys.stderr, flush=True)
        try:
            rows.append(rates(Runner(args, system, rep).run()))
        except BenchError as e:
            rows.append({"system": system.name, "config": system.config, "error": str(e)})
        print(f"   {rows[-1]}", file=sys.stderr, flush=True)
    kiln = [(t, c) for t in args.kiln_threads for c in args.kiln_concurrency]
    for t, c in kiln if "kiln" in wanted else []:
        name = f"Kiln t={t} c={c}"
        print(f"== [{rep}] {name}", file=sys.stderr, flush=True)
        try:
            rows.append(rates(run_kiln(args, rep, name, c, t)))
        except BenchError as e:
            rows.append({"system": name, "config": "redis store", "error": str(e)})
        print(f"   {rows[-1]}", file=sys.stderr, flush=True)
    for r in rows:
        r["rep"] = rep
    return rows


def median_rows(rows):
    """One row per system: the median of each measure over the runs that succeeded."""
    out = []
    for name in dict.fromkeys(r["system"] for r in rows):
        runs = [r for r in rows if r["system"] == name]
        ok = [r for r in runs if "error" not in r]
        if not ok:
            out.append(runs[-1])
            continue
        row = dict(ok[0])
        for key in ("enqueue_rate", "drain_rate", "startup_s", "lat_p50_ms", "lat_p99_ms",
                    "cpu_idle_before", "cpu_idle_after"):
            row[key] = statistics.median(r[key] for r in ok)
        row["processed"] = min(r["processed"] for r in ok)
        row["left"] = max(r["left"] for r in ok)
        row["config"] += f" (median of {len(ok)}/{len(runs)} runs)"
        out.append(row)
    return out


def main():
    args = parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    info = machine_info()
    rows = [r for rep in range(1, args.repeat + 1) for r in run_once(args, rep)]
    text = report(args, info, rows, started)
    print(text)
    if not args.no_save:
        Path(args.results).mkdir(parents=True, exist_ok=True)
        name = f"peers-{datetime.datetime.now().strftime('%Y-%m-%d-%H%M')}.md"
        (Path(args.results) / name).write_text(text)
        print(f"saved bench/results/{name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
