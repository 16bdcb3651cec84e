/**
 * bench:stream — the streaming-SQL engine's throughput.
 *
 * (a) In process: 2,000,000 records over 10,000 keys through a WHERE filter and count/avg/max per
 *     key, in a tumbling 1 s window, then a hopping 10 s / 1 s window — records/s on one core,
 *     next to a hand-written loop doing the same work in the same run (the ratio is the figure
 *     we track; aim ≥ 25 %).
 * (b) End to end: an MQTT publisher → the site's device broker (aedes) → a rule → the uplink
 *     outbox (SQLite) — records/s, next to the same broker's own publish → subscribe rate in the
 *     same run (aim ≥ 80 %), at QoS 0 and at QoS 1 (where the site acknowledges each record only
 *     after it is journaled: acknowledge-after-durability, with group commit).
 * BENCH_RECORDS (default 2000000), BENCH_KEYS (10000), BENCH_E2E (200000) size the runs.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Registry } from 'prom-client';
import { planQuery, type Row } from '../src/stream/planner.ts';
import { RuleRuntime } from '../src/stream/runtime.ts';
import { ManualClock, systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { openEdgeDb } from '../src/edge/db.ts';
import { Outbox } from '../src/edge/outbox.ts';
import { DeviceBroker } from '../src/edge/devices.ts';
import { DeadLetters, StreamRouter } from '../src/edge/record-router.ts';
import { EgressAudit } from '../src/edge/sinks.ts';
import { RuleHost } from '../src/edge/rules.ts';
import { Intake, Journal } from '../src/edge/journal.ts';
import { parseManifest } from '../src/contracts/manifest.ts';

const N = Number(process.env.BENCH_RECORDS ?? 2_000_000);
const KEYS = Number(process.env.BENCH_KEYS ?? 10_000);
const E2E = Number(process.env.BENCH_E2E ?? 200_000);

function makeRecords(): Row[] {
  // 10,000 records per second of event time, keys uniformly mixed, 5 % filtered out (v < 0).
  const out: Row[] = new Array(N);
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
  for (let i = 0; i < N; i++)
    out[i] = { key: `k${Math.floor(rand() * KEYS)}`, v: rand() < 0.05 ? -1 : rand() * 100, ts: Math.floor(i / 10) };
  return out;
}

interface Res {
  secs: number;
  cpu: number;
  outputs: number;
}

function timeIt(fn: () => number): Res {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const outputs = fn();
  const secs = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { secs, cpu: (c.user + c.system) / 1e6, outputs };
}

/** The same work by hand: filter, per-window per-key count/sum/max, emit on window close. */
function handTumbling(recs: Row[], sizeMs: number, hopMs: number): number {
  let outputs = 0;
  const windows = new Map<number, Map<string, { n: number; sum: number; max: number }>>();
  let watermark = -Infinity;
  const sink: { key: string; n: number; avg: number; max: number }[] = [];
  for (let i = 0; i < recs.length; i++) {
    const r = recs[i]! as { key: string; v: number; ts: number };
    if (!(r.v >= 0)) continue;
    for (let s = Math.floor(r.ts / hopMs) * hopMs; s > r.ts - sizeMs; s -= hopMs) {
      let g = windows.get(s);
      if (!g) {
        g = new Map();
        windows.set(s, g);
      }
      const a = g.get(r.key);
      if (a) {
        a.n++;
        a.sum += r.v;
        if (r.v > a.max) a.max = r.v;
      } else g.set(r.key, { n: 1, sum: r.v, max: r.v });
    }
    if (r.ts > watermark) {
      watermark = r.ts;
      for (const [s, g] of windows) {
        if (s + sizeMs > watermark) continue;
        for (const [key, a] of g) {
          sink.push({ key, n: a.n, avg: a.sum / a.n, max: a.max });
          outputs++;
        }
        sink.length = 0;
        windows.delete(s);
      }
    }
  }
  for (const g of windows.values()) outputs += g.size;
  return outputs;
}

