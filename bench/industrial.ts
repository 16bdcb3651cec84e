/**
 * bench:industrial — values per second from machines into a rule.
 *
 * (a) OPC UA: one node-opcua server (src/sim/industrial.ts) with 1,000 Double variables that all
 *     change every 100 ms (10,000 changes/s offered). Baseline: node-opcua's client alone — one
 *     subscription, 1,000 monitored items (publishing every 100 ms), counting the
 *     'changed' events; items are sampled every 50 ms, twice per change, so that none is missed
 *     by aliasing. Ours: the same subscription through OpcuaSource → StreamRouter (schema
 *     check) → a rule with a 1 s window → a memory sink; values/s counted by the source, and the
 *     records the rule took in. Run one after the other against the same server.
 * (b) Modbus TCP: a modbus-serial server; 100 holding registers polled every 100 ms. Baseline:
 *     modbus-serial's client alone, one readHoldingRegisters(0, 100) per poll; ours: ModbusSource
 *     (register map, decoding, scale) → the same rule path. Then both again every 10 ms, where the
 *     per-poll cost (and the server's ~1 ms per request) shows rather than the pacing.
 * BENCH_SECONDS (default 8) sets each measurement's length. Figures vary with the machine's load;
 * the ratios, measured in the same run, are what to compare.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { openEdgeDb } from '../src/edge/db.ts';
import { DeadLetters, StreamRouter } from '../src/edge/record-router.ts';
import { EgressAudit, memorySinks } from '../src/edge/sinks.ts';
import { RuleHost } from '../src/edge/rules.ts';
import { Outbox } from '../src/edge/outbox.ts';
import { SourceHost } from '../src/edge/sources/host.ts';
import { modbusSerial } from '../src/edge/sources/modbus.ts';
import { quietOpcua } from '../src/edge/sources/opcua-quiet.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import type { DesiredApp } from '../src/contracts/messages.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { ModbusMachineSim, OpcuaMachineSim } from '../src/sim/industrial.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ITEMS = 1000;
const REGS = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

quietOpcua();
const dir = mkdtempSync(join(tmpdir(), 'ew-bench-industrial-'));
const db = openEdgeDb(dir);
const log = silentLogger();
const dead = new DeadLetters(db, systemClock);
const router = new StreamRouter(dead);
const outbox = new Outbox(db, systemClock, { maxMessages: 1000, overflow: 'drop-oldest' });
const egress = new EgressAudit(db, systemClock, new Registry());
const rules = new RuleHost({
  router,
  dead,
  clock: systemClock,
  log,
  sinkContext: (app, rule, allowedFields) => ({
    siteId: 'bench',
    app,
    rule,
    outbox,
    audit: egress,
    log,
    clock: systemClock,
    allowedFields,
    siteLog: log,
    publishLocal: () => {},
  }),
});
const sources = new SourceHost({ router, dataDir: dir, clock: systemClock, log });

/** Runs an app whose one stream is `source`, read by a 1 s windowed rule; returns a stop function and the rule's input count. */
async function runApp(name: string, source: Record<string, unknown>, schema: Record<string, string>, field: string) {
  const manifest = parseManifest({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name, version: '1.0.0' },
    spec: {
      streams: [{ name: 'm', source, timestamp: 'ts', schema: { ...schema, ts: 'timestamp' } }],
      rules: [
        {
          name: 'r',
          sql: `SELECT count(*) AS n, avg(${field}) AS a FROM m GROUP BY TUMBLINGWINDOW(ss, 1)`,
          sinks: [{ memory: name.replaceAll('-', '_') }],
        },
      ],
    },
  });
  const app: DesiredApp = { name, version: '1.0.0', deploymentId: name, manifest };
  await rules.start(app);
  await sources.start(app);
  const st = () => sources.statuses().find((s) => s.app === name)!;
  const ruleIn = () => rules.statuses().find((r) => r.app === name)?.in ?? 0;
  return {
    st,
    ruleIn,
    stop: async () => {
      await sources.stop(app);
      await rules.stop(app);
    },
  };
}

/** Counts over SECONDS; with `offered` (values the server produced meanwhile), also the share delivered. */
async function measure(
  label: string,
  count: () => number,
  offered?: () => number,
): Promise<{ perSec: number; cpu: number; share?: number }> {
  const c0 = process.cpuUsage();
  const v0 = count();
  const o0 = offered?.() ?? 0;
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  const secs = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  const got = count() - v0;
  const perSec = got / secs;
  const cpu = (c.user + c.system) / 1e6 / secs;
  const share = offered ? got / Math.max(1, offered() - o0) : undefined;
  console.log(
    `  ${label.padEnd(58)} ${fmt(perSec).padStart(9)} values/s   CPU ${(cpu * 100).toFixed(0)} %${share === undefined ? '' : `   ${(share * 100).toFixed(0)} % of the changes the server made`}`,
  );
  return { perSec, cpu, share };
}

