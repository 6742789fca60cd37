#!/usr/bin/env python3
"""Hostile handlers against a running host: what each attack costs the host and `echo`.

    python3 bench/attacks.py                      # every attack, target/release/kiln
    python3 bench/attacks.py --kiln old=/path/to/kiln --kiln new=target/release/kiln
    python3 bench/attacks.py --only log-flood,slow-sink --probes 10

For each attack, a fresh project (handlers directory, config, embedded store) and a fresh
`kiln run`; the attack's jobs are enqueued, and while they run `echo` jobs are sent one at a
time (`--probes`, each waited for). Reported per attack and binary:

- echo latency: p50 and max of `finished_at - created_at` (store timestamps, ms), so the
  CLI's own start-up is not counted;
- host RSS: the host process's resident memory before the attack and its peak during it,
  sampled every 20 ms from /proc (the compile child of `kiln run` is its own process and
  bounded by `host.compile_memory`; it is not counted here);
- host log: bytes the host wrote to its log during the attack;
- what became of the attack's jobs (state and the error's first words).

The CLI commands run `--cli` (this checkout's `target/release/kiln` by default); `--kiln`
picks the binary of `kiln run` only, so an older build can be measured with the same probes.

Needs the guests built (`bash guests/build.sh`) and a release build (`cargo build --release
-p kiln`). Run beside nothing else heavy: the numbers compare attacks within one run, and
binaries when several `--kiln` are given (they run alternately per attack).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUESTS = ROOT / "target" / "guests"

BASE_CONFIG = """\
[host]
handlers_dir = "handlers"
cache_dir = "cache"
concurrency = 8
unknown_handler_grace = "10m"

[store]
path = "kiln.db"

