// BullMQ worker for the side-by-side benchmark (see bench/README.md, "driver protocol").
//
// One process, BENCH_CONCURRENCY concurrent jobs (default 50). The no-op handler only records
// its start: a clock read, then either a counter plus first/last start (throughput jobs) or
// start - data.t (latency jobs). Nothing touches I/O on the job path; a 100 ms timer writes the
// totals to BENCH_STATS_FILE (write temp, rename), and once more on SIGTERM after close().
import { Worker } from 'bullmq';
import { writeFileSync, renameSync } from 'node:fs';

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const statsFile = process.env.BENCH_STATS_FILE;
if (!statsFile) throw new Error('BENCH_STATS_FILE is not set');
const connection = { host: '127.0.0.1', port: Number(process.env.BENCH_REDIS_PORT ?? '6379') };
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? '50');

const stats = { pid: process.pid, ready: 0, count: 0, first: 0, last: 0, lat_ms: [] };
const flush = () => {
  writeFileSync(`${statsFile}.tmp`, JSON.stringify(stats));
  renameSync(`${statsFile}.tmp`, statsFile);
};

const worker = new Worker(
  'bench',
  async (job) => {
    const start = now();
    if (job.data.t !== undefined) {
      stats.lat_ms.push((start - job.data.t) * 1000);
      return;
    }
    stats.count++;
    if (stats.first === 0) stats.first = start;
    stats.last = start;
  },
  { connection, concurrency },
);
worker.on('error', (err) => console.error(`bullmq worker error: ${err.message}`));
await worker.waitUntilReady();
stats.ready = now();
flush();
const timer = setInterval(flush, 100);

process.on('SIGTERM', async () => {
  clearInterval(timer);
  await worker.close();
  flush();
  process.exit(0);
});
