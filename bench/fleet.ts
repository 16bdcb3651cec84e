/**
 * bench:fleet — N simulated sites, each a real MQTT connection (many per process), heartbeating
 * every 10 s against one cloud with its embedded hub (a separate process). Prints, per N:
 *   - heartbeats/s held (received by the cloud, from its own counter) against the offered rate;
 *   - cloud RSS and CPU while heartbeating;
 *   - the time for one desired-state change (a deployment to the whole fleet) to reach every
 *     site, p50/p99/max;
 * and, as the baseline measured in the same run, a bare aedes broker (no auth, no store) under
 * the same connections and load, with the fan-out of N retained messages. Last, an idle agent's
 * RSS. Environment: BENCH_SITES=1000,5000,10000  BENCH_WINDOW_S=20.
 *
 * `--replicas N` (npm run bench:fleet -- --replicas 2): after the embedded-hub cloud, the same
 * load on 1…N cloud replicas (separate processes) on PostgreSQL and Mosquitto
 * (EW_BENCH_PG, EW_BENCH_MQTT; defaults the CI services), printed side by side with each
 * replica's CPU and RSS.
 *
 * `--busy K`: K extra processes each keep a core busy for the whole run (a fixed, repeatable
 * "busy machine" for the quiet/busy comparison; on a 2-core machine `--busy 1` takes half of it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import { newSecret } from '../src/lib/secrets.ts';
import { ENVELOPE_VERSION } from '../src/contracts/messages.ts';
import { topics } from '../src/contracts/topics.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SIZES = (process.env.BENCH_SITES ?? '1000,5000,10000').split(',').map(Number);
const WINDOW_S = Number(process.env.BENCH_WINDOW_S ?? 20);
const HEARTBEAT_S = 10;
const argv = process.argv.slice(2);
const REPLICAS = argv.includes('--replicas') ? Number(argv[argv.indexOf('--replicas') + 1]) : 0;
if (argv.includes('--replicas') && !(Number.isInteger(REPLICAS) && REPLICAS >= 1 && REPLICAS <= 8)) {
  console.error('--replicas takes a whole number of replicas, 1 to 8');
  process.exit(2);
}
const BUSY = argv.includes('--busy') ? Number(argv[argv.indexOf('--busy') + 1]) : 0;
if (argv.includes('--busy') && !(Number.isInteger(BUSY) && BUSY >= 1 && BUSY <= 16)) {
  console.error('--busy takes a number of busy processes, 1 to 16');
  process.exit(2);
}
const BENCH_PG = process.env.EW_BENCH_PG ?? process.env.EW_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';
const BENCH_MQTT = process.env.EW_BENCH_MQTT ?? process.env.EW_TEST_MQTT ?? 'mqtt://127.0.0.1:1883';

interface Proc {
  proc: ChildProcess;
  ready: Record<string, any>;
  stderr: () => string;
}

/**
 * BENCH_CLOUD_NODE_ARGS: extra node flags for the cloud processes, e.g. '--cpu-prof
 * --cpu-prof-dir=/tmp/prof' to profile a fan-out (the cloud is then stopped with SIGTERM so the
 * profile is written, and the deployment's start and end are printed on the monotonic clock that
 * the profile's timestamps use).
 */
const CLOUD_NODE_ARGS = (process.env.BENCH_CLOUD_NODE_ARGS ?? '').split(' ').filter(Boolean);

function startProc(args: string[], tsEntry = 'src/cli/main.ts'): Promise<Proc> {
  const nodeArgs = args[0] === 'cloud' ? CLOUD_NODE_ARGS : [];
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', tsEntry, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, EW_LOG_LEVEL: 'warn' },
  });
  let err = '';
  proc.stderr!.on('data', (d) => {
    err = (err + d).slice(-20000);
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      try {
        const o = JSON.parse(l);
        if (o.event === 'ready') resolve({ proc, ready: o, stderr: () => err });
      } catch {
        /* ignore */
      }
    });
    proc.on('exit', (c) => reject(new Error(`${args[0]} exited ${c}: ${err}`)));
  });
}

