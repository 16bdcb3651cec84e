/**
 * bench:infer — the vibration model behind the site's inference path.
 *
 *  1. Throughput and p50/p95 latency at concurrency 1, 8 and 64, with batching off
 *     (maxBatchSize 1) and on (maxBatchSize 64, maxQueueDelayMs 2), over HTTP (Open Inference
 *     Protocol) against a server process running the site's own code (OIP routes, model host,
 *     dynamic batcher, ONNX Runtime). Ratios: throughput on/off, p95 on/off (Triton publishes
 *     3.7× throughput at about the same latency; aim ≥ 3.7× at ≤ 1.2× the p95).
 *  2. The overhead of the whole HTTP path against a direct session.run, both at concurrency 1
 *     (aim ≤ 1 ms at p50).
 *  3. A rule calling infer() on the site's model host (ModelRule over ModelHost.inferRow, in
 *     process): 20,000 records pushed at once, with the 256-call window sites use against no
 *     window (every call out at once, as before the window). Records/s and the most calls queued
 *     at the model: the window must cost no throughput (aim ≥ 0.95×) and keep the model's queue
 *     under its 1,024-row bound.
 * BENCH_SECONDS (default 4) is the length of each measured run.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'node:http';
import Fastify from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { Registry } from 'prom-client';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { RuntimeRegistry } from '../src/inference/runtime.ts';
import { ModelHost } from '../src/inference/host.ts';
import { registerOip } from '../src/inference/oip.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { ModelRule } from '../src/stream/model-rule.ts';
import { planQuery } from '../src/stream/planner.ts';

const MODEL = fileURLToPath(new URL('../models/vibration-ae.onnx', import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);

/** The site's model host serving the vibration model (app `bench`, endpoint `score`). */
async function benchHost(batching: { maxBatchSize: number; maxQueueDelayMs: number; maxQueueSize: number }): Promise<ModelHost> {
  const host = new ModelHost({
    runtimes: new RuntimeRegistry().register(new OnnxRuntime()),
    clock: systemClock,
    log: silentLogger(),
    registry: new Registry(),
    fetchModel: async () => MODEL,
  });
  await host.start({
    name: 'bench',
    version: '1.0.0',
    deploymentId: 'd',
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'bench', version: '1.0.0' },
      spec: {
        models: [{ name: 'vib-ae', format: 'onnx', sha256: '0'.repeat(64), batching }],
        endpoints: [{ name: 'score', model: 'vib-ae' }],
      },
    }),
  });
  return host;
}

async function server(maxBatchSize: number): Promise<void> {
  const host = await benchHost({
    maxBatchSize,
    maxQueueDelayMs: maxBatchSize > 1 ? Number(process.env.BENCH_DELAY_MS ?? 0) : 0,
    maxQueueSize: 100_000,
  });
  const app = Fastify();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  registerOip(app, host);
  const addr = await app.listen({ port: 0, host: '127.0.0.1' });
  process.stdout.write(`${JSON.stringify({ event: 'ready', url: addr })}\n`);
}

function startServer(maxBatchSize: number): Promise<{ url: string; kill: () => void }> {
  const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'server', String(maxBatchSize)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l);
        if (o.event === 'ready') resolve({ url: o.url, kill: () => p.kill('SIGKILL') });
      } catch {
        /* ignore */
      }
    });
    p.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

const body = (i: number) =>
  JSON.stringify({
    inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1 + (i % 7) / 10, 3 + (i % 5) / 10, 120 + (i % 11)] }],
  });

function post(agent: Agent, url: URL, payload: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: '/v2/models/score/infer',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN;
};

async function load(urlText: string, concurrency: number, seconds: number): Promise<{ rps: number; p50: number; p95: number }> {
  const url = new URL(urlText);
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const lat: number[] = [];
  // Warm-up.
  await Promise.all(Array.from({ length: concurrency }, (_, i) => post(agent, url, body(i))));
  const end = performance.now() + seconds * 1000;
  let n = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await post(agent, url, body(n++));
        lat.push(performance.now() - t);
      }
    }),
  );
  agent.destroy();
  return { rps: lat.length / seconds, p50: pct(lat, 0.5), p95: pct(lat, 0.95) };
}