[defaults]
timeout = "2s"
memory = "64MiB"
max_attempts = 1
"""


def compile_bomb(depth):
    """A component holding one function of `depth` nested empty blocks (as tests/util.rs)."""

    def leb(n):
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            if n == 0:
                out.append(byte)
                return bytes(out)
            out.append(byte | 0x80)

    def section(kind, body):
        return bytes([kind]) + leb(len(body)) + body

    body = b"\x00" + b"\x02\x40" * depth + b"\x0b" * (depth + 1)
    code = b"\x01" + leb(len(body)) + body
    module = b"\x00asm\x01\x00\x00\x00"
    module += section(1, b"\x01\x60\x00\x00") + section(3, b"\x01\x00") + section(10, code)
    return b"\x00asm\x0d\x00\x01\x00" + section(1, module)


class Host:
    """A `kiln run` in a project directory, its log to a file or to a slow reader."""

    def __init__(self, kiln, cli, project, slow_sink=None):
        self.kiln, self.cli_path, self.project = kiln, cli, project
        self.log_path = project / "host.log"
        env = dict(os.environ, KILN_CONFIG=str(project / "config.toml"), KILN_LOG="info",
                   NO_COLOR="1")
        self.env = env
        if slow_sink:
            self.proc = subprocess.Popen(
                [kiln, "run"], cwd=project, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            self.sink = threading.Thread(target=self._drain, args=(slow_sink,), daemon=True)
            self.sink.start()
        else:
            self.log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(
                [kiln, "run"], cwd=project, env=env,
                stdout=subprocess.DEVNULL, stderr=self.log,
            )
        self.peak = 0
        self.sampling = True
        threading.Thread(target=self._sample, daemon=True).start()

    def _drain(self, rate):
        """Reads the host's stderr at `rate` bytes/s into the log file."""
        chunk = 4096
        with open(self.log_path, "wb") as out:
            while True:
                data = self.proc.stderr.read1(chunk)
                if not data:
                    return
                out.write(data)
                out.flush()
                time.sleep(len(data) / rate)

    def rss(self):
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample(self):
        while self.sampling and self.proc.poll() is None:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def log_bytes(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def cli(self, *args, check=True):
        out = subprocess.run(
            [self.cli_path, *args], cwd=self.project, env=self.env, capture_output=True, timeout=300
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"kiln {' '.join(args)}: {out.stderr.decode(errors='replace')}")
        return out

    def enqueue(self, handler, payload):
        out = self.cli("enqueue", handler, "--payload", json.dumps(payload))
        return out.stdout.decode().strip()

    def status(self, job_id):
        return json.loads(self.cli("status", job_id, "--json").stdout)

    def logged(self, text):
        return text in self.log_path.read_text(errors="replace")

    def wait_logged(self, texts, what, timeout=120):
        deadline = time.time() + timeout
        while not all(self.logged(t) for t in texts):
            if time.time() > deadline:
                raise RuntimeError(f"the host never logged {what}")
            time.sleep(0.1)

    def stop(self):
        self.sampling = False
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def probe(host):
    """One echo job, waited for; its latency in ms from the store's timestamps."""
    out = host.cli("enqueue", "echo", "--payload", '"ping"', "--wait", "--timeout", "120s",
                   check=False)
    job_id = next(
        (line.removeprefix("waiting for job ") for line in out.stderr.decode().splitlines()
         if line.startswith("waiting for job ")), None)
    if out.returncode != 0 or job_id is None:
        return None
    job = host.status(job_id)
    return job["finished_at"] - job["created_at"]


def outcome(host, ids):
    """What became of the attack's jobs (`state (first words of the error)` counts), and
    the longest wall time of their attempts in ms."""
    seen, longest = {}, None
    for job_id in ids:
        job = host.status(job_id)
        error = (job.get("error") or "").split(":")[0][:60]
        key = job["state"] + (f" ({error})" if error else "")
        seen[key] = seen.get(key, 0) + 1
        for attempt in job.get("history") or []:
            wall = attempt["ended_at"] - attempt["started_at"]
            longest = wall if longest is None else max(longest, wall)
    return ", ".join(f"{n}x {k}" for k, n in sorted(seen.items())), longest


def logged_line(host, needle):
    """The message of the first host log line holding `needle`, shortened."""
    for line in host.log_path.read_text(errors="replace").splitlines():
        if needle in line:
            message = line.split(": ", 1)[-1]
            return message[:90] + ("..." if len(message) > 90 else "")
    return ""


def project_with(handlers, extra_config=""):
    project = Path(tempfile.mkdtemp(prefix="kiln-attack-"))
    (project / "handlers").mkdir()
    for name in handlers:
        (project / "handlers" / f"{name}.wasm").write_bytes((GUESTS / f"{name}.wasm").read_bytes())
    (project / "config.toml").write_text(BASE_CONFIG + extra_config)
    return project


# Each attack: (handlers, extra config, host options, start(host) -> (job ids, finished()),
# seconds the echo probes go on at least).
def attack_none(host):
    return [], lambda: True


def jobs_of(handler, payload, n):
    def start(host):
        ids = [host.enqueue(handler, payload) for _ in range(n)]
        return ids, lambda: all(host.status(i)["state"] not in ("waiting", "active", "scheduled")
                                for i in ids)
    return start


def attack_missing(host):
    """10,000 jobs for a handler that is gone: made by fanout while `ghost` was loaded and
    its queue paused, then `ghost.wasm` removed and the queue resumed."""
    host.cli("pause", "ghostq")
    parent = host.enqueue("fanout", {"handler": "ghost", "count": 10000})
    deadline = time.time() + 300
    while host.status(parent)["state"] != "succeeded":
        if time.time() > deadline:
            raise RuntimeError("fanout did not finish")
        time.sleep(0.2)
    (host.project / "handlers" / "ghost.wasm").unlink()
    host.wait_logged(["handler removed handler=ghost"], "ghost's removal")
    host.cli("resume", "ghostq")
    return [parent], lambda: True


def attack_bomb(host):
    (host.project / "handlers" / "bomb.wasm").write_bytes(compile_bomb(260_000))
    return [], lambda: host.logged("handler=bomb")


def attack_bigmem(host):
    (host.project / "handlers" / "bigmem.wasm").write_bytes((GUESTS / "bigmem.wasm").read_bytes())
    return [], lambda: host.logged("handler=bigmem")


ATTACKS = {
    "none": (["echo"], "", {}, attack_none, 0),
    "log-flood": (["echo", "chatter"], "", {},
                  jobs_of("chatter", {"calls": 10_000_000}, 1), 2),
    "stdout-flood-x7": (["echo", "chatter"], "", {},
                        jobs_of("chatter", {"stdout_mib": 2048, "stderr_mib": 2048}, 7), 2),
    "slow-sink": (["echo", "chatter"], "", {"slow_sink": 64 << 10},
                  jobs_of("chatter", {"calls": 200_000}, 4), 2),
    "missing-handler": (["echo", "fanout", "ghost"],
                        '\n[queues.ghostq]\n[handlers.ghost]\nqueue = "ghostq"\n'
                        '[handlers.fanout]\ntimeout = "300s"\n', {}, attack_missing, 35),
    "compile-bomb": (["echo"], "", {}, attack_bomb, 20),
    "bigmem": (["echo"], "", {}, attack_bigmem, 2),
    "oversize-result-x7": (["echo", "oversize"], "", {},
                           jobs_of("oversize", {"via": "result", "mib": 50}, 7), 2),
    "long-panic": (["echo", "panic"], "", {},
                   jobs_of("panic", {"message": "x" * 20_000}, 1), 0),
}


def run_attack(kiln, cli, name, probes):
    handlers, extra, options, start, seconds = ATTACKS[name]
    if name == "missing-handler":
        handlers = [h for h in handlers if h != "ghost"]
    project = project_with(handlers, extra)
    if name == "missing-handler":
        (project / "handlers" / "ghost.wasm").write_bytes((GUESTS / "echo.wasm").read_bytes())
        handlers = handlers + ["ghost"]
    host = Host(kiln, cli, project, **options)
    try:
        host.wait_logged([f"handler loaded handler={h} " for h in handlers], "its handlers")
        probe(host)  # warm: the first job of a host pays for its pool
        time.sleep(0.5)
        rss_before, log_before = host.rss(), host.log_bytes()
        host.peak = rss_before
        ids, finished = start(host)
        latencies, sent, until = [], 0, time.time() + seconds
        while sent < probes or time.time() < until:
            sent += 1
            latency = probe(host)
            if latency is not None:
                latencies.append(latency)
        deadline = time.time() + 120
        while not finished() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the last lines reach the log
        result = {
            "attack": name,
            "echo_p50": statistics.median(latencies) if latencies else None,
            "echo_max": max(latencies) if latencies else None,
            "echo_ok": f"{len(latencies)}/{sent}",
            "rss_before": rss_before,
            "rss_peak": host.peak,
            "log_growth": host.log_bytes() - log_before,
        }
        result["jobs"], result["wall_max"] = outcome(host, ids)
        if name == "missing-handler":
            log = host.log_path.read_text(errors="replace")
            result["jobs"] = (f"10000 jobs for a removed handler: "
                              f"{log.count('handler is not loaded')} warnings in "
                              f"{seconds} s")
            result["wall_max"] = None
        elif name in ("compile-bomb", "bigmem"):
            result["jobs"] = logged_line(host, f"handler={name.split('-')[-1]}")
        return result
    finally:
        host.stop()


def mib(n):
    return f"{n / (1 << 20):.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kiln", action="append",
                        help="LABEL=PATH of the kiln binary that runs the host (repeatable; "
                             "default target/release/kiln, which also runs every CLI command)")
    parser.add_argument("--cli", default=str(ROOT / "target" / "release" / "kiln"),
                        help="the kiln binary that runs every CLI command")
    parser.add_argument("--only", help="comma-separated attacks (default: all)")
    parser.add_argument("--probes", type=int, default=20, help="echo jobs per attack")
    args = parser.parse_args()
    binaries = []
    for spec in args.kiln or [f"this={args.cli}"]:
        label, _, path = spec.partition("=")
        binaries.append((label, str(Path(path).resolve())))
    names = args.only.split(",") if args.only else list(ATTACKS)
    cli = str(Path(args.cli).resolve())
    rows = []
    for name in names:
        for label, path in binaries:
            print(f"{name} ({label}) ...", file=sys.stderr, flush=True)
            row = run_attack(path, cli, name, args.probes)
            row["kiln"] = label
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| attack | kiln | echo p50 / max ms (ok) | host RSS MiB before -> peak | host log growth | "
          "longest attack attempt ms | what became of the attack |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        p50 = "-" if r["echo_p50"] is None else f"{r['echo_p50']:.0f}"
        top = "-" if r["echo_max"] is None else f"{r['echo_max']:.0f}"
        print(f"| {r['attack']} | {r['kiln']} | {p50} / {top} ({r['echo_ok']}) | "
              f"{mib(r['rss_before'])} -> {mib(r['rss_peak'])} | "
              f"{r['log_growth'] / 1024:.0f} KiB | "
              f"{'-' if r['wall_max'] is None else r['wall_max']} | {r['jobs']} |")


if __name__ == "__main__":
    main()