async function opcuaBench(): Promise<void> {
  console.log(`\n(a) OPC UA subscription, ${ITEMS} monitored items changing every 100 ms (${fmt(ITEMS * 10)} changes/s offered)`);
  const sim = new OpcuaMachineSim({ pkiDir: join(dir, 'sim-pki'), tickMs: 100, benchVariables: ITEMS });
  await sim.start();
  const nodes = Array.from({ length: ITEMS }, (_, i) => `ns=1;s=Bench.V${i}`);

  // Baseline: node-opcua's client alone.
  const ua = await import('node-opcua');
  const client = ua.OPCUAClient.create({
    endpointMustExist: false,
    connectionStrategy: { maxRetry: 0 },
    clientCertificateManager: new ua.OPCUACertificateManager({ rootFolder: join(dir, 'pki-raw') }),
  });
  await client.connect(sim.endpoint);
  const session = await client.createSession();
  const sub = await session.createSubscription2({
    requestedPublishingInterval: 100,
    requestedLifetimeCount: 120,
    requestedMaxKeepAliveCount: 10,
    maxNotificationsPerPublish: 0,
    publishingEnabled: true,
    priority: 10,
  });
  let changes = 0;
  const group = await ua.ClientMonitoredItemGroup.create(
    sub,
    nodes.map((nodeId) => ({ nodeId, attributeId: ua.AttributeIds.Value })),
    { samplingInterval: 50, discardOldest: true, queueSize: 3 },
    ua.TimestampsToReturn.Both,
  );
  group.on('changed', () => {
    changes++;
  });
  // Warm up: the initial values, then a few full publishes.
  for (let i = 0; i < 600 && changes < ITEMS * 10; i++) await sleep(50);
  const offered = () => sim.ticks * ITEMS;
  const base = await measure('node-opcua client alone (changed events)', () => changes, offered);
  await sub.terminate();
  await session.close();
  await client.disconnect();

  // Ours: OpcuaSource → stream → rule.
  const fields = Object.fromEntries(nodes.map((n, i) => [`v${i}`, n]));
  const schema = Object.fromEntries(nodes.map((_, i) => [`v${i}`, 'float']));
  const app = await runApp(
    'bench-opcua',
    { opcua: { endpoint: sim.endpoint, samplingIntervalMs: 50, publishingIntervalMs: 100, fields } },
    schema,
    'v0',
  );
  for (let i = 0; i < 600 && app.st().values < ITEMS * 10; i++) await sleep(50);
  const recs0 = app.ruleIn();
  const ours = await measure('OpcuaSource → schema check → rule (values)', () => app.st().values, offered);
  const recs = (app.ruleIn() - recs0) / SECONDS;
  console.log(`  ${'  records into the rule (one per publish)'.padEnd(58)} ${fmt(recs).padStart(9)} records/s`);
  // The server slows down under load (its 100 ms timer slips): compare the shares delivered.
  console.log(
    `  ratio ours / client alone (share of the server's changes delivered): ${((ours.share! / base.share!) * 100).toFixed(0)} %   (dead letters: ${dead.total})`,
  );
  await app.stop();
  await sim.stop();
}

async function modbusBench(): Promise<void> {
  console.log(`\n(b) Modbus TCP polling, ${REGS} holding registers`);
  const sim = new ModbusMachineSim({ tickMs: 0, size: 1000 });
  await sim.start();
  for (let i = 0; i < REGS; i++) sim.holding[i] = i * 3;
  const { host, port } = { host: '127.0.0.1', port: sim.port };

  // Baseline: modbus-serial's client alone, paced like a source (next poll timed from the last one's start).
  const rawPoll = async (intervalMs: number, stop: () => boolean, onValues: (n: number) => void) => {
    const ModbusRTU = modbusSerial();
    const c = new ModbusRTU();
    await c.connectTCP(host, { port });
    c.setID(1);
    c.setTimeout(1000);
    while (!stop()) {
      const t = performance.now();
      const r = await c.readHoldingRegisters(0, REGS);
      onValues(r.data.length);
      const wait = intervalMs - (performance.now() - t);
      if (wait > 0) await sleep(wait);
    }
    await new Promise<void>((r) => c.close(() => r()));
  };
  const fields = Object.fromEntries(
    Array.from({ length: REGS }, (_, i) => [`r${i}`, { table: 'holding', address: i, type: 'uint16', scale: 0.5 }]),
  );
  const schema = Object.fromEntries(Array.from({ length: REGS }, (_, i) => [`r${i}`, 'float']));
  for (const interval of [100, 10]) {
    const what = `every ${interval} ms`;
    let values = 0;
    let done = false;
    const loop = rawPoll(
      interval,
      () => done,
      (n) => {
        values += n;
      },
    );
    await sleep(300);
    const base = await measure(`modbus-serial client alone, ${what}`, () => values);
    done = true;
    await loop;
    const app = await runApp(
      `bench-modbus-${interval}`,
      { modbus: { endpoint: sim.endpoint, unit: 1, intervalMs: interval, fields } },
      schema,
      'r1',
    );
    await sleep(300);
    const ours = await measure(`ModbusSource → schema check → rule, ${what}`, () => app.st().values);
    console.log(`  ratio ours / client alone (${what}): ${((ours.perSec / base.perSec) * 100).toFixed(0)} %`);
    await app.stop();
  }
  await sim.stop();
}

console.log(`bench:industrial — ${SECONDS} s per measurement, node ${process.version}`);
try {
  await opcuaBench();
  await modbusBench();
} finally {
  await sources.close();
  rules.close();
  db.close();
  rmSync(dir, { recursive: true, force: true });
  memorySinks.clear();
}
process.exit(0);