function engine(recs: Row[], window: string): number {
  const plan = planQuery(`SELECT key, count(*) AS n, avg(v) AS a, max(v) AS m FROM s WHERE v >= 0 GROUP BY key, ${window}`, {
    name: 's',
    timestamp: 'ts',
    schema: { key: 'string', v: 'float', ts: 'timestamp' },
  });
  let outputs = 0;
  const rt = new RuleRuntime(plan, {
    clock: new ManualClock(0),
    emit: (rows) => {
      outputs += rows.length;
    },
  });
  for (let i = 0; i < recs.length; i++) rt.push(recs[i]!);
  rt.flush();
  return outputs;
}

const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

async function partA(): Promise<void> {
  const recs = makeRecords();
  console.log(`(a) in process: ${fmt(N)} records, ${fmt(KEYS)} keys, WHERE v >= 0, count/avg/max per key (best of 3 runs each)`);
  for (const [label, sql, size, hop] of [
    ['tumbling 1 s', 'TUMBLINGWINDOW(ss, 1)', 1000, 1000],
    ['hopping 10 s / 1 s', 'HOPPINGWINDOW(ss, 10, 1)', 10_000, 1000],
  ] as const) {
    handTumbling(recs.slice(0, 100_000), size, hop); // warm both paths
    engine(recs.slice(0, 100_000), sql);
    // Best of three for each side, interleaved: the machine is shared and a single run is noisy.
    let h = timeIt(() => handTumbling(recs, size, hop));
    let e = timeIt(() => engine(recs, sql));
    for (let i = 0; i < 2; i++) {
      const h2 = timeIt(() => handTumbling(recs, size, hop));
      const e2 = timeIt(() => engine(recs, sql));
      if (h2.cpu < h.cpu) h = h2;
      if (e2.cpu < e.cpu) e = e2;
    }
    console.log(
      `  ${label.padEnd(20)} engine ${fmt(N / e.cpu).padStart(11)} rec/s per core (${e.secs.toFixed(2)} s, ${fmt(e.outputs)} results) | hand-written ${fmt(N / h.cpu).padStart(11)} rec/s per core (${fmt(h.outputs)} results) | ratio ${((h.cpu / e.cpu) * 100).toFixed(0)} %`,
    );
    if (e.outputs !== h.outputs) console.log(`  !! result counts differ: engine ${e.outputs}, hand-written ${h.outputs}`);
  }
}

async function partB(): Promise<void> {
  for (const qos of [0, 1] as const) await partBAt(qos, false);
  await partBAt(1, true);
}

/**
 * QoS 0: records are handed to the rules as they arrive (nothing to acknowledge). QoS 1: the
 * site's full acknowledge-after-durability path — each batch journaled (group commit, one fsync)
 * before its PUBACKs, the rule's outbox rows committed with its journal cursor. The baseline is
 * the same broker's own publish → subscribe at the same QoS.
 */
