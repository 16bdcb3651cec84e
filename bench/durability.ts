/**
 * bench:durability — what acknowledge-after-durability costs on this machine's disk.
 *
 * The cloud's uplink path commits batches of uplink rows (group commit) before it acknowledges
 * them; the site's journal commits batches of device records before their PUBACKs. Both run
 * SQLite in WAL mode. This measures batched commits of 1 KB rows with synchronous=NORMAL (durable
 * across a process crash, not a power cut: the last commits can be lost) against FULL (an fsync
 * per commit: durable across a power cut), per batch size, in the same run.
 * BENCH_SECONDS (default 2) per case.
 *
 * Then the external device broker path (a plant's Mosquitto at EW_BENCH_MQTT, default
 * mqtt://127.0.0.1:1883; skipped when unreachable): BENCH_RECORDS (default 2,000) QoS 1 records
 * through the agent's persistent session into the site's journal, acknowledged to the broker only
 * once journaled — one commit per record (mqtt.js hands over one packet at a time) against group
 * commit (PUBACKs sent by the agent once a batch is durable).
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { openEdgeDb } from '../src/edge/db.ts';
import { Intake, Journal } from '../src/edge/journal.ts';
import { ExternalDeviceSource } from '../src/edge/external-devices.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

function run(sync: 'NORMAL' | 'FULL', batch: number): { rows: number; commits: number } {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-dur-'));
  const db = new Database(join(dir, 'b.db'));
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${sync}`);
  db.exec('CREATE TABLE up (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, body BLOB NOT NULL)');
  const ins = db.prepare('INSERT INTO up (id, body) VALUES (?, ?)');
  const body = Buffer.alloc(1024, 7);
  const commit = db.transaction((n: number, base: number) => {
    for (let i = 0; i < n; i++) ins.run(`m${base + i}`, body);
  });
  const end = performance.now() + SECONDS * 1000;
  let commits = 0;
  while (performance.now() < end) commit(batch, commits++ * batch);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return { rows: (commits * batch) / SECONDS, commits: commits / SECONDS };
}

console.log(`bench:durability on ${process.version}: batched SQLite commits of 1 KB rows, WAL, ${SECONDS} s per case`);
for (const batch of [1, 16, 256]) {
  const n = run('NORMAL', batch);
  const f = run('FULL', batch);
  console.log(
    `  batch ${String(batch).padStart(3)}: NORMAL ${fmt(n.rows).padStart(9)} rows/s (${fmt(n.commits)} commits/s) | FULL ${fmt(f.rows).padStart(9)} rows/s (${fmt(f.commits)} commits/s) | FULL/NORMAL ${((f.rows / n.rows) * 100).toFixed(0)} %`,
  );
}

const RECORDS = Number(process.env.BENCH_RECORDS ?? 2000);
const url = process.env.EW_BENCH_MQTT ?? 'mqtt://127.0.0.1:1883';

async function external(ackEach: boolean): Promise<{ perS: number; commits: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-ext-'));
  const db = openEdgeDb(dir);
  const journal = new Journal(db, systemClock);
  let delivered = 0;
  let done!: () => void;
  const all = new Promise<void>((r) => {
    done = r;
  });
  const intake = new Intake({
    journal,
    clock: systemClock,
    log: silentLogger(),
    routes: () => true,
    gate: () => undefined,
    deliver: () => {
      if (++delivered === RECORDS) done();
    },
    onUnrouted: () => {},
    onWithheld: () => {},
  });
  const tag = `${process.pid}-${ackEach ? 'each' : 'group'}-${Date.now()}`;
  const src = new ExternalDeviceSource({ url, clientId: `ew-bench-${tag}`, log: silentLogger(), ackEach });
  src.setIntake((m) => intake.accept(m.topic, m.payload, m.properties));
  await src.start();
  await src.setFilters([`bench/${tag}/#`]);
  const pub = await mqtt.connectAsync(url, { clientId: `ew-bench-pub-${tag}` });
  const body = JSON.stringify({ v: 1, pad: 'x'.repeat(200) });
  const t0 = performance.now();
  await Promise.all(Array.from({ length: RECORDS }, (_, i) => pub.publishAsync(`bench/${tag}/d${i % 10}`, body, { qos: 1 })));
  await all;
  const s = (performance.now() - t0) / 1000;
  await pub.endAsync();
  await src.close();
  intake.close();
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return { perS: RECORDS / s, commits: intake.stats.batches };
}

try {
  const probe = await mqtt.connectAsync(url, { connectTimeout: 2000, reconnectPeriod: 0 });
  await probe.endAsync();
  console.log(
    `external device broker ${url}: ${fmt(RECORDS)} QoS 1 records into the journal (synchronous=FULL), PUBACK to the broker after the commit`,
  );
  const each = await external(true);
  const group = await external(false);
  console.log(`  one commit per record: ${fmt(each.perS).padStart(7)} records/s (${fmt(each.commits)} commits)`);
  console.log(
    `  group commit:          ${fmt(group.perS).padStart(7)} records/s (${fmt(group.commits)} commits) | ${(group.perS / each.perS).toFixed(1)}×`,
  );
} catch (e) {
  console.log(`external device broker ${url} not reachable (${(e as Error).message}): skipped`);
}
