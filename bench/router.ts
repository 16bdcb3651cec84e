/**
 * bench:router — the cloud's inference router.
 *
 *  1. Added latency of the routed path (client → cloud OIP → MQTT → site → MQTT → cloud → client)
 *     against calling the site's local OIP endpoint directly, p50 and p99, at concurrency 1, 16
 *     and 64, in the same run, against the same site (a real cloud and a real agent in a server
 *     process; the vibration model on ONNX Runtime behind the site's batcher).
 *  2. Decisions per second of the pure placement policy over a fleet of 10,000 sites (and, as the
 *     baseline in the same run, over 100 sites).
 * BENCH_SECONDS (default 3) is the length of each measured run.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'node:http';
import { place, modelKey, type FleetSnapshot, type ModelState, type RouteRequest } from '../src/cloud/router/policy.ts';
import { seeded } from '../src/lib/random.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const MODEL = fileURLToPath(new URL('../models/vibration-ae.onnx', import.meta.url));

async function server(): Promise<void> {
  const { startTestCloud, startTestEdge, waitFor } = await import('../test/support/harness.ts');
  const bytes = readFileSync(MODEL);
  const sha = createHash('sha256').update(bytes).digest('hex');
  const cloud = await startTestCloud({ region: 'eu-west', inferRate: 1e6, inferBurst: 1e6, inferConcurrency: 10_000 });
  await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
    body: new Uint8Array(bytes),
  });
  const manifest = {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'bench-router', version: '1.0.0' },
    spec: {
      models: [
        {
          name: 'vib-ae',
          format: 'onnx',
          path: 'm.onnx',
          sha256: sha,
          batching: { maxBatchSize: 64, maxQueueDelayMs: 0, maxQueueSize: 100_000 },
        },
      ],
      endpoints: [{ name: 'score', model: 'vib-ae' }],
    },
  };
  await cloud.api('POST', '/api/v1/apps', { manifest });
  const edge = await startTestEdge(cloud, { region: 'eu-west', labels: { bench: 'router' } });
  await cloud.api('POST', '/api/v1/deployments', { app: 'bench-router', version: '1.0.0', selector: { bench: 'router' } });
  await waitFor(
    'model ready at the cloud',
    async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.status?.models?.[0]?.state === 'ready',
    60_000,
  );
  process.stdout.write(
    `${JSON.stringify({ event: 'ready', cloud: cloud.url, cloudKey: cloud.adminKey, site: edge.handle.apiUrl, siteKey: edge.apiKey })}\n`,
  );
}

interface Target {
  url: string;
  key: string;
}

function startServer(): Promise<{ cloud: Target; site: Target; kill: () => void }> {
  const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), 'server'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l);
        if (o.event === 'ready')
          resolve({ cloud: { url: o.cloud, key: o.cloudKey }, site: { url: o.site, key: o.siteKey }, kill: () => p.kill('SIGKILL') });
      } catch {
        /* a log line */
      }
    });
    p.on('exit', (c) => reject(new Error(`server exited ${c}`)));
  });
}

const BODY = JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.0, 3.0, 120] }] });

function post(agent: Agent, t: Target, headers: Record<string, string>): Promise<number> {
  const u = new URL('/v2/models/score/infer', t.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        agent,
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        headers: {
          authorization: `Bearer ${t.key}`,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(BODY),
          ...headers,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve(res.statusCode) : reject(new Error(`HTTP ${res.statusCode}`))));
      },
    );
    req.on('error', reject);
    req.end(BODY);
  });
}

async function measure(
  t: Target,
  concurrency: number,
  headers: Record<string, string> = {},
): Promise<{ rps: number; p50: number; p99: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  // Warm-up: connections, JIT, the router's caches.
  await Promise.all(Array.from({ length: concurrency }, () => post(agent, t, headers)));
  const lat: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await post(agent, t, headers);
        lat.push(performance.now() - t0);
      }
    }),
  );
  agent.destroy();
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;
  return { rps: lat.length / SECONDS, p50: q(0.5), p99: q(0.99) };
}

function policyBench(sites: number): number {
  const rand = seeded(42);
  const regions = ['eu-west', 'eu-central', 'us-east', 'ap-south'];
  const M = { app: 'a', name: 'm', version: '1.0.0' };
  const fleet: FleetSnapshot = {
    now: 0,
    sites: Array.from({ length: sites }, (_, i) => ({
      id: `site-${i}`,
      region: regions[i % regions.length]!,
      online: rand() < 0.95,
      models: new Map<string, ModelState>([[modelKey(M), rand() < 0.9 ? 'ready' : 'loading']]),
      queued: Math.floor(rand() * 8),
      inFlight: Math.floor(rand() * 8),
      parallelism: 4,
      latencyMs: 5 + rand() * 50,
      accelerators: rand() < 0.1 ? ['nvidia:0'] : [],
    })),
    cloud: { region: 'eu-west', canServe: true },
  };
  const req: RouteRequest = {
    endpoint: 'e',
    models: [M],
    regions: ['eu-west', 'eu-central'],
    cloudFallback: true,
    residency: { classes: { pii: { regions: ['eu-west'] } } },
    dataClass: 'pii',
  };
  for (let i = 0; i < 20; i++) place(req, fleet);
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    const d = place(req, fleet);
    if (!d.ok || d.choices.some((c) => c.target.region !== 'eu-west')) throw new Error('residency violated in the benchmark');
    n++;
  }
  return n / SECONDS;
}

async function main(): Promise<void> {
  const s = await startServer();
  const f = (x: number) => x.toFixed(2);
  try {
    console.log(
      `bench:router — routed (cloud → MQTT → site) vs direct (site's local OIP), ${SECONDS} s per run, one site, vibration model`,
    );
    console.log('conc | direct p50 / p99 ms | routed p50 / p99 ms | added p50 / p99 ms | ratio p50 | direct rps | routed rps');
    for (const c of [1, 16, 64]) {
      const direct = await measure(s.site, c);
      const routed = await measure(s.cloud, c);
      console.log(
        `${String(c).padStart(4)} | ${f(direct.p50).padStart(8)} / ${f(direct.p99).padStart(7)} | ${f(routed.p50).padStart(8)} / ${f(routed.p99).padStart(7)} | ${f(routed.p50 - direct.p50).padStart(8)} / ${f(routed.p99 - direct.p99).padStart(7)} | ${(routed.p50 / direct.p50).toFixed(2).padStart(8)}× | ${direct.rps.toFixed(0).padStart(10)} | ${routed.rps.toFixed(0).padStart(10)}`,
      );
    }
  } finally {
    s.kill();
  }
  const small = policyBench(100);
  const big = policyBench(10_000);
  console.log(
    `policy decisions/s: ${small.toFixed(0)} over 100 sites (baseline), ${big.toFixed(0)} over 10,000 sites; ratio ${(big / small).toFixed(4)} (${(1e9 / big / 10_000).toFixed(0)} ns per site per decision)`,
  );
}

if (process.argv[2] === 'server') await server();
else await main();