async function direct(): Promise<number> {
  const m = await new OnnxRuntime().load({ name: 'd', format: 'onnx', file: MODEL });
  const lat: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const t = performance.now();
    await m.run({ features: { datatype: 'FP32', shape: [1, 3], data: Float32Array.from([1 + (i % 7) / 10, 3, 120]) } });
    if (i >= 500) lat.push(performance.now() - t);
  }
  await m.close();
  return pct(lat, 0.5);
}

/** Part 3: records/s of a model rule over the model host, and the most calls out at once. */
async function ruleRun(maxCalls: number, records: number): Promise<{ rps: number; maxOut: number }> {
  // A queue big enough for the unwindowed run (its default, 1,024, would refuse most of it).
  const host = await benchHost({ maxBatchSize: 64, maxQueueDelayMs: 0, maxQueueSize: 1_000_000 });
  const plan = planQuery(
    "SELECT n, infer('vib-ae', a, b, c) AS score FROM s",
    { name: 's', schema: { n: 'int', a: 'float', b: 'float', c: 'float' } },
    { models: ['vib-ae'], lateness: 0 },
  );
  let out = 0;
  let calls = 0;
  let maxOut = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => {
    done = r;
  });
  const rule = new ModelRule(
    plan,
    {
      clock: systemClock,
      lateness: 0,
      maxWaiting: records,
      maxCalls,
      emit: (rows) => {
        out += rows.length;
        if (out === records) done();
      },
    },
    async (model, args) => {
      calls++;
      maxOut = Math.max(maxOut, calls);
      try {
        return await host.inferRow('bench', model, args);
      } finally {
        calls--;
      }
    },
  );
  const t = performance.now();
  for (let i = 0; i < records; i++) rule.push({ n: i, a: 1 + (i % 7) / 10, b: 3 + (i % 5) / 10, c: 120 + (i % 11) });
  await finished;
  const rps = records / ((performance.now() - t) / 1000);
  await host.close();
  return { rps, maxOut };
}

if (process.argv[2] === 'server') {
  await server(Number(process.argv[3]));
} else {
  const f = (x: number, d = 2) => x.toFixed(d);
  console.log(
    `bench:infer — vibration autoencoder (models/vibration-ae.onnx), OIP over HTTP on loopback, ${SECONDS} s per run; client and server are separate processes`,
  );
  const results = new Map<string, { rps: number; p50: number; p95: number }>();
  for (const [label, mbs] of [
    ['batching off', 1],
    ['batching on', 64],
  ] as const) {
    const s = await startServer(mbs);
    try {
      for (const c of [1, 8, 64]) {
        const r = await load(s.url, c, SECONDS);
        results.set(`${label}/${c}`, r);
        console.log(
          `  ${label.padEnd(13)} concurrency ${String(c).padStart(2)}: ${f(r.rps, 0).padStart(7)} req/s   p50 ${f(r.p50)} ms   p95 ${f(r.p95)} ms`,
        );
      }
    } finally {
      s.kill();
    }
  }
  for (const c of [1, 8, 64]) {
    const off = results.get(`batching off/${c}`)!;
    const on = results.get(`batching on/${c}`)!;
    console.log(`  concurrency ${String(c).padStart(2)}: batching on/off throughput ${f(on.rps / off.rps)}×, p95 ${f(on.p95 / off.p95)}×`);
  }
  const d = await direct();
  const http = results.get('batching off/1')!;
  console.log(`  direct session.run p50 ${f(d, 3)} ms; whole HTTP path p50 ${f(http.p50, 3)} ms; overhead ${f(http.p50 - d, 3)} ms`);
  // Part 3, alternating so drift on a shared machine hits both alike; the best of three each.
  const RECORDS = 20_000;
  const best = { windowed: { rps: 0, maxOut: 0 }, unbounded: { rps: 0, maxOut: 0 } };
  await ruleRun(256, 2000); // warm-up
  for (let i = 0; i < 3; i++)
    for (const [k, calls] of [
      ['windowed', 256],
      ['unbounded', Number.POSITIVE_INFINITY],
    ] as const) {
      const r = await ruleRun(calls, RECORDS);
      if (r.rps > best[k].rps) best[k] = r;
    }
  console.log(
    `  rule with infer(), ${RECORDS} records at once: 256-call window ${f(best.windowed.rps, 0)} records/s (at most ${best.windowed.maxOut} calls out); unbounded ${f(best.unbounded.rps, 0)} records/s (${best.unbounded.maxOut} out); window/unbounded ${f(best.windowed.rps / best.unbounded.rps)}×`,
  );
  process.exit(0);
}
