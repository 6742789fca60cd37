// BullMQ producer for the side-by-side benchmark (see bench/README.md, "driver protocol").
//
// BENCH_MODE=bulk:    enqueue BENCH_JOBS no-op jobs with queue.addBulk in chunks of
//                     BENCH_CHUNK (default 1000), removeOnComplete: true.
// BENCH_MODE=latency: enqueue BENCH_JOBS jobs one at a time, each carrying {t: enqueue time
//                     in epoch seconds}, sleeping BENCH_GAP_MS between them so workers are idle.
// BENCH_MODE=count:   enqueue nothing; only report what is left.
// Prints one JSON line: {"enqueued", "t0", "t1", "left"} (t0/t1 = epoch seconds around the
// enqueue loop; left = jobs waiting, active, delayed or failed afterwards, read outside the
// timed loop).
import { Queue } from 'bullmq';

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const env = (k, d) => process.env[k] ?? d;
const mode = env('BENCH_MODE', 'bulk');
const jobs = Number(env('BENCH_JOBS', '100000'));
const chunk = Number(env('BENCH_CHUNK', '1000'));
const gapMs = Number(env('BENCH_GAP_MS', '5'));
const connection = { host: '127.0.0.1', port: Number(env('BENCH_REDIS_PORT', '6379')) };
const opts = { removeOnComplete: true };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const queue = new Queue('bench', { connection });
await queue.waitUntilReady();
let enqueued = 0;
const t0 = now();
if (mode === 'bulk') {
  while (enqueued < jobs) {
    const k = Math.min(chunk, jobs - enqueued);
    const batch = Array.from({ length: k }, () => ({ name: 'noop', data: {}, opts }));
    await queue.addBulk(batch);
    enqueued += k;
  }
} else if (mode === 'latency') {
  for (let i = 0; i < jobs; i++) {
    await queue.add('noop', { t: now() }, opts);
    enqueued++;
    await sleep(gapMs);
  }
} else if (mode !== 'count') {
  throw new Error(`unknown BENCH_MODE \`${mode}\``);
}
const t1 = now();
const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'failed', 'paused');
const left = Object.values(counts).reduce((a, b) => a + b, 0);
console.log(JSON.stringify({ enqueued, t0, t1, left }));
await queue.close();