/** SIGKILL, or with BENCH_CLOUD_NODE_ARGS a SIGTERM and its exit (a profile is written on exit). */
async function stopCloud(p: Proc): Promise<void> {
  if (CLOUD_NODE_ARGS.length === 0 || p.proc.exitCode !== null) {
    p.proc.kill('SIGKILL');
    return;
  }
  const exited = new Promise((r) => p.proc.once('exit', r));
  p.proc.kill('SIGTERM');
  const t = setTimeout(() => p.proc.kill('SIGKILL'), 60_000);
  await exited;
  clearTimeout(t);
}

function procStats(pid: number): { rssMb: number; cpuTicks: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { rssMb: rssKb / 1024, cpuTicks: Number(stat[11]) + Number(stat[12]) };
}
const TICKS = 100; // USER_HZ on Linux

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};

async function pool<T>(items: T[], n: number, fn: (x: T, i: number) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) {
        const k = i++;
        await fn(items[k]!, k);
      }
    }),
  );
}

function statusPayload(siteId: string, uptimeS: number, generation: number): string {
  return JSON.stringify({
    v: ENVELOPE_VERSION,
    id: `${siteId}-${uptimeS}`,
    ts: Date.now(),
    type: 'status',
    body: {
      agentVersion: '0.1.0',
      bootId: `boot-${siteId}`,
      uptimeS,
      heartbeatIntervalS: HEARTBEAT_S,
      generation,
      apps: [],
      system: {
        hostname: siteId,
        platform: 'linux',
        arch: 'x64',
        cores: 8,
        memoryTotalBytes: 16e9,
        memoryFreeBytes: 9e9,
        diskTotalBytes: 256e9,
        diskFreeBytes: 120e9,
        loadAvg1: 0.4,
      },
      runtimes: ['onnx'],
      accelerators: [],
      outbox: { pending: 0, dropped: 0 },
      devices: { connected: 12, messagesIn: 123456 },
    },
  });
}

interface Site {
  id: string;
  password: string;
  client?: MqttClient;
  gotGen: number;
  gotAt: number;
}

/** Every simulated site dials from 127.0.0.1: lift the per-address bounds meant for real fleets. */
const LOOPBACK_LIMITS = [
  '--rate-limit',
  'off',
  '--mqtt-limits',
  'connectBurst=1000000,connectPerSecond=1000000,maxPendingPerAddress=1000000,maxPendingConnections=1000000,authFailBurst=1000000',
];

async function connectAll(url: string, sites: Site[], creds: boolean): Promise<number> {
  const t0 = performance.now();
  await pool(sites, 200, async (s) => {
    s.client = await mqtt.connectAsync(url, {
      clientId: s.id,
      username: creds ? s.id : undefined,
      password: creds ? s.password : undefined,
      protocolVersion: 4,
      keepalive: 60,
      reconnectPeriod: 0,
      clean: true,
    });
    s.client.on('message', (_t, payload) => {
      if (payload.length === 0) return;
      const gen = creds ? (JSON.parse(payload.toString()).body?.generation as number) : Number(payload.toString());
      if (gen > s.gotGen) {
        s.gotGen = gen;
        s.gotAt = performance.now();
      }
    });
    await s.client.subscribeAsync(topics.desired(s.id), { qos: 1 });
  });
  return (performance.now() - t0) / 1000;
}

/** Heartbeats spread evenly: every 100 ms one hundredth of the sites report. */
function heartbeat(sites: Site[]): () => void {
  let slot = 0;
  const slots = (HEARTBEAT_S * 1000) / 100;
  const started = Date.now();
  const t = setInterval(() => {
    const up = Math.round((Date.now() - started) / 1000);
    for (let i = slot; i < sites.length; i += slots) {
      const s = sites[i]!;
      s.client!.publish(topics.reported(s.id), statusPayload(s.id, up, s.gotGen), { qos: 0 });
    }
    slot = (slot + 1) % slots;
  }, 100);
  return () => clearInterval(t);
}