async function partBAt(qos: 0 | 1, windowed: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-stream-'));
  const db = openEdgeDb(dir);
  const password = 'bench-device-password';
  const broker = new DeviceBroker({ port: 0, host: '127.0.0.1', log: silentLogger(), verify: (u, p) => u === 'device' && p === password });
  const dead = new DeadLetters(db, systemClock);
  const router = new StreamRouter(dead);
  const outbox = new Outbox(db, systemClock, { maxMessages: 10_000_000, overflow: 'drop-oldest' });
  const journal = new Journal(db, systemClock);
  const audit = new EgressAudit(db, systemClock, new Registry());
  const host = new RuleHost({
    router,
    dead,
    clock: systemClock,
    log: silentLogger(),
    sinkContext: (app, rule, allowedFields) => ({
      siteId: 'bench',
      app,
      rule,
      outbox,
      audit,
      log: silentLogger(),
      clock: systemClock,
      allowedFields,
      siteLog: silentLogger(),
      publishLocal: () => {},
    }),
    ...(qos === 1 ? { durable: { journal, db, outbox, checkpointMs: 1000 } } : {}),
  });
  if (qos === 1) {
    const intake = new Intake({
      journal,
      clock: systemClock,
      log: silentLogger(),
      routes: (t) => router.routes(t),
      gate: () => undefined,
      onUnrouted: () => {},
      onWithheld: () => {},
      deliver: (seq, topic, payload) => {
        router.onMessage(topic, payload, undefined, seq);
        host.delivered(seq);
      },
    });
    broker.setIntake((m) => intake.accept(m.topic, m.payload));
  } else {
    broker.onMessage((m) => router.onMessage(m.topic, m.payload));
  }
  await broker.start();
  const publish = async (topicOf: (i: number) => string, count: number, done: () => boolean): Promise<number> => {
    const pub = await mqtt.connectAsync(broker.url, { username: 'device', password, protocolVersion: 4 });
    const t0 = performance.now();
    for (let i = 0; i < count; i++) {
      const ok = pub.publish(topicOf(i), JSON.stringify({ machineId: `m${i % 100}`, rms: (i % 97) / 10, kurtosis: 3, ts: Date.now() }), {
        qos,
      }) as unknown;
      void ok;
      if (i % 500 === 499) await new Promise((r) => setImmediate(r)); // let the broker breathe, like a real device fleet
    }
    while (!done()) await new Promise((r) => setTimeout(r, 5));
    const secs = (performance.now() - t0) / 1000;
    await pub.endAsync();
    return count / secs;
  };
  // Baseline: the same broker, publish → subscribe, at the same QoS.
  const sub = await mqtt.connectAsync(broker.url, { username: 'device', password, protocolVersion: 4 });
  let got = 0;
  sub.on('message', () => {
    got++;
  });
  await sub.subscribeAsync('bench/+/raw', { qos });
  const base = await publish(
    (i) => `bench/m${i % 100}/raw`,
    E2E,
    () => got >= E2E,
  );
  await sub.endAsync();
  // Edgeweave: broker → rule (filter + projection per record) → uplink outbox.
  await host.start({
    name: 'bench',
    version: '1.0.0',
    deploymentId: 'd',
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'bench', version: '1.0.0' },
      spec: {
        streams: [
          {
            name: 'vibration',
            topic: 'factory/+/vibration',
            timestamp: 'ts',
            schema: { machineId: 'string', rms: 'float', kurtosis: 'float', ts: 'timestamp' },
          },
        ],
        rules: [
          windowed
            ? // 100 machines, a 1 s event-time window: one result per machine per second; the state
              // (100 groups) is checkpointed with the journal cursor every second.
              {
                name: 'win',
                sql: 'SELECT machineId, count(*) AS n, avg(rms) AS rms FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 1)',
                sinks: [{ uplink: 'out' }],
              }
            : {
                name: 'pass',
                sql: 'SELECT machineId, rms * 2 AS rms2, kurtosis FROM vibration WHERE rms >= 0',
                sinks: [{ uplink: 'out' }],
              },
        ],
        policy: { egress: { allow: ['out'] } },
      },
    }),
  });
  // A windowed rule is done when every record went through it (its results are fewer).
  const rate = await publish(
    (i) => `factory/m${i % 100}/vibration`,
    E2E,
    () => (windowed ? (host.statuses()[0]?.in ?? 0) >= E2E : outbox.pending >= E2E),
  );
  const label =
    qos === 0 ? 'QoS 0, no acknowledgement' : windowed ? 'QoS 1, window rule, checkpoint 1 s' : 'QoS 1, PUBACK after the journal commit';
  if (qos === 0) console.log(`(b) end to end: ${fmt(E2E)} MQTT messages into the site's device broker`);
  console.log(
    `  ${label.padEnd(38)} broker publish → subscribe ${fmt(base).padStart(9)} msg/s | publish → broker → rule → outbox ${fmt(rate).padStart(9)} rec/s | ratio ${((rate / base) * 100).toFixed(0)} %`,
  );
  host.close();
  await broker.close();
  db.close();
  rmSync(dir, { recursive: true, force: true });
}

console.log(`bench:stream on ${process.version}, one core per process`);
const part = process.env.BENCH_PART; // 'a' or 'b' to run one part
if (part !== 'b') await partA();
if (part !== 'a') await partB();
process.exit(0);