async function metric(url: string, key: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${key}` } })).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}

async function measureWindow(pid: number, count: () => Promise<number>): Promise<{ rate: number; rssMb: number; cpuPct: number }> {
  // Let the first full heartbeat round pass before measuring.
  await new Promise((r) => setTimeout(r, HEARTBEAT_S * 1000));
  const a = procStats(pid);
  const c0 = await count();
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
  const b = procStats(pid);
  const c1 = await count();
  const secs = (performance.now() - t0) / 1000;
  return { rate: (c1 - c0) / secs, rssMb: b.rssMb, cpuPct: (100 * (b.cpuTicks - a.cpuTicks)) / TICKS / secs };
}

interface Row {
  n: number;
  what: string;
  connectS: number;
  offered: number;
  rate: number;
  rssMb: number;
  cpuPct: number;
  p50: number;
  p99: number;
  max: number;
  reached: number;
  perReplica?: { rssMb: number; cpuPct: number; rate: number; dropped?: number }[];
}

async function benchCloud(n: number): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-'));
  const key = newSecret('ewk');
  writeFileSync(join(dir, 'admin.key'), key, { mode: 0o600 });
  const cloud = await startProc([
    'cloud',
    '--data-dir',
    dir,
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--mqtt-host',
    '127.0.0.1',
    '--mqtt-port',
    '0',
    '--admin-key-file',
    join(dir, 'admin.key'),
    '--heartbeat-interval',
    String(HEARTBEAT_S),
    ...LOOPBACK_LIMITS,
  ]);
  const url = cloud.ready.url as string;
  const call = async (method: string, path: string, body?: unknown) =>
    (
      await fetch(`${url}${path}`, {
        method,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: body ? JSON.stringify(body) : undefined,
      })
    ).json() as Promise<any>;
  try {
    return await runCloud(n, cloud, url, key, call);
  } catch (e) {
    const exit = cloud.proc.exitCode ?? cloud.proc.signalCode;
    throw new Error(`${(e as Error).message}${exit !== null ? `; the cloud exited (${exit}): ${cloud.stderr().slice(-12000)}` : ''}`, {
      cause: (e as Error).cause,
    });
  } finally {
    await stopCloud(cloud);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runCloud(
  n: number,
  cloud: Proc,
  url: string,
  key: string,
  call: (method: string, path: string, body?: unknown) => Promise<any>,
): Promise<Row> {
  {
    const sites: Site[] = [];
    await pool(
      Array.from({ length: n }, (_, i) => i),
      16,
      async (i) => {
        const tok = await call('POST', '/api/v1/tokens', { labels: { bench: 'yes', shard: String(i % 10) } });
        const en = await call('POST', '/api/v1/enroll', { token: tok.token });
        sites.push({ id: en.siteId, password: en.mqtt.password, gotGen: 0, gotAt: 0 });
      },
    );
    const connectS = await connectAll(cloud.ready.mqttUrl, sites, true);
    await waitUntil(() => sites.every((s) => s.gotGen >= 1), 120_000);
    const stop = heartbeat(sites);
    const w = await measureWindow(cloud.proc.pid!, () => metric(url, key, 'ew_cloud_heartbeats_total'));
    const { lat, before } = await deployToFleet(call, sites);
    stop();
    await Promise.all(sites.map((s) => s.client!.endAsync(true)));
    return {
      n,
      what: 'cloud',
      connectS,
      offered: n / HEARTBEAT_S,
      ...w,
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      max: Math.max(...lat),
      reached: sites.filter((s) => s.gotGen > before).length,
    };
  }
}

/**
 * `r` replicas on PostgreSQL and Mosquitto: sites enroll through the first, connect to the
 * broker, heartbeat; every replica hears every heartbeat (liveness agrees everywhere) and the
 * status rows are written once (conditional writes); the deployment is made on the first.
 */
async function benchReplicas(n: number, r: number): Promise<Row> {
  const pg = (await import('pg')).default;
  const schema = `ew_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: BENCH_PG });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  const u = new URL(BENCH_PG);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-replicas-'));
  const key = newSecret('ewk');
  writeFileSync(join(dir, 'admin.key'), key, { mode: 0o600 });
  const installation = `bench-${randomBytes(3).toString('hex')}`;
  const clouds: Proc[] = [];
  const start = (i: number) =>
    startProc([
      'cloud',
      '--data-dir',
      join(dir, `r${i}`),
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--db',
      u.toString(),
      '--broker',
      BENCH_MQTT,
      '--installation-id',
      installation,
      '--replica-id',
      `r${i}`,
      '--admin-key-file',
      join(dir, 'admin.key'),
      '--no-console',
      '--heartbeat-interval',
      String(HEARTBEAT_S),
      ...LOOPBACK_LIMITS,
    ]);
  try {
    clouds.push(await start(0));
    clouds.push(...(await Promise.all(Array.from({ length: r - 1 }, (_, i) => start(i + 1)))));
    const url = clouds[0]!.ready.url as string;
    const call = async (method: string, path: string, body?: unknown) =>
      (
        await fetch(`${url}${path}`, {
          method,
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: body ? JSON.stringify(body) : undefined,
        })
      ).json() as Promise<any>;
    const sites: Site[] = [];
    await pool(
      Array.from({ length: n }, (_, i) => i),
      16,
      async (i) => {
        const tok = await call('POST', '/api/v1/tokens', { labels: { bench: 'yes', shard: String(i % 10) } });
        const en = await call('POST', '/api/v1/enroll', { token: tok.token });
        sites.push({ id: en.siteId, password: en.mqtt.password, gotGen: 0, gotAt: 0 });
      },
    );
    const connectS = await connectAll(BENCH_MQTT, sites, true);
    // Sites enrolled after the replicas started: the enrolling replica published their desired state.
    await waitUntil(() => sites.every((s) => s.gotGen >= 1), 120_000);
    const stop = heartbeat(sites);
    await new Promise((res) => setTimeout(res, HEARTBEAT_S * 1000));
    const a = clouds.map((c) => procStats(c.proc.pid!));
    const counts = () =>
      Promise.all(
        clouds.map(async (c) => ({
          parsed: await metric(c.ready.url, key, 'ew_cloud_heartbeats_total'),
          dropped: await metric(c.ready.url, key, 'ew_cloud_heartbeats_not_owned_total'),
        })),
      );
    const c0 = await counts();
    const t0w = performance.now();
    await new Promise((res) => setTimeout(res, WINDOW_S * 1000));
    const b = clouds.map((c) => procStats(c.proc.pid!));
    const c1 = await counts();
    const secs = (performance.now() - t0w) / 1000;
    const perReplica = clouds.map((_, i) => ({
      rssMb: b[i]!.rssMb,
      cpuPct: (100 * (b[i]!.cpuTicks - a[i]!.cpuTicks)) / TICKS / secs,
      rate: (c1[i]!.parsed - c0[i]!.parsed) / secs,
      dropped: (c1[i]!.dropped - c0[i]!.dropped) / secs,
    }));
    const { lat, before } = await deployToFleet(call, sites);
    stop();
    await Promise.all(sites.map((s) => s.client!.endAsync(true)));
    // Clear the retained desired states this run left on the shared broker.
    const clear = await mqtt.connectAsync(BENCH_MQTT, { clientId: `bench-clear-${installation}`, protocolVersion: 4 });
    await pool(sites, 64, async (s) => {
      await clear.publishAsync(topics.desired(s.id), '', { qos: 1, retain: true });
    });
    await clear.endAsync(true);
    return {
      n,
      what: `${r} replica${r > 1 ? 's' : ''}`,
      connectS,
      offered: n / HEARTBEAT_S,
      // Each heartbeat is parsed by its site's owner only (fleet/ownership.ts): held = the sum.
      rate: perReplica.reduce((x, p) => x + p.rate, 0),
      rssMb: perReplica.reduce((x, p) => x + p.rssMb, 0),
      cpuPct: perReplica.reduce((x, p) => x + p.cpuPct, 0),
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      max: Math.max(...lat),
      reached: sites.filter((s) => s.gotGen > before).length,
      perReplica,
    };
  } catch (e) {
    const dead = clouds.find((c) => c.proc.exitCode !== null || c.proc.signalCode !== null);
    throw new Error(`${(e as Error).message}${dead ? `; a replica exited: ${dead.stderr().slice(-4000)}` : ''}`);
  } finally {
    for (const c of clouds) c.proc.kill('SIGKILL');
    await admin.query(`drop schema if exists ${schema} cascade`).catch(() => {});
    await admin.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The same load on a bare aedes broker: what the hub itself costs, without our logic. */
async function benchBare(n: number): Promise<Row> {
  const broker = await startProc([], 'bench/bare-broker.ts');
  const url = broker.ready.url as string;
  try {
    const sites: Site[] = Array.from({ length: n }, (_, i) => ({ id: `site-${i}`, password: '', gotGen: 0, gotAt: 0 }));
    const connectS = await connectAll(url, sites, false);
    const stop = heartbeat(sites);
    // The bare broker counts publishes it routes; the bench reads its counter over stdout-less IPC: a
    // subscriber on the heartbeat filter in this process.
    const counter = await mqtt.connectAsync(url, { clientId: 'bench-counter', protocolVersion: 4 });
    let hb = 0;
    counter.on('message', () => hb++);
    await counter.subscribeAsync('ew/+/reported', { qos: 0 });
    const w = await measureWindow(broker.proc.pid!, async () => hb);
    // Fan-out of N retained messages, the embedded hub's share of a desired-state change.
    const pub = await mqtt.connectAsync(url, { clientId: 'bench-publisher', protocolVersion: 4 });
    const t0 = performance.now();
    await pool(sites, 64, async (s) => {
      await pub.publishAsync(topics.desired(s.id), '1', { qos: 1, retain: true });
    });
    await waitUntil(() => sites.every((s) => s.gotGen >= 1), 300_000);
    const lat = sites.map((s) => s.gotAt - t0);
    stop();
    await Promise.all([...sites.map((s) => s.client!.endAsync(true)), counter.endAsync(true), pub.endAsync(true)]);
    return {
      n,
      what: 'bare aedes',
      connectS,
      offered: n / HEARTBEAT_S,
      ...w,
      p50: pct(lat, 50),
      p99: pct(lat, 99),
      max: Math.max(...lat),
      reached: sites.filter((s) => s.gotGen >= 1).length,
    };
  } finally {
    broker.proc.kill('SIGKILL');
  }
}

async function idleAgentRss(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-agent-'));
  const key = newSecret('ewk');
  writeFileSync(join(dir, 'admin.key'), key, { mode: 0o600 });
  const cloud = await startProc([
    'cloud',
    '--data-dir',
    join(dir, 'c'),
    '--host',
    '127.0.0.1',
    '--port',
    '0',
    '--mqtt-host',
    '127.0.0.1',
    '--mqtt-port',
    '0',
    '--admin-key-file',
    join(dir, 'admin.key'),
    ...LOOPBACK_LIMITS,
  ]);
  try {
    const tok = (await (
      await fetch(`${cloud.ready.url}/api/v1/tokens`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{}',
      })
    ).json()) as any;
    writeFileSync(join(dir, 'join.token'), tok.token, { mode: 0o600 });
    const agent = await startProc([
      'edge',
      '--data-dir',
      join(dir, 'e'),
      '--cloud',
      cloud.ready.url,
      '--token-file',
      join(dir, 'join.token'),
      '--api-port',
      '0',
      '--device-port',
      '0',
      '--device-host',
      '127.0.0.1',
    ]);
    await new Promise((r) => setTimeout(r, 5000));
    const rss = procStats(agent.proc.pid!).rssMb;
    agent.proc.kill('SIGKILL');
    return rss;
  } finally {
    await stopCloud(cloud);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * One desired-state change for the whole fleet: pushes an app, deploys it to every site and
 * returns each site's time from the API call to holding the new generation.
 */
async function deployToFleet(
  call: (method: string, path: string, body?: unknown) => Promise<any>,
  sites: Site[],
): Promise<{ lat: number[]; before: number }> {
  await call('POST', '/api/v1/apps', {
    manifest: { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'bench-app', version: '1.0.0' }, spec: {} },
  });
  const before = Math.max(...sites.map((s) => s.gotGen));
  const t0 = performance.now();
  const mono0 = process.hrtime.bigint() / 1000n;
  await call('POST', '/api/v1/deployments', { app: 'bench-app', version: '1.0.0', selector: { bench: 'yes' } });
  const monoApi = process.hrtime.bigint() / 1000n;
  await waitUntil(() => sites.every((s) => s.gotGen > before), 300_000);
  if (CLOUD_NODE_ARGS.length)
    console.error(
      `deployment on the monotonic clock (µs): start ${mono0} api-answered ${monoApi} all-reached ${process.hrtime.bigint() / 1000n}`,
    );
  return { lat: sites.map((s) => s.gotAt - t0), before };
}

async function waitUntil(fn: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
console.log(
  `bench:fleet — heartbeat every ${HEARTBEAT_S} s, window ${WINDOW_S} s, sizes ${SIZES.join(', ')}; cloud and sites on one ${(await import('node:os')).cpus().length}-core machine`,
);
if (BUSY) console.log(`busy: ${BUSY} process(es) spinning a core each for the whole run`);
console.log('N      | system     | connect s | hb/s offered | hb/s held | RSS MB | CPU % | desired p50 ms | p99 ms | max ms | reached');
// The busy machine: each hog spins one core until the benchmark exits.
const hogs = Array.from({ length: BUSY }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
process.on('exit', () => {
  for (const h of hogs) h.kill('SIGKILL');
});
const rows: Row[] = [];
const printRow = (r: Row) => {
  console.log(
    `${String(r.n).padEnd(6)} | ${r.what.padEnd(10)} | ${f(r.connectS, 1).padStart(9)} | ${f(r.offered).padStart(12)} | ${f(r.rate).padStart(9)} | ${f(r.rssMb).padStart(6)} | ${f(r.cpuPct, 1).padStart(5)} | ${f(r.p50).padStart(14)} | ${f(r.p99).padStart(6)} | ${f(r.max).padStart(6)} | ${r.reached}/${r.n}`,
  );
  for (const [i, p] of (r.perReplica ?? []).entries())
    console.log(
      `${''.padEnd(6)} |   replica ${i}  — hb/s parsed ${f(p.rate)}, dropped unread ${f(p.dropped ?? 0)} (other replicas' sites), RSS ${f(p.rssMb)} MB, CPU ${f(p.cpuPct, 1)} %`,
    );
};
for (const n of SIZES) {
  const only = process.env.BENCH_ONLY; // 'cloud' or 'bare' to run one side
  const runs: { name: string; run: () => Promise<Row> }[] = [
    ...(!only || only === 'bare' ? [{ name: 'bare aedes', run: () => benchBare(n) }] : []),
    ...(!only || only === 'cloud' ? [{ name: 'cloud', run: () => benchCloud(n) }] : []),
    // Side by side: 1, then 2 … N replicas on PostgreSQL and Mosquitto.
    ...Array.from({ length: REPLICAS }, (_, i) => ({ name: `${i + 1} replica(s)`, run: () => benchReplicas(n, i + 1) })),
  ];
  for (const { name, run } of runs) {
    try {
      const r = await run();
      rows.push(r);
      printRow(r);
    } catch (e) {
      console.log(
        `${String(n).padEnd(6)} | ${name} | failed: ${(e as Error).message}${(e as Error).cause ? ` (${String(((e as Error).cause as Error).message ?? (e as Error).cause)})` : ''}`,
      );
    }
  }
  const c = rows.find((r) => r.n === n && r.what === 'cloud');
  const b = rows.find((r) => r.n === n && r.what === 'bare aedes');
  if (c && b) {
    console.log(
      `${String(n).padEnd(6)} | ratio cloud/bare: heartbeats held ${f(c.rate / b.rate, 2)}x, RSS ${f(c.rssMb / b.rssMb, 2)}x, CPU ${f(c.cpuPct / Math.max(b.cpuPct, 0.1), 2)}x, desired p99 ${f(c.p99 / b.p99, 2)}x`,
    );
  }
}
if (process.env.BENCH_SKIP_AGENT) process.exit(0);
console.log(`idle agent RSS: ${f(await idleAgentRss(), 1)} MB`);
process.exit(0);
